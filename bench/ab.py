"""A/B of one of the proxy's asyncssh patches, same build, same run: two `tunnel serve`
daemons side by side, one as shipped (A) and one with the patch left out (B), curl RETR and
STOR through each, interleaved in rounds, with the proxy's CPU seconds per GiB.

The patch is left out by a `sitecustomize` on B's PYTHONPATH that changes one module as it
is imported (marks a patch as installed already, or replaces one function), so B runs the
same code otherwise. `nothing` is the control.

    .venv/bin/python bench/ab.py ignore [--action ftp-tunnel|ftp-sftp] [--size-mib 256]
                                        [--rounds 4] [--copies 1]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from testbed.proxy import TunnelProxy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.rig import (  # noqa: E402
    SshRig,
    cpu_s_per_gib,
    curl_argv,
    interleaved,
    interleaved_rates,
    latency_table,
    metered,
    random_file_in_memory,
    rate_table,
)

# Each variant: the module to change and what to run on it (as `m`) once it is imported.
# B's sitecustomize waits for that import rather than importing the module itself: importing
# tunnel.ssh from sitecustomize made the daemon half as fast with nothing changed (an
# A/B with no change showed it), so the modules load in their own order.
LEAVE_OUT = {
    "nothing": ("tunnel.ssh", "pass"),  # the control: B differs from A in no way
    "ignore": ("asyncssh.connection", "m.SSHConnection._tunnel_ignore_patched = True"),
    "readsize": ("tunnel.readsize", "m.SSH_READ_SIZE = 256 * 1024"),
    "client-readsize": ("tunnel.readsize", "m.CLIENT_READ_SIZE = 256 * 1024"),
    "inbuffer": ("asyncssh.connection", "m.SSHConnection._tunnel_inbuffer_patched = True"),
    "quiet-trim": ("tunnel.heap", "m.QuietTrim.session_ended = lambda self: None"),
    "allocator": ("tunnel.heap", "m.tune_allocator = lambda: True"),
    "window": ("asyncssh.channel", "m.SSHChannel._tunnel_window_patched = True"),
    # Windows by the budget alone (the profile's ceiling for a lone stream), as before
    # they were sized from the round trip.
    "round-trip": ("tunnel.ssh", "async def unmeasured(entry): pass\n"
                                 "m._sample_round_trip = unmeasured"),
}

SITECUSTOMIZE = """
import importlib.abc, importlib.util, sys

class AfterImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != {module!r}:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(m):
            run(m)
            exec({change!r}, {{"m": m}})

        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, AfterImport())
"""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("patch", choices=sorted(LEAVE_OUT))
    parser.add_argument("--action", choices=("ftp-tunnel", "ftp-sftp"), default="ftp-tunnel")
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--copies", type=int, default=1, help="transfers at once per run")
    parser.add_argument("--verbs", default="RETR,STOR",
                        help="which transfers, in this order (a daemon's history matters: "
                             "STOR alone shows what a RETR first hides, see tunnel/heap.py)")
    parser.add_argument("--sessions", type=int, default=0,
                        help="instead of transfers: this many sequential ftplib sessions "
                             "(login, 1 KiB RETR, QUIT; ftp-tunnel) per daemon, interleaved")
    args = parser.parse_args()
    rig = SshRig.start()
    if rig is None:
        return 2
    site = Path(tempfile.mkdtemp(prefix="fts-ab-"))
    module, change = LEAVE_OUT[args.patch]
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE.format(module=module, change=change))
    size_mib = args.size_mib // args.copies
    source = random_file_in_memory("fts-ab-", size_mib, "file.bin")
    stop: list[Callable[[], object]] = [rig.stop, lambda: shutil.rmtree(site),
                                        lambda: shutil.rmtree(source.parent)]
    if args.action == "ftp-tunnel":
        from testbed.net import free_port
        from testbed.services.pyftpd import PyFtpd
        ftp = PyFtpd(source.parent, free_port(), "bench", "bench-pw",
                     log_path=rig.work / "ftp.log").start()
        stop.insert(0, ftp.stop)
        base = f"ftp://bench:bench-pw@localhost:{ftp.port}/"
        dst, ports = "localhost", "*"
    else:
        base = f"ftp://root:unused@sftp.ab.test/{quote(str(source.parent), safe='')}/"
        dst, ports = "sftp.ab.test", "21"
    proxies = {"A as shipped": rig.tunnel(dst, ports, args.action),
               f"B without {args.patch}": rig.tunnel(dst, ports, args.action,
                                                     prefix=["env", f"PYTHONPATH={site}"])}
    if args.sessions:
        return session_setup(proxies, base, source, args.sessions, stop, args.patch)
    cpu: dict[str, list[float]] = {}
    faults: dict[str, list[int]] = {}
    peers: dict[str, Callable[[], float]] = {}
    for verb in args.verbs.split(","):
        for name, proxy in proxies.items():
            assert proxy.proc is not None
            target = (["-o", "/dev/null", base + "file.bin"] if verb == "RETR"
                      else ["-T", str(source), base + "up.bin"])
            argv = curl_argv(proxy.url, *target)
            runs = cpu[f"{verb} {name}"] = []
            faulted = faults[f"{verb} {name}"] = []
            peers[f"{verb} {name}"] = (
                lambda argv=argv, pid=proxy.proc.pid, out=runs, faulted=faulted:
                counting_faults(pid, faulted, lambda: metered(argv, pid, out,
                                                              copies=args.copies)))
    try:
        samples = interleaved_rates(peers, args.size_mib * (1 << 20) / 1e6, args.rounds)
    finally:
        for step in stop:
            step()
    print(f"A/B of '{args.patch}' ({args.action}): {args.copies} x {size_mib} MiB, "
          f"{args.rounds} interleaved rounds (MB/s, median [min-max], B/A)")
    rate_table(samples, lambda name: name.split()[0] + " A as shipped", "ratio_to_a", width=26)
    for name, values in cpu.items():
        print(f"  {name:26s} {cpu_s_per_gib(values, args.size_mib / 1024):6.2f} CPU s/GiB, "
              f"{statistics.median(faults[name][1:]):9.0f} minor page faults a run")
    return 0


def counting_faults(pid: int, out: list[int], run: Callable[[], float]) -> float:
    """run(), appending the minor page faults the proxy took meanwhile to `out`."""
    def minor_faults() -> int:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])
    before = minor_faults()
    seconds = run()
    out.append(minor_faults() - before)
    return seconds


def session_setup(proxies: dict[str, TunnelProxy], base: str, source: Path, sessions: int,
                  stop: list[Callable[[], object]], patch: str) -> int:
    """bench/session_setup.py's session through each daemon, interleaved one by one."""
    from bench.session_setup import one_session
    from testbed.clients.ftplib_socks import SocksFTP

    (source.parent / "small.bin").write_bytes(source.read_bytes()[:1024])
    port = int(base.rsplit(":", 1)[1].rstrip("/"))

    def via(proxy: TunnelProxy) -> Callable[[], float]:
        def connect() -> SocksFTP:
            client = SocksFTP(f"socks5://{proxy.url}")
            client.connect("localhost", port)
            return client
        return lambda: one_session(connect)

    try:
        samples = interleaved({name: via(proxy) for name, proxy in proxies.items()}, sessions)
    finally:
        for step in stop:
            step()
    print(f"A/B of '{patch}': {sessions} sequential ftplib sessions per daemon, interleaved "
          "(ms per session, median [p10-p90], B/A)")
    latency_table(samples, "A as shipped", "ratio_to_a", 26)
    return 0


if __name__ == "__main__":
    sys.exit(main())
