"""Scenario files: one topology, its services, an optional proxy, client steps and the
checks expected to pass or fail. Data, not code; loaded and validated here.

See README "Scenario files" for the format and a worked example.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.topology import Topology, TopologyError, build

SERVICE_KINDS = ("sshd", "pyftpdlib", "vsftpd", "proftpd", "pure-ftpd")
PROXY_KINDS = ("none", "tunnel", "ssh-D")
CLIENTS = ("curl", "lftp", "ftplib", "tnftp")
MODES = ("epsv", "pasv", "active")
DEFAULT_OPS = ("upload", "download", "list")
OPS = (*DEFAULT_OPS, "wait")  # wait: sit idle `idle` seconds (ftplib only)
CHECKS = ("encrypted", "cleartext", "no_bypass", "only_ssh", "integrity", "log", "lost",
          "memory", "secrets", "listen_drops")
SERVICE_FAULT = re.compile(r"(stop|start|restart) ([a-z-]+)")
LINK_FAULT = re.compile(r"(down|up) ([\w-]+)|loss ([\w-]+) (\d+(?:\.\d+)?)%")
SLEEP_FAULT = re.compile(r"sleep (\d+(?:\.\d+)?)")
FAULT_FORMS = ("'stop|start|restart <service kind>', 'down|up <link>', 'loss <link> <n>%' "
               "or 'sleep <seconds>'")


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


@dataclass(frozen=True)
class Proxy:
    kind: str = "none"
    host: str = "client"
    ssh: str = "ssh"  # for ssh-D: the host running sshd
    config: str = ""  # for tunnel: profiles and rules, with {placeholders}


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
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def service(self, kind: str) -> Service:
        for service in self.services:
            if service.kind == kind:
                return service
        raise KeyError(kind)


def _choice(path: Path, key: str, value: object, options: tuple[str, ...]) -> str:
    if value not in options:
        raise ScenarioError(path, key, f"{value!r} is not one of {', '.join(options)}")
    return str(value)


def _check_fault(path: Path, key: str, fault: str, topology: Topology) -> None:
    service, link = SERVICE_FAULT.fullmatch(fault), LINK_FAULT.fullmatch(fault)
    if service is not None and service.group(2) in SERVICE_KINDS:
        return
    if SLEEP_FAULT.fullmatch(fault):
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
        services.append(Service(kind, host, int(spec.get("port", 22 if kind == "sshd" else 21)),
                                bool(spec.get("permit_foreign_addresses", False))))
    proxy_data = data.get("proxy", {})
    proxy = Proxy(_choice(path, "proxy.kind", proxy_data.get("kind", "none"), PROXY_KINDS),
                  proxy_data.get("host", "client"), proxy_data.get("ssh", "ssh"),
                  proxy_data.get("config", ""))
    if proxy.kind != "none" and proxy.host not in topology.hosts:
        raise ScenarioError(path, "proxy.host", f"no host {proxy.host!r}")
    steps = []
    for i, spec in enumerate(data.get("step", []), start=1):
        ops = tuple(spec.get("ops", DEFAULT_OPS))
        for op in ops:
            _choice(path, f"step[{i}].ops", op, OPS)
        before = tuple(spec.get("before", ()))
        during = tuple(spec.get("during", ()))
        for fault in (*before, *during):
            _check_fault(path, f"step[{i}].before", fault, topology)
        if "wait" in ops and spec.get("client", "curl") != "ftplib":
            raise ScenarioError(path, f"step[{i}].ops", "'wait' needs client = \"ftplib\" "
                                "(the others cannot idle on an open session)")
        deadline = spec.get("deadline", 60.0)
        if not isinstance(deadline, int | float) or isinstance(deadline, bool) or deadline <= 0:
            raise ScenarioError(path, f"step[{i}].deadline",
                                f"{deadline!r} is not a positive number of seconds")
        steps.append(Step(_choice(path, f"step[{i}].client", spec.get("client", "curl"), CLIENTS),
                          _choice(path, f"step[{i}].mode", spec.get("mode", "epsv"), MODES),
                          ops, spec.get("server", "ftp"),
                          _choice(path, f"step[{i}].expect", spec.get("expect", "ok"),
                                  ("ok", "fail", "any")),
                          str(spec.get("password", "")), before, bool(spec.get("ftps", False)),
                          int(spec.get("parallel", 1)), during, float(spec.get("after", 1.0)),
                          str(spec.get("limit_rate", "")), int(spec.get("port", 0)),
                          float(spec.get("idle", 10.0)), float(deadline)))
    checks = []
    for i, spec in enumerate(data.get("check", []), start=1):
        check = Check(_choice(path, f"check[{i}].verdict", spec.get("verdict"), CHECKS),
                      spec.get("link", ""),
                      _choice(path, f"check[{i}].expect", spec.get("expect", "pass"),
                              ("pass", "fail")),
                      spec.get("service", ""), tuple(spec.get("present", ())),
                      tuple(spec.get("absent", ())), int(spec.get("times", 1)),
                      tuple(spec.get("between", ())), float(spec.get("max_mib", 0)))
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
        if check.verdict == "log" and check.service not in (*SERVICE_KINDS, "tunnel"):
            raise ScenarioError(path, f"check[{i}].service",
                                f"{check.service!r} is not a service kind or 'tunnel'")
        if check.verdict in ("encrypted", "cleartext", "only_ssh", "lost"):
            try:
                topology.link(check.link)
            except TopologyError as exc:
                raise ScenarioError(path, f"check[{i}].link", str(exc)) from None
        checks.append(check)
    if not steps:
        raise ScenarioError(path, "step", "a scenario needs at least one client step")
    return Scenario(path, meta.get("name", path.stem), meta.get("description", ""), topology,
                    services, proxy, steps, checks, int(meta.get("size_kib", 1024)),
                    bool(meta.get("capture", True)), int(meta.get("users", 1)), data)
