"""What an SSH connection has received and not yet parsed, read from the front without
copying the rest.

asyncssh keeps it in one `bytes`: each read is appended (`_inpbuf += data`, a copy of all
that waits), and each packet taken from the front leaves `_inpbuf = _inpbuf[n:]`, twice per
packet (header, then body), each a copy of everything behind it: the copying grows with the
square of the read. With asyncio's 256 KiB reads it cost little that an A/B could see; it is
what made larger reads a loss (readsize.SSH_READ_SIZE, 1 MiB: 50 downloads at once took
2.91 CPU s/GiB without this class and 1.86 with it, bench/ab.py inbuffer).

`InBuffer` answers the same operations asyncssh uses (len, truth, `[a:b]`, `[n:]`, `+=`,
`find`) over a list of the reads as they came: `[a:b]` copies only those bytes, `[n:]` and
`+=` copy nothing. `install()` makes asyncssh's connections start one at their first read;
the parsing code stays asyncssh's own.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from asyncssh import connection as asyncssh_connection

log = logging.getLogger("tunnel.ssh")


class InBuffer:
    """Received bytes, consumed from the front. Slices with a stop copy those bytes out;
    a slice without one (`buf[n:]`) drops n bytes from the front and returns the buffer
    itself, which is what asyncssh's `self._inpbuf = self._inpbuf[n:]` means."""

    __slots__ = ("_chunks", "_size", "_start")

    def __init__(self, data: bytes = b"") -> None:
        self._chunks: deque[bytes] = deque()
        self._start = 0  # into the first chunk
        self._size = 0
        if data:
            self += data

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0

    def __bytes__(self) -> bytes:
        return self._copy(0, self._size)

    def __iadd__(self, data: bytes) -> InBuffer:
        if data:
            self._chunks.append(data)
            self._size += len(data)
        return self

    def __getitem__(self, key: slice) -> Any:
        if not isinstance(key, slice) or key.step not in (None, 1):
            return bytes(self)[key]
        start, stop, _ = key.indices(self._size)
        if key.stop is None:
            self._drop(start)
            return self
        return self._copy(start, max(start, stop))

    def find(self, sub: bytes, start: int = 0, end: int | None = None) -> int:
        return bytes(self).find(sub, start, self._size if end is None else end)

    def _copy(self, start: int, stop: int) -> bytes:
        begin = self._start + start
        first = self._chunks[0] if self._chunks else b""
        if stop - start <= len(first) - begin:  # within the first read: the usual case
            return first[begin:self._start + stop]
        pieces, need = [], stop - start
        for chunk in self._chunks:
            if begin >= len(chunk):
                begin -= len(chunk)
                continue
            piece = chunk[begin:begin + need]
            pieces.append(piece)
            need -= len(piece)
            begin = 0
            if need == 0:
                break
        return b"".join(pieces)

    def _drop(self, count: int) -> None:
        self._size -= count
        self._start += count
        while self._chunks and self._start >= len(self._chunks[0]):
            self._start -= len(self._chunks.popleft())
        if not self._chunks:
            self._start = 0


def _data_received(self: Any, data: bytes, datatype: Any = None) -> None:
    """asyncssh's `SSHConnection.data_received`, over an InBuffer."""
    buffer = self._inpbuf
    if buffer.__class__ is not InBuffer:  # b'' from __init__ or a cleanup
        buffer = self._inpbuf = InBuffer(buffer)
    buffer += data
    self._recv_data()


def install() -> bool:
    """Patch asyncssh once; False (with a warning) where its connection is not as expected."""
    cls = asyncssh_connection.SSHConnection
    if getattr(cls, "_tunnel_inbuffer_patched", False):
        return True
    if cls.data_received.__code__.co_names != ("_inpbuf", "_recv_data"):
        log.warning("asyncssh's data_received has changed: its input buffer is left as it is")
        return False
    cls.data_received = _data_received  # type: ignore[method-assign]
    cls._tunnel_inbuffer_patched = True  # type: ignore[attr-defined]
    return True
