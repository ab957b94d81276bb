"""A supervised foreground process: start, wait until ready, keep its log, stop for certain."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from testbed.net import wait_port

# Where ci/setup unpacks the FTP servers apt cannot install beside vsftpd (they Conflict).
PKG_ROOT = Path(os.environ.get("FTS_PKG_ROOT", "/opt/ftp-ssh-tunnel/pkgs"))


def pid_alive(pid: int) -> bool:
    """The process exists (one we may not signal, owned by another user, counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def proc_status_kib(pid: int, key: str) -> int:
    """A memory figure from /proc/PID/status: VmRSS now, VmHWM the peak so far."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key} for pid {pid}")


def wait_listening(prefix: Sequence[str], port: int, timeout: float, alive: object) -> None:
    """Wait until a TCP socket listens on `port` in the namespace `prefix` enters."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(alive) and not alive():
            raise RuntimeError(f"process for port {port} exited before it was ready")
        out = subprocess.run([*prefix, "ss", "-Hltn", f"sport = :{port}"], capture_output=True,
                             text=True).stdout
        if out.strip():
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listened on port {port} within {timeout:.0f} s")


class Service:
    def __init__(self, name: str, argv: Sequence[str], log_path: Path,
                 ready: tuple[str, int] | None = None, env: dict[str, str] | None = None,
                 prefix: Sequence[str] = ()) -> None:
        self.name = name
        self.argv = [*prefix, *argv]
        self.log_path = log_path
        self.ready = ready
        self.env = env
        self.prefix = list(prefix)
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
                if self.prefix:  # inside a namespace: look from there, we cannot connect
                    wait_listening(self.prefix, self.ready[1], timeout, self.alive)
                else:
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
