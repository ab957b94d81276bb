"""Backends build a topology's hosts: `netns` (default, root), `local` (loopback, no root)
and `docker` (an engine). `make` picks one by name."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

from testbed.backends import docker, local, netns
from testbed.backends.base import Backend
from testbed.topology import Topology

_runs = itertools.count(1)
KINDS = ("netns", "local", "docker")


def unavailable(kind: str) -> str | None:
    """None if the backend can run here, else why not."""
    return {"netns": netns.available, "local": local.available,
            "docker": docker.available}[kind]()


def make(kind: str, topology: Topology, keep_name: str | None = None,
         mounts: tuple[Path, ...] = ()) -> Backend:
    """`mounts`: folders the runner writes that a container must see at the same path."""
    if kind == "netns":
        return netns.NetnsBackend(topology, keep_name=keep_name)
    if kind == "local":
        return local.LocalBackend(topology, keep_name=keep_name)
    if kind == "docker":
        prefix = f"ftsup-{keep_name}" if keep_name else f"fts-{os.getpid()}-{next(_runs)}"
        return docker.DockerBackend(topology, prefix, mounts, kept=keep_name is not None)
    raise ValueError(f"unknown backend {kind!r}; one of {', '.join(KINDS)}")
