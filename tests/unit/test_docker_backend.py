"""The docker backend's mapping from a topology to docker commands (pure), and its live test,
which needs an engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.backends import docker
from testbed.topology import build

TOPO = build([{"name": "client"}, {"name": "ssh", "forward": True}, {"name": "ftp"}],
             [{"name": "lan", "hosts": ["client", "ssh"]},
              {"name": "dmz", "hosts": ["ssh", "ftp"], "ipv6": True}])


def test_networks_carry_the_topology_subnets_and_stay_internal() -> None:
    plan = docker.plan_up(TOPO, "fts-1-1", [Path("/out")])
    nets = [argv for argv in plan if argv[:3] == ["docker", "network", "create"]]
    assert [argv[-1] for argv in nets] == ["fts-1-1-lan", "fts-1-1-dmz"]
    lan, dmz = nets
    assert "--internal" in lan and lan[lan.index("--subnet") + 1] == "10.77.1.0/24"
    assert lan[lan.index("--gateway") + 1] == "10.77.1.254"  # .1 and .2 are hosts
    assert "--ipv6" in dmz and "fd77:0:2::/64" in dmz


def test_containers_get_addresses_names_mounts_and_capabilities() -> None:
    plan = docker.plan_up(TOPO, "p", [Path("/out"), Path("/var/tmp")])
    runs = {argv[argv.index("--name") + 1]: argv for argv in plan if argv[:2] == ["docker", "run"]}
    ssh = runs["p-ssh"]
    assert ssh[ssh.index("--ip") + 1] == "10.77.1.2"
    assert "net.ipv4.ip_forward=1" in ssh and "NET_ADMIN" in ssh and "NET_RAW" in ssh
    assert "/out:/out" in ssh and "/var/tmp:/var/tmp" in ssh
    assert "ftp:10.77.2.2" in ssh
    connect = [argv for argv in plan if argv[:3] == ["docker", "network", "connect"]]
    assert connect == [["docker", "network", "connect", "--ip", "10.77.2.1", "p-dmz", "p-ssh"]]
    routes = [argv for argv in plan if argv[:2] == ["docker", "exec"]]
    assert routes == [["docker", "exec", "p-client", "ip", "route", "add", "10.77.2.0/24",
                       "via", "10.77.1.2"],
                      ["docker", "exec", "p-ftp", "ip", "route", "add", "10.77.1.0/24",
                       "via", "10.77.2.1"]]


def test_down_removes_containers_then_networks() -> None:
    plan = docker.plan_down(TOPO, "p")
    assert plan[:3] == [["docker", "rm", "-f", f"p-{h}"] for h in ("client", "ssh", "ftp")]
    assert plan[3:] == [["docker", "network", "rm", "p-lan"], ["docker", "network", "rm", "p-dmz"]]


def test_live_topology_in_docker(tmp_path: Path) -> None:
    reason = docker.available()
    if reason:
        pytest.skip(reason)
    backend = docker.DockerBackend(TOPO, f"fts-live-{tmp_path.name[-6:]}", [tmp_path])
    backend.up()
    try:
        got = backend.run("client", ["getent", "hosts", "ftp"], check=True)
        assert "10.77.2.2" in got.stdout
    finally:
        backend.down()
