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
    ('[proxy]\nkind = "tunnel"\nhost = "a"\ntransparent = "yes"\n', "proxy.transparent"),
    ('[proxy]\nkind = "ssh-D"\nhost = "a"\ntransparent = "local"\n',
     "only the tunnel proxy has it"),
    ('[proxy]\nkind = "tunnel"\nhost = "a"\ntransparent = "gateway"\n',
     "the clients on a host named \"client\""),
    ('before = ["unload-everything"]\n', "'unload-everything'"),
    ('client = "ncftp"\n[proxy]\nkind = "tunnel"\nhost = "a"\n', "ncftp has no SOCKS support"),
    # keys of the step itself: faults and operations
    ('before = ["loss nope 5%"]\n', "no link named 'nope'"),
    ('before = ["loss l 5"]\n', "want 'stop|start|restart"),
    ('during = ["reboot sshd"]\n', "'reboot sshd'"),
    ('during = ["sleep soon"]\n', "'sleep soon'"),
    ('ops = ["wait"]\n', "'wait' needs client = \"ftplib\""),
    ('deadline = 0\n', "step[1].deadline"),
    ('deadline = "soon"\n', "'soon' is not a positive number"),
    ('ops = ["upload-reset"]\n', "'upload-reset' needs client = \"ftplib\""),
    ('during = ["kill-sessions"]\n', "'kill-sessions'"),
    ('ends_within = 2.0\n', "counts from the `during` faults: the step has none"),
    ('during = ["kill-sessions sshd"]\nends_within = -1\n', "step[1].ends_within"),
    ('said = "421"\n', "step[1].said"),
    ('said = [""]\n', "step[1].said"),
    ('limit_rate = "fast"\n', "'fast': want bytes per second as curl writes them"),
    ('client = "lftp"\nlimit_rate = "2M"\n', "only curl and ftplib can keep to a rate"),
    # placed files and `file` checks
    ('[[file]]\nname = "a/b"\n', "file[1].name"),
    ('[[file]]\nname = "x"\nmode = "rwx"\n', "'rwx' is not a mode written in octal"),
    ('[[file]]\nname = "x"\nmode = "0999"\n', "file[1].mode"),
    ('[[file]]\nname = "x"\nmode = 755\n', "file[1].mode"),
    ('[[file]]\nname = "x"\n[[file]]\nname = "x"\n', "'x' is placed twice"),
    ('[[file]]\nname = "x"\nsize_kib = -1\n', "file[1].size_kib"),
    ('[[check]]\nverdict = "file"\n', "check[1].holds"),
    ('[[check]]\nverdict = "file"\nholds = "some"\n', "'some' is not one of placed"),
    ('[[check]]\nverdict = "file"\nholds = "placed"\n', "no [[file]] places 'payload.bin'"),
    ('[[check]]\nverdict = "file"\nholds = "nothing"\nmode = "0644"\n', "has no mode"),
    ('[[check]]\nverdict = "file"\nholds = "payload"\nafter_step = 2\n',
     "2 is not a step number (1 to 1"),
    ('[[check]]\nverdict = "file"\nholds = "payload"\nabsent = ["d/*"]\n', "check[1].absent"),
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


def test_placed_files_file_checks_and_step_keys_load(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(TWO_HOSTS +
                    '[[file]]\nname = "payload.bin"\nsize_kib = 16\nmode = "0755"\n'
                    '[[step]]\nclient = "ftplib"\nmode = "pasv"\nops = ["upload-reset"]\n'
                    '[[step]]\nops = ["upload"]\nduring = ["kill-sessions sshd"]\n'
                    'ends_within = 2\nsaid = ["421"]\n'
                    '[[check]]\nverdict = "file"\nholds = "placed"\nafter_step = 1\n'
                    'absent = [".payload.bin.part-*"]\n'
                    '[[check]]\nverdict = "file"\nname = "x.bin"\nholds = "payload"\n'
                    'mode = "644"\n')
    scenario = load(path)
    assert scenario.files[0].mode == 0o755 and scenario.files[0].size_kib == 16
    step = scenario.steps[1]
    assert step.ends_within == 2.0 and step.said == ("421",) and step.during[0] == (
        "kill-sessions sshd")
    placed, payload = scenario.checks
    assert (placed.name, placed.holds, placed.mode, placed.after_step) == (
        "payload.bin", "placed", None, 1)
    assert (payload.name, payload.holds, payload.mode, payload.after_step) == (
        "x.bin", "payload", 0o644, 0)


def _files(tmp_path: Path) -> tuple[Path, str, Path, tuple[str, int]]:
    import hashlib
    import os

    payload = tmp_path / "payload"
    payload.write_bytes(os.urandom(64 * 1024))
    target = tmp_path / "target"
    target.write_bytes(b"old content")
    target.chmod(0o755)
    return (payload, hashlib.sha256(payload.read_bytes()).hexdigest(), target,
            (hashlib.sha256(b"old content").hexdigest(), 0o755))


def test_file_verdict_placed_passes_only_unchanged(tmp_path: Path) -> None:
    payload, sha, target, placed = _files(tmp_path)
    assert runner.file_faults(target, "placed", None, placed, payload, sha) == []
    target.chmod(0o644)
    assert runner.file_faults(target, "placed", None, placed, payload, sha) == [
        "mode 0644, want 0755"]
    target.write_bytes(payload.read_bytes()[:4096])  # what a cut upload renamed over it is
    target.chmod(0o755)
    assert runner.file_faults(target, "placed", None, placed, payload, sha) == [
        f"holds 4096 bytes: a partial upload of 65536 bytes (sha256 "
        f"{runner.ScenarioRun._sha(target)[:12]})"]
    target.unlink()
    assert runner.file_faults(target, "placed", None, placed, payload, sha) == ["missing"]


def test_file_verdict_payload_with_mode_and_nothing(tmp_path: Path) -> None:
    payload, sha, target, placed = _files(tmp_path)
    assert "holds 11 bytes: not the payload" in runner.file_faults(target, "payload", None, placed,
                                                           payload, sha)[0]
    target.write_bytes(payload.read_bytes())
    assert runner.file_faults(target, "payload", 0o755, placed, payload, sha) == []
    assert runner.file_faults(target, "payload", 0o644, placed, payload, sha) == [
        "mode 0755, want 0644"]
    assert runner.file_faults(target, "nothing", None, placed, payload, sha) == [
        "exists: 65536 bytes (the whole payload), mode 0755"]
    target.write_bytes(payload.read_bytes()[:100])
    assert runner.file_faults(target, "nothing", None, placed, payload, sha) == [
        "exists: 100 bytes (a partial upload of 65536 bytes), mode 0755"]
    target.write_bytes(payload.read_bytes()[:100] + b"CR LF" + payload.read_bytes()[100:200])
    assert runner.file_faults(target, "nothing", None, placed, payload, sha) == [
        "exists: 205 bytes (the payload's first 100 bytes, then others), mode 0755"]
    target.write_bytes(payload.read_bytes() + b"more")
    assert runner.file_faults(target, "nothing", None, placed, payload, sha) == [
        "exists: 65540 bytes (the payload's first 65536 bytes, then others), mode 0755"]
    target.unlink()
    assert runner.file_faults(target, "nothing", None, placed, payload, sha) == []
    assert runner.file_faults(target, "payload", None, placed, payload, sha) == ["missing"]


def test_upload_reset_wants_a_4xx_reply() -> None:
    from testbed.clients import drivers

    assert drivers.RESET_REPLY in drivers.FTPLIB_SCRIPT  # the script prints what we read
    said = "$ python ... -> exit 0\n{} {}\n221 Goodbye.\n"
    assert runner._reset_failures(said.format(drivers.RESET_REPLY, "426 Transfer aborted.")) == []
    assert runner._reset_failures(said.format(drivers.RESET_REPLY, "451 Local error.")) == []
    late = runner._reset_failures(said.format(drivers.RESET_REPLY, "226 Transfer complete."))
    assert late == ["upload-reset: the server answered '226 Transfer complete.' to a cut "
                    "upload, not 426/451"]
    assert "no reply" in runner._reset_failures("Traceback ...\nTimeoutError\n")[0]


def test_kill_sessions_takes_the_children_deepest_first() -> None:
    from testbed import faults

    # 10 the listener; 11 a connection's monitor, 12 its user process, 13 an sftp-server
    # under it; 20 another connection; 30 someone else's process; 1 init.
    parents = {1: 0, 10: 1, 11: 10, 12: 11, 13: 12, 20: 10, 30: 1}
    assert faults.descendants(parents, 10) == [13, 12, 11, 20]
    assert faults.descendants(parents, 13) == []
    stat = "1234 (sshd: fts-x (priv)) S 10 1234 1234 0 -1 4194560 0 0"
    assert faults.parse_ppid(stat) == 10


def test_ends_within_counts_from_the_faults() -> None:
    assert runner.ends_within(100.0, [99.0, 101.5], 2.0, "curl").passed
    late = runner.ends_within(100.0, [113.86], 2.0, "curl")
    assert not late.passed and late.detail == (
        "the client ended 13.86 s after the faults fired (limit 2 s)")
    early = runner.ends_within(100.0, [99.5], 2.0, "curl")
    assert not early.passed and "ended 0.50 s before the faults fired" in early.detail
    assert not runner.ends_within(None, [1.0], 2.0, "curl").passed


def test_said_wants_every_text_in_every_transcript() -> None:
    assert runner.said({"": "reply after the failure: 421 SSH lost\n"}, ("421",), "ftplib").passed
    verdict = runner.said({"": "$ curl ...\ncurl: (55) Send failure: Broken pipe\n"}, ("421",),
                          "curl")
    assert not verdict.passed and verdict.detail == (
        "not said: '421'; the client's last line: curl: (55) Send failure: Broken pipe")
    both = runner.said({"0": "421", "1": "426"}, ("421",), "ftplib")
    assert not both.passed and "'421' (session 1)" in both.detail
