"""The testbed's pure parts: address plans and routes, scenario validation, and the TCP
reassembly the verdicts rely on (fed hand-made pcaps with reordering and retransmission)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from testbed import capture, runner, tcpstats
from testbed.capture import Capture
from testbed.scenario import ScenarioError, load
from testbed.topology import TopologyError, build

THREE = dict(hosts=[{"name": "client"}, {"name": "ssh", "forward": True}, {"name": "ftp"}],
             links=[{"name": "lan", "hosts": ["client", "ssh"]},
                    {"name": "dmz", "hosts": ["ssh", "ftp"]}])


def test_address_plan_routes_and_hosts_file() -> None:
    topo = build(**THREE)
    assert topo.address("client") == "10.77.1.1"
    assert topo.address("ssh", "dmz") == "10.77.2.1"
    assert topo.address("ftp") == "10.77.2.2"
    assert [(str(net), via) for net, via in topo.routes("client")] == [("10.77.2.0/24",
                                                                       "10.77.1.2")]
    assert topo.routes("ssh") == []
    assert "10.77.2.2 ftp" in topo.hosts_file()


def test_without_a_forwarding_host_the_client_sees_only_its_link() -> None:
    spec = {**THREE, "hosts": [{"name": "client"}, {"name": "ssh"}, {"name": "ftp"}]}
    assert build(**spec).routes("client") == []


@pytest.mark.parametrize(("hosts", "links", "reason"), [
    ([{"name": "a"}], [], "on no link"),
    ([{"name": "a"}, {"name": "a"}], [], "defined twice"),
    ([{"name": "a-b"}], [], "letters"),
    ([{"name": "a"}, {"name": "b"}], [{"name": "l", "hosts": ["a", "c"]}], "two different"),
])
def test_bad_topologies(hosts: list[dict[str, str]], links: list[dict[str, object]],
                        reason: str) -> None:
    with pytest.raises(TopologyError, match=reason):
        build(hosts, links)


def test_every_shipped_scenario_loads() -> None:
    folder = Path(__file__).resolve().parents[2] / "scenarios"
    names = {load(path).name for path in folder.glob("*.toml")}
    assert {"plain-ftp", "ssh-D-passive", "ssh-D-active-bypass",
            "ftp-tunnel-third-host"} <= names


TWO_HOSTS = ('[[topology.host]]\nname = "a"\n[[topology.host]]\nname = "b"\n'
             '[[topology.link]]\nname = "l"\nhosts = ["a", "b"]\n')


@pytest.mark.parametrize(("extra", "reason"), [
    ('[[service]]\nkind = "iis"\nhost = "a"\n', "service[1].kind"),
    ('[[service]]\nkind = "sshd"\nhost = "zz"\n', "no host 'zz'"),
    ('[[check]]\nverdict = "encrypted"\nlink = "nope"\n', "no link named 'nope'"),
    ('[[check]]\nverdict = "magic"\n', "check[1].verdict"),
    ('[[check]]\nverdict = "listen_drops"\nservice = "vsftpd"\n',
     "'vsftpd' is not a service of this scenario"),
    ('[proxy]\nkind = "vpn"\n', "proxy.kind"),
    # keys of the step itself: faults and operations
    ('before = ["loss nope 5%"]\n', "no link named 'nope'"),
    ('before = ["loss l 5"]\n', "want 'stop|start|restart"),
    ('during = ["reboot sshd"]\n', "'reboot sshd'"),
    ('during = ["sleep soon"]\n', "'sleep soon'"),
    ('ops = ["wait"]\n', "'wait' needs client = \"ftplib\""),
    ('deadline = 0\n', "step[1].deadline"),
    ('deadline = "soon"\n', "'soon' is not a positive number"),
])
def test_bad_scenarios_say_where(tmp_path: Path, extra: str, reason: str) -> None:
    path = tmp_path / "s.toml"
    path.write_text(TWO_HOSTS + '[[step]]\nmode = "epsv"\n' + extra)
    with pytest.raises(ScenarioError, match=re.escape(reason)):
        load(path)


def test_link_faults_and_an_idle_session_load(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(TWO_HOSTS +
                    '[[step]]\nclient = "ftplib"\nmode = "pasv"\nops = ["wait"]\nidle = 2.5\n'
                    'before = ["loss l 2.5%", "down l", "sleep 1", "up l", "restart sshd"]\n'
                    'deadline = 180\n')
    step = load(path).steps[0]
    assert step.idle == 2.5 and step.before[0] == "loss l 2.5%" and step.deadline == 180


NETSTAT = ("TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPTimeouts TCPSynRetrans\n"
           "TcpExt: 0 3 4 7 9\n"
           "IpExt: InNoRoutes ListenOverflows\n"
           "IpExt: 1 99\n")


def test_tcp_counters_come_from_the_tcpext_pair_only() -> None:
    counters = tcpstats.parse_netstat(NETSTAT)
    assert counters["ListenOverflows"] == 3 and counters["TCPSynRetrans"] == 9
    assert "InNoRoutes" not in counters


def test_tcp_trouble_names_only_what_grew() -> None:
    before = {"client": {"ListenOverflows": 3, "TCPSynRetrans": 9},
              "ftp": {"ListenOverflows": 0, "ListenDrops": 0}}
    after = {"client": {"ListenOverflows": 3, "TCPSynRetrans": 11},
             "ftp": {"ListenOverflows": 25, "ListenDrops": 25}}
    assert tcpstats.describe(tcpstats.growth(before, after)) == (
        "client: 2 SYN retransmits; ftp: 25 listen-queue overflows, "
        "25 SYNs dropped at a listener")
    assert tcpstats.describe(tcpstats.growth(after, after)) == ""


def test_tcp_trouble_adds_up_over_the_steps() -> None:
    total: dict[str, dict[str, int]] = {}
    first = tcpstats.growth({"ftp": {"ListenDrops": 2}}, {"ftp": {"ListenDrops": 5},
                                                          "ssh": {"TCPSynRetrans": 0}})
    assert first == {"ftp": {"ListenDrops": 3}}
    tcpstats.add_growth(total, first)
    tcpstats.add_growth(total, {"ftp": {"ListenDrops": 4}, "ssh": {"TCPSynRetrans": 1}})
    assert total == {"ftp": {"ListenDrops": 7}, "ssh": {"TCPSynRetrans": 1}}
    assert tcpstats.describe(total) == "ftp: 7 SYNs dropped at a listener; ssh: 1 SYN retransmits"


def test_sessions_at_once_and_failed_ranges() -> None:
    # Three overlap in [2, 3); a span ending where another starts does not overlap it.
    assert runner._most_at_once([(0, 3), (1, 4), (2, 5), (5, 6)]) == 3
    assert runner._most_at_once([(0, 1), (1, 2)]) == 1
    assert runner._most_at_once([]) == 0
    assert runner._ranges([7, 1, 2, 3, 9, 10]) == "1-3, 7, 9-10"


def write_pcap(path: Path, segments: list[tuple[int, bytes]], syn: bool = True) -> None:
    from scapy.layers.inet import IP, TCP
    from scapy.utils import wrpcap

    base = 4294967000  # near the top of the 32-bit space: the stream wraps
    packets = []
    if syn:
        packets.append(IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=5, dport=21, flags="S",
                                                               seq=base - 1))
    for offset, data in segments:
        packets.append(IP(src="10.0.0.1", dst="10.0.0.2") /
                       TCP(sport=5, dport=21, flags="PA", seq=(base + offset) % (1 << 32)) / data)
    wrpcap(str(path), packets)


def test_reassembly_orders_dedupes_and_survives_wrap(tmp_path: Path) -> None:
    pcap = tmp_path / "t.pcap"
    # "PASS secret" split across segments, sent out of order, one retransmitted.
    write_pcap(pcap, [(7, b"SS sec"), (0, b"USER "), (13, b"ret\r\n"), (7, b"SS sec"),
                      (0, b"USER PA")])
    streams = capture.reassemble(pcap)
    assert streams[("10.0.0.1", 5, "10.0.0.2", 21)] == b"USER PASS secret\r\n"
    cap = Capture("lan", pcap, packets=6, dropped=0)
    assert capture.cleartext(cap, [b"PASS secret"]).passed
    verdict = capture.encrypted(cap, [b"PASS secret"])
    assert not verdict.passed and "NOT seen" in verdict.detail


def test_encrypted_needs_the_banner_and_a_capture(tmp_path: Path) -> None:
    pcap = tmp_path / "ssh.pcap"
    write_pcap(pcap, [(0, b"SSH-2.0-OpenSSH_9.2\r\n"), (21, b"\x8a\x01random")])
    assert capture.encrypted(Capture("lan", pcap, packets=3, dropped=0), [b"secret"]).passed
    empty = capture.encrypted(Capture("lan", pcap, packets=0, dropped=0), [b"secret"])
    assert not empty.passed and "no packets" in empty.detail
    lossy = capture.encrypted(Capture("lan", pcap, packets=3, dropped=2), [b"secret"])
    assert not lossy.passed and "dropped" in lossy.detail


def test_no_bypass_sees_a_direct_flow(tmp_path: Path) -> None:
    pcap = tmp_path / "b.pcap"
    write_pcap(pcap, [(0, b"data")])
    cap = Capture("lan", pcap, packets=2, dropped=0)
    assert not capture.no_bypass([cap], ["10.0.0.1"], ["10.0.0.2"]).passed
    assert capture.no_bypass([cap], ["10.0.0.1"], ["10.0.0.9"]).passed


def test_matrix_files_are_what_the_generator_writes() -> None:
    from testbed import matrix

    folder = Path(__file__).resolve().parents[2] / "scenarios"
    for server in matrix.SERVERS:
        assert (folder / f"matrix-{server}.toml").read_text() == matrix.render(server), (
            f"regenerate: python -m testbed.matrix scenarios/ ({server})")
        scenario = load(folder / f"matrix-{server}.toml")
        assert len(scenario.steps) == len(matrix.CLIENTS) * len(matrix.MODES)


def test_reassembly_sees_ipv6_flows(tmp_path: Path) -> None:
    from scapy.layers.inet import TCP
    from scapy.layers.inet6 import IPv6
    from scapy.utils import wrpcap

    pcap = tmp_path / "v6.pcap"
    wrpcap(str(pcap), [IPv6(src="fd77::1", dst="fd77::2") / TCP(sport=5, dport=21, flags="PA",
                                                                  seq=100) / b"PASS secret\r\n"])
    cap = Capture("lan", pcap, packets=1, dropped=0)
    assert capture.cleartext(cap, [b"PASS secret"]).passed
    assert not capture.no_bypass([cap], ["fd77::1"], ["fd77::2"]).passed


def test_ipv6_links_get_addresses_and_their_own_names() -> None:
    spec = {**THREE, "links": [{**link, "ipv6": True} for link in THREE["links"]]}
    topo = build(**spec)
    assert topo.address6("ftp") == "fd77:0:2::2"
    assert "fd77:0:2::2 ftp-v6" in topo.hosts_file()
    assert "10.77.2.2 ftp" in topo.hosts_file()  # IPv4 names stay IPv4
