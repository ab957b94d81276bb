"""Run a scenario: build its hosts, start its servers and proxy, capture every link, drive
the client steps, then judge the checks. A failing scenario keeps its pcaps and logs."""

from __future__ import annotations

import dataclasses
import fnmatch
import getpass
import hashlib
import json
import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from testbed import backends, capture, faults, tcpstats, tlsca
from testbed.backends.base import LinkBackend
from testbed.backends.docker import DockerBackend
from testbed.backends.netns import NetnsBackend
from testbed.capture import Capture, LinkCapture, Verdict
from testbed.clients import drivers
from testbed.clients.gate import StartGate
from testbed.proxy import TunnelProxy, tunnel_argv
from testbed.scenario import CAPTURE_FAULTS, Check, Scenario, Step
from testbed.scenario import Service as ScenarioService
from testbed.services.base import Service, proc_status_kib, wait_listening
from testbed.services.proftpd import Proftpd
from testbed.services.pureftpd import PureFtpd
from testbed.services.pyftpd import PyFtpd
from testbed.services.sshd import Sshd, keygen
from testbed.services.vsftpd import Vsftpd
from testbed.tlsca import RunPki, ServerTls
from testbed.users import ensure_user

SOCKS_PORT = 1080
REPO = Path(__file__).resolve().parents[1]
# The [proxy] keys a transparent scenario adds to its proxy's config: local mode listens on
# loopback (the output hook redirects there); gateway mode where routed connections arrive,
# and takes clients of other hosts.


def without_data_sets(ruleset: str) -> str:
    """The `break-capture` fault's ruleset: the loaded one with its data-connection sets
    removed (and the rules using them), so the same live connections stay redirected but
    no new data port can be added."""
    kept = [line for line in ruleset.splitlines() if "data4" not in line
            and "data6" not in line]
    last_flush = max(n for n, line in enumerate(kept) if line.startswith("flush chain"))
    drops = [f"delete set inet ftp_ssh_tunnel {name}" for name in ("data4", "data6")]
    return "\n".join([*kept[:last_flush + 1], *drops, *kept[last_flush + 1:]]) + "\n"


# The [proxy] keys a transparent scenario adds to its proxy's config: local mode listens on
# loopback (the output hook redirects there; IPv6 to [::1], where the topology has IPv6);
# gateway mode where routed connections arrive, and takes clients of other hosts.
TRANSPARENT_PROXY_KEYS = {
    "local": 'transparent = ["127.0.0.1:1081"]',
    "local-ipv6": 'transparent = ["127.0.0.1:1081", "[::1]:1081"]',
    "gateway": 'transparent = ["0.0.0.0:1081"]\nallow_relay = true',
}


@dataclass
class Outcome:
    """One judged line of the verdict table."""

    name: str
    expected: str
    verdict: Verdict

    @property
    def ok(self) -> bool:
        if self.expected == "n/a":  # a combination that cannot work, reported with why
            return True
        return self.verdict.passed == (self.expected == "pass")


@dataclass
class Result:
    scenario: Scenario
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0
    out_dir: Path | None = None
    error: str = ""
    # For `testbed run --report`: what each link's capture showed (capture.link_state, or
    # "not captured"), and each client<->FTP flow as (link, source host, destination host).
    links: dict[str, str] = field(default_factory=dict)
    bypass: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.error and all(o.ok for o in self.outcomes)


@dataclass
class _Needles:
    password: str
    file_marker: bytes
    dir_marker: str

    extra_passwords: list[str] = field(default_factory=list)

    def all(self) -> list[bytes]:
        return [self.password.encode(), self.file_marker, self.dir_marker.encode(),
                *(p.encode() for p in self.extra_passwords)]


class ScenarioRun:
    def __init__(self, scenario: Scenario, out_root: Path, keep: bool = False,
                 keep_name: str | None = None, backend: str = "netns",
                 report: bool = False) -> None:
        """`keep_name`: bring the topology up to stay (`testbed up`), under that name.
        `report`: also describe every link for the report's picture (Result.links)."""
        self.report = report
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.out = out_root / f"{scenario.name}-{stamp}-{os.getpid()}"
        self.keep = keep
        self.site = Path(tempfile.mkdtemp(prefix="fts-site-", dir="/var/tmp"))
        self.backend = backends.make(backend, scenario.topology, keep_name=keep_name,
                                     mounts=(out_root, self.site))
        # The backend may move hosts (local: loopback addresses) and ports (no root: none
        # below 1024); from here on the scenario speaks the backend's addresses.
        self.scenario = scenario = dataclasses.replace(
            scenario, topology=self.backend.topology,
            services=[dataclasses.replace(svc, port=self.backend.port(svc.port))
                      for svc in scenario.services])
        self.root = os.geteuid() == 0
        # The SSH login of key scenarios: root here, or (local backend) the user running us.
        self.ssh_user = "root" if self.root else getpass.getuser()
        self.services: list[Service] = []
        self.extra: list[subprocess.Popen[bytes]] = []
        self.lost: dict[str, int] = {}  # link -> packets its loss fault dropped
        self.proxy_peak_kib = 0  # the tunnel's VmHWM when the steps ended
        self._capture_script = ""  # the loaded `tunnel nft` ruleset (transparent scenarios)
        self.tcp_growth: dict[str, dict[str, int]] = {}  # host -> TCP trouble over the steps
        self._session_spans: list[tuple[float, float]] = []  # the running step's client runs
        self._fired_at: float | None = None  # when the running step's `during` faults fired
        self._during_error = ""  # what went wrong in them (they run on a timer thread)
        self._killed: list[str] = []  # what the running step's kill-sessions faults killed
        self.placed: dict[str, tuple[str, int]] = {}  # [[file]] name -> (sha256, mode)
        self._file_verdicts: dict[int, Verdict] = {}  # check index -> `file` taken mid-run
        tag = hashlib.sha256(scenario.name.encode()).hexdigest()[:8]
        self.user = f"fts-{tag}"
        self.needles = _Needles("pw-" + secrets.token_hex(10), b"FILEMARK-" +
                                secrets.token_hex(12).encode(), "dir-" + secrets.token_hex(8))
        self.users = [(self.user, self.needles.password)] + [
            (f"{self.user}-{n}", "pw-" + secrets.token_hex(10))
            for n in range(2, scenario.users + 1)]
        self.needles.extra_passwords = [password for _, password in self.users[1:]]
        self.by_kind: dict[str, Service] = {}
        self.result = Result(scenario, out_dir=self.out)
        self.downloads: list[Path] = []
        self.pki: RunPki | None = None  # the run's CAs and TLS services' certificates

    # -- the run -----------------------------------------------------------------------------
    def bring_up(self) -> None:
        """Hosts, user, files, servers and proxy; no capture, no steps. Left running."""
        self.out.mkdir(parents=True, exist_ok=True)
        try:
            self._hosts_and_servers()
            self._start_proxy()
        except BaseException:
            self._stop_all()
            self.backend.down()
            raise

    def take_down(self) -> None:
        """Undo `bring_up`: servers and proxy stopped, hosts gone, the site removed."""
        self._stop_all()
        self.backend.down()
        shutil.rmtree(self.site, ignore_errors=True)

    def run(self) -> Result:
        started = time.monotonic()
        self.out.mkdir(parents=True, exist_ok=True)
        captures: list[Capture] = []
        step_outcomes: list[Outcome] = []
        try:
            self._hosts_and_servers()
            taps = [LinkCapture(cast(LinkBackend, self.backend), link.name, self.out / "pcap")
                    for link in self.scenario.topology.links] if self._can_capture() else []
            for tap in taps:
                tap.start()
            try:
                self._start_proxy()
                step_outcomes = [outcome
                                 for i, step in enumerate(self.scenario.steps, start=1)
                                 for outcome in self._step(i, step)]
            finally:
                captures = [tap.stop() for tap in taps]
                self._count_losses()
                self.proxy_peak_kib = self._proxy_peak_kib()
        except Exception as exc:  # the scenario fails; the run goes on to the next one
            self.result.error = f"{type(exc).__name__}: {exc}"
        finally:
            self._stop_all()
            self.backend.down()
        if not self.result.error:
            self.result.outcomes = step_outcomes + [self._judge(check, captures)
                                                    for check in self.scenario.checks]
        if self.report:
            self._describe_links(captures)
        self.result.seconds = time.monotonic() - started
        shutil.rmtree(self.site, ignore_errors=True)
        if self.result.passed and not self.keep:
            shutil.rmtree(self.out, ignore_errors=True)
            self.result.out_dir = None
        return self.result

    def _hosts_and_servers(self) -> None:
        """What `up` and `run` both build: hosts, users, files and servers (not the proxy,
        which `run` starts only once its captures listen)."""
        self.backend.up()
        # docker moves the links to a subnet plan of the run's own when it makes them.
        self.scenario = dataclasses.replace(self.scenario, topology=self.backend.topology)
        for name, password in self.users:
            if self.root:  # without root, FTP users are pyftpdlib's own (see backends/local)
                ensure_user(name, password, home=str(self.site))
            if isinstance(self.backend, DockerBackend):  # each container has its own
                self.backend.ensure_user(name, password, home=str(self.site))
        self._prepare_site()
        self._start_services()

    def _prepare_site(self) -> None:
        """The payload: random bytes with the file needle in the middle, written in MiB
        chunks (a bulk scenario's is a GiB)."""
        self.site.chmod(0o777)
        # The steps' directory, writable by every scenario user: the first user's MKD
        # would otherwise own it (umask 022) and the others' uploads would get 553.
        shared = self.site / self.needles.dir_marker
        shared.mkdir()
        shared.chmod(0o777)
        size = self.scenario.size_kib * 1024
        marker, middle = self.needles.file_marker, size // 2
        self.payload = self.out / "payload.bin"
        digest = hashlib.sha256()
        with open(self.payload, "wb") as fh:
            written = 0
            while written < size:
                chunk = bytearray(os.urandom(min(1 << 20, size - written)))
                if written <= middle < written + len(chunk):
                    at = middle - written
                    chunk[at : at + len(marker)] = marker[: len(chunk) - at]
                fh.write(chunk)
                digest.update(chunk)
                written += len(chunk)
        self.payload_sha = digest.hexdigest()
        for placed in self.scenario.files:
            self._place(shared / placed.name, placed.size_kib, placed.mode)

    def _place(self, path: Path, size_kib: int, mode: int) -> None:
        """A `[[file]]`: random bytes (never the payload), the scenario user's own, as a file
        the user uploaded earlier would be; its sha256 and mode kept for `file` checks."""
        content = os.urandom(size_kib * 1024)
        path.write_bytes(content)
        if self.root:
            entry = pwd.getpwnam(self.user)
            os.chown(path, entry.pw_uid, entry.pw_gid)
        path.chmod(mode)  # after chown, which may clear set-id bits
        self.placed[path.name] = (hashlib.sha256(content).hexdigest(), mode)

    def _make_pki(self) -> None:
        """The run's CAs and a certificate for each TLS service's host, naming its addresses
        as this backend placed them (docker moves subnets, local uses loopback)."""
        hosts = {svc.host: (self._addresses(svc.host), svc.tls_ca)
                 for svc in self.scenario.services if svc.tls}
        # A proxy may trust the run CA where no server speaks TLS (last-hop-tls-refused).
        wanted = hosts or "{tls_" in (self.scenario.proxy.config or "")
        self.pki = tlsca.write_run_pki(self.out / "tls", hosts) if wanted else None

    def _server_tls(self, svc: ScenarioService) -> ServerTls | None:
        if not svc.tls or self.pki is None:
            return None
        made = self.pki.servers[svc.host]
        return ServerTls(made.cert, made.key, svc.tls_max)

    def _start_services(self) -> None:
        key = keygen(self.out / "id_ed25519", "scenario-client")
        self.key = key
        known = []
        self._make_pki()
        for svc in self.scenario.services:
            prefix = self.backend.exec_prefix(svc.host)
            workdir = self.out / f"{svc.kind}-{svc.host}"
            service: Service
            if svc.kind == "sshd":
                sshd = Sshd(workdir, svc.port, host=self._bind(svc.host, "0.0.0.0"),
                            authorized_keys=[key],
                            prefix=prefix)
                for name in (svc.host, *self._addresses(svc.host)):
                    known.append(sshd.known_hosts_line(name))
                service = sshd
            elif svc.kind == "pyftpdlib":
                # "::" is dual-stack on Linux: IPv4 and, on ipv6 links, IPv6 clients.
                service = PyFtpd(self.site, svc.port, self.user, self.needles.password,
                                 host=self._bind(svc.host, "::"), log_path=workdir / "pyftpd.log",
                                 prefix=prefix, debug=True, more_users=self.users[1:],
                                 permit_foreign_addresses=svc.permit_foreign_addresses,
                                 masquerade_address=svc.masquerade_address)
            elif svc.kind == "vsftpd":
                service = Vsftpd(workdir, self.site, svc.port,
                                 host=self._bind(svc.host, "0.0.0.0"), prefix=prefix,
                                 tls=self._server_tls(svc))
            elif svc.kind == "proftpd":
                service = Proftpd(workdir, svc.port, self.scenario.topology.address(svc.host),
                                  prefix=prefix, tls=self._server_tls(svc))
            else:
                service = PureFtpd(workdir, svc.port, host=self._bind(svc.host, "0.0.0.0"),
                                   prefix=prefix, tls=self._server_tls(svc))
            self.services.append(service.start())
            self.by_kind[svc.kind] = service
        self.known_hosts = self.out / "known_hosts"
        self.known_hosts.write_text("".join(known))
        # The same names with another key: what a client sees when the server is not the
        # one it trusts (scenarios use it as {wrong_known_hosts}).
        impostor = keygen(self.out / "impostor_host_key", "impostor").with_suffix(".pub")
        wrong_key = " ".join(impostor.read_text().split()[:2])
        self.wrong_known_hosts = self.out / "known_hosts.wrong"
        self.wrong_known_hosts.write_text("".join(
            " ".join([line.split()[0], wrong_key]) + "\n" for line in known))

    def _bind(self, host: str, wildcard: str) -> str:
        return self.backend.listen_address(host, wildcard)

    def _can_capture(self) -> bool:
        return self.scenario.capture and self.backend.capture_unavailable is None

    def _addresses(self, host: str) -> list[str]:
        topo = self.scenario.topology
        both = [*topo.addresses.items(), *topo.addresses6.items()]
        return [str(addr) for (name, _), addr in both if name == host]

    def _start_proxy(self) -> None:
        proxy = self.scenario.proxy
        if proxy.kind == "none":
            return
        prefix = self.backend.exec_prefix(proxy.host)
        if proxy.kind == "tunnel":
            topo = self.scenario.topology
            values = {f"{h}": topo.address(h) for h in topo.hosts}
            values.update({f"{h}_v6": str(a) for (h, _), a in topo.addresses6.items()})
            values.update({f"{link.name}_subnet": str(link.subnet) for link in topo.links})
            values.update(known_hosts=str(self.known_hosts), key=str(self.key),
                          ssh_user=self.ssh_user,
                          wrong_known_hosts=str(self.wrong_known_hosts))
            for svc in self.scenario.services:
                values[f"{svc.kind.replace('-', '_')}_port"] = str(svc.port)
            if any(svc.kind != "sshd" for svc in self.scenario.services):
                values["ftp_port"] = str(self._ftp_port())
            if self.pki is not None:
                values.update(tls_placeholders(self.pki))
            body = proxy.config.format(**values)
            tunnel = TunnelProxy(self.out / "tunnel", body, port=SOCKS_PORT,
                                 host=self.backend.socks_host(proxy.host), prefix=prefix,
                                 proxy_extra=self._transparent_keys())
            if proxy.transparent:
                self._load_capture(tunnel)
            self.services.append(tunnel.start())
            self.by_kind["tunnel"] = tunnel
            return
        sshd = self.scenario.service("sshd")
        log = open(self.out / "ssh-D.log", "wb")  # noqa: SIM115 - kept for the child's life
        proc = subprocess.Popen(
            [*prefix, "ssh", "-N", "-D", f"{self.backend.socks_host(proxy.host)}:{SOCKS_PORT}",
             "-i", str(self.key),
             "-p", str(sshd.port), "-F", "/dev/null", "-o", "BatchMode=yes",
             "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes",
             f"{self.ssh_user}@{self.backend.resolve(proxy.ssh)}"],
            stdout=subprocess.DEVNULL, stderr=log)
        log.close()
        self.extra.append(proc)
        wait_listening(prefix, SOCKS_PORT, 15, lambda: proc.poll() is None)

    def _transparent_keys(self) -> str:
        mode = self.scenario.proxy.transparent
        if mode == "local" and any(link.subnet6 for link in self.scenario.topology.links):
            mode = "local-ipv6"
        return TRANSPARENT_PROXY_KEYS.get(mode, "")

    def _load_capture(self, tunnel: TunnelProxy) -> None:
        """The nftables ruleset of `tunnel nft`, from the proxy's own config, loaded on the
        proxy's host before it starts: the product's setup, step by step as a user runs it.
        In gateway mode it captures what arrives from the clients' link."""
        proxy = self.scenario.proxy
        argv = [*tunnel_argv(), "nft", "-c", str(tunnel.config_path)]
        if proxy.transparent == "gateway":
            link = next(link for link in self.scenario.topology.links_of(proxy.host)
                        if "client" in link.hosts)
            iface = cast(LinkBackend, self.backend).iface(proxy.host, link.name)
            argv += ["--gateway", iface]
        made = subprocess.run(argv, capture_output=True, text=True, check=False)
        if made.returncode != 0:
            raise RuntimeError(f"tunnel nft failed: {made.stderr.strip()}")
        (self.out / "transparent.nft").write_text(made.stdout)
        self._capture_script = made.stdout
        loaded = self.backend.run(proxy.host, ["nft", "-f", "-"], input=made.stdout)
        if loaded.returncode != 0:
            raise RuntimeError(f"nft -f refused the ruleset: {loaded.stderr.strip()}")

    def _step(self, index: int, step: Step) -> list[Outcome]:
        """The step's transfer verdict, then its ends_within and said verdicts if it has
        them; `file` checks to be judged right after this step look at the files now."""
        outcomes = self._step_transfer(index, step)
        if step.ends_within and outcomes[0].expected != "n/a":
            outcomes.append(Outcome(f"step{index}.ends_within", "pass", self._ends_within(step)))
        if step.said and outcomes[0].expected != "n/a":
            outcomes.append(Outcome(f"step{index}.said", "pass", self._said(index, step)))
        for n, check in enumerate(self.scenario.checks):
            if check.verdict == "file" and check.after_step == index:
                self._file_verdicts[n] = self._file(check)
        return outcomes

    def _during(self, step: Step) -> None:
        """The step's `during` faults, on the timer thread: an exception there would be lost,
        so it is kept for the step to raise. `ends_within` counts from the moment they
        begin: a kill takes effect while the fault runs (through `docker exec` that is a
        few hundred ms), and a client that ends meanwhile ended because of it (CI saw one
        end "0.00 s before the faults fired", timed from their end)."""
        self._fired_at = time.monotonic()
        try:
            for fault in step.during:
                self._fault(fault)
        except Exception as exc:
            self._during_error = f"{type(exc).__name__}: {exc}"

    def _ends_within(self, step: Step) -> Verdict:
        return ends_within(self._fired_at, [end for _, end in self._session_spans],
                           step.ends_within, f"{step.client} after {', '.join(step.during)}")

    def _said(self, index: int, step: Step) -> Verdict:
        suffixes = [f"-{n}" for n in range(step.parallel)] if step.parallel > 1 else [""]
        transcripts = {}
        for suffix in suffixes:
            path = self.out / f"step{index}{suffix}.transcript"
            transcripts[suffix[1:]] = path.read_text(errors="replace") if path.exists() else ""
        return said(transcripts, step.said, step.client)

    def _step_transfer(self, index: int, step: Step) -> list[Outcome]:
        proxied = self.scenario.proxy.socks
        label = f"{step.client} {step.mode}" + (f" x{step.parallel}" if step.parallel > 1 else "")
        reason = drivers.not_applicable(step.client, step.mode, proxied)
        if reason:
            return [Outcome(f"step{index}", "n/a", Verdict("transfer", label, True,
                                                           f"not applicable: {reason}"))]
        for fault in step.before:
            self._fault(fault)
        timer = threading.Timer(step.after, self._during, (step,))
        self._session_spans = []
        self._fired_at, self._during_error, self._killed = None, "", []
        ready = step.parallel
        hosts = list(self.scenario.topology.hosts)
        counters_before = tcpstats.snapshot(self.backend, hosts)
        gate = StartGate(self.out / f"step{index}-gate", step.parallel) if (
            step.parallel > 1) else None
        try:
            with ThreadPoolExecutor(max_workers=step.parallel) as pool:
                pending = pool.map(lambda n: self._transfer(index, n, step, gate),
                                   range(step.parallel))
                if gate is not None:
                    ready = gate.open(timeout=step.deadline)
                if step.during:
                    timer.start()
                runs = list(pending)
        finally:
            if gate is not None:
                gate.release()
        if step.during:
            timer.join()
        if self._during_error:
            raise RuntimeError(f"step {index}: a `during` fault failed: {self._during_error}")
        failures = [f for run in runs for f in run]
        passed = not failures
        detail = (f"{len(failures)} failed: {'; '.join(sorted(set(failures))[:3])}" if failures
                  else f"{', '.join(step.ops)} by {label}")
        failed_sessions = [n for n, run in enumerate(runs) if run]
        if failed_sessions and step.parallel > 1:
            first = failed_sessions[0]
            detail += (f"; sessions {_ranges(failed_sessions)} failed, the first said: "
                       f"{self._client_complaint(index, f'-{first}')}")
        elif failed_sessions:
            detail += f"; the client said: {self._client_complaint(index, '')}"
        if step.parallel > 1:
            times = sorted(end - start for start, end in self._session_spans)
            detail += (f"; session p50 {times[len(times) // 2]:.2f} s, "
                       f"p99 {times[min(len(times) - 1, len(times) * 99 // 100)]:.2f} s, "
                       f"{_most_at_once(self._session_spans)} at once at the peak "
                       f"({ready} of {step.parallel} ready at the start)")
        grown = tcpstats.growth(counters_before, tcpstats.snapshot(self.backend, hosts))
        tcpstats.add_growth(self.tcp_growth, grown)
        stack_trouble = tcpstats.describe(grown)
        if stack_trouble:
            detail += f"; TCP {stack_trouble}"
        if self._killed:
            detail += f"; kill-sessions killed {len(self._killed)}: {', '.join(self._killed)}"
        expected = {"ok": "pass", "fail": "fail", "any": "pass" if passed else "fail"}[step.expect]
        return [Outcome(f"step{index}", expected, Verdict("transfer", label, passed, detail))]

    def _client_complaint(self, index: int, suffix: str) -> str:
        """The last line a failed client printed (curl: '(28) Operation timed out ...')."""
        path = self.out / f"step{index}{suffix}.transcript"
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        said = [line for line in lines if line.strip()]
        return said[-1][:160] if said else "nothing"

    def _transfer(self, index: int, n: int, step: Step, gate: StartGate | None) -> list[str]:
        """One client's run of the step's operations, judged by evidence on both sides, not
        by exit codes (tnftp exits 0 on failure)."""
        proxied = self.scenario.proxy.socks
        client_host = self.scenario.proxy.client_host
        user, password = self.users[n % len(self.users)]
        suffix = f"-{n}" if step.parallel > 1 else ""
        remote = f"payload{suffix}.bin"
        download = self.out / f"step{index}{suffix}-download.bin"
        # "<host>-v6" names the host's IPv6 address (see topology.hosts_file).
        server_host = step.server.removesuffix("-v6")
        server = self.backend.resolve(step.server)
        ipv6 = step.server != server_host
        topo = self.scenario.topology
        job = drivers.Job(self.backend, client_host, proxied, user, step.password or password,
                          server, step.port or self._ftp_port(server_host),
                          self.needles.dir_marker,
                          self.payload, download,
                          topo.address6(client_host) if ipv6 else topo.address(client_host),
                          self.out,
                          remote_name=remote, ftps=step.ftps, limit_rate=step.limit_rate,
                          socks=(self.backend.socks_host(client_host), SOCKS_PORT),
                          idle=step.idle, deadline=step.deadline,
                          gate=gate.prefix(n) if gate is not None else None,
                          cacert=str(self.pki.ca) if self.pki is not None else "")
        uploaded = self.site / self.needles.dir_marker / remote
        if "upload" in step.ops and self._holds_payload(uploaded):
            # This step's upload must land there itself. Other content stays for the upload
            # to replace (a [[file]] placed there, a failed step's remains): if the upload
            # fails, the file still differs from the payload.
            uploaded.unlink()
        started = time.monotonic()
        transcript = drivers.run(step.client, job, step.mode, step.ops)
        # A gated session starts when the gate opens, not when its process was spawned.
        opened = gate.opened_at if gate is not None else 0.0
        self._session_spans.append((max(started, opened), time.monotonic()))
        (self.out / f"step{index}{suffix}.transcript").write_text(transcript)
        failures = []
        if "upload" in step.ops and self._sha(uploaded) != self.payload_sha:
            failures.append("upload: the server's file is missing or differs")
        if "download" in step.ops:
            if self._sha(download) == self.payload_sha:
                self.downloads.append(download)
            else:
                failures.append("download: missing or differs")
        if "list" in step.ops and remote not in transcript:
            failures.append(f"list: {remote} not listed")
        if "upload-reset" in step.ops:
            failures += _reset_failures(transcript)
        if "late-list" in step.ops and "late-list got" not in transcript:
            failures.append("late-list: no listing over the late data connection")
        if "download-cut" in step.ops and "download-cut then: 200" not in transcript:
            failures.append("download-cut: the session did not go on after a cut download")
        return failures

    def _fault(self, fault: str) -> None:
        if fault in CAPTURE_FAULTS:
            ruleset = (self._capture_script if fault == "reload-capture"
                       else without_data_sets(self._capture_script))
            loaded = self.backend.run(self.scenario.proxy.host, ["nft", "-f", "-"],
                                      input=ruleset)
            if loaded.returncode != 0:
                raise RuntimeError(f"{fault}: {loaded.stderr.strip()}")
            return
        verb, target, *rest = fault.split()
        if verb == "sleep":
            time.sleep(float(target))
            return
        if verb in ("down", "up", "loss"):
            if not isinstance(self.backend, NetnsBackend | DockerBackend):
                raise faults.FaultUnavailable(f"{fault!r}: link faults need the netns or the "
                                              "docker backend")
            if verb == "loss":
                faults.loss(self.backend, target, float(rest[0].rstrip("%")))
                self.lost.setdefault(target, 0)
            else:
                faults.link_state(self.backend, target, up=verb == "up")
            return
        service = self.by_kind[target]
        if verb == "kill-sessions":
            self._killed += faults.kill_sessions(service)
        elif verb == "stop":
            service.stop()
        elif verb == "start":
            service.start()
        else:
            faults.restart(service)

    def _holds_payload(self, path: Path) -> bool:
        try:
            if path.stat().st_size != self.scenario.size_kib * 1024:
                return False  # no need to hash a GiB to know
        except OSError:
            return False
        return self._sha(path) == self.payload_sha

    def _file(self, check: Check) -> Verdict:
        """A file in the steps' directory against what the check says it holds, with its
        mode; and no name in the directory matching the check's `absent` globs."""
        folder = self.site / self.needles.dir_marker
        path = folder / check.name
        names = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        stray = [n for n in names if any(fnmatch.fnmatchcase(n, g) for g in check.absent)]
        wrong = file_faults(path, check.holds, check.mode,
                            self.placed.get(check.name, ("", 0)), self.payload, self.payload_sha)
        if stray:
            wrong.append(f"{', '.join(stray[:3])} present" + (
                f" (and {len(stray) - 3} more)" if len(stray) > 3 else ""))
        when = f"after step {check.after_step}" if check.after_step else "at the end"
        if wrong:
            return Verdict("file", check.name, False, f"{when}: {'; '.join(wrong)}")
        what = {"placed": "the placed file, unchanged", "payload": "the payload",
                "nothing": "no file"}[check.holds]
        return Verdict("file", check.name, True, f"{when}: {what}" + (
            f", mode {check.mode:04o}" if check.mode is not None else "") + (
            f"; nothing matches {', '.join(check.absent)}" if check.absent else ""))

    @staticmethod
    def _sha(path: Path) -> str:
        """Streamed: a bulk scenario moves a GiB."""
        digest = hashlib.sha256()
        try:
            with open(path, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    digest.update(chunk)
        except OSError:
            return ""
        return digest.hexdigest()

    def _ftp_port(self, host: str | None = None) -> int:
        """The FTP service's port on `host` (default: the scenario's first FTP service)."""
        for svc in self.scenario.services:
            if svc.kind != "sshd" and host in (None, svc.host):
                return svc.port
        raise RuntimeError(f"no FTP service on {host or 'any host'} in the scenario")

    def _secrets(self) -> Verdict:
        """Every password of the run (the users' own and any wrong one a step sent) against
        everything the proxy wrote (log with its tracebacks, audit, any core) and everything
        the clients were told (their transcripts hold the replies and errors they got)."""
        passwords = {self.needles.password, *self.needles.extra_passwords,
                     *(step.password for step in self.scenario.steps if step.password)}
        files = [p for p in (self.out / "tunnel").rglob("*") if p.is_file()
                 and p.name != "tunnel.toml"]  # the config: written by us, holds no password
        files += sorted(self.out.glob("step*.transcript"))
        if not files:
            return Verdict("secrets", "tunnel", False, "nothing to judge: the proxy wrote nothing")
        leaks = [f"{path.relative_to(self.out)} holds {password[:6]}..."
                 for path in files for password in passwords
                 if password.encode() in path.read_bytes()]
        return Verdict("secrets", "tunnel", not leaks,
                       f"{len(passwords)} passwords in none of {len(files)} files" if not leaks
                       else "; ".join(leaks[:3]))

    def _proxy_peak_kib(self) -> int:
        proxy = self.by_kind.get("tunnel")
        if proxy is None or proxy.proc is None or proxy.proc.poll() is not None:
            return 0
        try:
            if isinstance(self.backend, DockerBackend):  # the proxy's own pid is in there
                return self.backend.status_kib(self.scenario.proxy.host, proxy.proc.pid,
                                               "VmHWM")
            return proc_status_kib(proxy.proc.pid, "VmHWM")
        except (OSError, RuntimeError):
            return 0

    def _count_losses(self) -> None:
        """Read the loss counters while the namespaces still stand: the `lost` check's
        witness that the fault bit, and a figure for the report."""
        for link in self.lost:
            assert isinstance(self.backend, NetnsBackend | DockerBackend)
            self.lost[link] = faults.lost_packets(self.backend, link)

    def _judge(self, check: Check, captures: list[Capture]) -> Outcome:
        by_link = {c.link: c for c in captures}
        name = f"{check.verdict}({check.link or check.service})" if (
            check.link or check.service) else check.verdict
        if check.verdict in ("encrypted", "cleartext", "no_bypass", "only_ssh", "tls") and \
                not captures:
            why = self.backend.capture_unavailable or "capture = false in this scenario"
            return Outcome(name, "n/a", Verdict(check.verdict, check.link, True,
                                                f"not judged: {why}"))
        if check.verdict == "log":
            return Outcome(name, check.expect, self._log_check(check))
        if check.verdict == "secrets":
            return Outcome(name, check.expect, self._secrets())
        if check.verdict == "memory":
            peak = self.proxy_peak_kib / 1024
            return Outcome(name, check.expect, Verdict(
                "memory", "tunnel", 0 < peak <= check.max_mib,
                f"proxy peak RSS {peak:.1f} MiB (limit {check.max_mib:g} MiB)"))
        if check.verdict == "listen_drops":
            return Outcome(name, check.expect, self._listen_drops(check.service))
        if check.verdict == "file":
            index = self.scenario.checks.index(check)
            name = f"file({check.name}" + (
                f" after step{check.after_step})" if check.after_step else ")")
            verdict = self._file_verdicts.get(index) or self._file(check)
            return Outcome(name, check.expect, verdict)
        if check.verdict == "lost":
            dropped = self.lost.get(check.link, 0)
            return Outcome(name, check.expect, Verdict(
                "lost", check.link, dropped > 0,
                f"{dropped} packets dropped on {check.link}" if check.link in self.lost
                else f"no loss fault was applied to {check.link}"))
        if check.verdict == "encrypted":
            verdict = capture.encrypted(by_link[check.link], self.needles.all())
        elif check.verdict == "only_ssh":
            verdict = capture.only_port(by_link[check.link], self.scenario.service("sshd").port)
        elif check.verdict == "cleartext":
            verdict = capture.cleartext(by_link[check.link], self.needles.all())
        elif check.verdict == "tls":
            verdict = self._tls(check, by_link[check.link])
        elif check.verdict == "no_bypass":
            client = self.scenario.proxy.client_host
            ftp_host = next(s.host for s in self.scenario.services if s.kind != "sshd")
            if check.between:
                client, ftp_host = check.between
            judged = [by_link[check.link]] if check.link else captures
            verdict = capture.no_bypass(judged, self._addresses(client),
                                        self._addresses(ftp_host))
        else:
            verdict = self._integrity()
        return Outcome(name, check.expect, verdict)

    def _tls(self, check: Check, taken: Capture) -> Verdict:
        """`tls` on the check's link, for its server's TLS service; the ports of that host's
        other services are not FTP to it."""
        svc = next(s for s in self.scenario.services if s.tls and s.host == check.server)
        others = [s.port for s in self.scenario.services if s.host == svc.host and s != svc]
        return capture.tls(taken, self.needles.all(), self._addresses(svc.host), svc.port,
                           svc.host, others)

    def _describe_links(self, captures: list[Capture]) -> None:
        by_link = {c.link: c for c in captures}
        for link in self.scenario.topology.links:
            taken = by_link.get(link.name)
            self.result.links[link.name] = (capture.link_state(taken, self.needles.all())
                                            if taken is not None else "not captured")
        ftp_hosts = [s.host for s in self.scenario.services if s.kind != "sshd"]
        if not captures or not ftp_hosts:
            return
        client = self.scenario.proxy.client_host
        host_of = {addr: host for host in self.scenario.topology.hosts
                   for addr in self._addresses(host)}
        self.result.bypass = [
            (link, host_of.get(src, src), host_of.get(dst, dst))
            for link, src, dst in capture.bypass_flows(
                captures, self._addresses(client), self._addresses(ftp_hosts[0]))]

    def _listen_drops(self, kind: str) -> Verdict:
        """No SYN dropped at any listener on the service's host during the steps: a full
        listen queue there costs clients a 1, 3, 7 ... s retransmit each."""
        host = self.scenario.service(kind).host
        grown = self.tcp_growth.get(host, {})
        dropped = max(grown.get("ListenDrops", 0), grown.get("ListenOverflows", 0))
        return Verdict("listen_drops", kind, dropped == 0,
                       f"{dropped} SYNs dropped at listeners on {host} ({kind})" if dropped
                       else f"no SYN dropped at listeners on {host} ({kind})")

    def _log_check(self, check: Check) -> Verdict:
        service = self.by_kind.get(check.service.removesuffix("-audit"))
        if service is None:
            return Verdict("log", check.service, False, "no such service in this scenario")
        if check.service == "tunnel-audit":
            seen = "\n".join(json.dumps(r, separators=(",", ":"))
                              for r in cast(TunnelProxy, service).audit())
        else:
            seen = getattr(service, "commands_seen", service.log)()
        if not seen:
            return Verdict("log", check.service, False, "the log is empty (nothing to judge)")
        topo = self.scenario.topology
        names = {"user": self.user, **{host: topo.address(host) for host in topo.hosts}}
        missing = [p for p in check.present if seen.count(p.format(**names)) < check.times]
        found = [a for a in check.absent if a.format(**names) in seen]
        detail = (f"{len(check.present) - len(missing)} of {len(check.present)} expected lines"
                  + (f" (x{check.times})" if check.times > 1 else "") + ", "
                  f"{len(found)} forbidden" + (f"; missing {missing}" if missing else "")
                  + (f"; found {found}" if found else ""))
        return Verdict("log", check.service, not missing and not found, detail)

    def _integrity(self) -> Verdict:
        files = [*self.downloads, *sorted(self.site.rglob("payload*.bin"))]
        if not files:
            return Verdict("integrity", "files", False, "no file was transferred")
        bad = [f.name for f in files if self._sha(f) != self.payload_sha]
        return Verdict("integrity", "files", not bad,
                       f"{len(files) - len(bad)} of {len(files)} files match sha256 "
                       f"{self.payload_sha[:12]}" + (f"; differ: {', '.join(bad)}" if bad else ""))

    def _stop_all(self) -> None:
        for proc in self.extra:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        for service in reversed(self.services):
            service.stop()


def tls_placeholders(pki: RunPki) -> dict[str, str]:
    """{tls_ca}: the run CA's PEM (the output folder is at the same path in containers);
    {tls_fingerprint}: the first TLS service's leaf; {tls_fingerprint_<host>} each one's."""
    values = {"tls_ca": str(pki.ca), "tls_other_ca": str(pki.other_ca)}
    for host, print_ in pki.fingerprints.items():
        values.setdefault("tls_fingerprint", print_)
        values[f"tls_fingerprint_{host}"] = print_
    return values


def write_junit(results: list[Result], path: Path) -> None:
    suite = ET.Element("testsuite", name="scenarios", tests=str(len(results)),
                       failures=str(sum(not r.passed for r in results)))
    for result in results:
        case = ET.SubElement(suite, "testcase", classname="scenarios", name=result.scenario.name,
                             time=f"{result.seconds:.2f}")
        lines = [str(o.verdict) + f" (expected {o.expected})" for o in result.outcomes]
        if not result.passed:
            failure = ET.SubElement(case, "failure", message=result.error or "checks failed")
            failure.text = "\n".join([result.error, *lines, f"kept: {result.out_dir}"])
        ET.SubElement(case, "system-out").text = "\n".join(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(suite).write(path, encoding="unicode", xml_declaration=True)


def table(result: Result) -> str:
    rows = [f"{result.scenario.name}: {'PASS' if result.passed else 'FAIL'} "
            f"({result.seconds:.1f} s)"]
    if result.error:
        rows.append(f"  error: {result.error}")
    for outcome in result.outcomes:
        mark = "ok " if outcome.ok else "BAD"
        rows.append(f"  [{mark}] {outcome.name:28s} expected {outcome.expected:4s} got "
                    f"{'pass' if outcome.verdict.passed else 'fail'}: {outcome.verdict.detail}")
    if result.out_dir is not None:
        rows.append(f"  pcaps and logs kept in {result.out_dir}")
    return "\n".join(rows)


def ends_within(fired_at: float | None, ends: list[float], limit: float,
                label: str) -> Verdict:
    """How long after the `during` faults fired (`fired_at`, time.monotonic()) the step's
    last client ended (`ends`): within `limit` seconds passes."""
    if fired_at is None or not ends:
        return Verdict("ends_within", label, False, "the faults never fired")
    late = max(ends) - fired_at
    if late < 0:
        return Verdict("ends_within", label, False,
                       f"the client had ended {-late:.2f} s before the faults fired: "
                       "nothing judged (a bigger file or a lower limit_rate)")
    return Verdict("ends_within", label, late <= limit,
                   f"the client ended {late:.2f} s after the faults fired (limit {limit:g} s)")


def said(transcripts: dict[str, str], wanted: tuple[str, ...], client: str) -> Verdict:
    """Every client's transcript (by session number, "" for a single one) holds each of
    `wanted`: the replies and errors it printed."""
    missing = [f"{text!r}" + (f" (session {n})" if n else "")
               for n, transcript in transcripts.items() for text in wanted
               if text not in transcript]
    if missing:
        last = next((line for line in reversed(next(iter(transcripts.values()), "")
                                               .splitlines()) if line.strip()), "nothing")
        return Verdict("said", client, False, f"not said: {', '.join(missing[:3])}; the "
                       f"client's last line: {last[:160]}")
    return Verdict("said", client, True, f"{', '.join(repr(t) for t in wanted)} in "
                   f"{len(transcripts)} transcript{'s' if len(transcripts) > 1 else ''}")


def file_faults(path: Path, holds: str, mode: int | None, placed: tuple[str, int],
                payload: Path, payload_sha: str) -> list[str]:
    """What is wrong with `path` for a `file` check wanting it to hold `holds` (placed:
    the content and mode `placed` = (sha256, mode) describes; payload; nothing), with the
    permission bits `mode` if given: each fault said with its figures; [] if none."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return [] if holds == "nothing" else ["missing"]
    size = _size(st.st_size)
    if holds == "nothing":
        return [f"exists: {size} ({_what_of_payload(path, st.st_size, payload)}), "
                f"mode {st.st_mode & 0o7777:04o}"]
    want_sha = placed[0] if holds == "placed" else payload_sha
    want_mode = mode if mode is not None else (placed[1] if holds == "placed" else None)
    wrong = []
    sha = ScenarioRun._sha(path)
    if sha != want_sha:
        what = "the whole payload" if sha == payload_sha else _what_of_payload(
            path, st.st_size, payload)
        wrong.append(f"holds {size}: {what} (sha256 {sha[:12]})")
    if want_mode is not None and st.st_mode & 0o7777 != want_mode:
        wrong.append(f"mode {st.st_mode & 0o7777:04o}, want {want_mode:04o}")
    return wrong


def _size(n: int) -> str:
    return f"{n / (1 << 20):.2f} MiB" if n >= 1 << 20 else f"{n} bytes"


def _common_prefix(path: Path, whole: Path) -> int:
    """How many bytes at the start of the file are the same as those of `whole`."""
    same = 0
    try:
        with open(path, "rb") as part, open(whole, "rb") as full:
            while chunk := part.read(1 << 20):
                other = full.read(len(chunk))
                if other != chunk:
                    differ = (i for i, (a, b) in enumerate(zip(chunk, other, strict=False))
                              if a != b)
                    return same + next(differ, len(other))  # or `whole` ends first
                same += len(chunk)
    except OSError:
        return 0
    return same


def _what_of_payload(path: Path, size: int, payload: Path) -> str:
    """A file that is not the payload, said against it: a cut upload is a beginning of it."""
    same = _common_prefix(path, payload)
    if same == size == payload.stat().st_size:
        return "the whole payload"
    if same == size > 0:
        return f"a partial upload of {_size(payload.stat().st_size)}"
    if same > 0:
        return f"the payload's first {same} bytes, then others"
    return "not the payload"


def _reset_failures(transcript: str) -> list[str]:
    """The `upload-reset` op's evidence: the server answered the cut upload with a 4xx
    (426 or 451), not 226 (which takes a cut file for a whole one) and not silence."""
    said = re.findall(rf"^{re.escape(drivers.RESET_REPLY)} (.*)$", transcript, re.MULTILINE)
    if not said:
        return ["upload-reset: no reply to the cut upload (the client did not get that far)"]
    if not said[-1].startswith("4"):
        return [f"upload-reset: the server answered {said[-1][:60]!r} to a cut upload, "
                "not 426/451"]
    return []


def _ranges(numbers: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3, 7': a compact list of failed session numbers."""
    spans: list[list[int]] = []
    for n in sorted(numbers):
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in spans)


def _most_at_once(spans: list[tuple[float, float]]) -> int:
    """The largest number of (start, end) spans open at one instant."""
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans],
                   key=lambda edge: (edge[0], edge[1]))  # an end before a start at a tie
    most = current = 0
    for _, change in edges:
        current += change
        most = max(most, current)
    return most

