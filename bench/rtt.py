"""Throughput over a long path: sshd behind a delay line that holds every byte for `delay`
milliseconds each way (default 10, a 20 ms round trip), RETR through tunnel and `ssh -D`.

This kernel has no sch_netem (nor sch_fq for BPF departure times), so no packet can be
delayed; the delay line works at TCP level instead: it accepts the SSH connection, holds
each chunk it reads until its due time, then writes it on. TCP's own ACKs stay local, but
everything SSH says (data, and the window adjustments that pace a channel) takes the round
trip, which is the effect this measures: a channel window W caps a stream at W / RTT.

    .venv/bin/python bench/rtt.py [--delay-ms 10] [--size-mib 128] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.rig import (  # noqa: E402
    SocksPaths,
    SshRig,
    curl_argv,
    interleaved_rates,
    metered,
    rate_table,
    write_json,
)


class DelayLine:
    """127.0.0.1:port -> target, every byte held `delay` seconds in each direction."""

    def __init__(self, target_port: int, delay: float) -> None:
        self.delay = delay
        self.target_port = target_port
        self.loop = asyncio.new_event_loop()
        listener = socket.create_server(("127.0.0.1", 0))
        self.port = listener.getsockname()[1]
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(asyncio.start_server(self._accept, sock=listener))
            ready.set()
            self.loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        ready.wait(10)

    async def _accept(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, chunk = await queue.get()
                if due > time.monotonic():
                    await asyncio.sleep(due - time.monotonic())
                if not chunk:
                    writer.close()
                    return
                writer.write(chunk)
                await writer.drain()

        sender = asyncio.create_task(deliver())
        while True:
            chunk = await reader.read(1 << 18)
            await queue.put((time.monotonic() + self.delay, chunk))
            if not chunk:
                break
        await sender


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--delay-ms", type=float, default=10.0, help="each way")
    parser.add_argument("--size-mib", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=str(ROOT / "out" / "bench-rtt.json"))
    args = parser.parse_args()
    rig = SshRig.start()
    if rig is None:
        return 2
    line = DelayLine(rig.sshd.port, args.delay_ms / 1000)
    rig.reach_sshd_via(line.port)
    ftp = SocksPaths(rig, args.size_mib)
    url = ftp.base_url + "file.bin"
    peers: dict[str, Callable[[], float]] = {
        name: (lambda via=via: metered(curl_argv(via, "-o", "/dev/null", url)))
        for name, (via, _) in ftp.paths.items() if name != "direct"}
    size_mb = args.size_mib * (1 << 20) / 1e6
    try:
        samples = interleaved_rates(peers, size_mb, args.rounds)
    finally:
        ftp.stop()
        rig.stop()
    print(f"RETR {args.size_mib} MiB with a {2 * args.delay_ms:g} ms round trip to sshd "
          f"(TCP-level delay line), {args.rounds} rounds (MB/s, ratio vs ssh -D aes128-gcm)")
    results = rate_table(samples, lambda _: "ssh -D aes128-gcm", "ratio_vs_ssh_D_gcm")
    write_json(args.json, {"rtt_ms": 2 * args.delay_ms, "size_mib": args.size_mib,
                           "rounds": args.rounds, "cpus": os.cpu_count(), "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
