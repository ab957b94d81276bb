"""Single-stream RETR throughput: tunnel vs `ssh -D` (aes128-gcm and default) vs direct.

Real sshd and pyftpdlib on loopback; curl is the FTP client for every path, so only the
path differs. Runs are interleaved A/B/C/D in rounds so drift hits all peers alike. Prints
medians, min-max and the ratio against `ssh -D` at aes128-gcm, and writes JSON.

    .venv/bin/python bench/throughput.py [--size-mib 512] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.rig import SshRig, interleaved, rate_table, write_json  # noqa: E402
from testbed.net import free_port  # noqa: E402
from testbed.services.pyftpd import PyFtpd  # noqa: E402
from tunnel.ssh import cipher_preference  # noqa: E402

USER, PASSWORD = "bench", "bench-pw"


def timed_curl(url: str, proxy: str | None) -> float:
    argv = ["curl", "-sS", "-o", "/dev/null", url]
    if proxy:
        argv[1:1] = ["--socks5-hostname", proxy]
    start = time.perf_counter()
    subprocess.run(argv, check=True, timeout=600)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=str(ROOT / "out" / "bench-throughput.json"))
    args = parser.parse_args()
    rig = SshRig.start()
    if rig is None:
        return 2
    root = rig.work / "ftproot"
    root.mkdir()
    with open(root / "file.bin", "wb") as fh:
        for _ in range(args.size_mib):
            fh.write(os.urandom(1 << 20))
    ftp = PyFtpd(root, free_port(), USER, PASSWORD, log_path=rig.work / "ftp.log").start()
    proxy = rig.tunnel("localhost", "*", "tunnel")
    gcm_port = rig.ssh_dynamic("aes128-gcm@openssh.com", "ssh-gcm")
    default_port = rig.ssh_dynamic(None, "ssh-default")
    url = f"ftp://{USER}:{PASSWORD}@localhost:{ftp.port}/file.bin"
    peers: dict[str, Callable[[], float]] = {
        "direct": lambda: timed_curl(url, None),
        "ssh -D aes128-gcm": lambda: timed_curl(url, f"127.0.0.1:{gcm_port}"),
        "ssh -D default": lambda: timed_curl(url, f"127.0.0.1:{default_port}"),
        f"tunnel {cipher_preference()[0]}": lambda: timed_curl(url, proxy.url),
    }
    size_mb = args.size_mib * (1 << 20) / 1e6
    try:
        samples = interleaved({name: (lambda run=run: size_mb / run())
                               for name, run in peers.items()}, args.rounds)
    finally:
        ftp.stop()
        rig.stop()

    print(f"RETR {args.size_mib} MiB over loopback, curl, {args.rounds} interleaved rounds "
          f"(MB/s, median [min-max], ratio vs ssh -D aes128-gcm)")
    results = rate_table(samples, lambda _: "ssh -D aes128-gcm", "ratio_vs_ssh_D_gcm")
    write_json(args.json, {"size_mib": args.size_mib, "rounds": args.rounds,
                           "cpus": os.cpu_count(), "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
