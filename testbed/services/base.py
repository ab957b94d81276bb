"""A supervised foreground process: start, wait until ready, keep its log, stop for certain."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from testbed.net import wait_port


class Service:
    def __init__(self, name: str, argv: Sequence[str], log_path: Path,
                 ready: tuple[str, int] | None = None, env: dict[str, str] | None = None,
                 prefix: Sequence[str] = ()) -> None:
        self.name = name
        self.argv = [*prefix, *argv]
        self.log_path = log_path
        self.ready = ready
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> Service:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it for its life
        env = {**os.environ, **(self.env or {})}
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        if self.ready is not None:
            try:
                wait_port(*self.ready, timeout=timeout, alive=self.alive)
            except (RuntimeError, TimeoutError) as exc:
                self.stop()
                raise RuntimeError(f"{self.name} did not start: {exc}\n--- log ---\n"
                                   f"{self.log()[-4000:]}") from None
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL to the whole process group. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode
