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
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.rig import SocksPaths, SshRig, curl_argv, interleaved_rates  # noqa: E402
from bench.rtt import DelayLine  # noqa: E402

RTTS_MS = (5, 20, 50, 100)
PEERS = ("ssh -D aes128-gcm", "tunnel")
WINDOWS_MIB = {"RETR": {"tunnel": 8, "ssh -D aes128-gcm": 2},
               "STOR": {"tunnel": 2, "ssh -D aes128-gcm": 2}}


# curl's own clock: the whole file, and the data phase (from the moment the FTP dialogue is
# done to the last byte), which is what the windows govern.
WRITE_OUT = "%{time_pretransfer} %{time_total}"


def timed_curl(argv: list[str], size_mb: float, phases: list[float]) -> float:
    """Seconds for the whole file; appends the data phase's MB/s to `phases`."""
    done = subprocess.run([*argv, "-w", WRITE_OUT], capture_output=True, text=True,
                          timeout=600, check=True)
    pretransfer, total = (float(x) for x in done.stdout.split()[-2:])
    phases.append(size_mb / max(total - pretransfer, 1e-6))
    return total


def sweep_one(rtt_ms: float, size_mib: int, rounds: int
              ) -> tuple[dict[str, dict[str, list[float]]], dict[str, dict[str, list[float]]]]:
    """MB/s samples by direction and peer at one round trip: whole files, data phases."""
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
        whole: dict[str, dict[str, list[float]]] = {}
        data: dict[str, dict[str, list[float]]] = {}
        for verb in ("RETR", "STOR"):
            data[verb] = {name: [] for name in peers}

            def run_of(via: str | None, name: str, verb: str = verb) -> Callable[[], float]:
                args = (["-o", "/dev/null", ftp.base_url + "file.bin"] if verb == "RETR"
                        else ["-T", str(ftp.source), ftp.base_url + "up.bin"])
                return lambda: timed_curl(curl_argv(via, *args), size_mb, data[verb][name])
            whole[verb] = interleaved_rates(
                {name: run_of(via, name) for name, via in peers.items()}, size_mb, rounds)
            for name in peers:
                data[verb][name] = data[verb][name][1:]  # the warm-up run left out
        return whole, data
    finally:
        ftp.stop()
        rig.stop()


def plot(results: dict[str, dict[str, dict[str, float]]],
         data: dict[str, dict[str, dict[str, float]]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")  # no display: a file
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    rtts = [int(r) for r in results]
    for ax, verb in zip(axes, ("RETR", "STOR"), strict=True):
        for peer, style, colour in zip(PEERS, ("o--", "s-"), ("C0", "C1"), strict=True):
            ax.plot(rtts, [data[str(r)][verb][peer] for r in rtts], style, color=colour,
                    label=f"{peer}, data phase")
            ax.plot(rtts, [results[str(r)][verb][peer] for r in rtts], style, color=colour,
                    alpha=0.35, label=f"{peer}, whole 32 MiB file")
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


def _medians(samples: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    return {verb: {peer: statistics.median(values) for peer, values in by.items()}
            for verb, by in samples.items()}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--plot", default=str(ROOT / "docs" / "bench-wan.png"))
    parser.add_argument("--json", default=str(ROOT / "out" / "bench-wan.json"))
    args = parser.parse_args()
    results: dict[str, dict[str, dict[str, float]]] = {}
    phases: dict[str, dict[str, dict[str, float]]] = {}
    print(f"{args.size_mib} MiB per transfer, {args.rounds} interleaved rounds, median MB/s "
          "of the whole file / of its data phase (ratio tunnel / ssh -D aes128-gcm)")
    print(f"{'RTT':>6} {'RETR ssh -D':>14} {'RETR tunnel':>14} {'ratio':>11} "
          f"{'STOR ssh -D':>14} {'STOR tunnel':>14} {'ratio':>11}")
    for rtt in RTTS_MS:
        whole, data = sweep_one(rtt, args.size_mib, args.rounds)
        results[str(rtt)] = _medians(whole)
        phases[str(rtt)] = _medians(data)
        row = [f"{rtt:>4} ms"]
        for verb in ("RETR", "STOR"):
            w, d = results[str(rtt)][verb], phases[str(rtt)][verb]
            ssh, ours = "ssh -D aes128-gcm", "tunnel"
            row += [f"{w[ssh]:6.1f} / {d[ssh]:5.1f}", f"{w[ours]:6.1f} / {d[ours]:5.1f}",
                    f"{w[ours] / w[ssh]:4.2f} / {d[ours] / d[ssh]:4.2f}"]
        print(" ".join(row), flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"size_mib": args.size_mib, "rounds": args.rounds,
                                           "whole_file": results, "data_phase": phases},
                                          indent=2))
    plot(results, phases, Path(args.plot))
    print(f"  JSON: {args.json}; plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
