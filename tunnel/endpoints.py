"""The asyncio and asyncssh protocol objects that feed one side of a Relay.

They hold no logic: each callback is passed to the relay with the side it stands for.
"""

from __future__ import annotations

import asyncio
from typing import cast

import asyncssh

from tunnel.relay import Relay, Side


class TCPEnd(asyncio.Protocol):
    """A TCP connection we opened (direct upstream, or the client's active-mode port)."""

    def __init__(self, relay: Relay, side: Side) -> None:
        self.relay = relay
        self.side = side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        transport = cast(asyncio.Transport, transport)
        self.relay.attach(self.side, transport)

    def data_received(self, data: bytes) -> None:
        self.relay.data(self.side, data)

    def eof_received(self) -> bool:
        self.relay.eof(self.side)
        return True

    def pause_writing(self) -> None:
        self.relay.pause_writing(self.side)

    def resume_writing(self) -> None:
        self.relay.resume_writing(self.side)

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.lost(self.side, exc)


class SSHEnd(asyncssh.SSHTCPSession[bytes]):
    """A direct-tcpip channel through the SSH server."""

    def __init__(self, relay: Relay, side: Side = Side.SERVER) -> None:
        self.relay = relay
        self.side = side

    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        self.relay.attach(self.side, chan)

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.relay.data(self.side, data)

    def eof_received(self) -> bool:
        self.relay.eof(self.side)
        return True

    def pause_writing(self) -> None:
        self.relay.pause_writing(self.side)

    def resume_writing(self) -> None:
        self.relay.resume_writing(self.side)

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.lost(self.side, exc)
