"""One error hierarchy. Each error says whose fault it is and what to do about it."""

from __future__ import annotations


class TunnelError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(TunnelError):
    """A configuration file is wrong. Carries the file, the key path and the reason."""

    def __init__(self, file: str, key: str, reason: str) -> None:
        self.file = file
        self.key = key
        self.reason = reason
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {reason}")


class RemoteProtocolError(TunnelError):
    """The peer (a SOCKS or FTP client) broke the protocol.

    `reply` is what the session should send before it closes, or None where the protocol
    allows no reply at all (for instance an unknown SOCKS version byte).
    """

    def __init__(self, message: str, reply: bytes | None) -> None:
        super().__init__(message)
        self.reply = reply


class UpstreamError(TunnelError):
    """Reaching the destination failed: SSH login, host key, channel open or TCP connect.

    `socks_reply` is the RFC 1928 REP code that best describes the failure to the client.
    """

    def __init__(self, message: str, socks_reply: int, auth_refused: bool = False,
                 ssh_failure: str = "") -> None:
        super().__init__(message)
        self.socks_reply = socks_reply
        self.auth_refused = auth_refused  # the SSH server said no to these credentials
        # For the audit record: "host-key", "auth", "kex", "ssh" or "connect" ("" = not SSH).
        self.ssh_failure = "auth" if auth_refused else ssh_failure
