"""What every benchmark starts with: a real sshd on loopback, a client key it accepts, a
known_hosts that trusts it, and `tunnel` with one key-auth profile and one rule; plus
`ssh -D`, the peer we measure against."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from testbed.net import free_port, wait_port
from testbed.proxy import TunnelProxy
from testbed.services.sshd import Sshd, keygen


class SshRig:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.key = keygen(work / "id_ed25519")
        self.sshd = Sshd(work / "sshd", free_port(), authorized_keys=[self.key]).start()
        self.known_hosts = work / "known_hosts"
        self.known_hosts.write_text(self.sshd.known_hosts_line())
        self.ssh_port = self.sshd.port  # where the proxies dial sshd (see reach_sshd_via)
        self._procs: list[subprocess.Popen[bytes]] = []
        self._proxies: list[TunnelProxy] = []
        self.dynamic_pids: dict[int, int] = {}  # ssh -D SOCKS port -> the ssh client's pid

    @classmethod
    def start(cls) -> SshRig | None:
        """None, with the reason on stderr, where sshd cannot run here."""
        reason = Sshd.available()
        if reason:
            print(f"bench: {reason}", file=sys.stderr)
            return None
        return cls(Path(tempfile.mkdtemp(prefix="fts-bench-")))

    def reach_sshd_via(self, port: int) -> None:
        """Proxies started from now on dial sshd through 127.0.0.1:`port` (a delay line),
        which known_hosts then names too."""
        self.ssh_port = port
        line = self.sshd.known_hosts_line().split(" ", 1)[1]
        with open(self.known_hosts, "a") as fh:
            fh.write(f"[127.0.0.1]:{port} {line}")

    def tunnel(self, dst: str, ports: str, action: str,
               prefix: Sequence[str] = ()) -> TunnelProxy:
        """`tunnel serve` logging in as root with the rig's key, and one rule; `prefix`
        goes before its command (bench/ab.py's environment)."""
        proxy = TunnelProxy(self.work / f"proxy{len(self._proxies)}", f"""
[[profile]]
id = "bench"
host = "127.0.0.1"
port = {self.ssh_port}
user = "root"
auth = ["publickey"]
identity_files = ["{self.key}"]
users = ["*"]
known_hosts = "{self.known_hosts}"

[[rule]]
dst = "{dst}"
ports = "{ports}"
action = "{action}"
profile = "bench"
""", prefix=prefix).start()
        self._proxies.append(proxy)
        return proxy

    def ssh_dynamic(self, cipher: str | None, name: str, remote_command: str = "") -> int:
        """`ssh -D` as users run it (-N); returns its SOCKS port. With a remote command the
        server executes something, which is what makes sshd set TCP_NODELAY (see
        tunnel/ssh.py)."""
        port = free_port()
        argv = ["ssh", *([] if remote_command else ["-N"]), "-D", f"127.0.0.1:{port}",
                "-p", str(self.ssh_port), "-i", str(self.key),
                "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes",
                "-o", "BatchMode=yes", "-F", "/dev/null"]
        if cipher:
            argv += ["-o", f"Ciphers={cipher}"]
        with open(self.work / f"{name}.log", "wb") as log:
            proc = subprocess.Popen([*argv, "root@127.0.0.1",
                                     *([remote_command] if remote_command else [])],
                                    stdout=subprocess.DEVNULL, stderr=log)
        self._procs.append(proc)
        self.dynamic_pids[port] = proc.pid
        wait_port("127.0.0.1", port, 15, alive=lambda: proc.poll() is None)
        return port

    def stop(self) -> None:
        for proc in self._procs:
            proc.terminate()
            proc.wait()
        for proxy in self._proxies:
            proxy.stop()
        self.sshd.stop()
        subprocess.run(["rm", "-rf", str(self.work)], check=False)


def random_file_in_memory(prefix: str, size_mib: int, name: str) -> Path:
    """A file of random bytes in a fresh folder under /dev/shm (where it exists), so that a
    disk is never what a benchmark measures. The folder is the caller's to remove."""
    shm = Path("/dev/shm")
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=shm if shm.is_dir() else None))
    with open(folder / name, "wb") as fh:
        for _ in range(size_mib):
            fh.write(os.urandom(1 << 20))
    return folder / name


class SocksPaths:
    """One FTP server (pyftpdlib, serving a random file) and the four ways to reach it from
    curl: direct, `ssh -D` at aes128-gcm and at its default cipher, and `tunnel`. `paths`
    maps each name to (the SOCKS proxy or None, the pid whose CPU is the proxy's or None)."""

    USER, PASSWORD = "bench", "bench-pw"

    def __init__(self, rig: SshRig, size_mib: int) -> None:
        from testbed.services.pyftpd import PyFtpd
        from tunnel.ssh import cipher_preference

        self.source = random_file_in_memory("fts-bench-ftp-", size_mib, "file.bin")
        self.ftp = PyFtpd(self.source.parent, free_port(), self.USER, self.PASSWORD,
                          log_path=rig.work / "ftp.log").start()
        proxy = rig.tunnel("localhost", "*", "tunnel")
        assert proxy.proc is not None
        gcm = rig.ssh_dynamic("aes128-gcm@openssh.com", "ssh-gcm")
        default = rig.ssh_dynamic(None, "ssh-default")
        self.base_url = f"ftp://{self.USER}:{self.PASSWORD}@localhost:{self.ftp.port}/"
        self.paths: dict[str, tuple[str | None, int | None]] = {
            "direct": (None, None),
            "ssh -D aes128-gcm": (f"127.0.0.1:{gcm}", rig.dynamic_pids[gcm]),
            "ssh -D default": (f"127.0.0.1:{default}", rig.dynamic_pids[default]),
            f"tunnel {cipher_preference()[0]}": (proxy.url, proxy.proc.pid),
        }

    def stop(self) -> None:
        self.ftp.stop()
        shutil.rmtree(self.source.parent, ignore_errors=True)


def curl_argv(proxy: str | None, *args: str) -> list[str]:
    """curl, through the SOCKS proxy at `proxy` (names resolved by the proxy) or direct."""
    return ["curl", "-sS", *(["--socks5-hostname", proxy] if proxy else []), *args]


def metered(argv: list[str], proxy_pid: int | None = None, cpu: list[float] | None = None,
            copies: int = 1) -> float:
    """Run `copies` of the command at once; return the seconds until the last one ends, and
    append the CPU seconds the proxy process (if any) used meanwhile to `cpu` (if given)."""
    before = cpu_seconds(proxy_pid) if proxy_pid else 0.0
    start = time.perf_counter()
    procs = [subprocess.Popen(argv) for _ in range(copies)]
    codes = [proc.wait(600) for proc in procs]
    elapsed = time.perf_counter() - start
    if any(codes):
        raise RuntimeError(f"{sum(1 for c in codes if c)} of {copies} runs of {argv[:4]} failed")
    if cpu is not None:
        cpu.append(cpu_seconds(proxy_pid) - before if proxy_pid else 0.0)
    return elapsed


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def interleaved(peers: Mapping[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Each peer once to warm up (page cache, SSH login, pooled connection), then `rounds`
    rounds, so that drift on the machine hits every peer alike; every other round runs in
    the reverse order, so that no peer always follows the same one (a peer run second read
    2.5 % slower than the same peer run first, bench/ab.py nothing)."""
    for run in peers.values():
        run()
    samples: dict[str, list[float]] = {name: [] for name in peers}
    order = list(peers.items())
    for round_number in range(rounds):
        for name, run in (order if round_number % 2 == 0 else reversed(order)):
            samples[name].append(run())
    return samples


def interleaved_rates(timed: Mapping[str, Callable[[], float]], megabytes: float,
                      rounds: int) -> dict[str, list[float]]:
    """interleaved() in MB/s, for peers whose run returns the seconds it took to move
    `megabytes`."""
    return interleaved({name: (lambda run=run: megabytes / run()) for name, run in timed.items()},
                       rounds)


def cpu_s_per_gib(cpu_seconds: list[float], gib: float) -> float:
    """The median CPU seconds per GiB of a peer's runs, its warm-up run (the first, see
    interleaved) left out."""
    return statistics.median(cpu_seconds[1:]) / gib


def rate_table(samples: Mapping[str, list[float]], reference_of: Callable[[str], str],
               ratio_key: str, width: int = 24) -> dict[str, dict[str, Any]]:
    """Print MB/s as median [min-max] and the ratio to each row's reference peer; return
    the same figures for the JSON file."""
    results = {}
    for name, values in samples.items():
        med = statistics.median(values)
        reference = statistics.median(samples[reference_of(name)])
        results[name] = {"median_mb_s": round(med, 1), "min": round(min(values), 1),
                         "max": round(max(values), 1), ratio_key: round(med / reference, 2),
                         "samples": [round(v, 1) for v in values]}
        print(f"  {name:{width}s} {med:8.1f}  [{min(values):.1f}-{max(values):.1f}]  "
              f"x{med / reference:.2f}")
    return results


def write_json(path: str, payload: Mapping[str, Any]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(payload, indent=2))
    print(f"  JSON: {path}")


def latency_table(samples: Mapping[str, list[float]], reference: str, ratio_key: str,
                  width: int) -> dict[str, dict[str, float]]:
    """Per peer, ms per session: median, p10 and p90, and the median's ratio to the
    `reference` peer's; printed one line each, names `width` wide."""
    base = statistics.median(samples[reference])
    results = {}
    for name, values in samples.items():
        values.sort()
        med = statistics.median(values)
        p10, p90 = values[len(values) // 10], values[len(values) * 9 // 10]
        results[name] = {"median_ms": round(med, 2), "p10_ms": round(p10, 2),
                         "p90_ms": round(p90, 2), ratio_key: round(med / base, 3)}
        print(f"  {name:{width}s} {med:8.2f}  [{p10:.2f}-{p90:.2f}]  x{med / base:.3f}")
    return results


def loop_in_topology(scenario_file: Path, loop: str,
                     args_of: Callable[[Any], list[str]], timeout: float) -> str | None:
    """Bring up a scenario's topology (network namespaces, its services and proxy), run the
    Python `loop` on its client host with the repository and `args_of(run)` as argv (the
    run's first user and the SOCKS listener, `testbed.runner.SOCKS_PORT`, are there to
    use), take it down, and return the loop's stdout; None, with its stderr, if it failed."""
    from testbed.runner import ScenarioRun
    from testbed.scenario import load

    root = Path(__file__).resolve().parents[1]
    run = ScenarioRun(load(scenario_file), root / "out" / "bench")
    run.bring_up()
    try:
        done = run.backend.run("client", [sys.executable, "-c", loop, str(root),
                                          *args_of(run)], timeout=timeout)
    finally:
        run.take_down()
    if done.returncode != 0:
        print(f"bench: the loop in the topology failed:\n{done.stderr[-2000:]}",
              file=sys.stderr)
        return None
    return str(done.stdout)
