"""Faults on a running topology: netem delay, loss and rate on a link (both directions,
since netem shapes egress only), random loss through nftables where the kernel has no
netem, a link down and up, a service killed and restarted, a service's sessions killed."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path

from testbed.backends import dockerexec
from testbed.backends.base import LinkBackend
from testbed.services.base import Service


class FaultUnavailable(RuntimeError):
    """This kernel cannot do that fault (a missing qdisc), said plainly."""


def netem(backend: LinkBackend, link: str, delay_ms: float = 0, loss_pct: float = 0,
          rate_mbit: float = 0) -> None:
    """Shape both ends' egress; a delay of d on each gives a round trip of 2d.
    Raises FaultUnavailable where the kernel has no sch_netem."""
    spec: list[str] = []
    if delay_ms:
        spec += ["delay", f"{delay_ms}ms"]
    if loss_pct:
        spec += ["loss", f"{loss_pct}%"]
    if rate_mbit:
        spec += ["rate", f"{rate_mbit}mbit"]
    for host in backend.topology.link(link).hosts:
        iface = backend.iface(host, link)
        done = backend.run(host, ["tc", "qdisc", "replace", "dev", iface, "root", "netem",
                                  *spec])
        if done.returncode != 0:
            raise FaultUnavailable(f"netem on {link}: {done.stderr.strip()} (this kernel has "
                                   "no sch_netem; `rate` alone works through tbf)")


def rate(backend: LinkBackend, link: str, mbit: float) -> None:
    """Token-bucket rate limit on both ends (tbf, present in kernels that lack netem)."""
    burst = max(int(mbit * 1000 / 8 / 100) * 1000, 16000)  # ~10 ms of traffic, at least 16 kB
    for host in backend.topology.link(link).hosts:
        backend.run(host, ["tc", "qdisc", "replace", "dev", backend.iface(host, link), "root",
                           "tbf", "rate", f"{mbit}mbit", "burst", str(burst), "latency",
                           "400ms"], check=True)


def clear(backend: LinkBackend, link: str) -> None:
    for host in backend.topology.link(link).hosts:
        backend.run(host, ["tc", "qdisc", "del", "dev", backend.iface(host, link), "root"])


LOSS_TABLE = "fts_loss"


def loss(backend: LinkBackend, link: str, pct: float) -> None:
    """Lose `pct` percent of the packets crossing the link, either way, at random: nftables'
    `numgen random` in each end's ingress hook drops them on arrival, after the sender let
    them go, as a wire loses them (a drop on the sender's way out would be reported to the
    sending socket instead). For kernels without sch_netem; 0 clears."""
    per_mille = round(pct * 10)
    for host in backend.topology.link(link).hosts:
        iface = backend.iface(host, link)
        table = f"{LOSS_TABLE}_{link}"
        backend.run(host, ["nft", "delete", "table", "netdev", table])
        if per_mille <= 0:
            continue
        ruleset = (f"table netdev {table} {{\n chain in {{\n"
                   f'  type filter hook ingress device "{iface}" priority 0; policy accept;\n'
                   f"  numgen random mod 1000 < {per_mille} counter drop\n }}\n}}\n")
        done = backend.run(host, ["nft", "-f", "-"], input=ruleset)
        if done.returncode != 0:
            raise FaultUnavailable(f"loss on {link}: nft: {done.stderr.strip()}")


def lost_packets(backend: LinkBackend, link: str) -> int:
    """Packets `loss` has dropped on the link so far (its rules' counters, both ends)."""
    total = 0
    for host in backend.topology.link(link).hosts:
        listed = backend.run(host, ["nft", "list", "table", "netdev", f"{LOSS_TABLE}_{link}"])
        total += sum(int(n) for n in re.findall(r"counter packets (\d+)", listed.stdout))
    return total


def link_state(backend: LinkBackend, link: str, up: bool) -> None:
    for host in backend.topology.link(link).hosts:
        backend.run(host, ["ip", "link", "set", backend.iface(host, link),
                           "up" if up else "down"], check=True)


def _pids_of(service: Service) -> list[int]:
    """The service's process and every process running its binary in its namespace: sshd's
    per-connection children leave the master's process group, and a crash kills them too."""
    assert service.proc is not None
    binary = service.argv[len(service.prefix)]
    pids = {service.proc.pid}
    if service.prefix[:3] == ["ip", "netns", "exec"]:
        listed = subprocess.run(["ip", "netns", "pids", service.prefix[3]],
                                capture_output=True, text=True).stdout.split()
        for pid in map(int, listed):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/exe") == binary:
                    pids.add(pid)
    return sorted(pids)


def restart(service: Service, kill: bool = True) -> None:
    """Kill (SIGKILL to its whole process group, as a host crash: sshd's per-connection
    children die too, so clients must reconnect) or stop a service; start it again."""
    container = dockerexec.container_of(service.prefix)
    if kill and container and service.proc is not None and service.proc.poll() is None:
        # Inside a container: its pid namespace is not ours to walk; the process told its
        # pid to the shim (dockerexec), and the kill happens in there.
        dockerexec.kill_tree(container, dockerexec.pid_file_for(service.proc.pid),
                             children_only=False)
        service.proc.wait()
    elif kill and service.proc is not None and service.proc.poll() is None:
        for pid in _pids_of(service):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        service.proc.wait()
    else:
        service.stop()
    service.start()


def descendants(parents: Mapping[int, int], root: int) -> list[int]:
    """Every process under `root` (not root itself), given pid -> parent pid; the deepest
    first, so that no parent outlives its children long enough to act on their death."""
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    found: list[tuple[int, int]] = []  # (depth, pid)
    frontier, depth = [root], 0
    while frontier:
        depth += 1
        frontier = sorted(c for pid in frontier for c in children.get(pid, ()) if c != root)
        found += [(depth, pid) for pid in frontier]
    return [pid for _, pid in sorted(found, key=lambda entry: -entry[0])]


def parse_ppid(stat: str) -> int:
    """The parent pid from a /proc/PID/stat line; the command name, in parentheses, may
    itself hold spaces and parentheses ("sshd: user@notty" does not, a thread name may)."""
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def _process_parents() -> dict[int, int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError):
                parents[int(entry.name)] = parse_ppid((entry / "stat").read_text())
    return parents


def kill_sessions(service: Service) -> list[str]:
    """SIGKILL every process under the service's own (sshd's per-connection "[priv]" and
    "user@notty" processes, with the sftp server inside or under them), not the service:
    its connections die as if the OOM killer or an operator took them, while the listener
    stays and a client can connect again at once. Returns what it killed, by command line.
    Under docker the walk happens inside the container (dockerexec.kill_tree)."""
    if service.proc is None or service.proc.poll() is not None:
        raise FaultUnavailable(f"kill-sessions: {service.name} is not running")
    container = dockerexec.container_of(service.prefix)
    killed = []
    if container:
        killed = dockerexec.kill_tree(container, dockerexec.pid_file_for(service.proc.pid),
                                      children_only=True)
    for pid in [] if container else descendants(_process_parents(), service.proc.pid):
        with contextlib.suppress(OSError):
            name = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").strip()
            os.kill(pid, signal.SIGKILL)
            killed.append(f"{pid} {name.decode(errors='replace')}")
    if not killed:
        raise RuntimeError(f"kill-sessions: {service.name} has no session process to kill "
                           "(the fault would prove nothing)")
    return killed
