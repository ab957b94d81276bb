"""The daemon's life: SIGHUP reload, SIGTERM drain, idle SSH close, relay refusal from
another host (a real network namespace)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.net import free_port, wait_port
from testbed.proxy import TunnelProxy
from testbed.services.sshd import Sshd
from testbed.socks_client import read_until, socks5_connect

from .conftest import FtpSite, ProxyFactory, require, sshd_log_count
from .test_proxy import _wait_audit, profile_toml, rule_toml

pytestmark = pytest.mark.integration


def wait_for(predicate: object, timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_sighup_reloads_rules_and_refuses_a_bad_file(
        start_proxy: ProxyFactory, ftp_site: FtpSite) -> None:
    require()
    proxy = start_proxy(rule_toml("127.0.0.1", "reject"))
    address = (proxy.host, proxy.port)
    code, sock = socks5_connect(address, "127.0.0.1", ftp_site.port)
    sock.close()
    assert code == 0x02
    text = proxy.config_path.read_text()
    proxy.config_path.write_text(text.replace('action = "reject"', 'action = "direct"'))
    proxy.signal(signal.SIGHUP)
    wait_for(lambda: "reloaded" in proxy.log(), what="reload")
    code, sock = socks5_connect(address, "127.0.0.1", ftp_site.port)
    assert code == 0 and read_until(sock, b"\r\n").startswith(b"220")
    sock.close()
    proxy.config_path.write_text(text.replace('action = "reject"', 'action = "teleport"'))
    proxy.signal(signal.SIGHUP)
    wait_for(lambda: "reload refused" in proxy.log(), what="refused reload")
    assert "rule[1].action" in proxy.log()
    code, sock = socks5_connect(address, "127.0.0.1", ftp_site.port)
    sock.close()
    assert code == 0  # the last good config still serves


def test_sigterm_drains_running_sessions_then_exits(
        start_proxy: ProxyFactory, ftp_site: FtpSite) -> None:
    require()
    proxy = start_proxy(rule_toml("127.0.0.1", "direct"), proxy_extra="drain_timeout = 2.0")
    code, sock = socks5_connect((proxy.host, proxy.port), "127.0.0.1", ftp_site.port)
    assert code == 0 and read_until(sock, b"\r\n").startswith(b"220")
    proxy.signal(signal.SIGTERM)
    wait_for(lambda: "draining 1 sessions" in proxy.log(), what="drain start")
    with pytest.raises(ConnectionRefusedError):  # the listener is closed at once
        socks5_connect((proxy.host, proxy.port), "127.0.0.1", ftp_site.port)
    sock.sendall(b"NOOP\r\n")  # the running session keeps working while draining
    assert read_until(sock, b"\r\n").startswith(b"200")
    assert proxy.proc is not None
    assert proxy.proc.wait(10) == 0
    sock.close()
    records = _wait_audit(proxy, 1)
    assert records[-1]["result"] == "closed-by-proxy"


def test_listeners_take_the_configured_backlog(start_proxy: ProxyFactory) -> None:
    """For a listening socket `ss` shows the backlog as Send-Q. asyncio's own default is
    100, which 200 clients starting at once overflowed."""
    require()
    proxy = start_proxy(rule_toml("127.0.0.1", "direct"), proxy_extra="listen_backlog = 300")
    shown = subprocess.run(["ss", "-ltnH", f"sport = :{proxy.port}"], capture_output=True,
                           text=True, check=True).stdout.split()
    # LISTEN, Recv-Q (connections not yet accepted: a readiness probe may sit there), Send-Q
    assert shown[0] == "LISTEN" and shown[2] == "300", shown


def test_idle_ssh_connection_is_closed(start_proxy: ProxyFactory, sshd: Sshd, keys: Path,
                                       known_hosts: Path, ftp_site: FtpSite) -> None:
    proxy = start_proxy(profile_toml(sshd, keys, known_hosts, extra="idle_timeout = 1.0")
                        + rule_toml("127.0.0.1", "tunnel"))
    closed_before = sshd_log_count(sshd, "Disconnected from user root")
    code, sock = socks5_connect((proxy.host, proxy.port), "127.0.0.1", ftp_site.port)
    assert code == 0 and read_until(sock, b"\r\n").startswith(b"220")
    time.sleep(1.5)  # a channel is open: the connection must stay, idle or not
    assert sshd_log_count(sshd, "Disconnected from user root") == closed_before
    sock.close()
    wait_for(lambda: sshd_log_count(sshd, "Disconnected from user root") == closed_before + 1,
             timeout=5, what="idle close")


@pytest.fixture
def other_host() -> Iterator[tuple[str, str, str]]:
    """A second host: a network namespace joined to this one by a veth pair.
    Yields (namespace, our address, its address)."""
    require("ip")
    tag = os.getpid() % 100000
    ns, veth, peer = f"ftsrelay{tag}", f"ftsv{tag}a", f"ftsv{tag}b"
    octet = tag % 250 + 1
    ours, theirs = f"10.213.{octet}.1", f"10.213.{octet}.2"
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)  # a crashed run's leftover
    for argv in (["ip", "netns", "add", ns],
                 ["ip", "link", "add", veth, "type", "veth", "peer", "name", peer],
                 ["ip", "link", "set", peer, "netns", ns],
                 ["ip", "addr", "add", f"{ours}/30", "dev", veth],
                 ["ip", "link", "set", veth, "up"],
                 ["ip", "-n", ns, "addr", "add", f"{theirs}/30", "dev", peer],
                 ["ip", "-n", ns, "link", "set", peer, "up"],
                 ["ip", "-n", ns, "link", "set", "lo", "up"]):
        subprocess.run(argv, check=True)
    try:
        yield ns, ours, theirs
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
        subprocess.run(["ip", "link", "del", veth], capture_output=True, check=False)


PROBE = """
import sys
from testbed.socks_client import socks5_connect
try:
    code, sock = socks5_connect((sys.argv[1], int(sys.argv[2])), "198.51.100.7", 21, timeout=5)
    print(code)
except (ConnectionError, OSError) as exc:
    print("closed")
"""


def probe_from(ns: str, host: str, port: int) -> str:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    result = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", PROBE, host,
                             str(port)], capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_allow_relay_false_refuses_a_client_on_another_host(
        other_host: tuple[str, str, str], tmp_path: Path) -> None:
    require("ip")
    assert shutil.which("ip")
    ns, ours, theirs = other_host
    outcomes = {}
    for allow in (False, True):
        proxy = TunnelProxy(tmp_path / f"relay-{allow}", "", host=ours,
                            proxy_extra=f"allow_relay = {str(allow).lower()}").start()
        try:
            outcomes[allow] = probe_from(ns, ours, proxy.port)
        finally:
            assert proxy.stop() == 0
        records = [json.loads(line) for line in proxy.audit_path.read_text().splitlines()]
        from_other = [r for r in records if r["client"].startswith(theirs + ":")]
        assert len(from_other) == 1
        if not allow:
            assert from_other[0]["result"] == "refused-relay"
    assert outcomes[False] == "closed"  # no SOCKS byte for a stranger
    assert outcomes[True] == "2"  # served: unmatched destination, rejected by rule


def ctl(proxy: TunnelProxy, *args: str) -> subprocess.CompletedProcess[str]:
    exe = str(Path(sys.executable).parent / "tunnel")
    return subprocess.run([exe, "ctl", "-c", str(proxy.config_path), *args],
                          capture_output=True, text=True, timeout=30)


def test_ctl_status_list_close_reload_on_a_live_daemon(
        start_proxy: ProxyFactory, ftp_site: FtpSite, tmp_path: Path) -> None:
    require()
    sock_path = tmp_path / "ctl" / "tunnel.sock"
    proxy = start_proxy(rule_toml("127.0.0.1", "direct"),
                        proxy_extra=f'control_socket = "{sock_path}"')
    assert oct(sock_path.stat().st_mode & 0o777) == "0o600"  # owner only
    code, sock = socks5_connect((proxy.host, proxy.port), "127.0.0.1", ftp_site.port)
    assert code == 0 and read_until(sock, b"\r\n").startswith(b"220")
    status = json.loads(ctl(proxy, "status").stdout)
    assert status["ok"] and status["sessions"] == 1 and status["bytes_down"] > 0
    assert (status["ftp_openings"], status["ftp_openings_waiting"]) == (0, 0)
    listing = ctl(proxy, "list")
    assert listing.returncode == 0
    assert f"127.0.0.1:{ftp_site.port}" in listing.stdout and "direct" in listing.stdout
    session_id = listing.stdout.splitlines()[1].split()[0]
    assert json.loads(ctl(proxy, "close", session_id).stdout)["closed"] == int(session_id)
    sock.settimeout(5)
    assert sock.recv(100) == b""  # the proxy closed it
    sock.close()
    assert json.loads(ctl(proxy, "close", "999").stdout)["ok"] is False
    assert json.loads(ctl(proxy, "reload").stdout)["ok"]
    wait_for(lambda: "reloaded" in proxy.log(), what="reload via ctl")
    assert json.loads(ctl(proxy, "status").stdout)["sessions"] == 0


CORE_PATTERN = Path("/proc/sys/kernel/core_pattern")
CRASH_WITH_A_SECRET = ("import os, signal, sys, time; held = sys.argv[1] * 3; "
                       "print('ready', flush=True); time.sleep(60)")


def _allow_cores() -> None:
    """What an administrator's `ulimit -c unlimited` does, for the process about to start."""
    import resource
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


def _crash_and_collect_cores(proc: subprocess.Popen[str], cwd: Path) -> list[Path]:
    proc.send_signal(signal.SIGSEGV)  # default action: terminate and dump core
    proc.wait(30)
    time.sleep(0.5)
    return sorted(cwd.glob("core*"))


def test_no_core_of_ours_holds_a_password(sshd: Sshd, keys: Path, known_hosts: Path,
                                          ftp_site: FtpSite, tmp_path: Path) -> None:
    """A password passes through the daemon, which then crashes with cores allowed: no core
    is written (RLIMIT_CORE 0, not dumpable). The control: a plain process holding the same
    password, crashed the same way, leaves a core that holds it."""
    from testbed.proxy import tunnel_argv
    from testbed.users import ensure_user

    pattern = CORE_PATTERN.read_text().strip()
    if pattern.startswith("|"):
        pytest.skip(f"core_pattern pipes cores to a helper ({pattern}): no file to look for")
    require("useradd", "chpasswd")
    user, password = "fts-corecheck", "pw-core-" + os.urandom(8).hex()
    ensure_user(user, password)
    control_dir = tmp_path / "control"
    control_dir.mkdir()
    control = subprocess.Popen([sys.executable, "-c", CRASH_WITH_A_SECRET, password],
                               cwd=control_dir, preexec_fn=_allow_cores,
                               stdout=subprocess.PIPE, text=True)
    assert control.stdout is not None and control.stdout.readline() == "ready\n"
    control_cores = _crash_and_collect_cores(control, control_dir)
    assert control_cores, f"core_pattern {pattern!r}: this machine wrote no core at all"
    assert any(password.encode() * 3 in core.read_bytes() for core in control_cores)

    proxy_dir = tmp_path / "proxy"
    proxy_dir.mkdir()
    config = proxy_dir / "tunnel.toml"
    port = free_port()
    config.write_text(f'[proxy]\nlisten = ["127.0.0.1:{port}"]\n'
                      'socks5_auth = ["username"]\n'
                      + profile_toml(sshd, keys, known_hosts, user="", auth='["password"]')
                      + rule_toml("127.0.0.1", "tunnel"))
    config.chmod(0o600)
    proxy = subprocess.Popen([*tunnel_argv(), "serve", "-c", str(config)], cwd=proxy_dir,
                             preexec_fn=_allow_cores, stderr=subprocess.PIPE, text=True)
    try:
        wait_port("127.0.0.1", port, 15)
        code, sock = socks5_connect(("127.0.0.1", port), "127.0.0.1", ftp_site.port,
                                    credentials=(user, password))
        assert code == 0 and read_until(sock, b"\r\n").startswith(b"220")
        sock.close()
        assert "Accepted password for fts-corecheck" in sshd.log()  # it passed through
    finally:
        cores = _crash_and_collect_cores(proxy, proxy_dir)
    assert proxy.returncode == -signal.SIGSEGV
    assert cores == [], f"the daemon left a core: {cores}"
    assert password not in (proxy.stderr.read() if proxy.stderr else "")


def test_sighup_reopens_the_audit_log_and_no_record_is_lost_or_doubled(
        start_proxy: ProxyFactory, ftp_site: FtpSite) -> None:
    """logrotate's way (rename, then SIGHUP through `systemctl reload`), with sessions
    running all along: every session's record is in exactly one of the two files."""
    import threading

    require()
    proxy = start_proxy(rule_toml("127.0.0.1", "direct"))
    stop = threading.Event()
    opened: list[int] = []

    def clients() -> None:
        while not stop.is_set():
            code, sock = socks5_connect((proxy.host, proxy.port), "127.0.0.1", ftp_site.port)
            read_until(sock, b"\r\n")
            sock.close()
            opened.append(code)

    worker = threading.Thread(target=clients)
    worker.start()
    try:
        wait_for(lambda: len(opened) >= 20, what="sessions before the rotation")
        rotated = proxy.audit_path.with_suffix(".jsonl.1")
        proxy.audit_path.rename(rotated)
        proxy.signal(signal.SIGHUP)
        wait_for(lambda: proxy.audit_path.exists() and len(opened) >= 60,
                 what="sessions after the rotation")
    finally:
        stop.set()
        worker.join()
    wait_for(lambda: sum(1 for p in (rotated, proxy.audit_path)
                         for line in p.read_text().splitlines() if line) >= len(opened),
             what="every record written")
    ids = [json.loads(line)["session"] for p in (rotated, proxy.audit_path)
           for line in p.read_text().splitlines() if line]
    records_old = len(rotated.read_text().splitlines())
    assert records_old >= 20 and len(ids) - records_old >= 1  # both files hold records
    assert len(ids) == len(set(ids))  # none twice
    assert len(ids) >= len(opened) and all(code == 0 for code in opened)  # none lost


def test_sd_notify_ready_reloading_and_stopping(tmp_path: Path, ftp_site: FtpSite) -> None:
    """Type=notify without systemd: a datagram socket stands in for NOTIFY_SOCKET."""
    import socket

    require()
    notify_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify_path))
    listener.settimeout(15)
    proxy = TunnelProxy(tmp_path / "proxy", rule_toml("127.0.0.1", "direct"))
    proxy.env = {"NOTIFY_SOCKET": str(notify_path)}
    proxy.start()
    try:
        said = listener.recv(4096).decode()
        assert "READY=1" in said.splitlines()
        # READY comes once the listener accepts: it was up before the message.
        code, sock = socks5_connect((proxy.host, proxy.port), "127.0.0.1", ftp_site.port)
        sock.close()
        assert code == 0
        proxy.signal(signal.SIGHUP)
        reload_said = [listener.recv(4096).decode(), listener.recv(4096).decode()]
        assert "RELOADING=1" in reload_said[0] and "MONOTONIC_USEC=" in reload_said[0]
        assert "READY=1" in reload_said[1]
        proxy.signal(signal.SIGTERM)
        assert "STOPPING=1" in listener.recv(4096).decode()
    finally:
        assert proxy.stop() == 0
        listener.close()


@pytest.mark.parametrize("drop_in", ["", "ftp-ssh-tunnel-transparent.conf"])
def test_the_systemd_unit_verifies(tmp_path: Path, drop_in: str) -> None:
    """`systemd-analyze verify` of contrib/ftp-ssh-tunnel.service (Type=notify), with its
    ExecStart pointed at this checkout's `tunnel` (it checks that the binary exists); and
    with the transparent mode's drop-in (its [Service] lines added, as systemd merges it)."""
    require("systemd-analyze")
    repo = Path(__file__).resolve().parents[2]
    tunnel = shutil.which("tunnel", path=str(Path(sys.executable).parent))
    assert tunnel is not None
    unit = tmp_path / "ftp-ssh-tunnel.service"
    text = (repo / "contrib" / "ftp-ssh-tunnel.service").read_text()
    assert "Type=notify" in text
    if drop_in:
        text += (repo / "contrib" / drop_in).read_text()
    unit.write_text(text.replace("/usr/local/bin/tunnel", tunnel))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_metrics_agree_with_ctl_status_and_the_audit(
        start_proxy: ProxyFactory, ftp_site: FtpSite, tmp_path: Path) -> None:
    """Prometheus text at `[proxy] metrics`: live figures read where `tunnel ctl status`
    reads them, ended sessions counted from their audit records; no secret in any label."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    require()
    port = free_port()
    sock_path = tmp_path / "ctl" / "tunnel.sock"
    proxy = start_proxy(rule_toml("127.0.0.1", "direct") + rule_toml("*", "reject"),
                        proxy_extra=f'control_socket = "{sock_path}"\n'
                                    f'metrics = "127.0.0.1:{port}"')
    for _ in range(3):  # three ended sessions, one refused
        code, sock = socks5_connect((proxy.host, proxy.port), "127.0.0.1", ftp_site.port)
        read_until(sock, b"\r\n")
        sock.close()
    code, sock = socks5_connect((proxy.host, proxy.port), "10.255.0.1", 21)
    sock.close()
    assert code == 0x02
    _, live_sock = socks5_connect((proxy.host, proxy.port), "127.0.0.1", ftp_site.port)
    read_until(live_sock, b"\r\n")  # one still open
    _wait_audit(proxy, 4)
    proxy.signal(signal.SIGHUP)
    wait_for(lambda: "reloaded" in proxy.log(), what="reload")
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    status = json.loads(ctl(proxy, "status").stdout)
    records = proxy.audit()  # before the live session ends and writes its own
    live_sock.close()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("tunnel_sessions_open") == status["sessions"] == 1
    assert value("tunnel_ssh_connections_open") == status["ssh_connections"]
    assert value("tunnel_bytes_moved_total", direction="down") == status["bytes_down"]
    assert value("tunnel_bytes_moved_total", direction="up") == status["bytes_up"]
    ended = sum(v for (name, _), v in samples.items() if name == "tunnel_sessions_total")
    assert ended == len(records) >= 4  # every record, the readiness probe's too
    assert value("tunnel_sessions_total", rule="rule#2", action="reject",
                 result="rejected") == 1
    assert value("tunnel_config_reloads_total", result="ok") == 1
    labels = {v for (_, pairs) in samples for _, v in pairs}
    assert not any("pw" in label or "secret" in label for label in labels)
