"""A minimal blocking SOCKS client on our codec's encoders, for tests and probes that need
to see the exact reply code (curl only says that the proxy failed)."""

from __future__ import annotations

import socket

from tunnel.socks import (
    AuthMethod,
    Command,
    encode_socks4_request,
    encode_socks5_auth,
    encode_socks5_greeting,
    encode_socks5_request,
)


def _recv_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError(f"proxy closed after {len(data)} of {count} reply bytes")
        data += chunk
    return data


def socks5_connect(proxy: tuple[str, int], host: str, port: int,
                   credentials: tuple[str, str] | None = None,
                   timeout: float = 30.0) -> tuple[int, socket.socket]:
    """Returns (REP code, socket). The socket is open and relaying when REP is 0."""
    sock = socket.create_connection(proxy, timeout=timeout)
    method = AuthMethod.USERNAME_PASSWORD if credentials else AuthMethod.NO_AUTH
    sock.sendall(encode_socks5_greeting([method]))
    chosen = _recv_exactly(sock, 2)
    if chosen[1] != method:
        sock.close()
        raise ConnectionError(f"proxy chose auth method 0x{chosen[1]:02x}")
    if credentials:
        sock.sendall(encode_socks5_auth(*credentials))
        if _recv_exactly(sock, 2)[1] != 0:
            sock.close()
            raise ConnectionError("proxy refused the SOCKS5 credentials")
    sock.sendall(encode_socks5_request(Command.CONNECT, host, port))
    head = _recv_exactly(sock, 4)
    atyp = head[3]
    length = {1: 4, 4: 16}.get(atyp) or _recv_exactly(sock, 1)[0]
    _recv_exactly(sock, length + 2)
    return head[1], sock


def socks4_connect(proxy: tuple[str, int], host: str, port: int,
                   timeout: float = 30.0) -> tuple[int, socket.socket]:
    """Returns (CD code, socket): 0x5A granted, 0x5B refused."""
    sock = socket.create_connection(proxy, timeout=timeout)
    sock.sendall(encode_socks4_request(Command.CONNECT, host, port))
    return _recv_exactly(sock, 8)[1], sock


def read_until(sock: socket.socket, marker: bytes, limit: int = 1 << 16) -> bytes:
    data = b""
    while marker not in data and len(data) < limit:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data
