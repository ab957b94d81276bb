"""Per-session setup: N sequential ftplib sessions (connect, login, 1 KiB RETR, QUIT),
through `tunnel` (ftp-tunnel) and through `ssh -D`, interleaved, plus direct.

    .venv/bin/python bench/session_setup.py [--sessions 50]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.rig import SshRig, interleaved, latency_table, write_json  # noqa: E402
from testbed.clients.ftplib_socks import SocksFTP  # noqa: E402
from testbed.net import free_port  # noqa: E402
from testbed.services.pyftpd import PyFtpd  # noqa: E402

USER, PASSWORD = "bench", "bench-pw"


def one_session(connect: Callable[[], SocksFTP]) -> float:
    start = time.perf_counter()
    ftp = connect()
    ftp.login(USER, PASSWORD)
    chunks: list[bytes] = []
    ftp.retrbinary("RETR small.bin", chunks.append)
    ftp.quit()
    elapsed = time.perf_counter() - start
    assert len(b"".join(chunks)) == 1024
    return elapsed * 1000


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--json", default=str(ROOT / "out" / "bench-session-setup.json"))
    args = parser.parse_args()
    rig = SshRig.start()
    if rig is None:
        return 2
    site = rig.work / "site"
    site.mkdir()
    (site / "small.bin").write_bytes(os.urandom(1024))
    ftp = PyFtpd(site, free_port(), USER, PASSWORD, log_path=rig.work / "ftp.log").start()
    proxy = rig.tunnel("localhost", str(ftp.port), "ftp-tunnel")
    ssh_port = rig.ssh_dynamic("aes128-gcm@openssh.com", "ssh")
    nodelay_port = rig.ssh_dynamic("aes128-gcm@openssh.com", "ssh-nodelay", "sleep 100000")

    def via(proxy_port: int) -> Callable[[], SocksFTP]:
        def connect() -> SocksFTP:
            client = SocksFTP(f"socks5://127.0.0.1:{proxy_port}")
            client.connect("localhost", ftp.port)
            return client
        return connect

    def direct() -> SocksFTP:
        import ftplib
        client = ftplib.FTP()
        client.connect("127.0.0.1", ftp.port)
        return client  # type: ignore[return-value]

    peers: dict[str, Callable[[], SocksFTP]] = {
        "direct": direct, "ssh -D": via(ssh_port),
        "ssh -D + remote command": via(nodelay_port), "tunnel ftp-tunnel": via(proxy.port)}
    try:  # the warm-up round is where the SSH logins happen
        samples = interleaved({name: (lambda connect=connect: one_session(connect))
                               for name, connect in peers.items()}, args.sessions)
    finally:
        ftp.stop()
        rig.stop()
    print(f"{args.sessions} sequential ftplib sessions (login + 1 KiB RETR + QUIT), ms per "
          "session: median [p10-p90], ratio vs ssh -D")
    results = latency_table(samples, "ssh -D", "ratio_vs_ssh_D", 20)
    write_json(args.json, {"sessions": args.sessions, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
