"""The local backend's address and port plan (pure)."""

from __future__ import annotations

import ipaddress

from testbed.backends import local
from testbed.topology import build

TOPO = build([{"name": "client"}, {"name": "ssh", "forward": True}, {"name": "ftp"}],
             [{"name": "lan", "hosts": ["client", "ssh"]},
              {"name": "dmz", "hosts": ["ssh", "ftp"]}])


def test_each_host_gets_one_loopback_address_on_all_its_links() -> None:
    moved = local.relocate(TOPO, (70, 5))
    assert moved.address("client") == "127.70.5.1"
    assert moved.address("ssh", "lan") == moved.address("ssh", "dmz") == "127.70.5.2"
    assert moved.address("ftp") == "127.70.5.3"
    assert all(ipaddress.IPv4Address(a).is_loopback for a in moved.addresses.values())
    assert "127.70.5.3 ftp" in moved.hosts_file()
    assert TOPO.address("ftp") == "10.77.2.2"  # the scenario's own plan is left alone


def test_runs_of_different_processes_and_of_one_process_do_not_meet() -> None:
    bases = {local.loopback_base(pid, run) for pid in range(1000, 1400) for run in (1, 2)}
    assert len(bases) == 800
    assert all(second >= 64 for second, _ in bases)  # never the machine's own 127.0.0.x


def test_privileged_ports_move_only_for_a_user_without_root() -> None:
    user = local.LocalBackend(TOPO, root=False)
    admin = local.LocalBackend(TOPO, root=True)
    assert (user.port(21), user.port(22), user.port(2121)) == (20021, 20022, 2121)
    assert (admin.port(21), admin.port(22)) == (21, 22)


def test_names_become_addresses_and_capture_says_why_not() -> None:
    backend = local.LocalBackend(TOPO, root=False)
    assert backend.resolve("ftp") == backend.topology.address("ftp")
    assert backend.resolve("ftp.example.com") == "ftp.example.com"
    assert backend.listen_address("ssh", "0.0.0.0") == backend.topology.address("ssh")
    assert backend.socks_host("client") == backend.topology.address("client")
    assert backend.capture_unavailable and "per-link capture" in backend.capture_unavailable
    assert backend.exec_prefix("client") == []
