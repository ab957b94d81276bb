"""Concurrency: N simultaneous downloads of one file (default 50 x 16 MiB) through tunnel,
`ssh -D` (aes128-gcm and default) and direct. Aggregate MB/s is all the bytes over the wall
time of the whole batch; with it the proxy's CPU seconds per GiB and its peak RSS (VmHWM).

    .venv/bin/python bench/concurrency.py [--clients 50] [--size-mib 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.rig import (  # noqa: E402
    SocksPaths,
    SshRig,
    cpu_s_per_gib,
    curl_argv,
    interleaved_rates,
    metered,
    rate_table,
    write_json,
)
from testbed.services.base import proc_status_kib  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--size-mib", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=str(ROOT / "out" / "bench-concurrency.json"))
    args = parser.parse_args()
    rig = SshRig.start()
    if rig is None:
        return 2
    ftp = SocksPaths(rig, args.size_mib)
    url, paths = ftp.base_url + "file.bin", ftp.paths
    cpu: dict[str, list[float]] = {name: [] for name in paths}
    peers: dict[str, Callable[[], float]] = {
        name: (lambda via=via, pid=pid, out=cpu[name]:
               metered(curl_argv(via, "-o", "/dev/null", url), pid, out, args.clients))
        for name, (via, pid) in paths.items()}
    total_mb = args.clients * args.size_mib * (1 << 20) / 1e6
    peaks: dict[str, int] = {}
    try:
        samples = interleaved_rates(peers, total_mb, args.rounds)
        peaks = {name: proc_status_kib(pid, "VmHWM") for name, (_, pid) in paths.items()
                 if pid}
    finally:
        ftp.stop()
        rig.stop()

    print(f"{args.clients} concurrent downloads of {args.size_mib} MiB, curl, {args.rounds} "
          "interleaved rounds (aggregate MB/s, median [min-max], ratio vs ssh -D aes128-gcm)")
    results = rate_table(samples, lambda _: "ssh -D aes128-gcm", "ratio_vs_ssh_D_gcm")
    gib = args.clients * args.size_mib / 1024
    print("Proxy CPU seconds per GiB moved, and its peak RSS over the run")
    for name, peak in peaks.items():
        per_gib = cpu_s_per_gib(cpu[name], gib)
        results[name].update(proxy_cpu_s_per_gib=round(per_gib, 2), peak_rss_kib=peak)
        print(f"  {name:24s} {per_gib:6.2f} s/GiB  peak RSS {peak / 1024:6.1f} MiB")
    write_json(args.json, {"clients": args.clients, "size_mib": args.size_mib,
                           "rounds": args.rounds, "cpus": os.cpu_count(), "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
