"""The `testbed` command.

`testbed demo` runs the proxy core end to end on loopback: a real OpenSSH sshd, a real FTP
server (pyftpdlib), `tunnel serve`, and curl as the FTP client speaking SOCKS5 to the proxy.
It uploads and downloads a file through the SSH tunnel and prints a short verdict.
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
from testbed.services.sshd import Sshd, keygen

DEMO_USER, DEMO_PASSWORD = "demo", "demo-" + os.urandom(4).hex()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def demo(size_mib: int, keep: bool) -> int:
    reason = Sshd.available()
    if reason:
        print(f"testbed demo: cannot run: {reason}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="fts-demo-"))
    root = work / "ftproot"
    root.mkdir()
    payload = work / "upload.bin"
    payload.write_bytes(os.urandom(size_mib << 20))
    key = keygen(work / "id_ed25519", "demo-user")
    sshd = Sshd(work / "sshd", free_port(), authorized_keys=[key])
    ftp = PyFtpd(root, free_port(), DEMO_USER, DEMO_PASSWORD, log_path=work / "pyftpd.log")
    known_hosts = work / "known_hosts"
    known_hosts.write_text(sshd.known_hosts_line())
    proxy = TunnelProxy(work / "proxy", f"""
[[profile]]
id = "demo-ssh"
host = "127.0.0.1"
port = {sshd.port}
user = "root"
auth = ["publickey"]
identity_files = ["{key}"]
known_hosts = "{known_hosts}"

[[rule]]
id = "ftp-via-ssh"
dst = "localhost"
ports = "*"
action = "tunnel"
profile = "demo-ssh"
""")
    started = time.monotonic()
    ok = True
    try:
        sshd.start()
        ftp.start()
        proxy.start()
        url = f"ftp://{DEMO_USER}:{DEMO_PASSWORD}@localhost:{ftp.port}/demo.bin"
        socks = ["--socks5-hostname", proxy.url]
        up = subprocess.run(["curl", "-sS", *socks, "-T", str(payload), url],
                            capture_output=True, text=True, timeout=120)
        back = work / "download.bin"
        down = subprocess.run(["curl", "-sS", *socks, "-o", str(back), url],
                              capture_output=True, text=True, timeout=120)
        elapsed = time.monotonic() - started
        same = back.exists() and _sha(back) == _sha(payload) == _sha(root / "demo.bin")
        logins = sshd.log().count("Accepted publickey")
        records = proxy.audit()
        tunnelled = [r for r in records if r.get("action") == "tunnel"]
        print(f"ftp-ssh-tunnel demo (loopback, {size_mib} MiB, {elapsed:.1f} s)")
        print(f"  FTP client        curl via SOCKS5 {proxy.url}")
        print(f"  SSH server        OpenSSH sshd 127.0.0.1:{sshd.port} "
              "(key login, strict host key)")
        print(f"  FTP server        pyftpdlib localhost:{ftp.port}")
        verdicts = [
            ("upload + download", up.returncode == 0 and down.returncode == 0,
             (up.stderr + down.stderr).strip() or "curl exit 0 twice"),
            ("sha256 equal", same, _sha(payload)[:16] + "..."),
            ("every connection through SSH", len(tunnelled) >= 4 and
             all(r["result"] == "closed" for r in tunnelled),
             f"{len(tunnelled)} SOCKS sessions (control + data), all action=tunnel"),
            ("SSH logins", logins == 1, f"{logins} (the pool carried every session)"),
        ]
        for name, passed, detail in verdicts:
            ok &= passed
            print(f"  [{'PASS' if passed else 'FAIL'}] {name}: {detail}")
        print("  (wire captures per link arrive with the network-namespace testbed)")
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
