"""The docker backend's pure parts (subnet plans, argv mapping for the image, the exec
prefix) and its live test, which needs an engine (ci/setup starts one)."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

import pytest

from testbed.backends import docker, dockerexec
from testbed.topology import build

TOPO = build([{"name": "client"}, {"name": "ssh", "forward": True}, {"name": "ftp"}],
             [{"name": "lan", "hosts": ["client", "ssh"]},
              {"name": "dmz", "hosts": ["ssh", "ftp"], "ipv6": True}])


def test_relocate_moves_every_link_to_the_plan_and_keeps_each_hosts_place() -> None:
    moved = docker.relocate(TOPO, ipaddress.IPv4Network("10.181.0.0/16"))
    assert [str(link.subnet) for link in moved.links] == ["10.181.1.0/24", "10.181.2.0/24"]
    assert moved.address("client") == "10.181.1.1" and moved.address("ftp") == "10.181.2.2"
    assert moved.address("ssh", "dmz") == "10.181.2.1"
    assert moved.routes("client") == [(ipaddress.IPv4Network("10.181.2.0/24"), "10.181.1.2")]
    assert str(moved.links[1].subnet6) == "fd77:b5:2::/64" and moved.address6("ftp") == (
        "fd77:b5:2::2")
    assert TOPO.address("client") == "10.77.1.1"  # the scenario's own stays as it was


def test_free_plans_skip_every_taken_subnet() -> None:
    taken = [ipaddress.IPv4Network("10.180.3.0/24"), ipaddress.IPv4Network("172.17.0.0/16"),
             ipaddress.IPv4Network("10.0.0.0/9")]  # 10.0-127: none of ours
    plans = docker.free_plans(taken)
    assert plans[0] == ipaddress.IPv4Network("10.181.0.0/16") and len(plans) == 69


def test_image_argv_maps_the_host_venv_to_the_images_python() -> None:
    venv = "/work/x/.venv"
    assert dockerexec.image_argv([f"{venv}/bin/python", "-c", "x"], venv) == [
        dockerexec.IMAGE_PYTHON, "-c", "x"]
    assert dockerexec.image_argv([f"{venv}/bin/tunnel", "serve"], venv) == [
        dockerexec.IMAGE_PYTHON, "-m", "tunnel.cli", "serve"]
    assert dockerexec.image_argv(["/usr/sbin/sshd", "-D"], venv) == ["/usr/sbin/sshd", "-D"]


def test_the_exec_prefix_names_its_container_and_the_process_tells_its_pid() -> None:
    prefix = dockerexec.prefix("fts-1-client")
    assert prefix[0] == sys.executable and dockerexec.container_of(prefix) == "fts-1-client"
    assert dockerexec.container_of(["ip", "netns", "exec", "x", "--"]) is None
    wrapped = dockerexec.wrapped(["curl", "-sS"], "/run/fts-exec/7.pid")
    assert wrapped[:3] == ["setsid", "-w", "/bin/sh"] and wrapped[-2:] == ["curl", "-sS"]
    assert "echo $$ > /run/fts-exec/7.pid" in wrapped[4]


def test_live_topology_in_docker(tmp_path: Path) -> None:
    reason = docker.available()
    if reason:
        pytest.skip(reason)
    backend = docker.DockerBackend(TOPO, f"fts-live-{tmp_path.name[-6:]}", [tmp_path])
    backend.up()
    try:
        ftp = backend.topology.address("ftp")
        got = backend.run("client", ["getent", "hosts", "ftp"], check=True)
        assert ftp in got.stdout
        # Routed through ssh (forward = true): the client reaches the ftp host's address.
        assert backend.run("client", ["ping", "-c", "1", "-W", "2", ftp]).returncode == 0 or \
            backend.run("client", ["ip", "route", "get", ftp], check=True).stdout.count("via")
        echo = backend.run("ftp", ["cat"], input="through stdin")
        assert echo.stdout == "through stdin" and echo.returncode == 0
        assert backend.run("ftp", ["sh", "-c", "exit 3"]).returncode == 3
    finally:
        backend.down()
    assert docker.sweep(backend.client) == 0  # nothing of ours left behind
