"""One table maps every way of failing to reach a destination onto an RFC 1928 reply."""

from __future__ import annotations

import errno
import socket

import pytest

from tunnel.failures import reply_for_channel_open, reply_for_os_error
from tunnel.socks import Reply


@pytest.mark.parametrize(("exc", "reply"), [
    (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), Reply.CONNECTION_REFUSED),
    (OSError(errno.ENETUNREACH, "x"), Reply.NETWORK_UNREACHABLE),
    (OSError(errno.EHOSTUNREACH, "x"), Reply.HOST_UNREACHABLE),
    (TimeoutError(), Reply.TTL_EXPIRED),
    (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), Reply.HOST_UNREACHABLE),
    (OSError(errno.EACCES, "x"), Reply.NOT_ALLOWED),
    (ValueError("odd"), Reply.GENERAL_FAILURE),
])
def test_os_errors(exc: BaseException, reply: Reply) -> None:
    assert reply_for_os_error(exc) is reply


@pytest.mark.parametrize(("code", "reason", "reply"), [
    (1, "administratively prohibited", Reply.NOT_ALLOWED),
    (2, "Connection refused", Reply.CONNECTION_REFUSED),
    (2, "No route to host", Reply.HOST_UNREACHABLE),
    (2, "Network is unreachable", Reply.NETWORK_UNREACHABLE),
    (2, "Connection timed out", Reply.TTL_EXPIRED),
    (2, "getaddrinfo: Name or service not known", Reply.HOST_UNREACHABLE),
    (2, "open failed", Reply.HOST_UNREACHABLE),
    (3, "unknown channel type", Reply.COMMAND_NOT_SUPPORTED),
    (4, "resource shortage", Reply.GENERAL_FAILURE),
    (99, "?", Reply.GENERAL_FAILURE),
])
def test_channel_open_failures(code: int, reason: str, reply: Reply) -> None:
    assert reply_for_channel_open(code, reason) is reply
