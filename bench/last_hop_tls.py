"""last_hop_tls = "require" against "off", through one daemon in one run.

The topology of bench/scenarios/last-hop-tls.toml (network namespaces): the client host runs
the daemon; behind the SSH server, two FTP hosts with the same vsftpd, one plain, one
demanding FTPS (with TLS session reuse on data connections). Interleaved, per mode:
- session setup: N ftplib sessions through SOCKS (connect, login, passive NLST, QUIT), the
  SSH connection already up (it is pooled per user);
- RETR and STOR of one file with curl, the data phase (time_total - time_pretransfer) as
  MB/s, and the whole transfer.
Needs root and sshd.

    .venv/bin/python bench/last_hop_tls.py [--sessions 30] [--size-mib 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.rig import latency_table, loop_in_topology, write_json  # noqa: E402
from testbed.runner import SOCKS_PORT  # noqa: E402

# Runs inside the client host. argv: root, user, password, socks, sessions, size_mib, rounds.
LOOP = r"""
import json, os, subprocess, sys, time
sys.path.insert(0, sys.argv[1])
from testbed.clients.ftplib_socks import SocksFTP
_, _, user, password, socks, sessions, size_mib, rounds = sys.argv
HOSTS = {"off": "ftp", "require": "ftps"}

def session(host):
    start = time.perf_counter()
    ftp = SocksFTP(f"socks5://{socks}")
    ftp.connect(host, 21)
    ftp.login(user, password)
    ftp.set_pasv(True)
    ftp.nlst()
    ftp.quit()
    return (time.perf_counter() - start) * 1000

def curl(host, *args):
    out = subprocess.run(["curl", "-sS", "--socks5-hostname", socks, "-w",
                          "%{time_total} %{time_pretransfer}", *args,
                          f"ftp://{user}:{password}@{host}/bench.bin"],
                         capture_output=True, text=True, check=True).stdout.split()
    total, pre = float(out[-2]), float(out[-1])
    return total, total - pre

payload = f"/dev/shm/fts-bench-tls-{os.getpid()}.bin"
with open(payload, "wb") as fh:
    for _ in range(int(size_mib)):
        fh.write(os.urandom(1 << 20))
mb = int(size_mib) * 1.048576
setup = {mode: [] for mode in HOSTS}
rates = {f"{verb} {mode}": [] for verb in ("STOR", "RETR") for mode in HOSTS}
whole = {key: [] for key in rates}
try:
    for mode, host in HOSTS.items():
        session(host)  # warm-up: the SSH login
    for _ in range(int(sessions)):
        for mode, host in HOSTS.items():
            setup[mode].append(session(host))
    for _ in range(int(rounds)):
        for mode, host in HOSTS.items():
            for verb, args in (("STOR", ("-T", payload)), ("RETR", ("-o", "/dev/null"))):
                total, data = curl(host, *args)
                rates[f"{verb} {mode}"].append(mb / data)
                whole[f"{verb} {mode}"].append(mb / total)
finally:
    os.unlink(payload)
print(json.dumps({"setup": setup, "rates": rates, "whole": whole}))
"""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=30)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=str(ROOT / "out" / "bench-last-hop-tls.json"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench: network namespaces need root", file=sys.stderr)
        return 2
    out = loop_in_topology(
        ROOT / "bench" / "scenarios" / "last-hop-tls.toml", LOOP,
        lambda run: [*run.users[0], f"127.0.0.1:{SOCKS_PORT}", str(args.sessions),
                     str(args.size_mib), str(args.rounds)], timeout=1200)
    if out is None:
        return 1
    measured = json.loads(out)
    print(f"{args.sessions} ftplib sessions per mode, interleaved, one daemon, SSH connection "
          "pooled (login + passive NLST + QUIT, FTP server behind the SSH server), ms per "
          "session: median [p10-p90], ratio vs off")
    setup = latency_table(measured["setup"], "off", "ratio_vs_off", 10)
    print(f"\n{args.size_mib} MiB with curl, {args.rounds} rounds interleaved, MB/s median "
          "(data phase | whole transfer), ratio of the data phase vs off")
    transfers = {}
    for key, samples in measured["rates"].items():
        verb = key.split()[0]
        rate, whole = statistics.median(samples), statistics.median(measured["whole"][key])
        base = statistics.median(measured["rates"][f"{verb} off"])
        transfers[key] = {"data_mb_s": round(rate, 1), "whole_mb_s": round(whole, 1),
                          "ratio_vs_off": round(rate / base, 2)}
        print(f"  {key:<12} {rate:8.1f} | {whole:8.1f}   x{rate / base:.2f}")
    write_json(args.json, {"sessions": args.sessions, "size_mib": args.size_mib,
                           "setup": setup, "transfers": transfers})
    return 0


if __name__ == "__main__":
    sys.exit(main())
