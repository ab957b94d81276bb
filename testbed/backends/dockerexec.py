"""A process inside a testbed container, as a host process: `python -m
testbed.dockershim CONTAINER -- ARGV...` runs ARGV in the container through the
Docker Engine API (the SDK, never the docker CLI) and behaves like it: stdout and stderr
come out on ours, its exit code is ours, and a signal sent to us is sent to it (stdin is
not passed: `DockerBackend.run` takes input itself). That is the `exec_prefix` of the
docker backend, so services, captures and clients start there exactly as they do in a
network namespace (`ip netns exec NS ARGV`).

Why a signal must be forwarded: killing the client of a Docker exec does not stop the
process it started (moby#9098). The process runs under `setsid` and writes its pid (in the
container's pid namespace) to `/run/fts-exec/<our pid>.pid`, so a signal reaches it and,
for SIGKILL, its whole session; `kill_tree` uses the same file for the testbed's faults.

Host paths are mapped: the repository is mounted at its host path, so scripts and configs
are where they are on the host, but the host's virtualenv is not a Linux-portable thing;
its `python` and console scripts become the image's (`IMAGE_PYTHON`, with the repository
on PYTHONPATH).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

IMAGE_PYTHON = "/opt/fts-venv/bin/python3"
IMAGE_PATH = "/opt/fts-venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PID_DIR = "/run/fts-exec"
SHIM = "testbed.dockershim"  # runs `main` below
REPO = Path(__file__).resolve().parents[2]
# Console scripts of the host's venv that are modules of this repository.
_MODULES = {"tunnel": "tunnel.cli", "testbed": "testbed.cli"}


def prefix(container: str) -> list[str]:
    """The argv prefix that runs a command inside `container`."""
    return [sys.executable, "-m", SHIM, container, "--"]


def container_of(argv: Sequence[str]) -> str | None:
    """The container a prefixed argv runs in, or None for one that is not ours."""
    if len(argv) > 4 and list(argv[1:3]) == ["-m", SHIM]:
        return argv[3]
    return None


def image_argv(argv: Sequence[str], host_prefix: str = sys.prefix) -> list[str]:
    """ARGV as the image must run it: the host venv's python and console scripts become the
    image's python (the repository is on its PYTHONPATH); everything else is unchanged."""
    if not argv:
        return []
    first = argv[0]
    bin_dir = os.path.join(host_prefix, "bin") + os.sep
    if first == sys.executable or first.startswith(bin_dir):
        name = os.path.basename(first)
        if name.startswith("python"):
            return [IMAGE_PYTHON, *argv[1:]]
        if name in _MODULES:
            return [IMAGE_PYTHON, "-m", _MODULES[name], *argv[1:]]
    return list(argv)


def wrapped(argv: Sequence[str], pid_file: str) -> list[str]:
    """Run ARGV as the leader of a new session that has told its pid first."""
    script = f'mkdir -p {PID_DIR} && echo $$ > {pid_file} && exec "$@"'
    return ["setsid", "-w", "/bin/sh", "-c", script, "sh", *image_argv(argv)]


def environment() -> dict[str, str]:
    return {"PATH": IMAGE_PATH, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1",
            "LANG": "C.UTF-8"}


def _client() -> Any:
    import docker  # the SDK is slow to import; only where a container is used

    return docker.from_env()


def run_inside(container: str, argv: Sequence[str], stdin: bytes | None = None,
               out: Any = None, err: Any = None, pid_file: str | None = None) -> int:
    """Run ARGV in the container; stream its output to `out`/`err` (binary files); return
    its exit code. With `pid_file`, it runs under setsid and tells its pid there."""
    api = _client().api
    command = wrapped(argv, pid_file) if pid_file else image_argv(argv)
    exec_id = api.exec_create(container, command, stdin=stdin is not None, stdout=True,
                              stderr=True, environment=environment())["Id"]
    sock = api.exec_start(exec_id, socket=True)
    raw: socket.socket = getattr(sock, "_sock", sock)
    if stdin is not None:
        def feed() -> None:
            with contextlib.suppress(OSError):
                raw.sendall(stdin)
                raw.shutdown(socket.SHUT_WR)
        threading.Thread(target=feed, daemon=True).start()
    _demultiplex(raw, out or sys.stdout.buffer, err or sys.stderr.buffer)
    with contextlib.suppress(OSError):
        raw.close()
    code = api.exec_inspect(exec_id)["ExitCode"]
    return int(code) if code is not None else 1


def _demultiplex(sock: socket.socket, out: Any, err: Any) -> None:
    """The Engine API's stream framing (no tty): an 8-byte header (stream, 0, 0, 0, size
    big-endian) before each frame."""
    buffer = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return
        buffer += chunk
        while len(buffer) >= 8:
            kind, size = buffer[0], struct.unpack(">I", buffer[4:8])[0]
            if len(buffer) < 8 + size:
                break
            target = err if kind == 2 else out
            target.write(buffer[8:8 + size])
            target.flush()
            buffer = buffer[8 + size:]


def signal_inside(container: str, pid_file: str, sig: int, group: bool = False) -> bool:
    """Send `sig` to the process that wrote `pid_file` (its whole session with `group`)."""
    target = f"-$(cat {pid_file})" if group else f"$(cat {pid_file})"
    code = run_inside(container, ["/bin/sh", "-c", f"test -s {pid_file} && /bin/kill -{int(sig)} "
                                  f"-- {target}"], out=_Discard(), err=_Discard())
    return code == 0


def kill_tree(container: str, pid_file: str, children_only: bool) -> list[str]:
    """SIGKILL the process of `pid_file` and everything under it (only what is under it with
    `children_only`), deepest first; returns what died, as `pid command line`."""
    script = (
        "import os, signal, sys\n"
        "root = int(open(sys.argv[1]).read())\n"
        "parents = {}\n"
        "for p in os.listdir('/proc'):\n"
        "    if p.isdigit():\n"
        "        try:\n"
        "            stat = open(f'/proc/{p}/stat').read()\n"
        "        except OSError:\n"
        "            continue\n"
        "        parents[int(p)] = int(stat[stat.rindex(')') + 2:].split()[1])\n"
        "order, frontier = [], [root]\n"
        "while frontier:\n"
        "    frontier = [c for c, q in parents.items() if q in frontier and c != root]\n"
        "    order = frontier + order\n"
        "if sys.argv[2] == '0':\n"
        "    order.append(root)\n"
        "for pid in order:\n"
        "    try:\n"
        "        name = open(f'/proc/{pid}/cmdline', 'rb').read().replace(b'\\0', b' ')\n"
        "        os.kill(pid, signal.SIGKILL)\n"
        "        print(pid, name.decode(errors='replace').strip())\n"
        "    except OSError:\n"
        "        pass\n")
    sink = _Collect()
    run_inside(container, ["python3", "-c", script, pid_file, "1" if children_only else "0"],
               out=sink, err=_Discard())
    return [line for line in sink.data.decode(errors="replace").splitlines() if line]


def pid_file_for(shim_pid: int) -> str:
    """Where the process that the shim with host pid `shim_pid` started tells its pid."""
    return f"{PID_DIR}/{shim_pid}.pid"


class _Discard:
    def write(self, data: bytes) -> None:
        pass

    def flush(self) -> None:
        pass


class _Collect(_Discard):
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


def main(argv: Sequence[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print(f"usage: python -m {SHIM} CONTAINER -- ARGV...",
              file=sys.stderr)
        return 2
    container, command = argv[0], list(argv[2:])
    pid_file = pid_file_for(os.getpid())

    def forward(sig: int, _frame: object) -> None:
        # In a thread: the main one is blocked reading the exec's output.
        threading.Thread(target=signal_inside, args=(container, pid_file, sig),
                         daemon=True).start()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(sig, forward)
    # No stdin: a service's is /dev/null, and a parent's open pipe would never end.
    return run_inside(container, command, pid_file=pid_file)
