"""Single-stream RETR throughput: tunnel vs `ssh -D` (aes128-gcm and default) vs direct.

Real sshd and pyftpdlib on loopback; curl is the FTP client for every path, so only the
path differs. Runs are interleaved A/B/C/D in rounds so drift hits all peers alike. Prints
medians, min-max and the ratio against `ssh -D` at aes128-gcm, and writes JSON.

    .venv/bin/python bench/throughput.py [--size-mib 512] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from testbed.net import free_port, wait_port  # noqa: E402
from testbed.proxy import TunnelProxy  # noqa: E402
from testbed.services.pyftpd import PyFtpd  # noqa: E402
from testbed.services.sshd import Sshd, keygen  # noqa: E402
from tunnel.ssh import cipher_preference  # noqa: E402

USER, PASSWORD = "bench", "bench-pw"


def ssh_dynamic(key: Path, known_hosts: Path, sshd: Sshd, cipher: str | None,
                log: Path, remote_command: str = "") -> tuple[subprocess.Popen[bytes], int]:
    """`ssh -D` as users run it (-N). With a remote command the server executes something,
    which is what makes sshd set TCP_NODELAY (see tunnel/ssh.py)."""
    port = free_port()
    argv = ["ssh", *([] if remote_command else ["-N"]), "-D", f"127.0.0.1:{port}",
            "-p", str(sshd.port), "-i", str(key),
            "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-F", "/dev/null"]
    if cipher:
        argv += ["-o", f"Ciphers={cipher}"]
    proc = subprocess.Popen([*argv, "root@127.0.0.1", *([remote_command] if remote_command
                                                         else [])], stdout=subprocess.DEVNULL,
                            stderr=open(log, "wb"))  # noqa: SIM115
    wait_port("127.0.0.1", port, 15, alive=lambda: proc.poll() is None)
    return proc, port


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
    reason = Sshd.available()
    if reason:
        print(f"bench: {reason}", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="fts-bench-"))
    root = work / "ftproot"
    root.mkdir()
    with open(root / "file.bin", "wb") as fh:
        for _ in range(args.size_mib):
            fh.write(os.urandom(1 << 20))
    key = keygen(work / "id_ed25519")
    sshd = Sshd(work / "sshd", free_port(), authorized_keys=[key]).start()
    known_hosts = work / "known_hosts"
    known_hosts.write_text(sshd.known_hosts_line())
    ftp = PyFtpd(root, free_port(), USER, PASSWORD, log_path=work / "ftp.log").start()
    proxy = TunnelProxy(work / "proxy", f"""
[[profile]]
id = "bench"
host = "127.0.0.1"
port = {sshd.port}
user = "root"
auth = ["publickey"]
identity_files = ["{key}"]
known_hosts = "{known_hosts}"

[[rule]]
dst = "localhost"
ports = "*"
action = "tunnel"
profile = "bench"
""").start()
    gcm, gcm_port = ssh_dynamic(key, known_hosts, sshd, "aes128-gcm@openssh.com",
                                work / "ssh-gcm.log")
    default, default_port = ssh_dynamic(key, known_hosts, sshd, None, work / "ssh-default.log")
    url = f"ftp://{USER}:{PASSWORD}@localhost:{ftp.port}/file.bin"
    peers: dict[str, Callable[[], float]] = {
        "direct": lambda: timed_curl(url, None),
        "ssh -D aes128-gcm": lambda: timed_curl(url, f"127.0.0.1:{gcm_port}"),
        "ssh -D default": lambda: timed_curl(url, f"127.0.0.1:{default_port}"),
        f"tunnel {cipher_preference()[0]}": lambda: timed_curl(url, proxy.url),
    }
    size_mb = args.size_mib * (1 << 20) / 1e6
    samples: dict[str, list[float]] = {name: [] for name in peers}
    try:
        for run in peers.values():  # warm-up: page cache, SSH login, pooled connection
            run()
        for _ in range(args.rounds):
            for name, run in peers.items():
                samples[name].append(size_mb / run())
    finally:
        for proc in (gcm, default):
            proc.terminate()
            proc.wait()
        for service in (proxy, ftp, sshd):
            service.stop()
        subprocess.run(["rm", "-rf", str(work)], check=False)

    reference = statistics.median(samples["ssh -D aes128-gcm"])
    print(f"RETR {args.size_mib} MiB over loopback, curl, {args.rounds} interleaved rounds "
          f"(MB/s, median [min-max], ratio vs ssh -D aes128-gcm)")
    results = {}
    for name, values in samples.items():
        med = statistics.median(values)
        results[name] = {"median_mb_s": round(med, 1), "min": round(min(values), 1),
                         "max": round(max(values), 1), "ratio_vs_ssh_D_gcm":
                         round(med / reference, 2), "samples": [round(v, 1) for v in values]}
        print(f"  {name:24s} {med:8.1f}  [{min(values):.1f}-{max(values):.1f}]  "
              f"x{med / reference:.2f}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"size_mib": args.size_mib, "rounds": args.rounds,
                                           "cpus": os.cpu_count(), "results": results},
                                          indent=2))
    print(f"  JSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
