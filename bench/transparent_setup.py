"""Session setup in transparent mode against SOCKS mode, through one daemon in one run.

The topology of scenarios/transparent-local.toml (client, SSH server, FTP server on a
third host, network namespaces): the client host runs the daemon with both a SOCKS
listener and a transparent one, and `tunnel nft`'s ruleset. N ftplib sessions each way,
interleaved: connect, login, one passive LIST (a data connection: in transparent mode the
daemon adds its port to the nftables set first), QUIT. Needs root, nft and sshd.

    .venv/bin/python bench/transparent_setup.py [--sessions 50]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.rig import latency_table, loop_in_topology, write_json  # noqa: E402
from testbed.runner import SOCKS_PORT  # noqa: E402

# Runs inside the client host: both modes in turn, one warm-up each (the SSH login).
LOOP = r"""
import ftplib, json, sys, time
sys.path.insert(0, sys.argv[1])
from testbed.clients.ftplib_socks import SocksFTP
_, _, server, user, password, socks, rounds = sys.argv

def session(ftp):
    start = time.perf_counter()
    ftp.connect(server, 21)
    ftp.login(user, password)
    ftp.set_pasv(True)
    ftp.nlst()
    ftp.quit()
    return (time.perf_counter() - start) * 1000

makers = {"socks": lambda: SocksFTP(f"socks5://{socks}"), "transparent": lambda: ftplib.FTP()}
samples = {name: [] for name in makers}
for n in range(int(rounds) + 1):
    for name, make in makers.items():
        took = session(make())
        if n:  # round 0 warms up: the SSH login happens there
            samples[name].append(took)
print(json.dumps(samples))
"""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--json", default=str(ROOT / "out" / "bench-transparent-setup.json"))
    args = parser.parse_args()
    if os.geteuid() != 0 or not shutil.which("nft"):
        print("bench: transparent capture needs root and nft", file=sys.stderr)
        return 2
    out = loop_in_topology(
        ROOT / "scenarios" / "transparent-local.toml", LOOP,
        lambda run: [run.scenario.topology.address("ftp"), *run.users[0],
                     f"127.0.0.1:{SOCKS_PORT}", str(args.sessions)], timeout=600)
    if out is None:
        return 1
    samples: dict[str, list[float]] = json.loads(out)
    print(f"{args.sessions} sequential ftplib sessions per mode, interleaved, one daemon "
          "(login + passive NLST + QUIT, FTP server behind the SSH server), ms per session: "
          "median [p10-p90], ratio vs SOCKS")
    results = latency_table(samples, "socks", "ratio_vs_socks", 12)
    write_json(args.json, {"sessions": args.sessions, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
