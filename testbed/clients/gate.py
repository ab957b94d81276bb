"""A starting line for parallel clients. Spawning 200 client processes on a busy 2-core
machine takes seconds (measured: the last one started 12.6 s after the first, and only 126
of 200 sessions were ever in flight at once), so "200 at once" needs them held until all are
spawned. Each client touches its ready file and waits for a shared flock(1) on the gate,
which the runner holds exclusively until every ready file is there: a released flock wakes
every waiter, and a client that arrives late passes at once, so nothing can hang on it."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path


class StartGate:
    def __init__(self, folder: Path, clients: int) -> None:
        self.clients = clients
        self.lock = folder / "gate"
        self.ready = folder / "ready"
        self.ready.mkdir(parents=True, exist_ok=True)
        self.opened_at = float("inf")  # time.monotonic() when the clients were let go
        self._fd: int | None = os.open(self.lock, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def prefix(self, client: int) -> list[str]:
        """The command prefix that holds client number `client` at the line: touch its ready
        file, then wait for a shared lock on the gate (flock(1) runs the rest with it)."""
        return ["sh", "-c", 'touch "$0" && exec flock --shared "$@"',
                str(self.ready / str(client)), str(self.lock)]

    def open(self, timeout: float) -> int:
        """Let everyone go once all are ready, or after `timeout` s; returns how many were."""
        deadline = time.monotonic() + timeout
        while (waiting := len(list(self.ready.iterdir()))) < self.clients:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.opened_at = time.monotonic()
        self.release()
        return waiting

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
