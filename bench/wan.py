"""The WAN sweep: RETR and STOR through `tunnel` and through `ssh -D` (aes128-gcm), and
ftp-sftp against OpenSSH's `sftp` (aes128-gcm), at round trips of 5, 20, 50 and 100 ms to
sshd (bench/rtt.py's TCP-level delay line: this kernel has no sch_netem), interleaved per
round trip, and a plot of MB/s against the round trip.

Over a long path the window, not the CPU, is the limit: a stream runs at most at
window / RTT. Downloads use the window we grant sshd, sized from the measured round trip
(tunnel/windowsize.py: 8 MiB at 5 ms, the 16 MiB ceiling from 17 ms on), where OpenSSH's
client grants 2 MiB. Uploads use the window sshd grants, the same 2 MiB for both
(OpenSSH's CHAN_TCP_WINDOW_DEFAULT, 64 packets of 32 KiB): no client can go past it.
`sftp` keeps 64 requests of 32 KiB in flight (2 MiB); ftp-sftp keeps a channel window's
worth of sshd's 255 KiB requests in flight, so its downloads have the same bound as ours.

The data phase: curl's time_total - time_pretransfer; for `sftp`, which reports no phases,
its batch's time less the median of the same batch without the transfer (`pwd`: the SSH
connection, login and SFTP session, several round trips).

    .venv/bin/python bench/wan.py [--size-mib 32] [--rounds 2] [--plot docs/bench-wan.png]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.rig import SocksPaths, SshRig, curl_argv, interleaved_rates  # noqa: E402
from bench.rtt import DelayLine  # noqa: E402

RTTS_MS = (5, 20, 50, 100)
PEERS = ("ssh -D aes128-gcm", "tunnel", "sftp aes128-gcm", "ftp-sftp")
PAIRS = (("tunnel", "ssh -D aes128-gcm"), ("ftp-sftp", "sftp aes128-gcm"))
WINDOWS_MIB = {"RETR": (2, 16), "STOR": (2,)}  # the bounds drawn: window / RTT
SFTP_HOST = "sftp.bench.test"  # the ftp-sftp rule's destination; nothing resolves it
GCM = "aes128-gcm@openssh.com"


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


def timed_sftp(argv: list[str], batch: str) -> float:
    start = time.perf_counter()
    subprocess.run(argv, input=batch, text=True, check=True, timeout=600,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def sweep_one(rtt_ms: float, size_mib: int, rounds: int
              ) -> tuple[dict[str, dict[str, list[float]]], dict[str, dict[str, list[float]]]]:
    """MB/s samples by direction and peer at one round trip: whole files, data phases."""
    rig = SshRig.start()
    if rig is None:
        raise SystemExit(2)
    line = DelayLine(rig.sshd.port, rtt_ms / 2000)
    rig.reach_sshd_via(line.port)
    ftp = SocksPaths(rig, size_mib)
    sftp_proxy = rig.tunnel(SFTP_HOST, "21", "ftp-sftp")
    folder = ftp.source.parent
    sftp_url = f"ftp://root:unused@{SFTP_HOST}/{quote(str(folder), safe='')}/"
    sftp_argv = ["sftp", "-q", "-b", "-", "-P", str(line.port), "-i", str(rig.key), "-o",
                 f"UserKnownHostsFile={rig.known_hosts}", "-o", "BatchMode=yes", "-F",
                 "/dev/null", "-o", f"Ciphers={GCM}", "root@127.0.0.1"]
    try:
        peers = {name.split(" aes")[0] if name.startswith("tunnel") else name: via
                 for name, (via, _) in ftp.paths.items() if name != "direct"
                 and name != "ssh -D default"}
        size_mb = size_mib * (1 << 20) / 1e6
        # sftp's own setup (connect, log in, open the SFTP session), to take from its times.
        setup = statistics.median(timed_sftp(sftp_argv, "pwd\n") for _ in range(3))
        whole: dict[str, dict[str, list[float]]] = {}
        data: dict[str, dict[str, list[float]]] = {}
        for verb in ("RETR", "STOR"):
            data[verb] = {name: [] for name in (*peers, "sftp aes128-gcm", "ftp-sftp")}

            def run_of(via: str | None, name: str, base: str = ftp.base_url,
                       verb: str = verb) -> Callable[[], float]:
                args = (["-o", "/dev/null", base + "file.bin"] if verb == "RETR"
                        else ["-T", str(ftp.source), base + "up.bin"])
                return lambda: timed_curl(curl_argv(via, *args), size_mb, data[verb][name])

            def sftp_run(verb: str = verb) -> float:
                batch = (f"get {ftp.source} /dev/null\n" if verb == "RETR"
                         else f"put {ftp.source} {folder}/put.bin\n")
                took = timed_sftp(sftp_argv, batch)
                data[verb]["sftp aes128-gcm"].append(size_mb / max(took - setup, 1e-3))
                return took

            runs = {name: run_of(via, name) for name, via in peers.items()}
            runs["sftp aes128-gcm"] = sftp_run
            runs["ftp-sftp"] = run_of(sftp_proxy.url, "ftp-sftp", sftp_url)
            whole[verb] = interleaved_rates(runs, size_mb, rounds)
            for name in data[verb]:
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
        for peer, style, colour in zip(PEERS, ("o--", "s-", "^--", "D-"),
                                       ("C0", "C1", "C2", "C3"), strict=True):
            ax.plot(rtts, [data[str(r)][verb][peer] for r in rtts], style, color=colour,
                    label=f"{peer}, data phase")
        for window_mib in WINDOWS_MIB[verb]:
            window = window_mib * (1 << 20) / 1e6
            ax.plot(rtts, [window / (r / 1000) for r in rtts], ":", color="grey",
                    linewidth=0.8)
        ax.set_title(f"{verb}: data phase MB/s against round trip\n(dotted: "
                     f"{' and '.join(f'{w} MiB' for w in WINDOWS_MIB[verb])} / RTT)",
                     fontsize=10)
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
    parser.add_argument("--rtts", default=",".join(map(str, RTTS_MS)),
                        help="round trips in ms, comma-separated")
    args = parser.parse_args()
    results: dict[str, dict[str, dict[str, float]]] = {}
    phases: dict[str, dict[str, dict[str, float]]] = {}
    print(f"{args.size_mib} MiB per transfer, {args.rounds} interleaved rounds, median MB/s "
          "of the whole file / of its data phase; ratio ours / OpenSSH's (data phase)")
    for rtt in (int(r) for r in args.rtts.split(",")):
        whole, data = sweep_one(rtt, args.size_mib, args.rounds)
        results[str(rtt)] = _medians(whole)
        phases[str(rtt)] = _medians(data)
        for verb in ("RETR", "STOR"):
            w, d = results[str(rtt)][verb], phases[str(rtt)][verb]
            row = [f"{rtt:>4} ms {verb}"]
            for ours, theirs in PAIRS:
                row.append(f"{theirs} {w[theirs]:6.1f} / {d[theirs]:6.1f}, {ours} "
                           f"{w[ours]:6.1f} / {d[ours]:6.1f}, x{d[ours] / d[theirs]:4.2f};")
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
