"""The WAN sweep: RETR and STOR through `tunnel` and through `ssh -D` (aes128-gcm) at round
trips of 5, 20, 50 and 100 ms to sshd (bench/rtt.py's TCP-level delay line: this kernel has
no sch_netem), interleaved per round trip, and a plot of MB/s against the round trip.

Over a long path the window, not the CPU, is the limit: a stream runs at most at
window / RTT. Downloads use the window we grant sshd (channel_window_mib, 8 MiB), where
OpenSSH's client grants 2 MiB. Uploads use the window sshd grants, the same 2 MiB for both
(OpenSSH's CHAN_TCP_WINDOW_DEFAULT, 64 packets of 32 KiB): no client can go past it.

    .venv/bin/python bench/wan.py [--size-mib 32] [--rounds 2] [--plot docs/bench-wan.png]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.rig import SocksPaths, SshRig, curl_argv, interleaved_rates, metered  # noqa: E402
from bench.rtt import DelayLine  # noqa: E402

RTTS_MS = (5, 20, 50, 100)
PEERS = ("ssh -D aes128-gcm", "tunnel")
WINDOWS_MIB = {"RETR": {"tunnel": 8, "ssh -D aes128-gcm": 2},
               "STOR": {"tunnel": 2, "ssh -D aes128-gcm": 2}}


def sweep_one(rtt_ms: float, size_mib: int, rounds: int) -> dict[str, dict[str, list[float]]]:
    """MB/s samples by direction and peer at one round trip."""
    rig = SshRig.start()
    if rig is None:
        raise SystemExit(2)
    line = DelayLine(rig.sshd.port, rtt_ms / 2000)
    rig.reach_sshd_via(line.port)
    ftp = SocksPaths(rig, size_mib)
    try:
        peers = {name.split(" aes")[0] if name.startswith("tunnel") else name: via
                 for name, (via, _) in ftp.paths.items() if name != "direct"
                 and name != "ssh -D default"}
        size_mb = size_mib * (1 << 20) / 1e6
        out: dict[str, dict[str, list[float]]] = {}
        for verb in ("RETR", "STOR"):
            def run_of(via: str | None, verb: str = verb) -> Callable[[], float]:
                args = (["-o", "/dev/null", ftp.base_url + "file.bin"] if verb == "RETR"
                        else ["-T", str(ftp.source), ftp.base_url + "up.bin"])
                return lambda: metered(curl_argv(via, *args))
            out[verb] = interleaved_rates({name: run_of(via) for name, via in peers.items()},
                                          size_mb, rounds)
        return out
    finally:
        ftp.stop()
        rig.stop()


def plot(results: dict[str, dict[str, dict[str, float]]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")  # no display: a file
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    rtts = [int(r) for r in results]
    for ax, verb in zip(axes, ("RETR", "STOR"), strict=True):
        for peer, style in zip(PEERS, ("o--", "s-"), strict=True):
            ax.plot(rtts, [results[str(r)][verb][peer] for r in rtts], style, label=peer)
            window = WINDOWS_MIB[verb][peer] * (1 << 20) / 1e6
            ax.plot(rtts, [window / (r / 1000) for r in rtts], ":", color="grey",
                    linewidth=0.8)
        ax.set_title(f"{verb}: MB/s against round trip (dotted: window / RTT)")
        ax.set_xlabel("round trip to sshd, ms")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(rtts, [str(r) for r in rtts])
        ax.grid(True, which="both", linewidth=0.3)
        ax.legend()
    axes[0].set_ylabel("MB/s (median)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--plot", default=str(ROOT / "docs" / "bench-wan.png"))
    parser.add_argument("--json", default=str(ROOT / "out" / "bench-wan.json"))
    args = parser.parse_args()
    results: dict[str, dict[str, dict[str, float]]] = {}
    print(f"{args.size_mib} MiB per transfer, {args.rounds} interleaved rounds, median MB/s "
          "(ratio tunnel / ssh -D aes128-gcm)")
    print(f"{'RTT':>6} {'RETR ssh -D':>12} {'RETR tunnel':>12} {'ratio':>6} "
          f"{'STOR ssh -D':>12} {'STOR tunnel':>12} {'ratio':>6}")
    for rtt in RTTS_MS:
        samples = sweep_one(rtt, args.size_mib, args.rounds)
        medians = {verb: {peer: statistics.median(values) for peer, values in by.items()}
                   for verb, by in samples.items()}
        results[str(rtt)] = medians
        row = [f"{rtt:>4} ms"]
        for verb in ("RETR", "STOR"):
            ssh, ours = medians[verb]["ssh -D aes128-gcm"], medians[verb]["tunnel"]
            row += [f"{ssh:12.1f}", f"{ours:12.1f}", f"{ours / ssh:6.2f}"]
        print(" ".join(row), flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"size_mib": args.size_mib, "rounds": args.rounds,
                                           "results": results}, indent=2))
    plot(results, Path(args.plot))
    print(f"  JSON: {args.json}; plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
