"""ftp-sftp throughput: curl through the proxy's `ftp-sftp` action against OpenSSH's own
`sftp` client, RETR/get and STOR/put of one file, same sshd (internal-sftp), same run.

Both clients write to and read from the same folder (/dev/shm where there is one, so the
disk is not what we measure). Rounds are interleaved. The reference is `sftp` with
aes128-gcm, the cipher the proxy picks on a CPU with AES-NI; `sftp` at its default cipher
is shown too.

    .venv/bin/python bench/sftp.py [--size-mib 512] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.rig import (  # noqa: E402
    SshRig,
    interleaved_rates,
    random_file_in_memory,
    rate_table,
    write_json,
)
from tunnel.ssh import cipher_preference  # noqa: E402

HOST = "sftp.bench.test"  # the proxy's rule picks it; nothing resolves it


def timed(argv: list[str], stdin: str | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, timeout=900, input=stdin, text=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=str(ROOT / "out" / "bench-sftp.json"))
    args = parser.parse_args()
    rig = SshRig.start()
    if rig is None:
        return 2
    source = random_file_in_memory("fts-bench-sftp-", args.size_mib, "source.bin")
    work = source.parent
    proxy = rig.tunnel(HOST, "21", "ftp-sftp")
    remote = quote(str(work), safe="")  # %2F...: an absolute path for curl
    url = f"ftp://root:unused@{HOST}/{remote}"
    curl = ["curl", "-sS", "--socks5-hostname", proxy.url]

    def sftp(cipher: str | None, batch: str) -> float:
        argv = ["sftp", "-q", "-b", "-", "-P", str(rig.sshd.port), "-i", str(rig.key),
                "-o", f"UserKnownHostsFile={rig.known_hosts}", "-o", "BatchMode=yes",
                "-F", "/dev/null", *(["-o", f"Ciphers={cipher}"] if cipher else []),
                "root@127.0.0.1"]
        return timed(argv, batch)

    gcm = "aes128-gcm@openssh.com"
    get = f"get {source} {work}/got.bin\n"
    put = f"put {source} {work}/put.bin\n"
    peers: dict[str, Callable[[], float]] = {
        "RETR ftp-sftp": lambda: timed([*curl, "-o", str(work / "got.bin"),
                                        f"{url}/source.bin"]),
        "get sftp aes128-gcm": lambda: sftp(gcm, get),
        "get sftp default": lambda: sftp(None, get),
        "STOR ftp-sftp": lambda: timed([*curl, "-T", str(source), f"{url}/put.bin"]),
        "put sftp aes128-gcm": lambda: sftp(gcm, put),
        "put sftp default": lambda: sftp(None, put),
    }
    size_mb = args.size_mib * (1 << 20) / 1e6
    try:
        samples = interleaved_rates(peers, size_mb, args.rounds)
    finally:
        rig.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"ftp-sftp vs OpenSSH sftp, {args.size_mib} MiB over loopback, {args.rounds} "
          f"interleaved rounds, proxy cipher {cipher_preference()[0]} "
          "(MB/s, median [min-max], ratio vs sftp aes128-gcm)")
    results = rate_table(
        samples, lambda name: ("get" if name.startswith(("RETR", "get")) else "put")
        + " sftp aes128-gcm", "ratio_vs_sftp_gcm", width=22)
    write_json(args.json, {"size_mib": args.size_mib, "rounds": args.rounds,
                           "cpus": os.cpu_count(), "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
