"""A minimal blocking SOCKS client on our codec's encoders, for tests and probes that need
to see the exact reply code (curl only says that the proxy failed)."""

from __future__ import annotations

import ipaddress
import socket

from tunnel.socks import (
    AuthMethod,
    Command,
    encode_socks4_request,
    encode_socks5_auth,
    encode_socks5_greeting,
    encode_socks5_request,
)


def read_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError(f"proxy closed after {len(data)} of {count} reply bytes")
        data += chunk
    return data


def read_socks5_reply(sock: socket.socket) -> tuple[int, str, int]:
    """(REP, BND.ADDR, BND.PORT) of one SOCKS5 reply (RFC 1928 §6)."""
    head = read_exactly(sock, 4)
    atyp = head[3]
    if atyp in (1, 4):
        host = str(ipaddress.ip_address(read_exactly(sock, 4 if atyp == 1 else 16)))
    else:
        host = read_exactly(sock, read_exactly(sock, 1)[0]).decode()
    return head[1], host, int.from_bytes(read_exactly(sock, 2), "big")


def read_socks4_reply(sock: socket.socket) -> tuple[int, str, int]:
    """(CD, DSTIP, DSTPORT) of one SOCKS4 reply: CD 0x5A granted, 0x5B refused."""
    reply = read_exactly(sock, 8)
    return reply[1], str(ipaddress.IPv4Address(reply[4:8])), int.from_bytes(reply[2:4], "big")


def socks5_request(proxy: tuple[str, int], command: Command, host: str, port: int,
                   credentials: tuple[str, str] | None = None,
                   timeout: float = 30.0) -> tuple[int, socket.socket, str, int]:
    """Returns (REP, socket, BND.ADDR, BND.PORT)."""
    sock = socket.create_connection(proxy, timeout=timeout)
    method = AuthMethod.USERNAME_PASSWORD if credentials else AuthMethod.NO_AUTH
    sock.sendall(encode_socks5_greeting([method]))
    chosen = read_exactly(sock, 2)
    if chosen[1] != method:
        sock.close()
        raise ConnectionError(f"proxy chose auth method 0x{chosen[1]:02x}")
    if credentials:
        sock.sendall(encode_socks5_auth(*credentials))
        if read_exactly(sock, 2)[1] != 0:
            sock.close()
            raise ConnectionError("proxy refused the SOCKS5 credentials")
    sock.sendall(encode_socks5_request(command, host, port))
    code, bound_host, bound_port = read_socks5_reply(sock)
    return code, sock, bound_host, bound_port


def socks4_request(proxy: tuple[str, int], command: Command, host: str, port: int,
                   timeout: float = 30.0) -> tuple[int, socket.socket, str, int]:
    """Returns (CD, socket, DSTIP, DSTPORT)."""
    sock = socket.create_connection(proxy, timeout=timeout)
    sock.sendall(encode_socks4_request(command, host, port))
    code, bound_host, bound_port = read_socks4_reply(sock)
    return code, sock, bound_host, bound_port


def socks5_connect(proxy: tuple[str, int], host: str, port: int,
                   credentials: tuple[str, str] | None = None,
                   timeout: float = 30.0) -> tuple[int, socket.socket]:
    """Returns (REP code, socket). The socket is open and relaying when REP is 0."""
    code, sock, _, _ = socks5_request(proxy, Command.CONNECT, host, port, credentials, timeout)
    return code, sock


def socks4_connect(proxy: tuple[str, int], host: str, port: int,
                   timeout: float = 30.0) -> tuple[int, socket.socket]:
    """Returns (CD code, socket): 0x5A granted, 0x5B refused."""
    code, sock, _, _ = socks4_request(proxy, Command.CONNECT, host, port, timeout)
    return code, sock


def read_until(sock: socket.socket, marker: bytes, limit: int = 1 << 16) -> bytes:
    data = b""
    while marker not in data and len(data) < limit:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data
