"""SFTP reads and writes as a pipeline: a steady number of requests in flight, in file order.

asyncssh's SFTPClientFile.read/write split one call into parallel requests, but each call
waits for all of its requests (and copies them into one buffer) before the next call can
start: the pipe drains at every call's boundary, and a slow round trip is paid once per
call. Here each request is issued as soon as one leaves the window, its reply is handed on
as it comes, and the bytes in flight are a budget (the channel's window) rather than a call
size: OpenSSH's `sftp` keeps 64 requests of 32 KiB (2 MiB) in flight; with sshd's 255 KiB
requests, an 8 MiB budget is 32 of them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

# (offset, length) -> the bytes there, b"" past the end of the file
ReadAt = Callable[[int, int], Coroutine[Any, Any, bytes]]
WriteAt = Callable[[int, bytes], Coroutine[Any, Any, object]]


def depth_for(budget: int, block: int, least: int = 4) -> int:
    """Requests in flight for a byte budget: at least `least`, so a small budget or a huge
    block still overlaps the round trip with the transfer."""
    return max(least, budget // max(block, 1))


class PipelinedReader:
    """Blocks of a file from `offset` on, in order; `next()` returns b"" at the end."""

    def __init__(self, read_at: ReadAt, offset: int, block: int, depth: int) -> None:
        self._read_at = read_at
        self._next_offset = offset
        self._block = block
        self._depth = depth
        self._pending: deque[tuple[int, int, asyncio.Task[bytes]]] = deque()
        self._end_seen = False

    async def next(self) -> bytes:
        self._fill()
        while self._pending:
            offset, size, task = self._pending.popleft()
            data = await task
            if not data:  # the end of the file: every later request is past it too
                self._end_seen = True
                self.close()
                return b""
            if len(data) < size:
                # A short read (a server may return less than asked without being at the
                # end): the rest of this block comes before any later one.
                self._pending.appendleft(self._request(offset + len(data), size - len(data)))
            self._fill()
            return data
        return b""

    def close(self) -> None:
        """Cancel what is still in flight (an aborted or finished transfer)."""
        for _, _, task in self._pending:
            _discard(task)
        self._pending.clear()

    def _fill(self) -> None:
        while not self._end_seen and len(self._pending) < self._depth:
            self._pending.append(self._request(self._next_offset, self._block))
            self._next_offset += self._block

    def _request(self, offset: int, size: int) -> tuple[int, int, asyncio.Task[bytes]]:
        return offset, size, asyncio.get_running_loop().create_task(
            self._read_at(offset, size))


class PipelinedWriter:
    """Writes at increasing offsets, up to `depth` in flight. A failed write is raised by the
    next `write()` or by `flush()`, never lost."""

    def __init__(self, write_at: WriteAt, offset: int, depth: int) -> None:
        self._write_at = write_at
        self.offset = offset
        self._depth = depth
        self._pending: deque[asyncio.Task[object]] = deque()

    async def write(self, data: bytes) -> None:
        while self._pending and (len(self._pending) >= self._depth or self._pending[0].done()):
            await self._pending.popleft()
        self._pending.append(asyncio.get_running_loop().create_task(
            self._write_at(self.offset, data)))
        self.offset += len(data)

    async def flush(self) -> None:
        """Every write done, in order; the first failure is raised."""
        while self._pending:
            await self._pending.popleft()

    def close(self) -> None:
        for task in self._pending:
            _discard(task)
        self._pending.clear()


def _discard(task: asyncio.Task[object] | asyncio.Task[bytes]) -> None:
    """Cancel a request we no longer want, and consume its outcome, so that a request that
    failed anyway (the channel closing under it) is not reported as never retrieved."""
    task.cancel()
    task.add_done_callback(_consume)


def _consume(task: asyncio.Future[object] | asyncio.Future[bytes]) -> None:
    with contextlib.suppress(BaseException):
        task.exception()
