"""Small loopback helpers: free ports and readiness waits."""

from __future__ import annotations

import socket
import time


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel just handed out and released. Racy in theory, fine on loopback."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_port(host: str, port: int, timeout: float = 10.0, alive: object = None) -> None:
    """Wait until something accepts on host:port. `alive` is an optional callable that
    returns False once the process we wait for has died, to fail fast with its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(alive) and not alive():
            raise RuntimeError(f"process serving {host}:{port} exited before it was ready")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing accepted on {host}:{port} within {timeout:.0f} s")
