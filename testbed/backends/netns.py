"""Network-namespace backend: one named namespace per host, a veth pair per link.

Names: a namespace is `fts-<pid>-<n>-<host>` for a run owned by process <pid> (so a sweep
can tell a crashed run's leftovers from a live run's, and never touches anything else), or
`ftsup-<name>-<host>` for a topology kept up by `testbed up`. veth names must fit 15
characters: `f<pid hex><n><link><a|b>`.

`ip netns exec` bind-mounts /etc/netns/<ns>/hosts over /etc/hosts, which gives each host
its own name table. A process started with `ip netns exec` stays in the namespace for good;
setns() in our own process would switch one thread only, so we never do that.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from testbed.backends.base import OwnStackPerHost
from testbed.services.base import pid_alive
from testbed.topology import Topology

NETNS_ETC = Path("/etc/netns")
RUN_NS = re.compile(r"^fts-(\d+)-\d+-")
_counter = itertools.count(1)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def available() -> str | None:
    """None if namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "the netns backend needs root (ip netns add)"
    for tool in ("ip", "tcpdump", "ethtool"):
        if shutil.which(tool) is None:
            return f"{tool} is missing (ci/setup installs it)"
    return None


def list_namespaces() -> list[str]:
    out = _ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def delete_namespace(ns: str) -> None:
    """Kill what runs inside, then delete: a namespace with processes stays alive."""
    pids = _ip("netns", "pids", ns, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    _ip("netns", "del", ns, check=False)
    shutil.rmtree(NETNS_ETC / ns, ignore_errors=True)


def sweep() -> list[str]:
    """Remove namespaces left by crashed runs: ours by name, and whose owner is dead."""
    removed = []
    for ns in list_namespaces():
        match = RUN_NS.match(ns)
        if match and not pid_alive(int(match.group(1))):
            delete_namespace(ns)
            removed.append(ns)
    return removed


class NetnsBackend(OwnStackPerHost):
    kind = "netns"
    capture_unavailable: str | None = None

    def __init__(self, topology: Topology, keep_name: str | None = None) -> None:
        """`keep_name`: a topology meant to outlive this process (`testbed up NAME`)."""
        self.topology = topology
        n = next(_counter)
        self.prefix = f"ftsup-{keep_name}" if keep_name else f"fts-{os.getpid()}-{n}"
        self._veth_tag = f"f{os.getpid():x}{n % 16:x}"
        self.namespaces = {host: f"{self.prefix}-{host}" for host in topology.hosts}
        self.interfaces: dict[tuple[str, str], str] = {}
        for index, link in enumerate(topology.links):
            for side, host in zip("ab", link.hosts, strict=True):
                self.interfaces[(host, link.name)] = f"{self._veth_tag}{index:x}{side}"

    # -- life --------------------------------------------------------------------------------
    def up(self) -> None:
        sweep()
        try:
            self._build()
        except BaseException:
            self.down()
            raise

    def _build(self) -> None:
        topo = self.topology
        for host, ns in self.namespaces.items():
            delete_namespace(ns)  # a `testbed up` of the same name left behind
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            etc = NETNS_ETC / ns
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "hosts").write_text(topo.hosts_file())
            forward = "1" if topo.hosts[host].forward else "0"
            self.run(host, ["sysctl", "-qw", f"net.ipv4.ip_forward={forward}",
                            f"net.ipv6.conf.all.forwarding={forward}"], check=True)
        for link in topo.links:
            a, b = (self.interfaces[(h, link.name)] for h in link.hosts)
            _ip("link", "add", a, "type", "veth", "peer", "name", b)
            for host, iface in zip(link.hosts, (a, b), strict=True):
                ns = self.namespaces[host]
                _ip("link", "set", iface, "netns", ns)
                addr = topo.addresses[(host, link.name)]
                _ip("-n", ns, "addr", "add", f"{addr}/{link.subnet.prefixlen}", "dev", iface)
                if link.subnet6 is not None:
                    addr6 = topo.addresses6[(host, link.name)]
                    # nodad: duplicate address detection would hold the address for ~2 s
                    _ip("-n", ns, "-6", "addr", "add", f"{addr6}/64", "dev", iface, "nodad")
                _ip("-n", ns, "link", "set", iface, "up")
                # veth offloads hand tcpdump 64 KiB "frames"; real NIC-sized segments make
                # captures and netem behave like a wire.
                self.run(host, ["ethtool", "-K", iface, "tso", "off", "gso", "off", "gro",
                                "off"], check=False)
        for host in topo.hosts:
            for subnet, via in topo.routes(host):
                family = "-6" if subnet.version == 6 else "-4"
                _ip("-n", self.namespaces[host], family, "route", "add", str(subnet), "via", via)

    def down(self) -> None:
        for ns in self.namespaces.values():
            delete_namespace(ns)

    # -- running things inside ---------------------------------------------------------------
    def exec_prefix(self, host: str) -> list[str]:
        return ["ip", "netns", "exec", self.namespaces[host]]

    def run(self, host: str, argv: Sequence[str], check: bool = False,
            timeout: float = 120, **kwargs: object) -> subprocess.CompletedProcess[str]:
        done: subprocess.CompletedProcess[str] = subprocess.run(  # type: ignore[call-overload]
            [*self.exec_prefix(host), *argv], capture_output=True, text=True, check=check,
            timeout=timeout, **kwargs)
        return done

    def iface(self, host: str, link: str) -> str:
        return self.interfaces[(host, link)]
