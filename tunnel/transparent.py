"""Connections the kernel redirected to a transparent listener (nftables `redirect`; the
ruleset comes from `tunnel nft`). The client knows nothing of SOCKS: its real destination is
the connection's original destination in conntrack (SO_ORIGINAL_DST), and from there on the
session is the one a SOCKS CONNECT to that address would get: the same rules, actions,
profiles, data-connection matching and audit record (`version = "transparent"`).

What differs is only how the client is answered: there is no SOCKS reply to send, and a
refusal is a TCP reset, the nearest a transparent path has to "connection refused".
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import sys

from tunnel.addresses import plain_ip
from tunnel.context import DataOwner
from tunnel.nftset import Added, NftError
from tunnel.session import SocksSession
from tunnel.socks import AddressType, Command, Reply, Request

log = logging.getLogger("tunnel.transparent")

# linux/netfilter_ipv4.h SO_ORIGINAL_DST and linux/netfilter_ipv6/ip6_tables.h
# IP6T_SO_ORIGINAL_DST: both 80, at IPPROTO_IP and IPPROTO_IPV6.
SO_ORIGINAL_DST = 80
_SOCKADDR_IN6_SIZE = 28


def parse_original_dst(raw: bytes) -> tuple[str, int]:
    """A struct sockaddr_in or sockaddr_in6 as getsockopt returns it: (address, port).
    The family is in host byte order, the port in network order. Raises ValueError."""
    if len(raw) < 8:
        raise ValueError(f"sockaddr of {len(raw)} bytes is too short")
    family = int.from_bytes(raw[:2], sys.byteorder)
    (port,) = struct.unpack("!H", raw[2:4])
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), port
    if family == socket.AF_INET6 and len(raw) >= 24:
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port
    raise ValueError(f"sockaddr of family {family} ({len(raw)} bytes) is not IPv4 or IPv6")


def original_destination(sock: socket.socket) -> tuple[str, int] | None:
    """Where the client meant to go, or None if conntrack knows no such connection. An IPv4
    client on an IPv6 listener is an IPv4 connection to conntrack: both levels are asked."""
    levels = [(socket.IPPROTO_IPV6, _SOCKADDR_IN6_SIZE)] if sock.family == socket.AF_INET6 else []
    levels.append((socket.IPPROTO_IP, 16))
    for level, size in levels:
        try:
            return parse_original_dst(sock.getsockopt(level, SO_ORIGINAL_DST, size))
        except OSError:
            continue
    return None


def _plain(host: str) -> str:
    return str(plain_ip(host) or host)


def _same_endpoint(a: tuple[str, int], b: tuple[str, int]) -> bool:
    return _plain(a[0]) == _plain(b[0]) and a[1] == b[1]


class TransparentSession(SocksSession):
    """One redirected client connection: no handshake, the request is the destination."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._captured: Added = []  # data-connection set elements, removed at the end
        super().connection_made(transport)
        self.record.version = "transparent"
        if self._closed:  # refused as a remote client (allow_relay = false)
            return
        sock = self.client_socket()
        listener = transport.get_extra_info("sockname")
        destination = original_destination(sock) if sock is not None else None
        if destination is None or _same_endpoint(destination, (listener[0], listener[1])):
            # Connected to the listener itself: nothing was redirected, so there is no
            # destination to serve, and a client that can reach the port is refused.
            log.warning("session %d: %s connected to transparent listener %s:%d directly, "
                        "not through a redirect: refused", self.id, self.record.client,
                        listener[0], listener[1])
            self._fail(Reply.NOT_ALLOWED, "refused",
                       "not a redirected connection: no original destination")
            return
        host, port = destination
        self.record.dst, self.record.port = host, port
        kind = AddressType.IPV6 if ":" in host else AddressType.IPV4
        self._begin(Request(5, Command.CONNECT, _plain(host), port, kind))

    def arrange_active(self, host: str, port: int) -> None:
        """The client believes it talks to the FTP server, and some clients (ncftp, Java's
        Commons Net) accept an active-mode data connection only from the server's address:
        the ruleset's postrouting chain gives ours that source address."""
        capture = self.ctx.capture
        if capture is None:
            return
        try:
            self._captured += capture.masquerade(host, port, self.record.dst)
        except NftError as exc:
            log.warning("session %d: the active-mode connection to %s:%d will come from this "
                        "host's address, not the FTP server's: %s", self.id, host, port, exc)

    def end(self, result: str, error: str = "") -> None:
        """The data ports this session announced are no longer redirected."""
        super().end(result, error)
        if self._captured and self.ctx.capture is not None:
            self.ctx.capture.forget(self._captured)
        self._captured = []

    def _client_dialled(self) -> tuple[str, int]:
        """The client's socket is connected to where it meant to go, not to our listener:
        the redirect happens below sockets."""
        return self.record.dst, self.record.port

    def _answer(self, host: str, port: int) -> None:
        """Nothing to say: the client thinks it is already connected."""

    def _refuse(self, reply: Reply) -> None:
        """A reset when the session closes, since no SOCKS reply can carry the refusal."""
        sock = self.client_socket()
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def expect_data(self, owner: DataOwner, hosts: set[str], port: int,
                    target_host: str) -> bool:
        """The kernel must redirect the data connection too, or it would leave in clear."""
        super().expect_data(owner, hosts, port, target_host)
        capture = self.ctx.capture
        try:
            if capture is None:
                raise NftError("no data capture in this daemon")
            self._captured += capture.expect(self.client_ip, hosts, port)
        except NftError as exc:
            log.error("session %d: cannot capture the data connection to port %d: %s; "
                      "is the table of `tunnel nft` loaded?", self.id, port, exc)
            return False
        return True
