"""Every TCP connection the daemon opens goes through `create_connection` here: to SSH
servers, `direct` and fallback upstreams, and active-mode data connections to clients.

With transparent listeners the kernel redirects matching connections to the daemon, and the
daemon's own connections match the same rules (an SSH server that is also the FTP host). So
each of its sockets carries a mark (SO_MARK), and the ruleset `tunnel nft` prints lets marked
connections pass before any redirect: a loop cannot happen whatever the rules say.

A mark rather than the daemon's user id (`meta skuid`): it singles out the daemon's sockets
even when the FTP clients run as the same user (root on an appliance, one batch account),
and it is the same test in the output hook whatever user the service runs as. Setting it
needs CAP_NET_ADMIN, which filling the data-connection set needs anyway (nftset.py).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import TypeVar

P = TypeVar("P", bound=asyncio.BaseProtocol)

_mark: int | None = None  # process-wide: the daemon sets it once, before it serves


def use_mark(mark: int | None) -> None:
    """Mark every connection opened from now on (None: no mark). Raises PermissionError
    at once if this process may not set marks, rather than on every connection later."""
    if mark is not None:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
    global _mark
    _mark = mark


def current_mark() -> int | None:
    return _mark


async def create_connection(factory: Callable[[], P], host: str, port: int
                            ) -> tuple[asyncio.Transport, P]:
    """`loop.create_connection(factory, host, port)`, the socket marked before it connects.
    Addresses are tried in resolver order; the last failure is raised."""
    loop = asyncio.get_running_loop()
    if _mark is None:
        transport, protocol = await loop.create_connection(factory, host, port)
        return transport, protocol
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    failure: OSError = OSError(f"{host!r} resolves to no address")
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, _mark)
            sock.setblocking(False)
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            failure = exc
            continue
        except BaseException:
            sock.close()
            raise
        transport, protocol = await loop.create_connection(factory, sock=sock)
        return transport, protocol
    raise failure
