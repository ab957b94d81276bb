"""One send() per event-loop pass for an SSH connection's socket.

asyncssh writes every SSH packet to its transport on its own, and before each packet after
the key exchange it writes an empty SSH_MSG_IGNORE as well (connection.py send_packet; an
old countermeasure for CBC ciphers, applied to every cipher). asyncio sends each write at once
when its buffer is empty, so an upload of 256 KiB read from the client became 16 send()
calls of 32 KiB and 36 bytes: 20 % of the proxy's samples sat in transport.write under
py-spy. Here the writes made during one pass of the loop are joined and leave in one send()
at the end of the pass, which costs a copy and no latency worth naming.

asyncssh takes an object with `create_connection(factory, host, port)` as its `tunnel`
(the jump-host hook); `DirectConnector` is such an object that opens a plain TCP connection
and hands asyncssh a coalescing transport over it.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast


class CoalescingTransport:
    """A write-batching facade over an asyncio transport; everything else passes through."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._flush_scheduled = False

    def write(self, data: bytes) -> None:
        if not data:
            return
        self._pending.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)

    def writelines(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        self._flush_scheduled = False
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def close(self) -> None:
        self.flush()  # what was written before close() still goes out, as asyncio promises
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _Handover(asyncio.Protocol):
    """Gives the SSH connection the coalescing transport and passes every event on."""

    def __init__(self, inner: asyncio.Protocol, loop: asyncio.AbstractEventLoop) -> None:
        self._inner = inner
        self._loop = loop

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        facade = CoalescingTransport(cast(asyncio.Transport, transport), self._loop)
        self._inner.connection_made(cast(asyncio.Transport, facade))

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class DirectConnector:
    """An asyncssh `tunnel` that is no tunnel: a plain TCP connection with coalesced writes."""

    async def create_connection(self, session_factory: Any, remote_host: str,
                                remote_port: int) -> tuple[asyncio.BaseTransport, Any]:
        loop = asyncio.get_running_loop()
        conn = session_factory()
        transport, _ = await loop.create_connection(lambda: _Handover(conn, loop),
                                                    remote_host, remote_port)
        return transport, conn

    def close(self) -> None:
        """Nothing to close: the TCP connection belongs to the SSH connection."""

    async def wait_closed(self) -> None:
        """Nothing to wait for (see close)."""
