"""Docker backend, for users with an engine and no root on the host (CI runners that give a
job a Docker engine, Docker Desktop on macOS and Windows): one container per host, one
bridge network per link (no NAT, no default route: nothing leaves the topology), built with
testcontainers (`DockerContainer`, `Network`) and the Docker SDK where testcontainers has no
call (static addresses, exec). No docker CLI.

- **Addresses.** Docker refuses overlapping subnets, so each run moves the topology to a
  subnet plan of its own (`relocate`): a /16 from `PLAN_POOL` that no existing network
  overlaps, taken by creating the networks (a race with a parallel run is a refused create,
  and the next /16 is tried). Every address the scenario speaks comes from the moved
  topology, as the local backend does with loopback addresses.
- **Processes.** `exec_prefix` is `dockerexec`'s: a host process that runs its command in the
  container through the Engine API, forwards signals, and tells the command's pid in the
  container, so services, tcpdump and clients are started and stopped as on netns.
- **Users.** The scenario's users are made in every container with the host's uid, so files
  in the mounted site belong to the same user on both sides.
- **Leftovers.** Every container and network carries `LABEL_OWNER` (our pid) and the
  testcontainers session labels; `sweep` removes those of owners that are gone. Ryuk, the
  testcontainers reaper, needs an image from a registry, so it is disabled.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import pwd
import subprocess
import threading
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from testbed.backends import dockerexec
from testbed.backends.base import OwnStackPerHost
from testbed.topology import Link, Topology

REPO = Path(__file__).resolve().parents[2]
LABEL = "org.ftp-ssh-tunnel.testbed"
LABEL_OWNER = "org.ftp-ssh-tunnel.owner-pid"
PLAN_POOL = [ipaddress.IPv4Network(f"10.{n}.0.0/16") for n in range(180, 250)]

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")


def available() -> str | None:
    try:
        import docker
    except ImportError:
        return "no Docker engine (the docker Python SDK is not installed: ci/setup installs it)"
    try:
        docker.from_env().ping()
    except Exception as exc:
        return f"no Docker engine (cannot reach it: {type(exc).__name__})"
    return None


def container_name(prefix: str, host: str) -> str:
    return f"{prefix}-{host}"


def network_name(prefix: str, link: str) -> str:
    return f"{prefix}-{link}"


def relocate(topology: Topology, plan: ipaddress.IPv4Network) -> Topology:
    """The topology with link i on the i-th /24 of `plan` (a /16), the hosts keeping their
    place (.1, .2) on each link."""
    subnets = list(plan.subnets(new_prefix=24))
    links: list[Link] = []
    addresses: dict[tuple[str, str], ipaddress.IPv4Address] = {}
    addresses6: dict[tuple[str, str], ipaddress.IPv6Address] = {}
    for index, link in enumerate(topology.links, start=1):
        moved = subnets[index]
        # IPv6 moves with the plan too: fd77:<plan's second octet>:<link>::/64.
        moved6 = (ipaddress.IPv6Network(f"fd77:{plan.network_address.packed[1]:x}:{index:x}::/64")
                  if link.subnet6 is not None else None)
        links.append(replace(link, subnet=moved, subnet6=moved6))
        for (host, link_name), addr in topology.addresses.items():
            if link_name == link.name:
                addresses[(host, link_name)] = moved.network_address + (
                    int(addr) - int(link.subnet.network_address))
        for (host, link_name), addr6 in topology.addresses6.items():
            if link_name == link.name and moved6 is not None and link.subnet6 is not None:
                addresses6[(host, link_name)] = moved6.network_address + (
                    int(addr6) - int(link.subnet6.network_address))
    return Topology(dict(topology.hosts), links, addresses, addresses6)


def taken_subnets(client: Any) -> list[ipaddress.IPv4Network]:
    taken = []
    for network in client.networks.list():
        for config in (network.attrs.get("IPAM") or {}).get("Config") or []:
            subnet = config.get("Subnet", "")
            if subnet and ":" not in subnet:
                taken.append(ipaddress.IPv4Network(subnet, strict=False))
    return taken


def free_plans(taken: Sequence[ipaddress.IPv4Network]) -> list[ipaddress.IPv4Network]:
    return [plan for plan in PLAN_POOL if not any(plan.overlaps(t) for t in taken)]


def sweep(client: Any) -> int:
    """Remove containers and networks whose owner process is gone; returns how many."""
    removed = 0
    for container in client.containers.list(all=True, filters={"label": LABEL_OWNER}):
        if not _alive(container.labels.get(LABEL_OWNER, "")):
            container.remove(force=True)
            removed += 1
    for network in client.networks.list(filters={"label": LABEL_OWNER}):
        if not _alive(network.attrs.get("Labels", {}).get(LABEL_OWNER, "")):
            network.remove()
            removed += 1
    return removed


def _alive(pid: str) -> bool:
    if pid == "kept":  # `testbed up`: it stays until `testbed down`
        return True
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DockerBackend(OwnStackPerHost):
    """Same face as NetnsBackend: up, down, exec_prefix, run, iface, ensure_user."""

    kind = "docker"
    capture_unavailable: str | None = None

    def __init__(self, topology: Topology, prefix: str, mounts: Sequence[Path],
                 kept: bool = False) -> None:
        """`kept`: `testbed up` leaves it running after we exit; only `testbed down` removes
        it. Otherwise our death makes its containers and networks leftovers to sweep."""
        self.original = topology
        self.topology = topology
        self.prefix = prefix
        self.mounts = [REPO, *mounts]
        self.owner = "kept" if kept else str(os.getpid())
        self.namespaces = {h: container_name(prefix, h) for h in topology.hosts}
        self._ifaces: dict[tuple[str, str], str] = {}
        self._containers: list[Any] = []
        self._networks: list[Any] = []
        self._client: Any = None
        self.image = ""
        self.plan: ipaddress.IPv4Network | None = None

    @property
    def client(self) -> Any:
        if self._client is None:
            import docker

            self._client = docker.from_env()
        return self._client

    def labels(self) -> dict[str, str]:
        return {LABEL: self.prefix, LABEL_OWNER: self.owner}

    # -- up and down -------------------------------------------------------------------------
    def up(self) -> None:
        from testbed.image import ensure_image

        sweep(self.client)
        self.image = ensure_image(log=lambda _line: None)
        try:
            self._networks_up()
            for spec in self.topology.hosts.values():
                self._container_up(spec.name, spec.forward)
            for host in self.topology.hosts:
                # Names come from /etc/hosts only, as in a namespace: Docker's embedded DNS
                # cannot forward from an internal network, and each lookup it cannot answer
                # (getent's AAAA first) waited 5 s per try.
                self.run(host, ["/bin/sh", "-c", ": > /etc/resolv.conf; ip route del default;"
                                " ip -6 route del default; true"], check=True)
                for subnet, via in self.topology.routes(host):
                    family = "-6" if subnet.version == 6 else "-4"
                    self.run(host, ["ip", family, "route", "add", str(subnet), "via", via],
                             check=True)
            for (host, link), addr in self.topology.addresses.items():
                out = self.run(host, ["ip", "-o", "-4", "addr", "show", "to", str(addr)],
                               check=True).stdout
                self._ifaces[(host, link)] = out.split()[1]
                # Giant frames from offloads would hide segment boundaries from a capture.
                self.run(host, ["ethtool", "-K", self._ifaces[(host, link)], "tso", "off",
                                "gso", "off", "gro", "off"])
        except BaseException:
            self.down()
            raise

    def _networks_up(self) -> None:
        import docker.errors
        from docker.types import IPAMConfig, IPAMPool
        from testcontainers.core.network import Network

        for plan in free_plans(taken_subnets(self.client)):
            topology = relocate(self.original, plan)
            made: list[Any] = []
            try:
                for link in topology.links:
                    # Docker takes .1 as the gateway by default: a host's address here.
                    pools = [IPAMPool(subnet=str(link.subnet),
                                      gateway=str(link.subnet.broadcast_address - 1))]
                    if link.subnet6 is not None:
                        pools.append(IPAMPool(subnet=str(link.subnet6),
                                              gateway=str(link.subnet6.network_address + 0xfe)))
                    # Not `internal`: Docker's rules for internal networks drop, on the
                    # host's bridge, every packet whose source is not the link's own
                    # subnet, and so the routed traffic a forwarding host carries (the
                    # bypass ssh-D-active-bypass must see). Isolation instead: no NAT
                    # (masquerade off) and no default route inside (removed in `up`).
                    network = Network(docker_network_kw={
                        "driver": "bridge", "ipam": IPAMConfig(pool_configs=pools),
                        "options": {"com.docker.network.bridge.enable_ip_masquerade": "false"},
                        "enable_ipv6": link.subnet6 is not None, "labels": self.labels()})
                    network.name = network_name(self.prefix, link.name)
                    made.append(network.create())
            except docker.errors.APIError as exc:
                for network in made:
                    network.remove()
                if "overlap" in str(exc).lower():
                    continue  # a parallel run took this plan between our look and our create
                raise
            self._networks, self.topology, self.plan = made, topology, plan
            return
        raise RuntimeError("docker backend: no free /16 left in 10.180-249.0.0 for the "
                           "run's links (see `docker network ls`)")

    def _container_up(self, host: str, forward: bool) -> None:
        from docker.types import EndpointConfig
        from testcontainers.core.container import DockerContainer

        links = self.topology.links_of(host)
        first = network_name(self.prefix, links[0].name)
        extra_hosts = {name: self.topology.address(name) for name in self.topology.hosts}
        # IPv6 under its own name, as topology.hosts_file does on netns.
        extra_hosts.update({f"{name}-v6": str(addr)
                            for (name, _), addr in self.topology.addresses6.items()})
        container = (
            DockerContainer(self.image)
            .with_name(container_name(self.prefix, host))
            .with_command(["sleep", "infinity"])
            .with_kwargs(
                # NET_ADMIN: routes, tc, nft; NET_RAW: tcpdump; pure-ftpd drops privileges
                # with capabilities it must hold first (DAC_READ_SEARCH, SYS_NICE).
                hostname=host, labels=self.labels(),
                cap_add=["NET_ADMIN", "NET_RAW", "DAC_READ_SEARCH", "SYS_NICE"],
                sysctls={"net.ipv4.ip_forward": "1" if forward else "0"},
                extra_hosts=extra_hosts, init=True,
                network=first, networking_config={first: EndpointConfig(
                    self.client.api.api_version, **self._addresses(host, links[0].name))}))
        for path in self.mounts:  # at the same path: configs and files are where they are
            container.with_volume_mapping(str(path), str(path), "rw")
        container.start()
        self._containers.append(container)
        for link in links[1:]:
            self.client.networks.get(network_name(self.prefix, link.name)).connect(
                container.get_container_id(), **self._addresses(host, link.name))

    def _addresses(self, host: str, link: str) -> dict[str, str]:
        given = {"ipv4_address": str(self.topology.addresses[(host, link)])}
        if (host, link) in self.topology.addresses6:
            given["ipv6_address"] = str(self.topology.addresses6[(host, link)])
        return given

    def down(self) -> None:
        for container in self._containers:
            container.stop()
        self._containers = []
        for network in self._networks:
            network.remove()
        self._networks = []
        if not self._containers:  # `testbed down` of a kept run: by name
            self._remove_by_name()

    def _remove_by_name(self) -> None:
        import docker.errors

        for host in self.topology.hosts:
            with contextlib.suppress(docker.errors.NotFound):
                self.client.containers.get(container_name(self.prefix, host)).remove(force=True)
        for link in self.topology.links:
            with contextlib.suppress(docker.errors.NotFound):
                self.client.networks.get(network_name(self.prefix, link.name)).remove()

    # -- inside the hosts --------------------------------------------------------------------
    def exec_prefix(self, host: str) -> list[str]:
        return dockerexec.prefix(self.namespaces[host])

    def run(self, host: str, argv: Sequence[str], check: bool = False, timeout: float = 120,
            **kwargs: object) -> subprocess.CompletedProcess[str]:
        """ARGV inside the host; `input` (text) is its stdin. A `dockerexec` prefix in ARGV
        (a client driver's) is the host's own and is dropped."""
        argv = list(argv)
        if dockerexec.container_of(argv) is not None:
            argv = argv[5:]
        text_in = kwargs.get("input")
        out, err = _Buffer(), _Buffer()
        container = self.namespaces[host]
        pid_file = f"{dockerexec.PID_DIR}/run-{uuid.uuid4().hex}.pid"
        codes: list[int] = []
        worker = threading.Thread(target=lambda: codes.append(dockerexec.run_inside(
            container, argv, out=out, err=err, pid_file=pid_file,
            stdin=text_in.encode() if isinstance(text_in, str) else None)), daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():  # as subprocess.run: kill it, then say so
            dockerexec.kill_tree(container, pid_file, children_only=False)
            worker.join(10)
            raise subprocess.TimeoutExpired(argv, timeout, out.text(), err.text())
        code = codes[0] if codes else 1
        done = subprocess.CompletedProcess(argv, code, out.text(), err.text())
        if check and code != 0:
            raise subprocess.CalledProcessError(code, argv, done.stdout, done.stderr)
        return done

    def status_kib(self, host: str, shim_pid: int, key: str) -> int:
        """A /proc/PID/status figure (VmHWM, VmRSS) of the process a shim started."""
        pid_file = dockerexec.pid_file_for(shim_pid)
        done = self.run(host, ["/bin/sh", "-c", f"cat /proc/$(cat {pid_file})/status"])
        for line in done.stdout.splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
        raise RuntimeError(f"no {key} in {host} for {pid_file}: {done.stderr.strip()}")

    def iface(self, host: str, link: str) -> str:
        return self._ifaces[(host, link)]

    def ensure_user(self, name: str, password: str, home: str) -> None:
        """The user in every container, with the host's uid where the host has it."""
        try:
            uid = ["-u", str(pwd.getpwnam(name).pw_uid), "-o"]
        except KeyError:
            uid = []
        for host in self.topology.hosts:
            self.run(host, ["useradd", *uid, "--no-create-home", "--home-dir", home,
                            "--shell", "/bin/sh", name])
            self.run(host, ["chpasswd"], input=f"{name}:{password}\n", check=True)


class _Buffer:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    def flush(self) -> None:
        pass

    def text(self) -> str:
        return self.data.decode(errors="replace")
