"""The event loop's handler for exceptions no callback caught: one known asyncio race is a
client leaving, not a fault.

When the proxy passes a server's end of file to a client whose socket still has bytes
queued, asyncio shuts the socket's sending side once the queue drains
(`_SelectorSocketTransport._write_ready`: `sock.shutdown(SHUT_WR)`, unguarded in Python
3.11). If the client has reset the connection meanwhile, shutdown() fails with ENOTCONN
(or EPIPE), and the loop's default handler logs a traceback as if the daemon had crashed
(seen once in a CI run, curl through SOCKS4a). Nothing is lost: the client is gone, and the
transport closes as it would have. That case is logged as one INFO line; every other
exception goes to asyncio's default handler, traceback and all.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from types import TracebackType
from typing import Any

log = logging.getLogger("tunnel.server")

_CLIENT_GONE = (errno.ENOTCONN, errno.EPIPE, errno.ECONNRESET)


def _raised_in(tb: TracebackType | None, function: str) -> bool:
    last = None
    while tb is not None:
        last, tb = tb, tb.tb_next
    return last is not None and last.tb_frame.f_code.co_name == function


def is_client_gone_at_eof(context: dict[str, Any]) -> bool:
    exc = context.get("exception")
    return (isinstance(exc, OSError) and exc.errno in _CLIENT_GONE
            and _raised_in(exc.__traceback__, "_write_ready"))


def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    if is_client_gone_at_eof(context):
        exc = context["exception"]
        log.info("a peer left before its end of file could be sent (%s)", exc.strerror)
        return
    loop.default_exception_handler(context)


def install(loop: asyncio.AbstractEventLoop) -> None:
    loop.set_exception_handler(handle)
