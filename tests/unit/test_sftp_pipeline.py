"""The SFTP request pipeline against a file in memory: order, depth, short reads, the end,
failed writes (a fake server: these are the pipeline's rules, not asyncssh's)."""

from __future__ import annotations

import asyncio
import random

import pytest

from tunnel.sftp_pipeline import PipelinedReader, PipelinedWriter, depth_for

CONTENT = bytes(random.Random(7).randrange(256) for _ in range(100_000))


class Server:
    def __init__(self, short: bool = False) -> None:
        self.in_flight = self.most = 0
        self.short = short
        self.written: dict[int, bytes] = {}
        self.fail_at: int | None = None

    async def read_at(self, offset: int, size: int) -> bytes:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        await asyncio.sleep(random.random() / 1000)  # replies come in any order
        self.in_flight -= 1
        if self.short:
            size = min(size, 1000)  # a server that never returns more than 1000 bytes
        return CONTENT[offset:offset + size]

    async def write_at(self, offset: int, data: bytes) -> object:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        await asyncio.sleep(random.random() / 1000)
        self.in_flight -= 1
        if offset == self.fail_at:
            raise OSError("disk full")
        self.written[offset] = data
        return None


async def read_all(reader: PipelinedReader) -> bytes:
    out = b""
    while block := await reader.next():
        out += block
    return out


@pytest.mark.parametrize("short", [False, True])
def test_reads_come_in_file_order_with_the_depth_in_flight(short: bool) -> None:
    server = Server(short)
    got = asyncio.run(read_all(PipelinedReader(server.read_at, 5, 4096, 8)))
    assert got == CONTENT[5:]
    assert server.most == 8


def test_a_file_that_ends_on_a_block_boundary_and_an_empty_one() -> None:
    server = Server()
    assert asyncio.run(read_all(PipelinedReader(server.read_at, 100_000 - 8192, 4096, 4))) \
        == CONTENT[-8192:]
    assert asyncio.run(read_all(PipelinedReader(server.read_at, 100_000, 4096, 4))) == b""


def test_writes_keep_their_offsets_and_the_depth() -> None:
    server = Server()

    async def run() -> None:
        writer = PipelinedWriter(server.write_at, 10, 6)
        for start in range(0, len(CONTENT), 3000):
            await writer.write(CONTENT[start:start + 3000])
        await writer.flush()

    asyncio.run(run())
    assert b"".join(server.written[k] for k in sorted(server.written)) == CONTENT
    assert min(server.written) == 10 and server.most == 6


def test_a_failed_write_is_raised_never_lost() -> None:
    server = Server()
    server.fail_at = 3000

    async def run() -> None:
        writer = PipelinedWriter(server.write_at, 0, 4)
        for start in range(0, 12000, 3000):
            await writer.write(CONTENT[start:start + 3000])
        await writer.flush()

    with pytest.raises(OSError, match="disk full"):
        asyncio.run(run())


def test_depth_is_a_byte_budget_with_a_floor() -> None:
    assert depth_for(8 << 20, 261120) == 32
    assert depth_for(1 << 20, 4 << 20) == 4
