"""Scenario files: one topology, its services, an optional proxy, client steps and the
checks expected to pass or fail. Data, not code; loaded and validated here.

See docs/scenarios.md for the format and a worked example.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.topology import Topology, TopologyError, build

SERVICE_KINDS = ("sshd", "pyftpdlib", "vsftpd", "proftpd", "pure-ftpd")
PROXY_KINDS = ("none", "tunnel", "ssh-D")
CLIENTS = ("curl", "lftp", "ftplib", "tnftp", "ncftp")
MODES = ("epsv", "pasv", "active")
DEFAULT_OPS = ("upload", "download", "list")
# wait: sit idle `idle` seconds; upload-reset: STOR half the payload, then cut the data
# connection with a TCP RST (both ftplib only)
OPS = (*DEFAULT_OPS, "wait", "upload-reset", "late-list", "download-cut")
FTPLIB_ONLY_OPS = ("wait", "upload-reset", "late-list", "download-cut")
CHECKS = ("encrypted", "cleartext", "no_bypass", "only_ssh", "integrity", "log", "lost",
          "memory", "secrets", "listen_drops", "file", "tls")
# FTP servers that can require explicit FTPS (`tls = true`), and the keys that go with it.
TLS_KINDS = ("vsftpd", "proftpd", "pure-ftpd")
TLS_CAS = ("run", "other")  # who signs the certificate: the run CA, or an impostor's
TLS_MAX = ("", "1.2")
# What a `file` check wants under its name: the `[[file]]` placed there, byte for byte and
# mode for mode; the payload the steps move; or no file at all.
HOLDS = ("placed", "payload", "nothing")
# What a `log` check may read of the proxy: its log, or its audit records (JSON lines).
PROXY_LOGS = ("tunnel", "tunnel-audit")
SERVICE_FAULT = re.compile(r"(stop|start|restart|kill-sessions) ([a-z-]+)")
LINK_FAULT = re.compile(r"(down|up) ([\w-]+)|loss ([\w-]+) (\d+(?:\.\d+)?)%")
SLEEP_FAULT = re.compile(r"sleep (\d+(?:\.\d+)?)")
# Transparent scenarios, on the proxy host's nftables table (of `tunnel nft`): load the same
# ruleset again (as after a config change), or replace it, in one transaction, by one that
# still redirects nothing new but has no data-connection sets (an edited or older ruleset).
CAPTURE_FAULTS = ("reload-capture", "break-capture")
FAULT_FORMS = ("'stop|start|restart|kill-sessions <service kind>', 'down|up <link>', "
               "'loss <link> <n>%', 'sleep <seconds>', 'reload-capture' or 'break-capture'")


class ScenarioError(ValueError):
    def __init__(self, path: Path, key: str, reason: str) -> None:
        super().__init__(f"{path}: {key}: {reason}")


@dataclass(frozen=True)
class Service:
    kind: str
    host: str
    port: int
    # pyftpdlib: accept PORT/EPRT to an address other than the control peer's, as many
    # servers do; RFC 2577 says refuse, and then a bypass cannot even be shown.
    permit_foreign_addresses: bool = False
    # pyftpdlib: the address its 227 replies announce instead of its own (a server behind
    # NAT that announces its outside address, or a private one it cannot be reached at).
    masquerade_address: str = ""
    # Explicit FTPS required on control and data, with a certificate from the run CA
    # (tls_ca = "run") or from an unrelated one ("other": an impostor), at most TLS
    # `tls_max` ("" = what the server's OpenSSL offers, "1.2": a capture can read the
    # certificate).
    tls: bool = False
    tls_ca: str = "run"
    tls_max: str = ""


@dataclass(frozen=True)
class Proxy:
    kind: str = "none"
    host: str = "client"
    ssh: str = "ssh"  # for ssh-D: the host running sshd
    config: str = ""  # for tunnel: profiles and rules, with {placeholders}
    # tunnel: "" (clients use SOCKS), "local" (clients on the proxy's host, no SOCKS, the
    # kernel redirects them) or "gateway" (clients on the host "client", routed through
    # the proxy's host, which redirects them); `tunnel nft` writes the ruleset either way.
    transparent: str = ""

    @property
    def socks(self) -> bool:
        """Whether the clients are told to use a SOCKS proxy."""
        return self.kind != "none" and not self.transparent

    @property
    def client_host(self) -> str:
        """Where the FTP clients run."""
        if self.kind == "none" or self.transparent == "gateway":
            return "client"
        return self.host


@dataclass(frozen=True)
class Step:
    client: str
    mode: str
    ops: tuple[str, ...]
    server: str
    expect: str = "ok"  # ok | fail | any
    password: str = ""  # "" = the user's own; anything else is sent instead (a wrong one)
    # Faults first, in order: "restart sshd", "loss lan 5%", "down lan", "sleep 5", ...
    before: tuple[str, ...] = ()
    ftps: bool = False  # the client asks for TLS first (curl --ssl)
    parallel: int = 1  # this many clients at once, users taken in turn
    during: tuple[str, ...] = ()  # faults while the transfer runs, `after` seconds in
    after: float = 1.0
    limit_rate: str = ""  # curl --limit-rate, to keep a transfer running long enough
    port: int = 0  # the FTP port the client dials; 0 = the FTP service's (ftp-sftp has none)
    idle: float = 10.0  # seconds the `wait` operation sits idle on the control connection
    deadline: float = 60.0  # each client command's time limit (curl --max-time), seconds
    # Every client of the step must have ended within this many seconds of the `during`
    # faults firing (0: not judged); judged as its own verdict, stepN.ends_within.
    ends_within: float = 0.0
    said: tuple[str, ...] = ()  # text every client's transcript must hold (stepN.said)


@dataclass(frozen=True)
class Check:
    verdict: str
    link: str = ""
    expect: str = "pass"  # pass | fail: a failing check can be the point (positive control)
    service: str = ""  # for `log`: whose log; for `listen_drops`: whose host (a service kind)
    present: tuple[str, ...] = ()  # for `log`: lines that must appear ({user} is filled in)
    absent: tuple[str, ...] = ()  # for `log`: text that must not
    times: int = 1  # for `log`: each present line at least this often
    between: tuple[str, ...] = ()  # for `no_bypass`: (client, far host); default client, FTP
    max_mib: float = 0  # for `memory`: the proxy's peak resident set (VmHWM) may not pass it
    name: str = ""  # for `file`: a file name in the steps' directory (default payload.bin)
    holds: str = ""  # for `file`: placed | payload | nothing (see HOLDS)
    mode: int | None = None  # for `file`: its permission bits (st_mode & 0o7777) must be these
    after_step: int = 0  # for `file`: judge the files as they are after step N (0: the end)
    server: str = ""  # for `tls`: the host whose TLS service it judges (default: on the link)


@dataclass(frozen=True)
class PlacedFile:
    """A file in the steps' directory before the first step, owned by the scenario's user:
    random bytes (never the payload) of `size_kib`, with permission bits `mode`."""

    name: str
    size_kib: int = 4
    mode: int = 0o644


@dataclass
class Scenario:
    path: Path
    name: str
    description: str
    topology: Topology
    services: list[Service]
    proxy: Proxy
    steps: list[Step]
    checks: list[Check]
    size_kib: int = 1024
    capture: bool = True  # off for bulk scenarios: a 1 GiB pcap per link judges nothing new
    users: int = 1
    files: list[PlacedFile] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    # Where `make test` runs it (the pytest plugin makes one item per backend);
    # `--testbed-backend` picks one for every scenario instead.
    backends: tuple[str, ...] = ("netns",)

    def service(self, kind: str) -> Service:
        for service in self.services:
            if service.kind == kind:
                return service
        raise KeyError(kind)


BACKENDS = ("netns", "local", "docker")


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _choice(path: Path, key: str, value: object, options: tuple[str, ...]) -> str:
    if value not in options:
        raise ScenarioError(path, key, f"{value!r} is not one of {', '.join(options)}")
    return str(value)


def _mode(path: Path, key: str, value: object) -> int:
    """Permission bits written as an octal string: "0755"."""
    if not isinstance(value, str) or not re.fullmatch(r"0?[0-7]{3,4}", value) or \
            int(value, 8) > 0o7777:
        raise ScenarioError(path, key, f"{value!r} is not a mode written in octal, e.g. \"0755\"")
    return int(value, 8)


def _file_name(path: Path, key: str, value: object) -> str:
    if not isinstance(value, str) or not value or "/" in value or value in (".", ".."):
        raise ScenarioError(path, key, f"{value!r} is not a file name (no '/')")
    return value


def _seconds(path: Path, key: str, value: object) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise ScenarioError(path, key, f"{value!r} is not a positive number of seconds")
    return float(value)


def _check_fault(path: Path, key: str, fault: str, topology: Topology) -> None:
    service, link = SERVICE_FAULT.fullmatch(fault), LINK_FAULT.fullmatch(fault)
    if service is not None and service.group(2) in SERVICE_KINDS:
        return
    if SLEEP_FAULT.fullmatch(fault) or fault in CAPTURE_FAULTS:
        return
    if link is None:
        raise ScenarioError(path, key, f"{fault!r}: want {FAULT_FORMS}")
    try:
        topology.link(link.group(2) or link.group(3))
    except TopologyError as exc:
        raise ScenarioError(path, key, f"{fault!r}: {exc}") from None


def load(path: Path) -> Scenario:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ScenarioError(path, "", str(exc)) from None
    meta = data.get("scenario", {})
    topo_data = data.get("topology", {})
    try:
        topology = build(topo_data.get("host", []), topo_data.get("link", []))
    except TopologyError as exc:
        raise ScenarioError(path, "topology", str(exc)) from None
    services = []
    for i, spec in enumerate(data.get("service", []), start=1):
        kind = _choice(path, f"service[{i}].kind", spec.get("kind"), SERVICE_KINDS)
        host = spec.get("host", "")
        if host not in topology.hosts:
            raise ScenarioError(path, f"service[{i}].host", f"no host {host!r}")
        masquerade = str(spec.get("masquerade_address", ""))
        if masquerade and (kind != "pyftpdlib" or not _is_ipv4(masquerade)):
            raise ScenarioError(path, f"service[{i}].masquerade_address",
                                "an IPv4 address, for kind = \"pyftpdlib\" only")
        services.append(Service(kind, host, int(spec.get("port", 22 if kind == "sshd" else 21)),
                                bool(spec.get("permit_foreign_addresses", False)), masquerade,
                                **_tls_keys(path, i, kind, spec)))
    tls_hosts = [s.host for s in services if s.tls]
    if len(tls_hosts) != len(set(tls_hosts)):
        raise ScenarioError(path, "service", "one TLS service per host (its certificate "
                            "and {tls_fingerprint_<host>} are the host's)")
    proxy_data = data.get("proxy", {})
    proxy = Proxy(_choice(path, "proxy.kind", proxy_data.get("kind", "none"), PROXY_KINDS),
                  proxy_data.get("host", "client"), proxy_data.get("ssh", "ssh"),
                  proxy_data.get("config", ""),
                  _choice(path, "proxy.transparent", proxy_data.get("transparent", ""),
                          ("", "local", "gateway")))
    if proxy.kind != "none" and proxy.host not in topology.hosts:
        raise ScenarioError(path, "proxy.host", f"no host {proxy.host!r}")
    if proxy.transparent and proxy.kind != "tunnel":
        raise ScenarioError(path, "proxy.transparent", "only the tunnel proxy has it")
    if proxy.transparent == "gateway" and (proxy.host == "client"
                                           or "client" not in topology.hosts):
        raise ScenarioError(path, "proxy.host", "gateway mode: the proxy runs on the gateway "
                            "host, the clients on a host named \"client\"")
    steps = []
    for i, spec in enumerate(data.get("step", []), start=1):
        ops = tuple(spec.get("ops", DEFAULT_OPS))
        for op in ops:
            _choice(path, f"step[{i}].ops", op, OPS)
        before = tuple(spec.get("before", ()))
        during = tuple(spec.get("during", ()))
        for fault in (*before, *during):
            _check_fault(path, f"step[{i}].before", fault, topology)
        if spec.get("client") == "ncftp" and proxy.socks:
            raise ScenarioError(path, f"step[{i}].client", "ncftp has no SOCKS support: use "
                                "it with no proxy or a transparent one")
        for op in FTPLIB_ONLY_OPS:
            if op in ops and spec.get("client", "curl") != "ftplib":
                raise ScenarioError(path, f"step[{i}].ops", f"'{op}' needs client = \"ftplib\" "
                                    "(the others cannot idle on an open session or cut a "
                                    "data connection at will)")
        deadline = _seconds(path, f"step[{i}].deadline", spec.get("deadline", 60.0))
        ends_within = 0.0
        if "ends_within" in spec:
            ends_within = _seconds(path, f"step[{i}].ends_within", spec["ends_within"])
            if not during:
                raise ScenarioError(path, f"step[{i}].ends_within",
                                    "counts from the `during` faults: the step has none")
        limit_rate = str(spec.get("limit_rate", ""))
        if limit_rate and not re.fullmatch(r"\d+(\.\d+)?[kKmMgG]?", limit_rate):
            raise ScenarioError(path, f"step[{i}].limit_rate",
                                f"{limit_rate!r}: want bytes per second as curl writes them "
                                "(\"2M\", \"500k\")")
        if limit_rate and spec.get("client", "curl") not in ("curl", "ftplib"):
            raise ScenarioError(path, f"step[{i}].limit_rate", "only curl and ftplib can "
                                "keep to a rate")
        said = spec.get("said", [])
        if not isinstance(said, list) or not all(isinstance(s, str) and s for s in said):
            raise ScenarioError(path, f"step[{i}].said", "want a list of non-empty strings")
        steps.append(Step(_choice(path, f"step[{i}].client", spec.get("client", "curl"), CLIENTS),
                          _choice(path, f"step[{i}].mode", spec.get("mode", "epsv"), MODES),
                          ops, spec.get("server", "ftp"),
                          _choice(path, f"step[{i}].expect", spec.get("expect", "ok"),
                                  ("ok", "fail", "any")),
                          str(spec.get("password", "")), before, bool(spec.get("ftps", False)),
                          int(spec.get("parallel", 1)), during, float(spec.get("after", 1.0)),
                          limit_rate, int(spec.get("port", 0)),
                          float(spec.get("idle", 10.0)), deadline,
                          ends_within=ends_within, said=tuple(said)))
    files: list[PlacedFile] = []
    for i, spec in enumerate(data.get("file", []), start=1):
        name = _file_name(path, f"file[{i}].name", spec.get("name"))
        if name in {f.name for f in files}:
            raise ScenarioError(path, f"file[{i}].name", f"{name!r} is placed twice")
        size = spec.get("size_kib", 4)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ScenarioError(path, f"file[{i}].size_kib", f"{size!r} is not a size in KiB")
        files.append(PlacedFile(name, size, _mode(path, f"file[{i}].mode",
                                                   spec.get("mode", "0644"))))
    checks = []
    for i, spec in enumerate(data.get("check", []), start=1):
        check = Check(_choice(path, f"check[{i}].verdict", spec.get("verdict"), CHECKS),
                      spec.get("link", ""),
                      _choice(path, f"check[{i}].expect", spec.get("expect", "pass"),
                              ("pass", "fail")),
                      spec.get("service", ""), tuple(spec.get("present", ())),
                      tuple(spec.get("absent", ())), int(spec.get("times", 1)),
                      tuple(spec.get("between", ())), float(spec.get("max_mib", 0)))
        if check.verdict == "file":
            check = _file_check(path, i, spec, check, files, len(steps))
        if check.verdict == "tls":
            check = _tls_check(path, i, spec, check, topology, services)
        if check.between and (len(check.between) != 2
                              or any(h not in topology.hosts for h in check.between)):
            raise ScenarioError(path, f"check[{i}].between", "name two hosts of the topology")
        if check.verdict == "memory" and (check.max_mib <= 0 or proxy.kind != "tunnel"):
            raise ScenarioError(path, f"check[{i}].max_mib",
                                "a memory check needs max_mib > 0 and a tunnel proxy")
        if check.verdict == "listen_drops" and check.service not in {
                s.kind for s in services}:
            raise ScenarioError(path, f"check[{i}].service",
                                f"{check.service!r} is not a service of this scenario")
        if check.verdict == "log" and check.service not in (*SERVICE_KINDS, *PROXY_LOGS):
            raise ScenarioError(path, f"check[{i}].service",
                                f"{check.service!r} is not a service kind or one of "
                                f"{', '.join(PROXY_LOGS)}")
        if check.verdict in ("encrypted", "cleartext", "only_ssh", "lost", "tls") or (
                check.verdict == "no_bypass" and check.link):
            try:
                topology.link(check.link)
            except TopologyError as exc:
                raise ScenarioError(path, f"check[{i}].link", str(exc)) from None
        checks.append(check)
    if not steps:
        raise ScenarioError(path, "step", "a scenario needs at least one client step")
    runs_on = meta.get("backends", ["netns"])
    if not isinstance(runs_on, list) or not runs_on:
        raise ScenarioError(path, "scenario.backends", "a list of backends, e.g. [\"netns\", "
                            "\"docker\"]")
    for i, kind in enumerate(runs_on):
        _choice(path, f"scenario.backends[{i}]", kind, BACKENDS)
    return Scenario(path, meta.get("name", path.stem), meta.get("description", ""), topology,
                    services, proxy, steps, checks, int(meta.get("size_kib", 1024)),
                    bool(meta.get("capture", True)), int(meta.get("users", 1)), files, data,
                    tuple(runs_on))


def _file_check(path: Path, i: int, spec: dict[str, Any], check: Check,
                files: list[PlacedFile], steps: int) -> Check:
    """A `file` check's own keys: name, holds, mode, after_step, absent (name globs)."""
    key = f"check[{i}]"
    name = _file_name(path, f"{key}.name", spec.get("name", "payload.bin"))
    holds = _choice(path, f"{key}.holds", spec.get("holds"), HOLDS)
    if holds == "placed" and name not in {f.name for f in files}:
        raise ScenarioError(path, f"{key}.holds", f"no [[file]] places {name!r}")
    mode = _mode(path, f"{key}.mode", spec["mode"]) if "mode" in spec else None
    if mode is not None and holds == "nothing":
        raise ScenarioError(path, f"{key}.mode", "a file that must not exist has no mode")
    after = spec.get("after_step", 0)
    if not isinstance(after, int) or isinstance(after, bool) or not 0 <= after <= steps:
        raise ScenarioError(path, f"{key}.after_step",
                            f"{after!r} is not a step number (1 to {steps}; 0 = the end)")
    for pattern in check.absent:
        _file_name(path, f"{key}.absent", pattern)
    return dataclasses.replace(check, name=name, holds=holds, mode=mode, after_step=after)


def _tls_keys(path: Path, i: int, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A service's `tls`, `tls_ca` and `tls_max`: the last two only with the first."""
    key = f"service[{i}]"
    tls = spec.get("tls", False)
    if not isinstance(tls, bool):
        raise ScenarioError(path, f"{key}.tls", f"{tls!r} is not true or false")
    if tls and kind not in TLS_KINDS:
        raise ScenarioError(path, f"{key}.tls", f"kind {kind!r} has no TLS here; one of "
                            f"{', '.join(TLS_KINDS)}")
    for name in ("tls_ca", "tls_max"):
        if name in spec and not tls:
            raise ScenarioError(path, f"{key}.{name}", "only with tls = true")
    return {"tls": tls,
            "tls_ca": _choice(path, f"{key}.tls_ca", spec.get("tls_ca", "run"), TLS_CAS),
            "tls_max": _choice(path, f"{key}.tls_max", spec.get("tls_max", ""), TLS_MAX)}


def _tls_check(path: Path, i: int, spec: dict[str, Any], check: Check, topology: Topology,
               services: list[Service]) -> Check:
    """A `tls` check's `server`: a host with a TLS service; by default the one on the link."""
    key = f"check[{i}]"
    try:
        ends = topology.link(check.link).hosts
    except TopologyError as exc:
        raise ScenarioError(path, f"{key}.link", str(exc)) from None
    tls_hosts = [s.host for s in services if s.tls]
    server = spec.get("server") or next((h for h in tls_hosts if h in ends), "")
    if server not in tls_hosts:
        raise ScenarioError(path, f"{key}.server", f"{server!r} is not a host with a TLS "
                            "service (tls = true)" if server else
                            f"no TLS service on link {check.link!r}: name its host in `server`")
    return dataclasses.replace(check, server=server)
