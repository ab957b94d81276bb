"""The netns backend and faults with real namespaces: isolation, routing, names, netem,
link down, sweep of a crashed run's leftovers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed import faults, tcpstats
from testbed.backends import netns
from testbed.backends.netns import NetnsBackend
from testbed.clients.gate import StartGate
from testbed.topology import build

pytestmark = pytest.mark.integration

CONNECT = """
import socket, sys, time
t = time.perf_counter()
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()
    print(f"ok {(time.perf_counter() - t) * 1000:.1f}")
except OSError as exc:
    print(f"fail {exc.__class__.__name__}")
"""
LISTEN = "import socket,time; s=socket.socket(); s.bind(('0.0.0.0', 7000)); s.listen(); " \
         "time.sleep(600)"


@pytest.fixture
def backend() -> Iterator[NetnsBackend]:
    reason = netns.available()
    if reason:
        pytest.skip(reason)
    topo = build([{"name": "client"}, {"name": "ssh"}, {"name": "ftp"}],
                 [{"name": "lan", "hosts": ["client", "ssh"]},
                  {"name": "dmz", "hosts": ["ssh", "ftp"]}])
    b = NetnsBackend(topo)
    b.up()
    listeners = [subprocess.Popen([*b.exec_prefix(h), sys.executable, "-c", LISTEN])
                 for h in ("ssh", "ftp")]
    time.sleep(0.5)
    yield b
    for proc in listeners:
        proc.kill()
    b.down()
    assert not [ns for ns in netns.list_namespaces() if ns in b.namespaces.values()]


def connect(b: NetnsBackend, host: str, target: str) -> str:
    return b.run(host, [sys.executable, "-c", CONNECT, target, "7000"]).stdout.strip()


def test_hosts_resolve_by_name_and_reach_only_their_links(backend: NetnsBackend) -> None:
    assert connect(backend, "client", "ssh").startswith("ok")  # by name, via /etc/netns hosts
    assert connect(backend, "ssh", "ftp").startswith("ok")
    # No forwarding host: the client cannot reach the FTP host at all.
    assert connect(backend, "client", backend.topology.address("ftp")).startswith("fail")


SEND = """
import socket, sys, time
s = socket.create_connection((sys.argv[1], 7001), timeout=10)
t = time.perf_counter()
s.sendall(b"x" * 1_000_000)
s.shutdown(socket.SHUT_WR)
s.recv(1)
print(f"{time.perf_counter() - t:.3f}")
"""
SINK = ("import socket; s=socket.socket(); s.bind(('0.0.0.0', 7001)); s.listen(); "
        "c,_=s.accept()\nwhile c.recv(65536): pass\nc.close()")


def send_1mb(b: NetnsBackend) -> float:
    sink = subprocess.Popen([*b.exec_prefix("ssh"), sys.executable, "-c", SINK])
    time.sleep(0.3)
    try:
        return float(b.run("client", [sys.executable, "-c", SEND, "ssh"]).stdout)
    finally:
        sink.wait(10)


def test_rate_limit_and_link_down(backend: NetnsBackend) -> None:
    faults.rate(backend, "lan", mbit=8)
    limited = send_1mb(backend)
    assert limited >= 0.8, limited  # 8 Mbit/s is 1 MB/s: a megabyte takes about a second
    faults.clear(backend, "lan")
    assert send_1mb(backend) < limited / 4
    faults.link_state(backend, "lan", up=False)
    assert connect(backend, "client", "ssh").startswith("fail")
    faults.link_state(backend, "lan", up=True)
    assert connect(backend, "client", "ssh").startswith("ok")


def test_netem_applies_or_says_the_kernel_lacks_it(backend: NetnsBackend) -> None:
    try:
        faults.netem(backend, "lan", delay_ms=50)
    except faults.FaultUnavailable as exc:
        assert "sch_netem" in str(exc)  # this machine's kernel: said plainly, not faked
        return
    delayed = float(connect(backend, "client", "ssh").split()[1])
    assert delayed >= 100  # a TCP handshake is one round trip: 2 x 50 ms


def test_sweep_removes_only_a_dead_runs_namespaces() -> None:
    reason = netns.available()
    if reason:
        pytest.skip(reason)
    dead_pid = 4194000  # above any pid this machine hands out (pid_max is 4194304)
    stale, foreign = f"fts-{dead_pid}-1-client", "someone-elses-ns"
    live = f"fts-{os.getpid()}-999-client"
    for ns in (stale, foreign, live):
        subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        removed = netns.sweep()
        names = netns.list_namespaces()
        assert stale in removed and stale not in names
        assert foreign in names and live in names
    finally:
        for ns in (stale, foreign, live):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


UDP_SINK = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 7002))
s.settimeout(2)
got = 0
try:
    while True:
        s.recv(64)
        got += 1
except TimeoutError:
    print(got)
"""
UDP_SEND = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for n in range(2000):
    s.sendto(b"x", (sys.argv[1], 7002))
    if n % 100 == 0:
        time.sleep(0.01)  # never overrun the sink's buffer: only the link may drop
"""


def udp_delivered(b: NetnsBackend) -> int:
    """Of 2,000 datagrams sent client -> ssh, how many arrived."""
    sink = subprocess.Popen([*b.exec_prefix("ssh"), sys.executable, "-c", UDP_SINK],
                            stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    sent = b.run("client", [sys.executable, "-c", UDP_SEND, "ssh"])
    assert sent.returncode == 0, sent.stderr
    out, _ = sink.communicate(timeout=30)
    return int(out)


def test_random_loss_drops_its_share_and_clears(backend: NetnsBackend) -> None:
    assert udp_delivered(backend) == 2000  # the control: a clean link loses nothing
    faults.loss(backend, "lan", pct=20)
    lossy = udp_delivered(backend)
    assert 1400 <= lossy <= 1800, lossy  # 20% of 2,000 is 400 lost; binomial sd is 18
    faults.loss(backend, "lan", pct=0)
    assert udp_delivered(backend) == 2000


FULL_LISTENER = ("import socket,time; s=socket.socket(); s.bind(('0.0.0.0', 7003)); s.listen(0); "
                 "time.sleep(600)")  # a backlog of 0 that never accepts: one fits, then drops
HOLD_CONNECTS = """
import socket, sys, time
held = []
for _ in range(int(sys.argv[2])):
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex((sys.argv[1], 7003))
    held.append(s)
time.sleep(1.5)  # past the first SYN retransmit (1 s)
"""


def test_step_report_sees_listen_queue_overflows(backend: NetnsBackend) -> None:
    hosts = ["client", "ssh"]
    before = tcpstats.snapshot(backend, hosts)
    assert connect(backend, "client", "ssh").startswith("ok")  # the control: a roomy queue
    assert tcpstats.describe(tcpstats.growth(before, tcpstats.snapshot(backend, hosts))) == ""
    full = subprocess.Popen([*backend.exec_prefix("ssh"), sys.executable, "-c", FULL_LISTENER])
    try:
        time.sleep(0.5)
        before = tcpstats.snapshot(backend, hosts)
        held = backend.run("client", [sys.executable, "-c", HOLD_CONNECTS, "ssh", "6"])
        assert held.returncode == 0, held.stderr
        after = tcpstats.snapshot(backend, hosts)
    finally:
        full.kill()
    assert after["ssh"]["ListenOverflows"] - before["ssh"]["ListenOverflows"] >= 4
    assert after["client"]["TCPSynRetrans"] > before["client"]["TCPSynRetrans"]
    assert "ssh: " in tcpstats.describe(tcpstats.growth(before, after))


def test_start_gate_holds_every_client_until_all_are_ready(tmp_path: Path) -> None:
    gate = StartGate(tmp_path / "gate", clients=3)
    procs = []
    for n in range(3):
        procs.append(subprocess.Popen(
            [*gate.prefix(n), "sh", "-c", f"date +%s.%N > {tmp_path / str(n)}"]))
    while len(list(gate.ready.iterdir())) < 3:
        time.sleep(0.02)
    time.sleep(0.3)  # time enough for a client the gate failed to hold to run
    held_until = time.time()
    assert gate.open(timeout=10) == 3
    for proc in procs:
        assert proc.wait(5) == 0
    started = [float((tmp_path / str(n)).read_text()) for n in range(3)]
    assert all(t >= held_until for t in started), (held_until, started)  # none went early
    # A client that arrives after the gate opened passes at once instead of hanging.
    late = subprocess.run([*gate.prefix(3), "true"], timeout=5)
    assert late.returncode == 0
