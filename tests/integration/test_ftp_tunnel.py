"""The `ftp-tunnel` action end to end: real sshd, real FTP servers (pyftpdlib, vsftpd), real
clients (curl, ftplib over python-socks, lftp under proxychains4).

The FTP user name and password the client types are the SSH login (credentials from the
application): the test users are system accounts, so sshd and vsftpd both accept them.
The rule covers the control port only; every data connection must still ride SSH.
"""

from __future__ import annotations

import ftplib
import hashlib
import io
import ipaddress
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.clients.ftplib_socks import SocksFTP
from testbed.net import free_port
from testbed.proxy import TunnelProxy
from testbed.services.pyftpd import PyFtpd
from testbed.services.sshd import Sshd
from testbed.services.vsftpd import Vsftpd
from testbed.socks_client import (
    read_socks4_reply,
    read_socks5_reply,
    socks4_request,
    socks5_connect,
    socks5_request,
)
from tunnel.socks import Command

from .conftest import ProxyFactory, require, sshd_log_count
from .test_proxy import _wait_audit

pytestmark = pytest.mark.integration



def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module", params=["pyftpdlib", "vsftpd"])
def ftp_server(request: pytest.FixtureRequest, site: Path, users: dict[str, str],
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[PyFtpd | Vsftpd]:
    workdir = tmp_path_factory.mktemp(request.param)
    server: PyFtpd | Vsftpd
    if request.param == "vsftpd":
        reason = Vsftpd.available()
        if reason:
            pytest.skip(reason)
        server = Vsftpd(workdir, site, free_port())
    else:
        (first, first_pw), *rest = users.items()
        server = PyFtpd(site, free_port(), first, first_pw, more_users=rest,
                        log_path=workdir / "pyftpd.log", debug=True)
    server.start()
    yield server
    server.stop()


def server_commands(server: PyFtpd | Vsftpd) -> str:
    return server.commands_seen() if isinstance(server, Vsftpd) else server.log()


def app_profile(sshd: Sshd, known_hosts: Path, *, host: str = "127.0.0.1",
                extra: str = "", user: str = "", auth: str = "password") -> str:
    """The user the FTP client types logs in to SSH with its password (user = "")."""
    return f"""
[[profile]]
id = "app"
host = "{host}"
port = {sshd.port}
user = "{user}"
auth = ["{auth}"]
known_hosts = "{known_hosts}"
{extra}
"""


def key_profile(sshd: Sshd, keys: Path, known_hosts: Path, *, host: str = "127.0.0.1") -> str:
    """A fixed SSH user (root) with a key: the control channel opens before the SOCKS reply
    and the server's own greeting is relayed."""
    return app_profile(sshd, known_hosts, host=host, user="root", auth="publickey",
                       extra=f'identity_files = ["{keys}"]\nusers = ["*"]')


def ftp_rule(port: int, dst: str = "localhost", extra: str = "") -> str:
    # The control port only: data connections must be recognised, not matched by rules.
    return f"""
[[rule]]
id = "ftp"
dst = "{dst}"
ports = "{port}"
action = "ftp-tunnel"
profile = "app"
{extra}
"""


def curl(proxy: TunnelProxy, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--max-time", "60", "--socks5-hostname", proxy.url,
                           *args, url], capture_output=True, text=True, timeout=90)


CURL_MODES = {
    "epsv": [],
    "pasv-announced-address": ["--disable-epsv", "--no-ftp-skip-pasv-ip"],
    "pasv-control-host": ["--disable-epsv", "--ftp-skip-pasv-ip"],
    "active-eprt": ["-P", "-"],
    "active-port": ["-P", "-", "--disable-eprt"],
}


@pytest.mark.parametrize("mode", list(CURL_MODES))
def test_curl_download_upload_list(mode: str, start_proxy: ProxyFactory, sshd: Sshd,
                                   known_hosts: Path, ftp_server: PyFtpd | Vsftpd,
                                   users: dict[str, str], site: Path, tmp_path: Path) -> None:
    require("curl")
    user, password = next(iter(users.items()))
    proxy = start_proxy(app_profile(sshd, known_hosts) + ftp_rule(ftp_server.port))
    base = f"ftp://{user}:{password}@localhost:{ftp_server.port}/"
    flags = CURL_MODES[mode]
    out = tmp_path / "data.bin"
    got = curl(proxy, base + "data.bin", *flags, "-o", str(out))
    assert got.returncode == 0, got.stderr
    assert sha(out) == sha(site / "data.bin")
    upload = tmp_path / "up.bin"
    upload.write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    name = f"up-{mode}-{type(ftp_server).__name__}.bin"
    put = curl(proxy, base + name, *flags, "-T", str(upload))
    assert put.returncode == 0, put.stderr
    assert sha(site / name) == sha(upload)
    listing = curl(proxy, base, *flags)
    assert listing.returncode == 0 and "data.bin" in listing.stdout and name in listing.stdout
    records = _wait_audit(proxy, 3 if mode.startswith("active") else 6)
    controls = [r for r in records if r["action"] == "ftp-tunnel"]
    data = [r for r in records if r["action"] == "ftp-data"]
    assert len(controls) == 3 and all(r["ftp_user"] == user for r in controls)
    assert all(r["user_source"] == "ftp" and r["last_hop"] == "clear" for r in controls)
    if mode.startswith("active"):
        assert not data and sum(r["data_channels"] for r in controls) == 3
        # The server saw passive requests from the proxy, never the client's PORT/EPRT.
        seen = server_commands(ftp_server)
        assert "EPSV" in seen or "PASV" in seen
        assert "EPRT |" not in seen and "PORT 127" not in seen
    else:
        assert len(data) == 3 and {r["control_session"] for r in data} <= {
            r["session"] for r in controls}
    assert password not in proxy.log() + proxy.audit_path.read_text()


def test_ftplib_wrong_password_then_retry_on_the_same_connection(
        start_proxy: ProxyFactory, sshd: Sshd, known_hosts: Path,
        ftp_server: PyFtpd | Vsftpd, users: dict[str, str], site: Path) -> None:
    user, password = next(iter(users.items()))
    proxy = start_proxy(app_profile(sshd, known_hosts) + ftp_rule(ftp_server.port))
    ftp = SocksFTP(f"socks5://{proxy.url}")
    welcome = ftp.connect("localhost", ftp_server.port)
    assert welcome.startswith("220 ftp-ssh-tunnel")
    assert ftp.sendcmd("FEAT").startswith("211")  # before login: the proxy answers
    assert ftp.sendcmd("SYST").startswith("215")
    with pytest.raises(ftplib.error_perm, match="530"):
        ftp.login(user, "wrong-" + password)
    assert ftp.login(user, password).startswith("230")
    chunks: list[bytes] = []
    ftp.retrbinary("RETR data.bin", chunks.append)
    assert hashlib.sha256(b"".join(chunks)).hexdigest() == sha(site / "data.bin")
    payload = os.urandom(200_000)
    name = f"ftplib-{type(ftp_server).__name__}.bin"
    ftp.storbinary(f"STOR {name}", io.BytesIO(payload))
    assert (site / name).read_bytes() == payload
    assert {"hello.txt", name} <= set(ftp.nlst())
    # While this user's SSH connection is live, a wrong password gets no free ride on it.
    intruder = SocksFTP(f"socks5://{proxy.url}")
    intruder.connect("localhost", ftp_server.port)
    with pytest.raises(ftplib.error_perm, match="530"):
        intruder.login(user, "guess-" + password)
    intruder.close()
    # A high port nobody announced is not tunnelled on a guess: the rules decide (reject).
    code, sock = socks5_connect((proxy.host, proxy.port), "localhost", free_port())
    sock.close()
    assert code == 0x02
    ftp.quit()
    assert proxy.log().count("SSH login refused") == 2


def test_two_users_never_share_and_ten_sessions_of_one_user_share_one(
        start_proxy: ProxyFactory, sshd: Sshd, known_hosts: Path,
        ftp_server: PyFtpd | Vsftpd, users: dict[str, str], site: Path) -> None:
    proxy = start_proxy(app_profile(sshd, known_hosts) + ftp_rule(ftp_server.port))
    (carol, carol_pw), (dave, dave_pw) = users.items()
    before = {u: sshd_log_count(sshd, f"Accepted password for {u} ") for u in users}
    errors: list[BaseException] = []
    digest = sha(site / "hello.txt")

    def session(user: str, password: str) -> None:
        try:
            ftp = SocksFTP(f"socks5://{proxy.url}")
            ftp.connect("localhost", ftp_server.port)
            ftp.login(user, password)
            chunks: list[bytes] = []
            ftp.retrbinary("RETR hello.txt", chunks.append)
            assert hashlib.sha256(b"".join(chunks)).hexdigest() == digest
            ftp.quit()
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=session, args=(carol, carol_pw)) for _ in range(10)]
    threads.append(threading.Thread(target=session, args=(dave, dave_pw)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert sshd_log_count(sshd, f"Accepted password for {carol} ") == before[carol] + 1
    assert sshd_log_count(sshd, f"Accepted password for {dave} ") == before[dave] + 1


def test_ftps_is_refused_and_the_client_continues_in_plain(
        start_proxy: ProxyFactory, sshd: Sshd, known_hosts: Path,
        ftp_server: PyFtpd | Vsftpd, users: dict[str, str], site: Path,
        tmp_path: Path) -> None:
    require("curl")
    user, password = next(iter(users.items()))
    proxy = start_proxy(app_profile(sshd, known_hosts) + ftp_rule(ftp_server.port))
    out = tmp_path / "hello.txt"
    got = curl(proxy, f"ftp://{user}:{password}@localhost:{ftp_server.port}/hello.txt",
               "--ssl", "-o", str(out))  # --ssl: try TLS, go on in plain if refused
    assert got.returncode == 0, got.stderr
    assert out.read_bytes() == (site / "hello.txt").read_bytes()
    assert "refused AUTH" in proxy.log()


def test_lftp_under_proxychains(start_proxy: ProxyFactory, sshd: Sshd, known_hosts: Path,
                                ftp_server: PyFtpd | Vsftpd, users: dict[str, str],
                                site: Path, tmp_path: Path) -> None:
    require("lftp", "proxychains4")
    user, password = next(iter(users.items()))
    # lftp resolves names itself, so proxychains hands the proxy an address: the rule names it.
    proxy = start_proxy(app_profile(sshd, known_hosts) + ftp_rule(ftp_server.port, "127.0.0.1"))
    conf = tmp_path / "proxychains.conf"
    conf.write_text(f"strict_chain\nproxy_dns\ntcp_read_time_out 15000\n"
                    f"tcp_connect_time_out 8000\n[ProxyList]\nsocks5 127.0.0.1 {proxy.port}\n")
    upload = tmp_path / "lftp-up.bin"
    upload.write_bytes(os.urandom(1024 * 1024))
    name = f"lftp-{type(ftp_server).__name__}.bin"
    script = (f"set ftp:ssl-allow no; set net:max-retries 1; get data.bin -o {tmp_path}/d.bin; "
              f"put {upload} -o {name}; cls -1; bye")
    got = subprocess.run(["proxychains4", "-q", "-f", str(conf), "lftp", "-u",
                          f"{user},{password}", "-e", script, f"ftp://localhost:{ftp_server.port}"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    assert sha(tmp_path / "d.bin") == sha(site / "data.bin")
    assert sha(site / name) == sha(upload)
    assert "data.bin" in got.stdout
    assert any(r["action"] == "ftp-data" for r in _wait_audit(proxy, 3))


def test_ssh_host_is_the_ftp_host_and_fixed_key_user(
        start_proxy: ProxyFactory, sshd: Sshd, keys: Path, tmp_path: Path,
        ftp_server: PyFtpd | Vsftpd, users: dict[str, str], site: Path) -> None:
    """host = "": the SOCKS destination is the SSH server (last hop inside it). A fixed
    user with a key: the proxy connects at once and relays the server's own greeting."""
    user, password = next(iter(users.items()))
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sshd.known_hosts_line("localhost"))
    proxy = start_proxy(key_profile(sshd, keys, known_hosts, host="")
                        + ftp_rule(ftp_server.port))
    ftp = SocksFTP(f"socks5://{proxy.url}")
    welcome = ftp.connect("localhost", ftp_server.port)
    assert "ftp-ssh-tunnel" not in welcome and welcome.startswith("220")
    ftp.login(user, password)
    assert "data.bin" in ftp.nlst()
    ftp.quit()
    control = next(r for r in _wait_audit(proxy, 2) if r["action"] == "ftp-tunnel")
    assert (control["last_hop"], control["ssh_user"], control["user_source"]) == (
        "local", "root", "profile")


@pytest.mark.parametrize("fallback", [False, True])
def test_fallback_to_plain_when_ssh_is_down(
        fallback: bool, start_proxy: ProxyFactory, tmp_path: Path,
        ftp_server: PyFtpd | Vsftpd, users: dict[str, str], site: Path) -> None:
    user, password = next(iter(users.items()))
    dead = Sshd(tmp_path / "dead", free_port())  # configured, never started: port closed
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(dead.known_hosts_line())
    proxy = start_proxy(app_profile(dead, known_hosts)
                        + ftp_rule(ftp_server.port,
                                   extra=f"fallback_to_plain = {str(fallback).lower()}"))
    ftp = SocksFTP(f"socks5://{proxy.url}")
    ftp.connect("localhost", ftp_server.port)
    if not fallback:
        with pytest.raises(ftplib.error_temp, match="421"):
            ftp.login(user, password)
        return
    assert ftp.login(user, password).startswith("230")
    chunks: list[bytes] = []
    ftp.retrbinary("RETR hello.txt", chunks.append)
    assert b"".join(chunks) == (site / "hello.txt").read_bytes()
    ftp.quit()
    records = _wait_audit(proxy, 2)
    control = next(r for r in records if r["session"] == min(r["session"] for r in records))
    assert (control["action"], control["last_hop"]) == ("direct-fallback", "direct")


def test_ten_megabyte_command_line_gets_500_and_the_session_goes_on(
        start_proxy: ProxyFactory, sshd: Sshd, known_hosts: Path,
        ftp_server: PyFtpd | Vsftpd, users: dict[str, str]) -> None:
    user, password = next(iter(users.items()))
    proxy = start_proxy(app_profile(sshd, known_hosts) + ftp_rule(ftp_server.port))
    ftp = SocksFTP(f"socks5://{proxy.url}")
    ftp.connect("localhost", ftp_server.port)
    ftp.login(user, password)
    assert ftp.sock is not None
    ftp.sock.sendall(b"SITE " + b"A" * (10 * 1024 * 1024) + b"\r\n")
    with pytest.raises(ftplib.error_perm, match="500 Command line too long"):
        ftp.getresp()
    assert ftp.sendcmd("NOOP").startswith("200")  # the session goes on
    ftp.quit()
    assert "bad command from client" in proxy.log()


def _socks_bind(proxy: TunnelProxy, version: int, host: str) -> tuple[socket.socket, str, int]:
    """SOCKS BIND, as the z/OS client sends it; returns the socket and the first reply's
    address."""
    request = socks5_request if version == 5 else socks4_request
    code, sock, bound_host, bound_port = request((proxy.host, proxy.port), Command.BIND,
                                                 host if version == 5 else "127.0.0.1", 0)
    assert code == (0 if version == 5 else 0x5A), f"BIND refused: REP {code}"
    ipaddress.IPv4Address(bound_host)  # an IPv4 address, which PORT can carry
    return sock, bound_host, bound_port


@pytest.mark.parametrize("version", [5, 4])
def test_socks_bind_active_mode_like_zos(
        version: int, start_proxy: ProxyFactory, sshd: Sshd, known_hosts: Path,
        ftp_server: PyFtpd | Vsftpd, users: dict[str, str], site: Path) -> None:
    """The IBM z/OS sequence: CONNECT control, USER/PASS, SOCKS BIND, PORT with the bound
    address, RETR, accept on BIND (its second reply)."""
    user, password = next(iter(users.items()))
    proxy = start_proxy(app_profile(sshd, known_hosts) + ftp_rule(ftp_server.port))
    ftp = SocksFTP(f"socks5://{proxy.url}")
    ftp.connect("localhost", ftp_server.port)
    ftp.login(user, password)
    ftp.voidcmd("TYPE I")
    data_sock, host, port = _socks_bind(proxy, version, "localhost")
    assert ftp.sendcmd(f"PORT {host.replace('.', ',')},{port >> 8},{port & 255}"
                       ).startswith("200")
    ftp.putcmd("RETR data.bin")
    assert ftp.getresp()[:3] in ("125", "150")
    second = (read_socks5_reply if version == 5 else read_socks4_reply)(data_sock)
    assert second[0] == (0 if version == 5 else 0x5A)  # the BIND's second reply
    received = b""
    while chunk := data_sock.recv(1 << 16):
        received += chunk
    data_sock.close()
    assert ftp.voidresp().startswith("226")
    ftp.quit()
    assert hashlib.sha256(received).hexdigest() == sha(site / "data.bin")
    records = _wait_audit(proxy, 2)
    assert any(r["action"] == "ftp-data-bind" and r["result"] == "closed" for r in records)
    seen = server_commands(ftp_server)
    assert "EPSV" in seen and "PORT 127" not in seen  # the server went passive, via SSH


def test_bind_outside_an_ftp_session_is_refused(
        start_proxy: ProxyFactory, sshd: Sshd, known_hosts: Path,
        ftp_server: PyFtpd | Vsftpd) -> None:
    proxy = start_proxy(app_profile(sshd, known_hosts) + ftp_rule(ftp_server.port))
    with pytest.raises(AssertionError, match="BIND refused: REP 2"):
        _socks_bind(proxy, 5, "localhost")


def test_keyboard_interactive_only_server_gets_the_ftp_password(
        start_proxy: ProxyFactory, tmp_path: Path, ftp_server: PyFtpd | Vsftpd,
        users: dict[str, str], site: Path) -> None:
    """Some servers offer only keyboard-interactive (PAM); the FTP password answers it."""
    user, password = next(iter(users.items()))
    kbd = Sshd(tmp_path / "kbd-sshd", free_port(), keyboard_interactive_only=True).start()
    try:
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text(kbd.known_hosts_line())
        proxy = start_proxy(app_profile(kbd, known_hosts) + ftp_rule(ftp_server.port))
        ftp = SocksFTP(f"socks5://{proxy.url}")
        ftp.connect("localhost", ftp_server.port)
        assert ftp.login(user, password).startswith("230")
        assert "hello.txt" in ftp.nlst()
        ftp.quit()
        assert f"Accepted keyboard-interactive/pam for {user}" in kbd.log()
        assert "Accepted password" not in kbd.log()
    finally:
        kbd.stop()


class SlowGreeter:
    """An FTP server that greets 0.2 s after it accepts, and counts how many connections
    it holds ungreeted at once: the connections the proxy has opening to it."""

    GREETING_DELAY = 0.2

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = int(self.listener.getsockname()[1])
        self.ungreeted = self.most_ungreeted = self.greeted = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self.ungreeted += 1
                self.most_ungreeted = max(self.most_ungreeted, self.ungreeted)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            threading.Event().wait(self.GREETING_DELAY)
            with self._lock:
                self.ungreeted -= 1
                self.greeted += 1
            conn.sendall(b"220 slow greeter\r\n")
            conn.recv(100)  # QUIT
            conn.sendall(b"221 bye\r\n")

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize("limit", [2, 64])
def test_a_burst_of_sessions_opens_to_one_server_a_few_at_a_time(
        limit: int, start_proxy: ProxyFactory, sshd: Sshd, keys: Path,
        known_hosts: Path) -> None:
    """20 clients at once: no more than max_openings_per_server control connections are
    opening (accepted, not yet greeted) at the server at any moment, and every client is
    greeted. A listen queue as short as vsftpd's then never overflows. The control, at 64:
    the same burst does reach the server all at once."""
    server = SlowGreeter()
    proxy = start_proxy(key_profile(sshd, keys, known_hosts) + ftp_rule(server.port),
                        proxy_extra=f"max_openings_per_server = {limit}")
    clients = 20
    greetings: list[bytes] = []
    start = threading.Barrier(clients)

    def client() -> None:
        start.wait()
        code, sock = socks5_connect((proxy.host, proxy.port), "localhost", server.port)
        with sock:
            assert code == 0
            greetings.append(sock.recv(100))
            sock.sendall(b"QUIT\r\n")
            sock.recv(100)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    server.close()
    assert greetings == [b"220 slow greeter\r\n"] * clients
    assert server.greeted == clients
    if limit == 2:
        assert server.most_ungreeted <= 2, server.most_ungreeted
        # 10 rounds of 0.2 s: the later clients waited over a second, and the log says so
        assert "for its turn to open localhost:" in proxy.log()
    else:
        assert server.most_ungreeted > 2, server.most_ungreeted


def _abort_then_noop(ftp: SocksFTP, conn: socket.socket, abor: bytes, oob: bool) -> list[str]:
    """Send ABOR as `abor` (urgent with `oob`), close the data connection, send NOOP; return
    every reply up to NOOP's 200. Servers differ in how they answer an ABOR (RFC 959 §4.1.3:
    426 then 226; vsftpd without async ABOR: 426 for the transfer, then 225), and in how
    that races the data connection's close; what must hold: a 2xx for the ABOR, no 500."""
    ftp.sock.sendall(abor, socket.MSG_OOB) if oob else ftp.sock.sendall(abor)
    conn.close()
    ftp.putcmd("NOOP")
    said = [ftp.getline()]
    while not said[-1].startswith("200"):
        said.append(ftp.getline())
    return said


def test_abor_in_every_form_reaches_the_server_and_the_session_goes_on(
        start_proxy: ProxyFactory, sshd: Sshd, known_hosts: Path,
        ftp_server: PyFtpd | Vsftpd, users: dict[str, str]) -> None:
    user, password = next(iter(users.items()))
    proxy = start_proxy(app_profile(sshd, known_hosts) + ftp_rule(ftp_server.port))
    ftp = SocksFTP(f"socks5://{proxy.url}", timeout=15)
    ftp.connect("localhost", ftp_server.port)
    ftp.login(user, password)
    ftp.voidcmd("TYPE I")
    # ftplib's abort() sends "ABOR\r\n" with MSG_OOB, its last byte urgent: before
    # SO_OOBINLINE the proxy never saw the line end and the client waited for ever.
    conn = ftp.transfercmd("RETR data.bin")
    conn.recv(65536)
    said = _abort_then_noop(ftp, conn, b"ABOR\r\n", oob=True)
    assert any(line[:3] in ("225", "226") for line in said[:-1]), said
    assert not any(line.startswith("500") for line in said), said
    # RFC 959's form, as lftp and tnftp send it: Telnet IP, DM, then ABOR; before, the proxy
    # answered 500 itself and the server sent the whole file on.
    conn = ftp.transfercmd("RETR data.bin")
    conn.recv(65536)
    said = _abort_then_noop(ftp, conn, b"\xff\xf4\xff\xf2ABOR\r\n", oob=False)
    assert any(line[:3] in ("225", "226") for line in said[:-1]), said
    assert not any(line.startswith("500") for line in said), said
    assert server_commands(ftp_server).count("ABOR") >= 2  # the server heard both
    ftp.quit()


def test_another_user_may_not_ride_this_users_ssh_login_and_the_banner_is_shown(
        start_proxy: ProxyFactory, sshd: Sshd, known_hosts: Path,
        ftp_server: PyFtpd | Vsftpd, users: dict[str, str]) -> None:
    (user, password), (other, _) = list(users.items())[:2]
    proxy = start_proxy(app_profile(sshd, known_hosts) + ftp_rule(ftp_server.port))
    ftp = SocksFTP(f"socks5://{proxy.url}", timeout=15)
    ftp.connect("localhost", ftp_server.port)
    welcome = ftp.login(user, password)
    # The server's own 220, which the client never saw (the proxy greeted), comes with 230.
    banner = "pyftpdlib" if isinstance(ftp_server, PyFtpd) else "vsFTPd"
    assert welcome.startswith("230") and banner in welcome, welcome
    with pytest.raises(ftplib.error_perm, match=rf"^530 .*SSH login is {user}'s"):
        ftp.sendcmd(f"USER {other}")
    with pytest.raises(ftplib.error_perm, match=r"^502"):
        ftp.sendcmd("REIN")
    assert ftp.voidcmd("NOOP").startswith("200")
    assert ftp.pwd()  # still the first user's session
    ftp.quit()
    records = [r for r in _wait_audit(proxy, 1) if r["action"] == "ftp-tunnel"]
    assert records and records[-1]["ssh_user"] == user and records[-1]["ftp_user"] == user
    assert f"refused re-login as '{other}'" in proxy.log()


def test_a_stat_reply_of_thousands_of_lines_passes_through(
        start_proxy: ProxyFactory, sshd: Sshd, known_hosts: Path,
        ftp_server: PyFtpd | Vsftpd, users: dict[str, str], site: Path) -> None:
    big = site / "many"
    if not big.exists():
        big.mkdir()
        big.chmod(0o777)
        for n in range(6000):
            (big / f"file{n:05d}").touch()
    user, password = next(iter(users.items()))
    proxy = start_proxy(app_profile(sshd, known_hosts) + ftp_rule(ftp_server.port))
    ftp = SocksFTP(f"socks5://{proxy.url}", timeout=30)
    ftp.connect("localhost", ftp_server.port)
    ftp.login(user, password)
    status = ftp.sendcmd("STAT many")  # the listing comes on the control connection
    assert status.startswith("21") and status.count("file0") == 6000, status[-200:]
    assert ftp.voidcmd("NOOP").startswith("200")  # before: 421 and a closed session
    ftp.quit()
