"""The targets table: every figure `make bench` measured, with its target, met or missed,
read from the JSON the benchmarks of this run wrote to out/ (the last step of make bench).
The README's table is this output.

    .venv/bin/python bench/summary.py [--out out]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Target:
    figure: str
    source: str  # the JSON file under out/
    value: Callable[[dict[str, Any]], float]
    shown: Callable[[dict[str, Any]], str]
    goal: str
    met: Callable[[float], bool]


def _ratio(key: str, name: str) -> Callable[[dict[str, Any]], float]:
    return lambda data: float(data["results"][name][key])


def _wan(verb: str, ours: str, theirs: str, rtt: str) -> Callable[[dict[str, Any]], float]:
    return lambda data: (data["data_phase"][rtt][verb][ours]
                         / data["data_phase"][rtt][verb][theirs])


def _setup_ratio(data: dict[str, Any]) -> float:
    results = data["results"]
    return float(results["tunnel ftp-tunnel"]["median_ms"]
                 / results["ssh -D + remote command"]["median_ms"])


TARGETS = (
    Target("RETR 512 MiB vs `ssh -D`", "bench-throughput.json",
           _ratio("ratio_vs_ssh_D_gcm", "RETR tunnel aes128-gcm@openssh.com"),
           lambda d: "", "≥ 1.0", lambda v: v >= 1.0),
    Target("STOR 512 MiB vs `ssh -D`", "bench-throughput.json",
           _ratio("ratio_vs_ssh_D_gcm", "STOR tunnel aes128-gcm@openssh.com"),
           lambda d: "", "≥ 1.0", lambda v: v >= 1.0),
    Target("50 x 16 MiB at once vs `ssh -D`", "bench-concurrency.json",
           _ratio("ratio_vs_ssh_D_gcm", "tunnel aes128-gcm@openssh.com"),
           lambda d: "", "≥ 1.2", lambda v: v >= 1.2),
    Target("RETR at 20 ms RTT vs `ssh -D` (data phase)", "bench-wan.json",
           _wan("RETR", "tunnel", "ssh -D aes128-gcm", "20"),
           lambda d: "", "≥ 2", lambda v: v >= 2.0),
    Target("session setup vs the OpenSSH floor", "bench-session-setup.json", _setup_ratio,
           lambda d: (f"{d['results']['tunnel ftp-tunnel']['median_ms']:.2f} ms, floor "
                      f"{d['results']['ssh -D + remote command']['median_ms']:.2f} ms"),
           "≤ 1.3", lambda v: v <= 1.3),
    Target("idle RSS, MiB", "bench-memory.json", lambda d: d["idle_kib"] / 1024,
           lambda d: "", "≤ 40", lambda v: v <= 40.0),
    Target("ftp-sftp RETR vs `sftp` get", "bench-sftp.json",
           _ratio("ratio_vs_sftp_gcm", "RETR ftp-sftp"), lambda d: "", "≥ 1.0",
           lambda v: v >= 1.0),
    Target("ftp-sftp STOR vs `sftp` put", "bench-sftp.json",
           _ratio("ratio_vs_sftp_gcm", "STOR ftp-sftp"), lambda d: "", "≥ 1.0",
           lambda v: v >= 1.0),
    Target("ftp-sftp RETR at 50 ms RTT vs `sftp` (data phase)", "bench-wan.json",
           _wan("RETR", "ftp-sftp", "sftp aes128-gcm", "50"), lambda d: "", "≥ 2",
           lambda v: v >= 2.0),
    Target("last_hop_tls require vs off: session setup", "bench-last-hop-tls.json",
           lambda d: float(d["setup"]["require"]["ratio_vs_off"]),
           lambda d: f"{d['setup']['require']['median_ms']:.1f} ms", "(cost)", lambda v: True),
    Target("last_hop_tls require vs off: RETR data phase", "bench-last-hop-tls.json",
           lambda d: float(d["transfers"]["RETR require"]["ratio_vs_off"]),
           lambda d: f"{d['transfers']['RETR require']['data_mb_s']} MB/s", "(cost)",
           lambda v: True),
    Target("last_hop_tls require vs off: STOR data phase", "bench-last-hop-tls.json",
           lambda d: float(d["transfers"]["STOR require"]["ratio_vs_off"]),
           lambda d: f"{d['transfers']['STOR require']['data_mb_s']} MB/s", "(cost)",
           lambda v: True),
)


def rows(out: Path) -> list[str]:
    lines = ["| figure | measured | target | |", "|---|---|---|---|"]
    for target in TARGETS:
        path = out / target.source
        if not path.exists():
            lines.append(f"| {target.figure} | not measured ({target.source} missing) | "
                         f"{target.goal} | |")
            continue
        data = json.loads(path.read_text())
        try:
            value, extra = target.value(data), target.shown(data)
        except KeyError as exc:  # a file from an older bench without this figure
            lines.append(f"| {target.figure} | not measured (no {exc} in {target.source}) | "
                         f"{target.goal} | |")
            continue
        verdict = ("" if target.goal == "(cost)"
                   else "met" if target.met(value) else "missed")
        lines.append(f"| {target.figure} | {value:.2f}" + (f" ({extra})" if extra else "")
                     + f" | {target.goal} | {verdict} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "out"))
    args = parser.parse_args()
    print("\n".join(rows(Path(args.out))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
