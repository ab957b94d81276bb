"""The `ftp-sftp` action against a real OpenSSH sshd (internal-sftp) that has no FTP server
behind it: curl, Python ftplib and lftp each list, upload, download, resume, rename and
delete, with every file's sha256 checked on both sides and the reply codes of failures."""

from __future__ import annotations

import contextlib
import ftplib
import hashlib
import io
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from testbed.clients.ftplib_socks import SocksFTP
from testbed.proxy import TunnelProxy
from testbed.services.sshd import Sshd
from testbed.users import ensure_user
from tests.integration.conftest import ProxyFactory, require
from tests.integration.test_proxy import profile_toml, rule_toml

HOST = "files.sftp-only.test"  # no FTP server anywhere: the name only picks the rule


@dataclass
class Gateway:
    proxy: TunnelProxy
    user: str
    password: str
    home: Path

    def url(self, path: str = "") -> str:
        return f"ftp://{self.user}:{self.password}@{HOST}/{path}"

    def ftp(self) -> SocksFTP:
        ftp = SocksFTP(f"socks5://{self.proxy.url}")
        ftp.connect(HOST, 21)
        ftp.login(self.user, self.password)
        return ftp


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def sftp_user(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    require("useradd", "chpasswd")
    user, password = "fts-sftp", "pw-" + secrets.token_hex(10)
    home = Path("/var/tmp") / f"fts-sftp-home-{os.getpid()}"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir()
    ensure_user(user, password, home=str(home))
    entry = pwd.getpwnam(user)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    yield user, password, home
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def gateway(start_proxy: ProxyFactory, sshd: Sshd, keys: Path, known_hosts: Path,
            sftp_user: tuple[str, str, Path]) -> Gateway:
    user, password, home = sftp_user
    for child in home.iterdir():  # each test starts from an empty home
        shutil.rmtree(child) if child.is_dir() else child.unlink()
    # The SSH login is the FTP client's USER/PASS (user = "", password only).
    proxy = start_proxy(profile_toml(sshd, keys, known_hosts, pid="sftp", user="",
                                     auth='["password"]')
                        + rule_toml(HOST, "ftp-sftp", ports="21", profile="sftp"))
    return Gateway(proxy, user, password, home)


def _own(gw: Gateway, path: Path) -> None:
    entry = pwd.getpwnam(gw.user)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def _curl(gw: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--max-time", "60", "--socks5-hostname",
                           gw.proxy.url, *args], capture_output=True, text=True, timeout=90)


@pytest.mark.parametrize("mode", ["epsv", "pasv", "active"])
def test_curl_upload_download_list_in_every_data_mode(gateway: Gateway, tmp_path: Path,
                                                      mode: str) -> None:
    require("curl")
    flags = {"epsv": [], "pasv": ["--disable-epsv"], "active": ["-P", "127.0.0.1"]}[mode]
    payload = os.urandom(3 * 1024 * 1024 + 17)
    source = tmp_path / "up.bin"
    source.write_bytes(payload)
    up = _curl(gateway, *flags, "--ftp-create-dirs", "-T", str(source),
               gateway.url("incoming/up.bin"))
    assert up.returncode == 0, up.stderr
    assert _digest((gateway.home / "incoming" / "up.bin").read_bytes()) == _digest(payload)
    # Nothing half-named is left beside it: the temporary name was renamed over the target.
    assert [p.name for p in (gateway.home / "incoming").iterdir()] == ["up.bin"]
    down = tmp_path / "down.bin"
    got = _curl(gateway, *flags, "-o", str(down), gateway.url("incoming/up.bin"))
    assert got.returncode == 0, got.stderr
    assert _digest(down.read_bytes()) == _digest(payload)
    listing = _curl(gateway, *flags, gateway.url("incoming/"))
    assert listing.returncode == 0 and "up.bin" in listing.stdout
    assert str(len(payload)) in listing.stdout  # the size column of the ls -l line
    names = _curl(gateway, *flags, "--list-only", gateway.url("incoming/"))
    assert names.stdout.split() == ["up.bin"]


def test_curl_resumes_downloads_and_uploads_renames_and_deletes(gateway: Gateway,
                                                                tmp_path: Path) -> None:
    require("curl")
    payload = os.urandom(1024 * 1024)
    (gateway.home / "file.bin").write_bytes(payload)
    _own(gateway, gateway.home / "file.bin")
    # Download resume: REST then RETR from the middle.
    partial = tmp_path / "partial.bin"
    partial.write_bytes(payload[:300_000])
    got = _curl(gateway, "-C", "-", "-o", str(partial), gateway.url("file.bin"))
    assert got.returncode == 0, got.stderr
    assert _digest(partial.read_bytes()) == _digest(payload)
    # Upload resume: curl asks SIZE, then APPE the rest.
    (gateway.home / "resumed.bin").write_bytes(payload[:400_000])
    _own(gateway, gateway.home / "resumed.bin")
    whole = tmp_path / "whole.bin"
    whole.write_bytes(payload)
    up = _curl(gateway, "-C", "-", "-T", str(whole), gateway.url("resumed.bin"))
    assert up.returncode == 0, up.stderr
    assert _digest((gateway.home / "resumed.bin").read_bytes()) == _digest(payload)
    # Rename and delete with quoted commands after the transfer.
    ops = _curl(gateway, "-Q", "-RNFR resumed.bin", "-Q", "-RNTO renamed.bin",
                "-Q", "-DELE file.bin", "-o", str(tmp_path / "x"), gateway.url("file.bin"))
    assert ops.returncode == 0, ops.stderr
    assert sorted(p.name for p in gateway.home.iterdir()) == ["renamed.bin"]


def test_curl_missing_file_is_550(gateway: Gateway, tmp_path: Path) -> None:
    require("curl")
    got = _curl(gateway, "-o", str(tmp_path / "x"), gateway.url("no-such-file.bin"))
    assert got.returncode == 78, got.stderr  # curl: "the remote file does not exist" (550)


def test_ftplib_commands_and_reply_codes(gateway: Gateway) -> None:
    payload = os.urandom(700_000)
    ftp = gateway.ftp()
    try:
        assert ftp.pwd() == str(gateway.home)
        assert ftp.mkd("dir").endswith('/dir"') or "dir" in ftp.mkd("dir2")
        ftp.cwd("dir")
        assert ftp.pwd() == f"{gateway.home}/dir"
        assert ftp.storbinary("STOR a.bin", io.BytesIO(payload)).startswith("226")
        assert ftp.size("a.bin") == len(payload)
        assert len(ftp.sendcmd("MDTM a.bin").split()[1]) == 14
        facts = dict(ftp.mlsd())
        assert facts["a.bin"]["type"] == "file" and facts["a.bin"]["size"] == str(len(payload))
        chunks: list[bytes] = []
        ftp.retrbinary("RETR a.bin", chunks.append, rest=500_000)
        assert b"".join(chunks) == payload[500_000:]
        ftp.rename("a.bin", "b.bin")
        assert ftp.nlst() == ["b.bin"]
        # TYPE A: CRLF on the wire, LF in the file (profile line_ending = "lf").
        ftp.storlines("STOR text.txt", io.BytesIO(b"one\r\ntwo\r\n"))
        assert (gateway.home / "dir" / "text.txt").read_bytes() == b"one\ntwo\n"
        lines: list[str] = []
        ftp.retrlines("RETR text.txt", lines.append)
        assert lines == ["one", "two"]
        with pytest.raises(ftplib.error_perm, match=r"^550"):
            ftp.size("missing.bin")
        with pytest.raises(ftplib.error_perm, match=r"^550"):
            ftp.cwd("/no/such/dir")
        ftp.delete("b.bin")
        ftp.delete("text.txt")
        ftp.cwd("..")
        ftp.rmd("dir")
        assert "dir" not in ftp.nlst()
        with pytest.raises(ftplib.error_perm, match=r"^502"):
            ftp.sendcmd("SITE UTIME 20240101000000 x")  # SITE CHMOD only
        with pytest.raises(ftplib.error_perm, match=r"^550"):
            ftp.sendcmd("SITE CHMOD 777 x")  # no such file
        ftp.storbinary("STOR mode.bin", io.BytesIO(b"m"))
        assert ftp.sendcmd("SITE CHMOD 640 mode.bin").startswith("200")
        assert stat.S_IMODE((gateway.home / "mode.bin").stat().st_mode) == 0o640
        assert ftp.sendcmd("MFMT 20240102030405 mode.bin") == (
            "213 Modify=20240102030405; mode.bin")
        assert (gateway.home / "mode.bin").stat().st_mtime == 1704164645
        ftp.delete("mode.bin")
        assert ftp.sendcmd("TYPE I").startswith("200")
    finally:
        ftp.quit()


def test_permission_denied_is_550_and_a_refused_upload_553(gateway: Gateway) -> None:
    locked = gateway.home / "locked"
    locked.mkdir()
    (locked / "secret.bin").write_bytes(b"root only")
    os.chmod(locked / "secret.bin", 0o600)  # owned by root: the SFTP user cannot read it
    os.chmod(locked, 0o755)  # and cannot write into it
    ftp = gateway.ftp()
    try:
        with pytest.raises(ftplib.error_perm, match=r"^550"):
            ftp.retrbinary("RETR locked/secret.bin", lambda _: None)
        with pytest.raises(ftplib.error_perm, match=r"^553"):
            ftp.storbinary("STOR locked/new.bin", io.BytesIO(b"x"))
        assert sorted(p.name for p in locked.iterdir()) == ["secret.bin"]
    finally:
        ftp.quit()


def test_an_aborted_upload_leaves_no_file(gateway: Gateway) -> None:
    ftp = gateway.ftp()
    try:
        ftp.voidcmd("TYPE I")
        conn = ftp.transfercmd("STOR cut.bin")
        conn.sendall(os.urandom(2 * 1024 * 1024))
        ftp.putcmd("ABOR")  # RFC 959: 426 for the transfer, then 226 for ABOR
        conn.close()
        first, second = ftp.getmultiline(), ftp.getmultiline()
        assert first.startswith("426") and second.startswith("226"), (first, second)
        assert ftp.voidcmd("NOOP").startswith("200")
        assert list(gateway.home.iterdir()) == []  # neither cut.bin nor its temporary name
    finally:
        ftp.quit()


def test_wrong_password_is_530_and_the_client_may_retry(gateway: Gateway) -> None:
    ftp = SocksFTP(f"socks5://{gateway.proxy.url}")
    ftp.connect(HOST, 21)
    with pytest.raises(ftplib.error_perm, match=r"^530"):
        ftp.login(gateway.user, "wrong-" + gateway.password)
    assert ftp.login(gateway.user, gateway.password).startswith("230")
    ftp.quit()
    logs = gateway.proxy.log() + "".join(str(r) for r in gateway.proxy.audit())
    assert gateway.password not in logs


def test_lftp_puts_gets_lists_renames_and_removes(gateway: Gateway, tmp_path: Path) -> None:
    require("lftp", "proxychains4")
    payload = os.urandom(2 * 1024 * 1024)
    (tmp_path / "l.bin").write_bytes(payload)
    conf = tmp_path / "proxychains.conf"
    conf.write_text(f"strict_chain\nproxy_dns\n[ProxyList]\nsocks5 {gateway.proxy.host} "
                    f"{gateway.proxy.port}\n")
    script = "; ".join([
        "set ftp:passive-mode on", "set net:max-retries 1", "set ftp:ssl-allow no",
        f"open -u {gateway.user},{gateway.password} ftp://{HOST}",
        f"put {tmp_path / 'l.bin'} -o l.bin", "mv l.bin m.bin", "cls -l",
        f"get m.bin -o {tmp_path / 'back.bin'}", "rm m.bin", "cls", "bye"])
    got = subprocess.run(["proxychains4", "-q", "-f", str(conf), "lftp", "-c", script],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert got.returncode == 0, got.stdout + got.stderr
    assert "m.bin" in got.stdout
    assert _digest((tmp_path / "back.bin").read_bytes()) == _digest(payload)
    assert list(gateway.home.iterdir()) == []


# -- data safety (issue "ftp-sftp: lose no file, ever") -----------------------------------------
def _session_processes(sshd: Sshd) -> list[int]:
    """sshd's per-connection processes (and theirs): everything under the listener."""
    assert sshd.proc is not None
    children: dict[int, list[int]] = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat_file.parent.name))
    found, todo = [], list(children.get(sshd.proc.pid, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def _kill_ssh_sessions(sshd: Sshd) -> int:
    pids = _session_processes(sshd)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


def test_commands_missing_their_argument_are_501_and_change_nothing(gateway: Gateway) -> None:
    (gateway.home / "work").mkdir()
    _own(gateway, gateway.home / "work")
    (gateway.home / "work" / "keep.txt").write_bytes(b"keep")
    ftp = gateway.ftp()
    try:
        ftp.cwd("work")
        for verb in ("RMD", "DELE", "MKD", "CWD", "RETR", "SIZE", "RNFR"):
            with pytest.raises(ftplib.error_perm, match=r"^501"):
                ftp.sendcmd(verb)
        with pytest.raises(ftplib.error_perm, match=r"^503"):  # RNFR was refused: no source
            ftp.sendcmd("RNTO ../moved")
        ftp.set_pasv(True)
        with pytest.raises(ftplib.error_perm, match=r"^501"):  # before any 150
            ftp.storbinary("STOR", io.BytesIO(b"x"))
        assert ftp.pwd() == f"{gateway.home}/work"
    finally:
        ftp.quit()
    assert sorted(p.name for p in gateway.home.iterdir()) == ["work"]
    assert [p.name for p in (gateway.home / "work").iterdir()] == ["keep.txt"]


def test_a_reset_mid_stor_keeps_the_old_file_and_a_clean_one_keeps_its_mode(
        gateway: Gateway) -> None:
    target = gateway.home / "report.bin"
    old = os.urandom(300_000)
    target.write_bytes(old)
    _own(gateway, target)
    os.chmod(target, 0o755)
    ftp = gateway.ftp()
    try:
        ftp.voidcmd("TYPE I")
        conn = ftp.transfercmd("STOR report.bin")
        conn.sendall(os.urandom(3 * 1024 * 1024))
        # SO_LINGER on, zero timeout: close() sends RST, as a crashing client's kernel does.
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
        with pytest.raises(ftplib.error_temp, match=r"^426"):
            ftp.voidresp()
        assert target.read_bytes() == old and stat.S_IMODE(target.stat().st_mode) == 0o755
        assert [p.name for p in gateway.home.iterdir()] == ["report.bin"]  # no .part left
        new = os.urandom(500_000)
        assert ftp.storbinary("STOR report.bin", io.BytesIO(new)).startswith("226")
        assert target.read_bytes() == new
        assert stat.S_IMODE(target.stat().st_mode) == 0o755  # as vsftpd and `sftp put`
        assert target.stat().st_uid == pwd.getpwnam(gateway.user).pw_uid
    finally:
        ftp.quit()


def test_ssh_lost_mid_retr_is_421_at_once_and_the_data_connection_ends(
        gateway: Gateway, sshd: Sshd) -> None:
    big = gateway.home / "big.bin"
    with open(big, "wb") as fh:
        fh.write(os.urandom(32 * 1024 * 1024))
    _own(gateway, big)
    ftp = gateway.ftp()
    ftp.voidcmd("TYPE I")
    conn = ftp.transfercmd("RETR big.bin")
    conn.recv(65536)  # the transfer is under way; then we read no more for a while
    assert _kill_ssh_sessions(sshd) > 0
    started = time.monotonic()
    conn.settimeout(10)
    ftp.sock.settimeout(10)
    with pytest.raises(ftplib.error_temp, match=r"^421"):
        ftp.voidresp()  # the 421 comes without the client draining the data first
    told = time.monotonic() - started
    received = 0
    with contextlib.suppress(ConnectionResetError):
        while chunk := conn.recv(1 << 20):
            received += len(chunk)
    ended = time.monotonic() - started
    conn.close()
    assert told < 2.0 and ended < 2.0, (told, ended)
    assert received < 32 * 1024 * 1024  # cut, not a whole file
    assert ftp.sock.recv(100) == b""  # the control connection is closed after the 421
    records = [r for r in gateway.proxy.audit() if r["action"] == "ftp-sftp"]
    assert records and records[-1]["ssh_failure"] == "ssh", records[-1:]


def test_ssh_lost_mid_stor_leaves_nothing_under_the_name_and_the_next_login_sweeps(
        gateway: Gateway, sshd: Sshd) -> None:
    ftp = gateway.ftp()
    ftp.voidcmd("TYPE I")
    conn = ftp.transfercmd("STOR up.bin")
    conn.sendall(os.urandom(2 * 1024 * 1024))
    assert _kill_ssh_sessions(sshd) > 0
    started = time.monotonic()
    ftp.sock.settimeout(10)
    with pytest.raises(ftplib.error_temp, match=r"^421"):
        ftp.voidresp()
    assert time.monotonic() - started < 2.0
    with contextlib.suppress(OSError):  # the proxy reset it: the upload did not land
        conn.settimeout(5)
        for _ in range(100):
            conn.sendall(b"\0" * 65536)
    conn.close()
    assert not (gateway.home / "up.bin").exists()
    # The temporary file may stay on the server until the user's next login removes it.
    assert all(p.name.startswith(".up.bin.part-") for p in gateway.home.iterdir())
    again = gateway.ftp()
    try:
        assert again.nlst() == []
        assert list(gateway.home.iterdir()) == []
    finally:
        again.quit()


def test_a_client_that_leaves_mid_stor_leaves_no_temporary_file(gateway: Gateway) -> None:
    ftp = gateway.ftp()
    ftp.voidcmd("TYPE I")
    conn = ftp.transfercmd("STOR gone.bin")
    conn.sendall(os.urandom(2 * 1024 * 1024))
    # The client dies: its kernel closes the control connection (opened first), then the
    # data connection, both with a FIN, which on its own would look like a whole file.
    ftp.close()
    conn.close()
    deadline = time.monotonic() + 5
    while list(gateway.home.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(gateway.home.iterdir()) == []  # no gone.bin, no .gone.bin.part-*


def test_ftplib_abort_sends_abor_as_urgent_data_and_the_session_goes_on(
        gateway: Gateway) -> None:
    big = gateway.home / "big.bin"
    big.write_bytes(os.urandom(16 * 1024 * 1024))
    _own(gateway, big)
    ftp = gateway.ftp()
    try:
        ftp.voidcmd("TYPE I")
        conn = ftp.transfercmd("RETR big.bin")
        conn.recv(65536)
        # ftplib sends "ABOR\r\n" with MSG_OOB: the kernel marks its last byte urgent, and
        # without SO_OOBINLINE the proxy never saw the "\n" (the reply never came).
        first = ftp.abort()
        conn.close()
        second = ftp.getline()
        assert first.startswith("426") and second.startswith("226"), (first, second)
        assert ftp.voidcmd("NOOP").startswith("200")
        # RFC 959's form: Telnet IP and DM before ABOR (ncftp, lftp).
        conn = ftp.transfercmd("RETR big.bin")
        conn.recv(65536)
        ftp.sock.sendall(b"\xff\xf4\xff\xf2ABOR\r\n")
        conn.close()
        assert ftp.getline().startswith("426") and ftp.getline().startswith("226")
        assert ftp.voidcmd("NOOP").startswith("200")
    finally:
        ftp.quit()
