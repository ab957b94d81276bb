"""The SSH socket's write coalescing (tunnel/coalesce.py), over a recording transport."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from tunnel.coalesce import CoalescingTransport


class Recorder:
    """Stands in for an asyncio transport: records what reaches the socket."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = self.aborted = False

    def write(self, data: bytes) -> None:
        self.sent.append(data)

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 7

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("10.0.0.1", 22) if name == "peername" else default


def coalescing(loop: asyncio.AbstractEventLoop) -> tuple[CoalescingTransport, Recorder]:
    recorder = Recorder()
    return CoalescingTransport(cast(asyncio.Transport, recorder), loop), recorder


def test_writes_of_one_loop_pass_leave_in_one_send_in_order() -> None:
    async def run() -> None:
        transport, socket = coalescing(asyncio.get_running_loop())
        transport.write(b"ignore")
        transport.write(b"")
        transport.writelines([b"data-1", b"data-2"])
        assert socket.sent == [] and transport.get_write_buffer_size() == 7 + 18
        await asyncio.sleep(0)
        assert socket.sent == [b"ignoredata-1data-2"]
        transport.write(b"next pass")
        await asyncio.sleep(0)
        assert socket.sent == [b"ignoredata-1data-2", b"next pass"]

    asyncio.run(run())


def test_close_sends_what_was_written_first_and_abort_drops_it() -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        transport, socket = coalescing(loop)
        transport.write(b"disconnect")
        transport.close()
        assert socket.sent == [b"disconnect"] and socket.closed
        transport, socket = coalescing(loop)
        transport.write(b"never")
        transport.abort()
        await asyncio.sleep(0)
        assert socket.sent == [] and socket.aborted

    asyncio.run(run())


def test_everything_else_is_the_real_transport() -> None:
    async def run() -> None:
        transport, _ = coalescing(asyncio.get_running_loop())
        assert transport.get_extra_info("peername") == ("10.0.0.1", 22)

    asyncio.run(run())
