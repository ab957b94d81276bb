"""How a failure to reach a destination is told to the SOCKS client: one table per source.

Translation happens only here, at the edge, so every path (direct TCP connect, SSH login,
SSH channel open) answers the same failure with the same RFC 1928 §6 code.
"""

from __future__ import annotations

import errno

from tunnel.socks import Reply

# OS errors from a TCP connect (ours for `direct`, or the SSH server's, told to us as text).
ERRNO_REPLY: dict[int, Reply] = {
    errno.ECONNREFUSED: Reply.CONNECTION_REFUSED,
    errno.ENETUNREACH: Reply.NETWORK_UNREACHABLE,
    errno.ENETDOWN: Reply.NETWORK_UNREACHABLE,
    errno.EHOSTUNREACH: Reply.HOST_UNREACHABLE,
    errno.EHOSTDOWN: Reply.HOST_UNREACHABLE,
    errno.ETIMEDOUT: Reply.TTL_EXPIRED,
    errno.EACCES: Reply.NOT_ALLOWED,
    errno.EPERM: Reply.NOT_ALLOWED,
}

# SSH_MSG_CHANNEL_OPEN_FAILURE (RFC 4254 §5.1) reason codes.
CHANNEL_OPEN_REPLY: dict[int, Reply] = {
    1: Reply.NOT_ALLOWED,  # SSH_OPEN_ADMINISTRATIVELY_PROHIBITED (PermitOpen, AllowTcpForwarding)
    2: Reply.HOST_UNREACHABLE,  # SSH_OPEN_CONNECT_FAILED; refined by the reason text below
    3: Reply.COMMAND_NOT_SUPPORTED,  # SSH_OPEN_UNKNOWN_CHANNEL_TYPE
    4: Reply.GENERAL_FAILURE,  # SSH_OPEN_RESOURCE_SHORTAGE
}

# OpenSSH puts strerror() of its own connect() into the CONNECT_FAILED reason text.
REASON_TEXT_REPLY: tuple[tuple[str, Reply], ...] = (
    ("refused", Reply.CONNECTION_REFUSED),
    ("network is unreachable", Reply.NETWORK_UNREACHABLE),
    ("no route to host", Reply.HOST_UNREACHABLE),
    ("timed out", Reply.TTL_EXPIRED),
    ("name or service not known", Reply.HOST_UNREACHABLE),
    ("temporary failure in name resolution", Reply.HOST_UNREACHABLE),
)


def reply_for_os_error(exc: BaseException) -> Reply:
    if isinstance(exc, TimeoutError):
        return Reply.TTL_EXPIRED
    if isinstance(exc, OSError) and exc.errno in ERRNO_REPLY:
        return ERRNO_REPLY[exc.errno]
    # socket.gaierror carries a negative EAI_* code on Linux: the name did not resolve.
    if isinstance(exc, OSError) and exc.errno is not None and exc.errno < 0:
        return Reply.HOST_UNREACHABLE
    return Reply.GENERAL_FAILURE


def reply_for_channel_open(code: int, reason: str) -> Reply:
    if code == 2:
        lowered = reason.lower()
        for text, reply in REASON_TEXT_REPLY:
            if text in lowered:
                return reply
    return CHANNEL_OPEN_REPLY.get(code, Reply.GENERAL_FAILURE)
