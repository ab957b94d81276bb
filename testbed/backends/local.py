"""Local backend, for a user without root: every host is an address on loopback.

Linux routes all of 127.0.0.0/8 to `lo`, so each host gets its own address there,
127.<a>.<b>.<n>, with <a>.<b> drawn from the process id so that parallel runs (pytest-xdist
workers) do not meet. Servers bind to their host's address; a user without root gets
port + 20000 for any port below 1024.

What this backend cannot do, and says so in every verdict it cannot judge:
- per-link capture: every host shares one `lo`, there is no link to tap, so `encrypted`,
  `cleartext` and `no_bypass` are reported as not judged;
- routing isolation: every host reaches every other one;
- link faults (rate, netem, link down);
- host names: nothing resolves them, so clients get addresses and configs use the
  `{host}` placeholders, which hold addresses;
- without root: system users. sshd logs in only the user running it, by key, so such
  scenarios use `user = "{ssh_user}"` and a key; vsftpd, proftpd and pure-ftpd need root.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import subprocess
from collections.abc import Sequence

from testbed.topology import Topology

_counter = itertools.count(1)
UNPRIVILEGED_PORT_SHIFT = 20000
CAPTURE_UNAVAILABLE = ("the local backend has no per-link capture (all hosts share "
                       "loopback); run as root with the netns backend")


def available() -> str | None:
    return None  # loopback is everywhere


def loopback_base(pid: int, run: int) -> tuple[int, int]:
    """The second and third octets of this run's addresses: never 127.0.0.x, which is the
    machine's own, and different for runs of different processes."""
    key = (pid * 8 + run) % (190 * 256)
    return 64 + key // 256, key % 256


def relocate(topology: Topology, base: tuple[int, int]) -> Topology:
    """The same hosts and links, each host at one loopback address on all its links."""
    own = {name: ipaddress.IPv4Address(f"127.{base[0]}.{base[1]}.{index}")
           for index, name in enumerate(topology.hosts, start=1)}
    addresses = {(host, link): own[host] for (host, link) in topology.addresses}
    return Topology(dict(topology.hosts), list(topology.links), addresses, {})


class LocalBackend:
    kind = "local"
    capture_unavailable: str | None = CAPTURE_UNAVAILABLE

    def __init__(self, topology: Topology, keep_name: str | None = None,
                 root: bool | None = None) -> None:
        self.root = os.geteuid() == 0 if root is None else root
        self.topology = relocate(topology, loopback_base(os.getpid(), next(_counter)))
        self.namespaces: dict[str, str] = {}

    def up(self) -> None:
        """Nothing to build: the addresses exist as soon as something binds them."""

    def down(self) -> None:
        """Nothing to remove: the runner stops the processes it started."""

    def exec_prefix(self, host: str) -> list[str]:
        return []

    def run(self, host: str, argv: Sequence[str], check: bool = False,
            timeout: float = 120, **kwargs: object) -> subprocess.CompletedProcess[str]:
        done: subprocess.CompletedProcess[str] = subprocess.run(  # type: ignore[call-overload]
            list(argv), capture_output=True, text=True, check=check, timeout=timeout, **kwargs)
        return done

    def listen_address(self, host: str, wildcard: str) -> str:
        return self.topology.address(host)  # the wildcard would be every host's at once

    def port(self, port: int) -> int:
        return port if self.root or port >= 1024 else port + UNPRIVILEGED_PORT_SHIFT

    def socks_host(self, host: str) -> str:
        return self.topology.address(host)

    def resolve(self, name: str) -> str:
        return self.topology.address(name) if name in self.topology.hosts else name

