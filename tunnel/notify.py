"""systemd's readiness protocol (sd_notify(3)), spoken directly: one datagram per state to
the socket systemd names in NOTIFY_SOCKET. Without it (no systemd, a shell, a container) every
call does nothing, so the daemon never depends on systemd being there."""

from __future__ import annotations

import os
import socket
import time


def notify(*states: str) -> bool:
    """Send `states` (e.g. "READY=1") as one message; True if a socket took it."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address or not states:
        return False
    if address.startswith("@"):  # the abstract namespace (sd_notify(3))
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto("\n".join(states).encode(), address)
    except OSError:
        return False
    return True


def ready() -> bool:
    return notify("READY=1", "STATUS=serving")


def reloading() -> bool:
    """Type=notify-reload wants the monotonic time with RELOADING=1 (systemd 253+)."""
    return notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")


def stopping() -> bool:
    return notify("STOPPING=1", "STATUS=draining")
