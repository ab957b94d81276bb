"""Concurrency: N simultaneous downloads of one file (default 50 x 16 MiB) through tunnel,
`ssh -D` (aes128-gcm and default) and direct. Aggregate MB/s is all the bytes over the wall
time of the whole batch; with it the proxy's CPU seconds per GiB and its peak RSS (VmHWM).

    .venv/bin/python bench/concurrent.py [--clients 50] [--size-mib 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.rig import (  # noqa: E402
    SshRig,
    cpu_seconds,
    curl_argv,
    interleaved,
    proc_status_kib,
    rate_table,
    write_json,
)
from testbed.net import free_port  # noqa: E402
from testbed.services.pyftpd import PyFtpd  # noqa: E402
from tunnel.ssh import cipher_preference  # noqa: E402

USER, PASSWORD = "bench", "bench-pw"


def batch(argv: list[str], clients: int, proxy_pid: int | None, cpu: list[float]) -> float:
    """Start `clients` curls at once; seconds until the last one ends."""
    before = cpu_seconds(proxy_pid) if proxy_pid else 0.0
    start = time.perf_counter()
    procs = [subprocess.Popen(argv) for _ in range(clients)]
    codes = [proc.wait(600) for proc in procs]
    elapsed = time.perf_counter() - start
    if any(codes):
        raise RuntimeError(f"{sum(1 for c in codes if c)} of {clients} downloads failed")
    cpu.append(cpu_seconds(proxy_pid) - before if proxy_pid else 0.0)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--size-mib", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=str(ROOT / "out" / "bench-concurrent.json"))
    args = parser.parse_args()
    rig = SshRig.start()
    if rig is None:
        return 2
    shm = Path("/dev/shm")
    root = Path(tempfile.mkdtemp(prefix="fts-bench-ftp-", dir=shm if shm.is_dir() else None))
    with open(root / "file.bin", "wb") as fh:
        for _ in range(args.size_mib):
            fh.write(os.urandom(1 << 20))
    ftp = PyFtpd(root, free_port(), USER, PASSWORD, log_path=rig.work / "ftp.log").start()
    proxy = rig.tunnel("localhost", "*", "tunnel")
    assert proxy.proc is not None
    gcm_port = rig.ssh_dynamic("aes128-gcm@openssh.com", "ssh-gcm")
    default_port = rig.ssh_dynamic(None, "ssh-default")
    url = f"ftp://{USER}:{PASSWORD}@localhost:{ftp.port}/file.bin"
    paths: dict[str, tuple[str | None, int | None]] = {
        "direct": (None, None),
        "ssh -D aes128-gcm": (f"127.0.0.1:{gcm_port}", rig.dynamic_pids[gcm_port]),
        "ssh -D default": (f"127.0.0.1:{default_port}", rig.dynamic_pids[default_port]),
        f"tunnel {cipher_preference()[0]}": (proxy.url, proxy.proc.pid),
    }
    cpu: dict[str, list[float]] = {name: [] for name in paths}
    peers: dict[str, Callable[[], float]] = {
        name: (lambda via=via, pid=pid, out=cpu[name]:
               batch(curl_argv(via, "-o", "/dev/null", url), args.clients, pid, out))
        for name, (via, pid) in paths.items()}
    total_mb = args.clients * args.size_mib * (1 << 20) / 1e6
    peaks: dict[str, int] = {}
    try:
        samples = interleaved({name: (lambda run=run: total_mb / run())
                               for name, run in peers.items()}, args.rounds)
        peaks = {name: proc_status_kib(pid, "VmHWM") for name, (_, pid) in paths.items()
                 if pid}
    finally:
        ftp.stop()
        rig.stop()
        shutil.rmtree(root, ignore_errors=True)

    print(f"{args.clients} concurrent downloads of {args.size_mib} MiB, curl, {args.rounds} "
          "interleaved rounds (aggregate MB/s, median [min-max], ratio vs ssh -D aes128-gcm)")
    results = rate_table(samples, lambda _: "ssh -D aes128-gcm", "ratio_vs_ssh_D_gcm")
    gib = args.clients * args.size_mib / 1024
    print("Proxy CPU seconds per GiB moved, and its peak RSS over the run")
    for name, peak in peaks.items():
        per_gib = statistics.median(cpu[name][1:]) / gib  # the warm-up batch left out
        results[name].update(proxy_cpu_s_per_gib=round(per_gib, 2), peak_rss_kib=peak)
        print(f"  {name:24s} {per_gib:6.2f} s/GiB  peak RSS {peak / 1024:6.1f} MiB")
    write_json(args.json, {"clients": args.clients, "size_mib": args.size_mib,
                           "rounds": args.rounds, "cpus": os.cpu_count(), "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
