"""The `testbed` command.

`testbed demo` runs transparent FTP tunneling end to end on loopback: a real OpenSSH sshd, a
real FTP server (pyftpdlib), `tunnel serve`, and curl as the FTP client with only a SOCKS
setting. curl's own FTP user name and password open the SSH connection; it uploads, then
downloads in passive and in active mode, and the demo prints a short verdict.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from testbed import backends, matrix
from testbed.backends import dockerexec, netns
from testbed.net import free_port
from testbed.proxy import TunnelProxy
from testbed.runner import ScenarioRun, table, write_junit
from testbed.scenario import ScenarioError
from testbed.scenario import load as load_scenario
from testbed.services.base import pid_alive
from testbed.services.pyftpd import PyFtpd
from testbed.services.sshd import Sshd
from testbed.users import ensure_user

DEMO_USER = "fts-demo"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
DEMO_SCENARIO = SCENARIOS / "ftp-tunnel-third-host.toml"
DEMO_TLS_SCENARIO = SCENARIOS / "last-hop-tls-third-host.toml"
DEMO_LINES = {
    "integrity": "transfer OK, sha256 equal",
    "encrypted(lan)": "client <-> SSH server link encrypted (no needle, SSH banner seen)",
    "cleartext(dmz)": "SSH server <-> FTP server link in clear, as documented",
    "tls(dmz)": "SSH server <-> FTP server link in TLS, the server's certificate checked",
    "no_bypass": "no bypass: no packet between client and FTP host",
}


def demo_netns(keep: bool, backend: str = "netns") -> int:
    """The documented use case in network namespaces (or containers), with a short verdict:
    first as Tectia documents it (the last hop in clear), then with that hop in FTPS."""
    print("ftp-ssh-tunnel demo: FTP client host -> SSH server -> FTP server on a third host")
    print("  curl logs in with its own FTP user and password through `tunnel` (ftp-tunnel);")
    print("  it uploads, downloads in passive and in active mode; every link is captured.")
    passed = _demo_run(DEMO_SCENARIO, keep, backend)
    print("then the same with last_hop_tls = \"require\": the proxy speaks FTPS to the FTP "
          "server,\n  inside the SSH channel (curl and lftp still speak plain FTP to the proxy).")
    return 0 if _demo_run(DEMO_TLS_SCENARIO, keep, backend) and passed else 1


def _demo_run(path: Path, keep: bool, backend: str) -> bool:
    result = ScenarioRun(load_scenario(path), OUT, keep=keep, backend=backend).run()
    if result.error:
        print(f"  [FAIL] {result.error}")
    steps = [o for o in result.outcomes if o.name.startswith("step")]
    print(f"  [{'PASS' if all(o.ok for o in steps) else 'FAIL'}] transfers: "
          + "; ".join(o.verdict.detail for o in steps))
    for outcome in result.outcomes:
        if outcome.name in DEMO_LINES and outcome.expected == "pass":
            print(f"  [{'PASS' if outcome.ok else 'FAIL'}] {DEMO_LINES[outcome.name]}: "
                  f"{outcome.verdict.detail}")
    print(f"  {'OK' if result.passed else 'FAILED'} in {result.seconds:.1f} s"
          + (f"; pcaps and logs in {result.out_dir}" if result.out_dir else ""))
    return result.passed


def demo(size_mib: int, keep: bool) -> int:
    """The same story on loopback only: for machines without network namespaces."""
    reason = Sshd.available()
    if reason:
        print(f"testbed demo: cannot run: {reason}", file=sys.stderr)
        return 2
    password = "demo-" + os.urandom(6).hex()
    ensure_user(DEMO_USER, password)  # one account for sshd and the FTP server, as on a host
    work = Path(tempfile.mkdtemp(prefix="fts-demo-"))
    root = work / "ftproot"
    root.mkdir()
    payload = work / "upload.bin"
    payload.write_bytes(os.urandom(size_mib << 20))
    sshd = Sshd(work / "sshd", free_port())
    ftp = PyFtpd(root, free_port(), DEMO_USER, password, log_path=work / "pyftpd.log",
                 debug=True)
    known_hosts = work / "known_hosts"
    known_hosts.write_text(sshd.known_hosts_line())
    proxy = TunnelProxy(work / "proxy", f"""
[[profile]]
id = "demo-ssh"
host = "127.0.0.1"
port = {sshd.port}
user = ""                       # the user name and password the FTP client sends
auth = ["password"]
known_hosts = "{known_hosts}"   # strict host key checking

[[rule]]
id = "ftp-via-ssh"
dst = "localhost"
ports = "{ftp.port}"            # the control port only: data ports follow by themselves
action = "ftp-tunnel"
profile = "demo-ssh"
""")
    started = time.monotonic()
    ok = True
    try:
        sshd.start()
        ftp.start()
        proxy.start()
        url = f"ftp://{DEMO_USER}:{password}@localhost:{ftp.port}/demo.bin"

        def curl(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["curl", "-sS", "--socks5-hostname", proxy.url, *args, url],
                                  capture_output=True, text=True, timeout=120)

        up = curl("-T", str(payload))
        back, active = work / "download.bin", work / "download-active.bin"
        down = curl("-o", str(back))
        down_active = curl("-P", "-", "-o", str(active))
        elapsed = time.monotonic() - started
        # A session's audit record is written when the proxy sees it end, a moment after
        # curl exits: wait for all three control sessions rather than race them.
        deadline = time.monotonic() + 10
        while (sum(r.get("action") == "ftp-tunnel" for r in proxy.audit()) < 3
               and time.monotonic() < deadline):
            time.sleep(0.05)
        records = proxy.audit()
        controls = [r for r in records if r.get("action") == "ftp-tunnel"]
        passive = [r for r in records if r.get("action") == "ftp-data"]
        active_channels = sum(r.get("data_channels", 0) for r in controls)
        logins = sshd.log().count(f"Accepted password for {DEMO_USER} ")
        everything = proxy.log() + proxy.audit_path.read_text()
        server_saw = ftp.log()
        print(f"ftp-ssh-tunnel demo (loopback, {size_mib} MiB, {elapsed:.1f} s)")
        print(f"  FTP client   curl, SOCKS5 to tunnel at {proxy.url}")
        print(f"  SSH server   OpenSSH sshd 127.0.0.1:{sshd.port}, strict host key")
        print(f"  FTP server   pyftpdlib localhost:{ftp.port}")
        verdicts = [
            ("transfers", all(r.returncode == 0 for r in (up, down, down_active)),
             "upload, passive download, active download: curl exit 0"
             if all(r.returncode == 0 for r in (up, down, down_active))
             else (up.stderr + down.stderr + down_active.stderr).strip()),
            ("sha256 equal", back.exists() and active.exists() and
             _sha(back) == _sha(active) == _sha(payload) == _sha(root / "demo.bin"),
             _sha(payload)[:16] + "..."),
            ("FTP login = SSH login", logins == 1,
             f"curl's USER/PASS opened one SSH connection as {DEMO_USER}, reused 3 times"),
            ("data channels through SSH", len(passive) >= 2 and active_channels == 1,
             f"{len(passive)} passive via SOCKS, {active_channels} active converted to passive"),
            # Positive control: the same log does show the EPSV the proxy sent instead.
            ("server never saw PORT/EPRT", "<- EPSV" in server_saw and "<- EPRT" not in
             server_saw and "<- PORT" not in server_saw,
             "it saw EPSV: active mode ran passive through the tunnel"),
            ("password never logged", password not in everything,
             "not in the proxy log or audit log"),
        ]
        for name, passed, detail in verdicts:
            ok &= bool(passed)
            print(f"  [{'PASS' if passed else 'FAIL'}] {name}: {detail}")
        print("  (per-link wire captures arrive with the network-namespace testbed)")
    except RuntimeError as exc:
        print(f"testbed demo: {exc}", file=sys.stderr)
        ok = False
    finally:
        for service in (proxy, ftp, sshd):
            service.stop()
        if not ok or keep:
            print(f"  logs kept in {work}")
        else:
            subprocess.run(["rm", "-rf", str(work)], check=False)
    return 0 if ok else 1


# `testbed up` state: /run for root, the user's runtime folder (or /tmp) for the local backend.
STATE_DIR = (Path("/run/ftp-ssh-tunnel-testbed") if os.geteuid() == 0 else
             Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
             / f"ftp-ssh-tunnel-testbed-{os.getuid()}")
OUT = Path(__file__).resolve().parents[1] / "out" / "scenarios"


def _scenario_files(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for text in paths:
        path = Path(text)
        files += sorted(path.glob("*.toml")) if path.is_dir() else [path]
    return files


def _unavailable(command: str, backend: str) -> bool:
    reason = backends.unavailable(backend)
    if reason:
        hint = "; without root, try --backend local" if backend == "netns" else ""
        print(f"testbed {command}: {reason}{hint}", file=sys.stderr)
    elif backend == "local":
        print(f"testbed {command}: local backend, on loopback. Not judged here: per-link "
              "capture (encrypted, cleartext, no_bypass), routing isolation, link faults.")
    return reason is not None


def run(paths: list[str], junit: str | None, keep: bool, backend: str = "netns",
        out: Path = OUT, report: Path | None = None) -> int:
    if _unavailable("run", backend):
        return 2
    results = []
    files = _scenario_files(paths)
    for index, path in enumerate(files, start=1):
        print(f"[{index}/{len(files)}] {path} ...", flush=True)
        try:
            scenario = load_scenario(path)
        except ScenarioError as exc:
            print(f"  invalid: {exc}")
            return 2
        # A report links the pcaps and logs: they are kept.
        result = ScenarioRun(scenario, out, keep=keep or report is not None, backend=backend,
                             report=report is not None).run()
        print(table(result), flush=True)
        results.append(result)
    junit = junit or str(out / "junit.xml")
    write_junit(results, Path(junit))
    if report is not None:
        from testbed import report as report_mod  # graphviz only where a report is asked
        print(f"report: {report_mod.write(results, report)}")
    failed = [r.scenario.name for r in results if not r.passed]
    print(f"{len(results) - len(failed)} of {len(results)} scenarios passed; JUnit: {junit}")
    return 1 if failed else 0


def up(path: str, backend: str = "netns", out: Path = OUT) -> int:
    if _unavailable("up", backend):
        return 2
    scenario = load_scenario(Path(path))
    name = scenario.name
    runner = ScenarioRun(scenario, out, keep=True, keep_name=name, backend=backend)
    runner.bring_up()
    scenario = runner.scenario  # with the backend's addresses
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    addresses = {h: scenario.topology.address(h) for h in scenario.topology.hosts}
    state: dict[str, Any] = {"name": name, "file": str(Path(path).resolve()), "backend": backend,
             # what `down` must stop where no namespace holds the processes (local)
             "pids": [s.proc.pid for s in runner.services if s.proc is not None],
             "namespaces": runner.backend.namespaces, "out": str(runner.out),
             "site": str(runner.site), "user": runner.user,
             "password": runner.needles.password,
             "addresses": addresses}
    (STATE_DIR / f"{name}.json").write_text(json.dumps(state, indent=2))
    print(f"{name} is up. Hosts:")
    for host, address in addresses.items():
        ns = runner.backend.namespaces.get(host)
        how = (f"(or: docker exec -it {ns} bash)" if backend == "docker" else
               f"(or: ip netns exec {ns} bash)" if ns else "(local: a shell on this machine)")
        print(f"  {host:10s} {address:15s} testbed exec {host} -- bash   {how}")
    print(f"FTP user {runner.user}, password {runner.needles.password} (a throwaway test "
          f"account); files in {runner.site}; logs in {runner.out}")
    print("testbed down removes it all.")
    return 0


def _states() -> list[dict[str, Any]]:
    if not STATE_DIR.exists():
        return []
    return [json.loads(p.read_text()) for p in sorted(STATE_DIR.glob("*.json"))]


def _pick(name: str | None) -> dict[str, Any] | None:
    states = [s for s in _states() if name in (None, s["name"])]
    if len(states) != 1:
        what = "nothing is up" if not states else (
            "several topologies are up; say which with --name: "
            + ", ".join(s["name"] for s in states))
        print(f"testbed: {what}", file=sys.stderr)
        return None
    return states[0]


def exec_in(host: str, command: list[str], name: str | None) -> int:
    state = _pick(name)
    if state is None:
        return 2
    if host not in state["addresses"]:
        print(f"testbed: no host {host!r}; hosts: {', '.join(state['addresses'])}",
              file=sys.stderr)
        return 2
    namespace = state["namespaces"].get(host)
    if state["backend"] == "docker":
        if not command:  # the shim passes no terminal; an interactive shell needs one
            print(f"testbed exec: give a command; for a shell: docker exec -it {namespace} "
                  "bash", file=sys.stderr)
            return 2
        prefix = dockerexec.prefix(namespace)
    else:
        prefix = ["ip", "netns", "exec", namespace] if namespace else []
    return subprocess.run([*prefix, *(command or ["bash"])]).returncode


def down(name: str | None) -> int:
    states = [s for s in _states() if name in (None, s["name"])]
    for state in states:
        if state["backend"] == "docker":  # its containers and networks, by name
            backends.make("docker", load_scenario(Path(state["file"])).topology,
                          keep_name=state["name"]).down()
        for ns in state["namespaces"].values() if state["backend"] != "docker" else ():
            netns.delete_namespace(ns)
        for pid in state.get("pids", []):  # local: the services run among our own processes
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
        subprocess.run(["rm", "-rf", state["site"]], check=False)
        (STATE_DIR / f"{state['name']}.json").unlink(missing_ok=True)
        print(f"{state['name']}: down (logs stay in {state['out']})")
    if not states:
        print("nothing is up")
    return 0


def list_up() -> int:
    for state in _states():
        hosts = ", ".join(state["addresses"])
        if state["backend"] == "docker":
            print(f"{state['name']} (docker): containers {', '.join(state['namespaces'].values())}"
                  f" ({hosts}) from {state['file']}")
        elif state["namespaces"]:
            alive = [ns for ns in state["namespaces"].values() if ns in netns.list_namespaces()]
            print(f"{state['name']}: {len(alive)} of {len(state['namespaces'])} hosts up "
                  f"({hosts}) from {state['file']}")
        else:
            running = [pid for pid in state.get("pids", []) if pid_alive(pid)]
            print(f"{state['name']} (local): {len(running)} of {len(state.get('pids', []))} "
                  f"services running ({hosts}) from {state['file']}")
    strays = [ns for ns in netns.list_namespaces() if ns.startswith("fts")]
    print(f"testbed namespaces on this machine: {len(strays)}")
    return 0


def image_build_cmd(force: bool) -> int:
    from testbed import image  # the Docker SDK only when asked for

    started = time.monotonic()
    try:
        ref = image.ensure_image(force=force)
    except image.ImageError as exc:
        print(f"testbed image build: {exc}", file=sys.stderr)
        return 2
    print(f"{ref} ({time.monotonic() - started:.1f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="testbed", description="Real hosts, servers and "
                                     "clients to prove what ftp-ssh-tunnel promises.")
    sub = parser.add_subparsers(dest="command", required=True)
    run_demo = sub.add_parser("demo", help="the documented use case, end to end")
    run_demo.add_argument("--loopback", action="store_true",
                          help="loopback only (no namespaces, no captures)")
    run_demo.add_argument("--size-mib", type=int, default=16, help="with --loopback")
    run_demo.add_argument("--keep", action="store_true", help="keep logs and files")
    run_demo.add_argument("--backend", choices=("netns", "docker"), default="netns",
                          help="where the hosts run: network namespaces (root) or containers")
    run_cmd = sub.add_parser("run", help="run scenario files or folders")
    run_cmd.add_argument("paths", nargs="+")
    run_cmd.add_argument("--junit", help="JUnit XML (default OUT/junit.xml)")
    run_cmd.add_argument("--keep", action="store_true", help="keep pcaps and logs of passes too")
    run_cmd.add_argument("--report", type=Path, metavar="DIR",
                         help="write DIR/report.html: each scenario's topology drawn with "
                              "its links coloured by their captures, verdicts, steps, and "
                              "links to the kept pcaps and logs (implies --keep)")
    up_cmd = sub.add_parser("up", help="start a scenario's topology and leave it up")
    up_cmd.add_argument("file")
    for cmd in (run_cmd, up_cmd):
        cmd.add_argument("--backend", choices=backends.KINDS, default="netns",
                         help="netns (root), local (loopback, no root) or docker (an engine)")
        cmd.add_argument("--out", type=Path, default=OUT, help=f"logs and pcaps (default {OUT})")
    exec_cmd = sub.add_parser("exec", help="run a command inside a host: exec HOST -- CMD")
    exec_cmd.add_argument("host")
    exec_cmd.add_argument("cmd", nargs=argparse.REMAINDER)
    exec_cmd.add_argument("--name")
    down_cmd = sub.add_parser("down", help="remove what `up` started")
    down_cmd.add_argument("--name")
    sub.add_parser("list", help="what is up")
    matrix_cmd = sub.add_parser("matrix", help="run the interoperability matrix, print the table")
    matrix_cmd.add_argument("--folder", default=str(DEMO_SCENARIO.parent))
    image_cmd = sub.add_parser("image", help="the docker backend's image")
    image_sub = image_cmd.add_subparsers(dest="image_command", required=True)
    image_build = image_sub.add_parser("build", help="build it unless it is up to date")
    image_build.add_argument("--force", action="store_true",
                             help="rebuild without the engine's layer cache")
    args = parser.parse_args(argv)
    if args.command == "image":
        return image_build_cmd(args.force)
    if args.command == "run":
        return run(args.paths, args.junit, args.keep, args.backend, args.out, args.report)
    if args.command == "up":
        return up(args.file, args.backend, args.out)
    if args.command == "exec":
        command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        return exec_in(args.host, command, args.name)
    if args.command == "down":
        return down(args.name)
    if args.command == "list":
        return list_up()
    if args.command == "matrix":
        reason = netns.available()
        if reason:
            print(f"testbed matrix: {reason}", file=sys.stderr)
            return 2
        table_text, bad = matrix.run(Path(args.folder), OUT)
        print(table_text)
        print(f"{bad} cells not green")
        return 1 if bad else 0
    if args.loopback:
        return demo(args.size_mib, args.keep)
    if args.backend == "docker":
        return 2 if _unavailable("demo", "docker") else demo_netns(args.keep, "docker")
    reason = netns.available()
    if reason:
        print(f"testbed demo: {reason}; running the loopback demo instead (no captures)")
        return demo(args.size_mib, args.keep)
    return demo_netns(args.keep)


if __name__ == "__main__":
    sys.exit(main())
