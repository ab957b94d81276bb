"""An FTP data connection that ends at the proxy (the `ftp-sftp` action), as an asyncio
protocol that knows how it really ended.

Why not a relay or a stream: an upload may be committed only when the client's data
connection ended with a FIN after its last byte (RFC 959 §3.4: in stream mode the end of
the file *is* the close). A reset, a cut or a stall must not look like that. The passive
data connection arrives as a SOCKS request; `SocksSession` hands its transport straight to
one of these (`transport.set_protocol`), so the client's own FIN or RST reaches the
ftp-sftp session as it happened, with no relay and no extra copy in between. An active one
is a connection the proxy makes to the client's PORT address, with the same protocol.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections import deque
from collections.abc import Callable
from typing import cast

from tunnel import readsize
from tunnel.sftp_ops import Ending

HIGH_WATER = 4 << 20  # bytes read ahead of the SFTP writes before reading pauses
IDLE_TIMEOUT = 300.0  # seconds without progress either way (vsftpd's data_connection_timeout)


class DataCut(Exception):
    """The data connection ended other than cleanly; `ending` says how."""

    def __init__(self, ending: Ending, detail: str = "") -> None:
        super().__init__(detail or ending.value)
        self.ending = ending
        self.detail = detail


class DataConnection(asyncio.Protocol):
    def __init__(self, on_closed: Callable[[DataConnection], None] | None = None,
                 idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.on_closed = on_closed
        self.idle_timeout = idle_timeout
        self.transport: asyncio.Transport | None = None
        self.bytes_up = 0  # from the client (an upload)
        self.bytes_down = 0  # to the client
        self.aborted = False  # closed on purpose (ABOR, or the session ended)
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._eof = False
        self._lost = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._writable = True
        self._closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # -- asyncio callbacks -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = cast(asyncio.Transport, transport)
        readsize.set_read_size(transport, None)  # not the SOCKS session's 1 MiB: readsize.py
        if not self.transport.is_reading():  # a SOCKS session paused it for its handshake
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        self.bytes_up += len(data)
        if self._buffered >= HIGH_WATER and self.transport is not None and not self._paused:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return True  # half-open: the transfer's own reply comes first, then our close

    def pause_writing(self) -> None:
        self._writable = False

    def resume_writing(self) -> None:
        self._writable = True
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost, self._error = True, exc
        self._wake()
        if not self._closed.done():
            self._closed.set_result(None)
        if self.on_closed is not None:
            on_closed, self.on_closed = self.on_closed, None
            on_closed(self)

    # -- for the transfer --------------------------------------------------------------------
    @property
    def ending(self) -> Ending:
        """How the connection ended, once it has: ABOR, a clean FIN, or a cut."""
        if self.aborted:
            return Ending.ABORTED
        if self._eof and self._error is None:
            return Ending.COMPLETE
        return Ending.RESET

    def _cut(self) -> DataCut:
        if self.aborted:
            return DataCut(Ending.ABORTED)
        detail = str(self._error) if self._error is not None else "closed before its end"
        return DataCut(Ending.RESET, detail)

    async def read(self, limit: int) -> bytes:
        """Up to `limit` bytes; b"" at the clean end (the client's FIN). Raises DataCut for
        any other end, and after `idle_timeout` without a byte."""
        while not self._chunks:
            if self.aborted or (self._lost and not self._eof):
                raise self._cut()
            if self._eof:
                return b""
            await self._wait()
        data = self._chunks.popleft()
        if len(data) > limit:
            self._chunks.appendleft(data[limit:])
            data = data[:limit]
        self._buffered -= len(data)
        if self._paused and self._buffered < HIGH_WATER // 2 and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    async def read_block(self, size: int) -> bytes:
        """Up to `size` bytes, fewer only at the end: a socket read returns what has arrived
        (often 64 KiB), and an SFTP write that small would be a round trip of its own."""
        parts: list[bytes] = []
        have = 0
        while have < size:
            part = await self.read(size - have)
            if not part:
                break
            parts.append(part)
            have += len(part)
        return b"".join(parts)

    async def write(self, data: bytes) -> None:
        """Send, waiting while the client is slower than us (flow control, not a buffer)."""
        if self.aborted or self._lost or self.transport is None:
            raise self._cut()
        self.transport.write(data)
        self.bytes_down += len(data)
        while not self._writable:
            if self.aborted or self._lost:
                raise self._cut()
            await self._wait()

    async def finish(self) -> Ending:
        """Close after the last byte (the FIN that ends the file, RFC 959 §3.4) and wait
        until the kernel took every byte or the client cut the connection."""
        if self.transport is not None and not self._lost:
            self.transport.close()
        try:
            await asyncio.wait_for(asyncio.shield(self._closed), self.idle_timeout)
        except TimeoutError:
            self.abort()
            return Ending.TIMEOUT
        if self.aborted:
            return Ending.ABORTED
        return Ending.RESET if self._error is not None else Ending.COMPLETE

    def abort(self, on_purpose: bool = False) -> None:
        """Reset the connection (RST, not FIN): a client must not take a cut download for
        a whole one. `on_purpose` (ABOR) makes a waiting transfer end as ABORTED."""
        self.aborted = self.aborted or on_purpose
        if self.transport is not None and not self._lost:
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                # SO_LINGER on with a zero timeout: close() sends RST (socket(7)).
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.transport.abort()
        self._wake()

    def close(self) -> None:
        if self.transport is not None and not self._lost:
            self.transport.close()

    async def _wait(self) -> None:
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        try:
            await asyncio.wait_for(self._waiter, self.idle_timeout)
        except TimeoutError:
            self.abort()
            raise DataCut(Ending.TIMEOUT, f"no progress for {self.idle_timeout:.0f} s") from None
        finally:
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
