"""What the runner, clients and faults need from a backend, whichever builds the hosts."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from typing import Protocol

from testbed.topology import Topology


class Backend(Protocol):
    kind: str
    topology: Topology
    namespaces: dict[str, str]  # host -> namespace (empty where hosts share one stack)
    # Why per-link capture cannot run here (None: it can). Checks that need it are reported
    # as not judged, with this reason, instead of passing silently.
    capture_unavailable: str | None

    def up(self) -> None: ...
    def down(self) -> None: ...
    def exec_prefix(self, host: str) -> list[str]: ...
    def run(self, host: str, argv: Sequence[str], check: bool = False,
            timeout: float = 120, **kwargs: object) -> subprocess.CompletedProcess[str]: ...
    def listen_address(self, host: str, wildcard: str) -> str:
        """Where a server on `host` binds: the wildcard inside its own namespace, its own
        address where all hosts share one stack."""
        ...
    def port(self, port: int) -> int:
        """The port a scenario's service really gets (a user without root cannot bind
        below 1024)."""
        ...
    def socks_host(self, host: str) -> str:
        """The address the proxy listens on and the client on `host` dials."""
        ...
    def resolve(self, name: str) -> str:
        """A host name as a client on this backend must write it."""
        ...


class LinkBackend(Protocol):
    """What a per-link capture and the link faults need: hosts with their own interfaces
    (netns, docker)."""

    topology: Topology

    def exec_prefix(self, host: str) -> list[str]: ...
    def run(self, host: str, argv: Sequence[str], check: bool = False,
            timeout: float = 120, **kwargs: object) -> subprocess.CompletedProcess[str]: ...
    def iface(self, host: str, link: str) -> str: ...


class OwnStackPerHost:
    """For backends that give every host its own network stack (namespaces, containers)."""

    def listen_address(self, host: str, wildcard: str) -> str:
        return wildcard  # the wildcard is the host's alone

    def port(self, port: int) -> int:
        return port

    def socks_host(self, host: str) -> str:
        return "127.0.0.1"  # the client host's own loopback, as on a real client machine

    def resolve(self, name: str) -> str:
        return name  # every host has a hosts file naming the others
