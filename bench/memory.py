"""Proxy memory: RSS idle, and with N idle sessions open (tunnelled through one SSH
connection to a real sshd, held open against a listener), per-session cost in KiB.

    .venv/bin/python bench/memory.py [--sessions 50 500]
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.rig import SshRig, write_json  # noqa: E402
from testbed.services.base import proc_status_kib  # noqa: E402
from testbed.socks_client import socks5_connect  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, nargs="+", default=[50, 500])
    parser.add_argument("--json", default=str(ROOT / "out" / "bench-memory.json"))
    args = parser.parse_args()
    rig = SshRig.start()
    if rig is None:
        return 2
    sink = socket.socket()
    sink.bind(("127.0.0.1", 0))
    sink.listen(2048)
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: [accepted.append(sink.accept()[0]) for _ in iter(int, 1)],
                     daemon=True).start()
    proxy = rig.tunnel("127.0.0.1", str(sink.getsockname()[1]), "tunnel")
    assert proxy.proc is not None
    results = {}
    try:
        time.sleep(1)
        idle = proc_status_kib(proxy.proc.pid, "VmRSS")
        results["idle_kib"] = idle
        print(f"proxy RSS idle: {idle / 1024:.1f} MiB")
        for count in args.sessions:
            socks = []
            for _ in range(count):
                code, sock = socks5_connect((proxy.host, proxy.port), "127.0.0.1",
                                            sink.getsockname()[1])
                assert code == 0
                socks.append(sock)
            time.sleep(1)
            peak = proc_status_kib(proxy.proc.pid, "VmRSS")
            per = (peak - idle) / count
            results[f"sessions_{count}"] = {"rss_kib": peak, "per_session_kib": round(per, 1)}
            print(f"  {count:4d} idle tunnelled sessions: RSS {peak / 1024:.1f} MiB, "
                  f"{per:.1f} KiB per session")
            for sock in socks:
                sock.close()
            time.sleep(1)
    finally:
        rig.stop()
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
