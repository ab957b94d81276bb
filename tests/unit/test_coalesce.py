"""Corking an SSH connection's socket (tunnel/coalesce.py), over a recording transport."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import asyncssh

from tunnel.coalesce import _CORKABLE, CorkableTransport, CorkedChannel


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


class FakeChannel:
    """An SSH channel that, like asyncssh, sends a chunk as an IGNORE plus a data packet for
    each 4 bytes (32 KiB in life)."""

    def __init__(self, conn: object, socket: CorkableTransport) -> None:
        self.conn, self.socket = conn, socket

    def get_extra_info(self, name: str) -> object:
        return self.conn if name == "connection" else None

    def write(self, data: bytes) -> None:
        for at in range(0, len(data), 4):
            self.socket.write(b"i")
            self.socket.write(data[at:at + 4])


class GatewayChannelConnection:
    """An SSH connection that runs inside another's channel (a jump host)."""


def corkable() -> tuple[CorkableTransport, Recorder]:
    recorder = Recorder()
    return CorkableTransport(cast(asyncio.Transport, recorder)), recorder


def test_uncorked_writes_go_straight_through() -> None:
    socket, sent = corkable()
    socket.write(b"a")
    socket.writelines([b"b", b"c"])
    assert sent.sent == [b"a", b"b", b"c"]


def test_corked_writes_leave_in_one_send_when_the_last_cork_is_pulled() -> None:
    socket, sent = corkable()
    socket.cork()
    socket.write(b"ignore")
    socket.cork()
    socket.write(b"data")
    socket.uncork()
    assert sent.sent == [] and socket.get_write_buffer_size() == 7 + 10
    socket.uncork()
    assert sent.sent == [b"ignoredata"]


def test_a_relay_write_into_a_channel_is_one_send() -> None:
    socket, sent = corkable()
    conn = object.__new__(asyncssh.SSHClientConnection)
    _CORKABLE[conn] = socket
    channel = CorkedChannel(cast(asyncssh.SSHTCPChannel[bytes], FakeChannel(conn, socket)))
    channel.write(b"0123456789")
    assert sent.sent == [b"i0123i4567i89"]
    through_gateway = CorkedChannel(cast(asyncssh.SSHTCPChannel[bytes],
                                         FakeChannel(GatewayChannelConnection(), socket)))
    through_gateway.write(b"ab")  # no corkable socket of its own: written as it comes
    assert sent.sent[1:] == [b"i", b"ab"]


def test_close_sends_what_was_written_and_abort_drops_it() -> None:
    socket, sent = corkable()
    socket.cork()
    socket.write(b"disconnect")
    socket.close()
    assert sent.sent == [b"disconnect"] and sent.closed
    socket, sent = corkable()
    socket.cork()
    socket.write(b"never")
    socket.abort()
    socket.uncork()
    assert sent.sent == [] and sent.aborted


def test_everything_else_is_the_real_transport() -> None:
    socket, _ = corkable()
    assert socket.get_extra_info("peername") == ("10.0.0.1", 22)
