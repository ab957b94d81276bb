"""One send() per burst of SSH packets on an SSH connection's socket.

asyncssh writes every SSH packet to its transport on its own, and before each packet after
the key exchange it writes an empty SSH_MSG_IGNORE as well (connection.py send_packet; an
old countermeasure for CBC ciphers, applied to every cipher). asyncio sends each write at
once when its buffer is empty, so relaying 256 KiB read from a client made 16 send() calls
of 32 KiB and 36 bytes: 20 % of the proxy's samples sat in transport.write under py-spy.

So a relay's write into a channel (`CorkedChannel`), where one chunk becomes many packets,
corks the connection's socket as TCP_CORK would, and uncorking sends what gathered in one
write, at once. Every other write goes straight through, as before. Two wider variants were
measured and dropped: deferring every write to the end of the loop pass made ftp-sftp
uploads 20 % slower (SFTP requests wait on replies, so their latency is the speed), and
corking while each read from sshd is handled gave downloads nothing measurable.

asyncssh takes an object with `create_connection(factory, host, port)` as its `tunnel`
(the jump-host hook); `DirectConnector` is such an object that opens a plain TCP connection
and hands asyncssh a corkable transport over it.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any, cast

import asyncssh

from tunnel import outgoing, readsize

# The corkable transport under each SSH connection that has one (direct TCP connections).
_CORKABLE: weakref.WeakKeyDictionary[object, CorkableTransport] = weakref.WeakKeyDictionary()


class CorkableTransport:
    """An asyncio transport whose writes gather while corked; everything else passes on."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._pending: list[bytes] = []
        self._corks = 0

    def cork(self) -> None:
        self._corks += 1

    def uncork(self) -> None:
        self._corks -= 1
        if self._corks == 0:
            self._send_pending()

    def _send_pending(self) -> None:
        if self._pending:
            data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def write(self, data: bytes) -> None:
        if self._corks:
            self._pending.append(data)
        else:
            self._transport.write(data)

    def writelines(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self.write(chunk)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def close(self) -> None:
        self._send_pending()  # written before close(): it still goes out, as asyncio promises
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def cork_this_pass(conn: object) -> None:
    """Cork `conn`'s socket until the event loop has run the callbacks already scheduled:
    requests whose tasks were just created send their packets then, and those packets
    leave in one send(). ftp-sftp's uploads issue several SFTP writes (each 8 SSH packets
    and their SSH_MSG_IGNOREs) per read from the client."""
    socket = _CORKABLE.get(conn)
    if socket is not None:
        socket.cork()
        asyncio.get_running_loop().call_soon(socket.uncork)


class CorkedChannel:
    """A relay endpoint over an SSH channel: the packets one write() makes leave together."""

    def __init__(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        self._chan = chan
        self._socket = _CORKABLE.get(chan.get_extra_info("connection"))

    def write(self, data: bytes) -> None:
        if self._socket is None:  # through a jump host: its socket is the gateway's
            self._chan.write(data)
            return
        self._socket.cork()
        try:
            self._chan.write(data)
        finally:
            self._socket.uncork()

    def write_eof(self) -> None:
        self._chan.write_eof()

    def pause_reading(self) -> None:
        self._chan.pause_reading()

    def resume_reading(self) -> None:
        self._chan.resume_reading()

    def close(self) -> None:
        self._chan.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._chan, name)


class _Handover(asyncio.Protocol):
    """Gives the SSH connection the corkable transport and passes every event on."""

    def __init__(self, inner: asyncio.Protocol) -> None:
        self._inner = inner
        self._socket: CorkableTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        readsize.set_read_size(transport, readsize.SSH_READ_SIZE)
        self._socket = CorkableTransport(cast(asyncio.Transport, transport))
        _CORKABLE[self._inner] = self._socket
        self._inner.connection_made(cast(asyncio.Transport, self._socket))

    def data_received(self, data: bytes) -> None:
        # What handling sshd's bytes sends leaves in one send(): above all the channel data
        # a WINDOW_ADJUST releases. An upload spends most of its time with sshd's window
        # shut (sshd grants 2 MiB), so most of its packets went out there, one send() per
        # SSH packet and one per SSH_MSG_IGNORE (py-spy, ftp-sftp STOR: 38 % of samples).
        socket = self._socket
        if socket is None:
            self._inner.data_received(data)
            return
        socket.cork()
        try:
            self._inner.data_received(data)
        finally:
            socket.uncork()

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class DirectConnector:
    """An asyncssh `tunnel` that is no tunnel: a plain TCP connection, corkable."""

    async def create_connection(self, session_factory: Any, remote_host: str,
                                remote_port: int) -> tuple[asyncio.BaseTransport, Any]:
        conn = session_factory()
        transport, _ = await outgoing.create_connection(
            lambda: _Handover(conn), remote_host, remote_port)
        return transport, conn

    def close(self) -> None:
        """Nothing to close: the TCP connection belongs to the SSH connection."""

    async def wait_closed(self) -> None:
        """Nothing to wait for (see close)."""
