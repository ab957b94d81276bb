"""Single-stream RETR and STOR throughput: tunnel vs `ssh -D` (aes128-gcm and default) vs
direct, and the proxy's CPU seconds per GiB moved.

Real sshd and pyftpdlib on loopback (files in /dev/shm); curl is the FTP client for every
path, so only the path differs. Runs are interleaved in rounds so drift hits all peers
alike. Prints medians, min-max and the ratio against `ssh -D` at aes128-gcm, and writes JSON.

    .venv/bin/python bench/throughput.py [--size-mib 512] [--rounds 3]
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


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=str(ROOT / "out" / "bench-throughput.json"))
    args = parser.parse_args()
    rig = SshRig.start()
    if rig is None:
        return 2
    ftp = SocksPaths(rig, args.size_mib)  # in memory: STOR must not measure a disk
    base, source = ftp.base_url, ftp.source
    cpu: dict[str, list[float]] = {}
    peers: dict[str, Callable[[], float]] = {}
    for name, (via, pid) in ftp.paths.items():
        for verb, argv in (("RETR", curl_argv(via, "-o", "/dev/null", base + "file.bin")),
                           ("STOR", curl_argv(via, "-T", str(source), base + "up.bin"))):
            cpu[f"{verb} {name}"] = []
            peers[f"{verb} {name}"] = (lambda argv=argv, pid=pid, out=cpu[f"{verb} {name}"]:
                                       metered(argv, pid, out))
    size_mb = args.size_mib * (1 << 20) / 1e6
    try:
        samples = interleaved_rates(peers, size_mb, args.rounds)
    finally:
        ftp.stop()
        rig.stop()

    print(f"RETR and STOR {args.size_mib} MiB over loopback, curl, {args.rounds} interleaved "
          f"rounds (MB/s, median [min-max], ratio vs ssh -D aes128-gcm, same verb)")
    results = rate_table(samples, lambda name: name.split()[0] + " ssh -D aes128-gcm",
                         "ratio_vs_ssh_D_gcm", width=30)
    gib = args.size_mib / 1024
    print("Proxy CPU seconds per GiB moved (median; the proxy process alone: tunnel, or the "
          "ssh client of ssh -D)")
    for name, values in cpu.items():
        if "direct" in name:
            continue
        per_gib = cpu_s_per_gib(values, gib)
        results[name]["proxy_cpu_s_per_gib"] = round(per_gib, 2)
        print(f"  {name:30s} {per_gib:6.2f} s/GiB")
    write_json(args.json, {"size_mib": args.size_mib, "rounds": args.rounds,
                           "cpus": os.cpu_count(), "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
