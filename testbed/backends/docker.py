"""Docker backend, for users with an engine: one container per host, one bridge network per
link with the topology's own subnet and addresses.

The mapping from a topology to docker commands is pure (`plan_up`, `plan_down`) and unit
tested. It drives the docker CLI directly: this machine has the client but neither an engine
nor the compose plugin, and the CLI is the one interface every Docker install has.

The image (`testbed/docker/Dockerfile`) is Debian 12 with ci/setup applied. Containers get
NET_ADMIN (routes, tc) and NET_RAW (tcpdump). The repository, the run's output folder and
/var/tmp are mounted at the same paths, so configs and files the runner writes are where
the services inside look for them.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from testbed.backends.base import OwnStackPerHost
from testbed.topology import Topology

IMAGE = "ftp-ssh-tunnel-testbed:latest"
REPO = Path(__file__).resolve().parents[2]


def available() -> str | None:
    if shutil.which("docker") is None:
        return "no Docker engine (the docker command is missing)"
    probe = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return "no Docker engine (docker info: cannot connect to the daemon)"
    return None


def container_name(prefix: str, host: str) -> str:
    return f"{prefix}-{host}"


def network_name(prefix: str, link: str) -> str:
    return f"{prefix}-{link}"


def plan_up(topology: Topology, prefix: str, mounts: Sequence[Path],
            image: str = IMAGE) -> list[list[str]]:
    """The docker commands that build the topology, in order."""
    commands: list[list[str]] = []
    for link in topology.links:
        net = ["docker", "network", "create", "--driver", "bridge", "--internal",
               "--subnet", str(link.subnet),
               # Docker takes .1 as the gateway by default, which is a host's address here.
               "--gateway", str(link.subnet.broadcast_address - 1)]
        if link.subnet6 is not None:
            net += ["--ipv6", "--subnet", str(link.subnet6)]
        commands.append([*net, network_name(prefix, link.name)])
    volumes = [arg for path in mounts for arg in ("-v", f"{path}:{path}")]
    hosts = [arg for name in topology.hosts
             for arg in ("--add-host", f"{name}:{topology.address(name)}")]
    for host in topology.hosts.values():
        links = topology.links_of(host.name)
        first, rest = links[0], links[1:]
        forward = "1" if host.forward else "0"
        commands.append([
            "docker", "run", "-d", "--name", container_name(prefix, host.name),
            "--hostname", host.name, "--cap-add", "NET_ADMIN", "--cap-add", "NET_RAW",
            "--sysctl", f"net.ipv4.ip_forward={forward}",
            "--network", network_name(prefix, first.name),
            "--ip", str(topology.addresses[(host.name, first.name)]),
            *volumes, *hosts, image, "sleep", "infinity"])
        for link in rest:
            commands.append(["docker", "network", "connect", "--ip",
                             str(topology.addresses[(host.name, link.name)]),
                             network_name(prefix, link.name), container_name(prefix, host.name)])
    for host in topology.hosts:
        for subnet, via in topology.routes(host):
            commands.append(["docker", "exec", container_name(prefix, host), "ip", "route",
                             "add", str(subnet), "via", via])
    return commands


def plan_down(topology: Topology, prefix: str) -> list[list[str]]:
    return ([["docker", "rm", "-f", container_name(prefix, h)] for h in topology.hosts]
            + [["docker", "network", "rm", network_name(prefix, link.name)]
               for link in topology.links])


class DockerBackend(OwnStackPerHost):
    """Same face as NetnsBackend: up, down, exec_prefix, run, iface."""

    kind = "docker"
    capture_unavailable: str | None = None

    def __init__(self, topology: Topology, prefix: str, mounts: Sequence[Path]) -> None:
        self.topology = topology
        self.prefix = prefix
        self.mounts = [REPO, *mounts]
        self.namespaces = {h: container_name(prefix, h) for h in topology.hosts}
        self._ifaces: dict[tuple[str, str], str] = {}

    def up(self) -> None:
        try:
            for argv in plan_up(self.topology, self.prefix, self.mounts):
                subprocess.run(argv, check=True, capture_output=True, text=True)
            for (host, link), addr in self.topology.addresses.items():
                out = self.run(host, ["ip", "-o", "-4", "addr", "show", "to", str(addr)],
                               check=True).stdout
                self._ifaces[(host, link)] = out.split()[1]
        except BaseException:
            self.down()
            raise

    def down(self) -> None:
        for argv in plan_down(self.topology, self.prefix):
            subprocess.run(argv, capture_output=True)

    def exec_prefix(self, host: str) -> list[str]:
        return ["docker", "exec", "-i", self.namespaces[host]]

    def run(self, host: str, argv: Sequence[str], check: bool = False, timeout: float = 120,
            **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.exec_prefix(host), *argv], capture_output=True, text=True,
                              check=check, timeout=timeout, **kwargs)  # type: ignore[call-overload]

    def iface(self, host: str, link: str) -> str:
        return self._ifaces[(host, link)]
