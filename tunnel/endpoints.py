"""The asyncio and asyncssh protocol objects that feed one side of a Relay, and the direct
TCP connect that uses one.

They hold no logic: each callback is passed to the relay with the side it stands for.
"""

from __future__ import annotations

import asyncio
import socket
from typing import cast

import asyncssh

from tunnel import outgoing
from tunnel.addresses import is_loopback
from tunnel.coalesce import CorkedChannel
from tunnel.errors import UpstreamError
from tunnel.failures import reply_for_os_error
from tunnel.relay import Side, Sink


class _RelayFeed:
    """The callbacks asyncio protocols and asyncssh sessions share, passed to the relay."""

    def __init__(self, relay: Sink, side: Side) -> None:
        self.relay = relay
        self.side = side

    def eof_received(self) -> bool:
        self.relay.eof(self.side)
        return True

    def pause_writing(self) -> None:
        self.relay.pause_writing(self.side)

    def resume_writing(self) -> None:
        self.relay.resume_writing(self.side)

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.lost(self.side, exc)


class TCPEnd(_RelayFeed, asyncio.Protocol):
    """A TCP connection we opened (direct upstream, or the client's active-mode port)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        transport = cast(asyncio.Transport, transport)
        self.relay.attach(self.side, transport)

    def data_received(self, data: bytes) -> None:
        self.relay.data(self.side, data)


class SSHEnd(_RelayFeed, asyncssh.SSHTCPSession[bytes]):
    """A direct-tcpip channel through the SSH server."""

    def __init__(self, relay: Sink, side: Side = Side.SERVER) -> None:
        super().__init__(relay, side)

    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        self.relay.attach(self.side, CorkedChannel(chan))

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.relay.data(self.side, data)


async def connect_tcp(relay: Sink, side: Side, host: str, port: int, timeout: float,
                      what: str) -> asyncio.Transport:
    """A direct TCP connection feeding `side` of the relay. Failures become UpstreamError
    with the SOCKS reply for them (failures.py); `what` names the connection in the text."""
    try:
        transport, _ = await asyncio.wait_for(
            outgoing.create_connection(lambda: TCPEnd(relay, side), host, port), timeout)
    except (OSError, TimeoutError) as exc:
        raise UpstreamError(f"{what} to {host}:{port} failed: {exc or 'timed out'}",
                            reply_for_os_error(exc)) from None
    return transport


def is_own_address_of(peer: str, host: str) -> bool:
    """RFC 2577: an active-mode (PORT/EPRT) address must be the client's own. A client on
    this host may name any address of this host, as curl's `-P <iface address>` does; a
    remote client (allow_relay) only its own address."""
    if host == peer:
        return True
    return is_local_client(peer) and owned_by_this_host(host)


def is_local_client(peer: str) -> bool:
    """A client on this host: loopback, or (a connection the kernel redirected here, whose
    source stays the address the client's route chose) an address this host owns."""
    return is_loopback(peer) or owned_by_this_host(peer)


def owned_by_this_host(host: str) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host.strip("[]"), 0))  # succeeds only for an address this host owns
    except OSError:
        return False
    return True
