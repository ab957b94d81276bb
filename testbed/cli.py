"""The `testbed` command.

`testbed demo` runs transparent FTP tunneling end to end on loopback: a real OpenSSH sshd, a
real FTP server (pyftpdlib), `tunnel serve`, and curl as the FTP client with only a SOCKS
setting. curl's own FTP user name and password open the SSH connection; it uploads, then
downloads in passive and in active mode, and the demo prints a short verdict.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from testbed.net import free_port
from testbed.proxy import TunnelProxy
from testbed.services.pyftpd import PyFtpd
from testbed.services.sshd import Sshd
from testbed.users import ensure_user

DEMO_USER = "fts-demo"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def demo(size_mib: int, keep: bool) -> int:
    reason = Sshd.available()
    if reason:
        print(f"testbed demo: cannot run: {reason}", file=sys.stderr)
        return 2
    password = "demo-" + os.urandom(6).hex()
    ensure_user(DEMO_USER, password)  # one account for sshd and the FTP server, as on a host
    work = Path(tempfile.mkdtemp(prefix="fts-demo-"))
    root = work / "ftproot"
    root.mkdir()
    payload = work / "upload.bin"
    payload.write_bytes(os.urandom(size_mib << 20))
    sshd = Sshd(work / "sshd", free_port())
    ftp = PyFtpd(root, free_port(), DEMO_USER, password, log_path=work / "pyftpd.log",
                 debug=True)
    known_hosts = work / "known_hosts"
    known_hosts.write_text(sshd.known_hosts_line())
    proxy = TunnelProxy(work / "proxy", f"""
[[profile]]
id = "demo-ssh"
host = "127.0.0.1"
port = {sshd.port}
user = ""                       # the user name and password the FTP client sends
auth = ["password"]
known_hosts = "{known_hosts}"   # strict host key checking

[[rule]]
id = "ftp-via-ssh"
dst = "localhost"
ports = "{ftp.port}"            # the control port only: data ports follow by themselves
action = "ftp-tunnel"
profile = "demo-ssh"
""")
    started = time.monotonic()
    ok = True
    try:
        sshd.start()
        ftp.start()
        proxy.start()
        url = f"ftp://{DEMO_USER}:{password}@localhost:{ftp.port}/demo.bin"

        def curl(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["curl", "-sS", "--socks5-hostname", proxy.url, *args, url],
                                  capture_output=True, text=True, timeout=120)

        up = curl("-T", str(payload))
        back, active = work / "download.bin", work / "download-active.bin"
        down = curl("-o", str(back))
        down_active = curl("-P", "-", "-o", str(active))
        elapsed = time.monotonic() - started
        records = proxy.audit()
        controls = [r for r in records if r.get("action") == "ftp-tunnel"]
        passive = [r for r in records if r.get("action") == "ftp-data"]
        active_channels = sum(r.get("data_channels", 0) for r in controls)
        logins = sshd.log().count(f"Accepted password for {DEMO_USER} ")
        everything = proxy.log() + proxy.audit_path.read_text()
        server_saw = ftp.log()
        print(f"ftp-ssh-tunnel demo (loopback, {size_mib} MiB, {elapsed:.1f} s)")
        print(f"  FTP client   curl, SOCKS5 to tunnel at {proxy.url}")
        print(f"  SSH server   OpenSSH sshd 127.0.0.1:{sshd.port}, strict host key")
        print(f"  FTP server   pyftpdlib localhost:{ftp.port}")
        verdicts = [
            ("transfers", all(r.returncode == 0 for r in (up, down, down_active)),
             "upload, passive download, active download: curl exit 0"
             if all(r.returncode == 0 for r in (up, down, down_active))
             else (up.stderr + down.stderr + down_active.stderr).strip()),
            ("sha256 equal", back.exists() and active.exists() and
             _sha(back) == _sha(active) == _sha(payload) == _sha(root / "demo.bin"),
             _sha(payload)[:16] + "..."),
            ("FTP login = SSH login", logins == 1,
             f"curl's USER/PASS opened one SSH connection as {DEMO_USER}, reused 3 times"),
            ("data channels through SSH", len(passive) >= 2 and active_channels == 1,
             f"{len(passive)} passive via SOCKS, {active_channels} active converted to passive"),
            # Positive control: the same log does show the EPSV the proxy sent instead.
            ("server never saw PORT/EPRT", "<- EPSV" in server_saw and "<- EPRT" not in
             server_saw and "<- PORT" not in server_saw,
             "it saw EPSV: active mode ran passive through the tunnel"),
            ("password never logged", password not in everything,
             "not in the proxy log or audit log"),
        ]
        for name, passed, detail in verdicts:
            ok &= bool(passed)
            print(f"  [{'PASS' if passed else 'FAIL'}] {name}: {detail}")
        print("  (per-link wire captures arrive with the network-namespace testbed)")
    except RuntimeError as exc:
        print(f"testbed demo: {exc}", file=sys.stderr)
        ok = False
    finally:
        for service in (proxy, ftp, sshd):
            service.stop()
        if not ok or keep:
            print(f"  logs kept in {work}")
        else:
            subprocess.run(["rm", "-rf", str(work)], check=False)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="testbed", description="Real hosts, servers and "
                                     "clients to prove what ftp-ssh-tunnel promises.")
    sub = parser.add_subparsers(dest="command", required=True)
    run_demo = sub.add_parser("demo", help="the documented use case, end to end")
    run_demo.add_argument("--size-mib", type=int, default=16)
    run_demo.add_argument("--keep", action="store_true", help="keep logs and files")
    args = parser.parse_args(argv)
    return demo(args.size_mib, args.keep)


if __name__ == "__main__":
    sys.exit(main())
