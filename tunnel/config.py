"""TOML configuration: parsed and validated once into frozen dataclasses, then passed down.

Every error is a ConfigError naming the file (with the line where it can be found), the key
path (`rule[2].ports`) and the reason. Unknown keys are errors: a typo must not silently turn
into a default.
"""

from __future__ import annotations

import enum
import os
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tunnel.errors import ConfigError
from tunnel.lasthop import LastHopTls, TlsMode, parse_fingerprint, unusable_ca
from tunnel.rules import Action, DstMatcher, PortSet, Rule, RuleSet
from tunnel.socks import AuthMethod
from tunnel.users import UserSet

T = TypeVar("T")


class HostKeyPolicy(enum.Enum):
    STRICT = "strict"  # the key must already be in known_hosts
    ACCEPT_NEW = "accept-new"  # an unknown host's key is written once; a changed key is refused
    INSECURE = "insecure"  # no check at all: testbeds only, logged loudly


class LineEnding(enum.Enum):
    """How text files end their lines on an `ftp-sftp` server (Tectia's host type): TYPE A
    transfers convert between this and the network's CRLF."""

    LF = "lf"
    CRLF = "crlf"


AUTH_METHODS = ("password", "publickey")
SOCKS5_AUTH_NAMES = {"none": AuthMethod.NO_AUTH, "username": AuthMethod.USERNAME_PASSWORD}


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ProxyConfig:
    listen: tuple[Listen, ...] = (Listen("127.0.0.1", 1080),)
    allow_relay: bool = False
    unmatched: Action = Action.REJECT
    # SOCKS5 methods in order of preference. "username" (RFC 1929) passes the credentials on
    # as the SSH login for profiles with user = "": the SSH server is what checks them.
    socks5_auth: tuple[AuthMethod, ...] = (AuthMethod.NO_AUTH,)
    handshake_timeout: float = 10.0
    drain_timeout: float = 30.0
    # Seconds without a session ending after which freed heap goes back to the system
    # (heap.QuietTrim); 0 = never.
    heap_trim_after: float = 30.0
    connect_timeout: float = 15.0
    audit_log: str = ""  # "" = standard error
    # AUTH TLS/SSL from an FTP client inside ftp-tunnel. Only "refuse" (534) exists: TLS
    # would hide PASV/PORT from the proxy, and the SSH tunnel already encrypts.
    ftps: str = "refuse"
    control_socket: str = ""  # Unix socket for `tunnel ctl`, owner-only; "" = none
    # Connections the kernel queues before the daemon accepts them. asyncio's default of 100
    # overflowed under 200 clients starting at once (load-200-sessions: 52 SYNs dropped, each
    # costing its client a 1 s retransmit). The kernel caps it at net.core.somaxconn.
    listen_backlog: int = 1024
    # FTP control connections opening at once to one FTP server, until its greeting; the rest
    # wait their turn (openings.py). vsftpd's listen queue holds 32.
    max_openings_per_server: int = 8
    metrics: Listen | None = None  # Prometheus text format over HTTP; None = off
    # Seconds a passive data connection is awaited after its 227/229 reply.
    data_wait: float = 60.0
    # Listeners for connections the kernel redirected (nftables; `tunnel nft`): their real
    # destination is SO_ORIGINAL_DST. None by default.
    transparent: tuple[Listen, ...] = ()
    # With transparent listeners, every socket the daemon opens carries this mark, and the
    # nftables ruleset lets marked connections pass: the proxy never captures itself.
    socket_mark: int = 0x1080


@dataclass(frozen=True)
class Profile:
    id: str
    host: str = ""  # "" = the SOCKS destination host is the SSH server
    port: int = 22
    user: str = ""  # "" = the user name the application sends
    auth: tuple[str, ...] = AUTH_METHODS
    identity_files: tuple[str, ...] = ()
    known_hosts: str = "~/.ssh/known_hosts"
    host_key_policy: HostKeyPolicy = HostKeyPolicy.STRICT
    gateway: str = ""
    keepalive_interval: float = 15.0
    keepalive_count_max: int = 3
    idle_timeout: float = 300.0
    # The largest window a channel gets: what the SSH server may send before we acknowledge.
    # A stream cannot go faster than window / round trip; see tunnel/windowsize.py
    # for how a connection's channels share it.
    channel_window_mib: int = 16
    ciphers: tuple[str, ...] = ()  # () = our speed-first preference list (see ssh.py)
    # Run once per SSH connection so sshd turns TCP_NODELAY on (see ssh.py); "" = never.
    nodelay_command: str = "true"
    line_ending: LineEnding = LineEnding.LF  # ftp-sftp: the server's text line ending
    # The local users who may use this profile (users.py); None = anyone. A profile that
    # logs in with a key file must say (users = ["*"] for anyone, on purpose).
    users: UserSet | None = None

    @property
    def user_from_app(self) -> bool:
        return self.user == ""


@dataclass(frozen=True)
class Config:
    path: str
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    profiles: tuple[Profile, ...] = ()
    rules: RuleSet = field(default_factory=lambda: RuleSet(()))

    def profile(self, profile_id: str) -> Profile:
        for profile in self.profiles:
            if profile.id == profile_id:
                return profile
        raise KeyError(profile_id)


# -- loading -----------------------------------------------------------------------------------


def load(path: str) -> Config:
    """Read and validate a config file. Raises ConfigError."""
    try:
        with open(path, "rb") as fh:
            writable = loose_write_permissions(os.fstat(fh.fileno()).st_mode)
            raw = fh.read()
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read: {exc.strerror}") from None
    if writable:
        # As OpenSSH refuses such files: whoever can write it can redirect every session.
        raise ConfigError(path, "", f"{writable}; tighten it with chmod go-w")
    return parse(raw.decode("utf-8", errors="replace"), path)


def loose_write_permissions(mode: int) -> str:
    """'' if only the owner may write the file, else what is wrong with it."""
    if mode & 0o022:
        return f"is writable by group or others (mode {mode & 0o777:04o})"
    return ""


def parse(text: str, path: str = "<config>") -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"TOML syntax: {exc}") from None
    locate = _Locator(text, path)
    base_dir = os.path.dirname(os.path.abspath(path)) if path != "<config>" else os.getcwd()
    root = _Table(data, "", locate)
    proxy = _parse_proxy(root.table("proxy"))
    profiles = tuple(
        _parse_profile(t, base_dir) for t in root.array_of_tables("profile")
    )
    rules = [_parse_rule(t, i, base_dir)
             for i, t in enumerate(root.array_of_tables("rule"), start=1)]
    root.finish()
    _check_references(profiles, rules, locate)
    return Config(path, proxy, profiles, RuleSet(rules, proxy.unmatched))


class _Locator:
    """Finds the line of a key so errors can say file:line. TOML parsers keep no positions,
    so this scans the text for the table header and then the key, which is right for every
    config written the usual way (one key per line)."""

    def __init__(self, text: str, path: str) -> None:
        self.lines = text.splitlines()
        self.path = path

    def error(self, key_path: str, reason: str) -> ConfigError:
        line = self._line_of(key_path)
        return ConfigError(f"{self.path}:{line}" if line else self.path, key_path, reason)

    def _line_of(self, key_path: str) -> int | None:
        table, _, key = key_path.rpartition(".")
        name, _, index_text = table.partition("[")
        index = int(index_text.rstrip("]")) if index_text else 0
        seen = 0
        in_table = table == ""
        for number, line in enumerate(self.lines, start=1):
            stripped = line.strip()
            if stripped.startswith("["):
                header = stripped.strip("[]").strip()
                if header == name:
                    seen += 1
                    in_table = index in (0, seen)
                    if in_table and not key:
                        return number
                else:
                    in_table = False
            elif in_table and stripped.split("=")[0].strip().strip('"') == key:
                return number
        return None


class _Table:
    """One TOML table being read: typed getters that raise located errors, and a check that
    no key was left unread."""

    def __init__(self, data: dict[str, Any], path: str, locate: _Locator) -> None:
        self.data = data
        self.path = path
        self.locate = locate
        self.read: set[str] = set()

    def key(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, reason: str) -> ConfigError:
        return self.locate.error(self.key(key), reason)

    def get(self, key: str, kind: type[T], default: T) -> T:
        self.read.add(key)
        if key not in self.data:
            return default
        value = self.data[key]
        # bool is an int in Python; a port of `true` must still be refused.
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                return kind(value)  # type: ignore[call-arg]
            raise self.error(key, f"expected {_type_name(kind)}, got {_type_name(type(value))}")
        return value

    def get_str_list(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.get(key, list, list(default))
        if not all(isinstance(item, str) for item in value):
            raise self.error(key, "expected a list of strings")
        return tuple(value)

    def choice(self, key: str, convert: Callable[[str], T], default: T, options: str) -> T:
        text = self.get(key, str, "")
        if key not in self.data:
            return default
        try:
            return convert(text)
        except ValueError:
            raise self.error(key, f"{text!r} is not one of: {options}") from None

    def table(self, key: str) -> _Table:
        value = self.get(key, dict, {})
        return _Table(value, self.key(key), self.locate)

    def array_of_tables(self, key: str) -> Iterator[_Table]:
        value = self.get(key, list, [])
        for index, item in enumerate(value, start=1):
            if not isinstance(item, dict):
                raise self.error(key, f"write it as [[{key}]] tables")
            yield _Table(item, f"{self.key(key)}[{index}]", self.locate)

    def finish(self) -> None:
        for key in self.data:
            if key not in self.read:
                raise self.error(key, "unknown key (check its spelling against docs/config.md)")


def _type_name(kind: type) -> str:
    return {str: "a string", bool: "true or false", int: "an integer", float: "a number",
            list: "a list", dict: "a table"}.get(kind, kind.__name__)


def _parse_listen(table: _Table, text: str, key: str = "listen") -> Listen:
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise table.error(key, f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:1080, [::1]:1080)")
    return Listen(host, int(port_text))


def _positive(table: _Table, key: str, default: float) -> float:
    value = table.get(key, float, default)
    if value <= 0:
        raise table.error(key, "must be greater than 0")
    return value


def _not_negative(table: _Table, key: str, default: float) -> float:
    value = table.get(key, float, default)
    if value < 0:
        raise table.error(key, "must be 0 or more")
    return value


def _within(table: _Table, key: str, default: int, low: int, high: int | None = None) -> int:
    value = table.get(key, int, default)
    if value < low or (high is not None and value > high):
        raise table.error(key, f"must be {low} or more" if high is None
                          else f"must be from {low} to {high}")
    return value


def _parse_proxy(t: _Table) -> ProxyConfig:
    d = ProxyConfig()
    listen = tuple(_parse_listen(t, s) for s in t.get_str_list("listen", ("127.0.0.1:1080",)))
    if not listen:
        raise t.error("listen", "at least one listener is needed")
    unmatched = t.choice("unmatched", Action, d.unmatched, "reject, direct")
    if unmatched not in (Action.REJECT, Action.DIRECT):
        raise t.error("unmatched", f"{unmatched.value!r} is not one of: reject, direct")
    auth_names = t.get_str_list("socks5_auth", ("none",))
    unknown = [name for name in auth_names if name not in SOCKS5_AUTH_NAMES]
    if unknown or not auth_names:
        raise t.error("socks5_auth", f"{unknown or auth_names} must be a non-empty list of: "
                      "none, username")
    cfg = ProxyConfig(
        listen=listen,
        allow_relay=t.get("allow_relay", bool, d.allow_relay),
        unmatched=unmatched,
        socks5_auth=tuple(SOCKS5_AUTH_NAMES[name] for name in auth_names),
        handshake_timeout=_positive(t, "handshake_timeout", d.handshake_timeout),
        drain_timeout=_positive(t, "drain_timeout", d.drain_timeout),
        heap_trim_after=_not_negative(t, "heap_trim_after", d.heap_trim_after),
        connect_timeout=_positive(t, "connect_timeout", d.connect_timeout),
        audit_log=t.get("audit_log", str, d.audit_log),
        ftps=t.get("ftps", str, d.ftps),
        control_socket=t.get("control_socket", str, d.control_socket),
        listen_backlog=_within(t, "listen_backlog", d.listen_backlog, 1, 65535),
        max_openings_per_server=_within(t, "max_openings_per_server",
                                        d.max_openings_per_server, 1, 1024),
        metrics=(_parse_listen(t, metrics, "metrics") if (metrics := t.get("metrics", str, ""))
                 else None),
        data_wait=_positive(t, "data_wait", d.data_wait),
        transparent=tuple(_parse_listen(t, s, "transparent")
                          for s in t.get_str_list("transparent", ())),
        socket_mark=_within(t, "socket_mark", d.socket_mark, 1, 0xFFFFFFFF),
    )
    clash = {str(x) for x in cfg.transparent} & {str(x) for x in cfg.listen}
    if clash:
        raise t.error("transparent", f"{sorted(clash)} is also a SOCKS listener: a "
                      "transparent listener needs an address and port of its own")
    if cfg.ftps != "refuse":
        raise t.error("ftps", f"{cfg.ftps!r}: only \"refuse\" is possible; a TLS control "
                      "channel would hide the data ports the proxy must carry")
    t.finish()
    return cfg


def _resolve_path(path: str, base_dir: str) -> str:
    expanded = os.path.expanduser(path)
    return expanded if os.path.isabs(expanded) else os.path.join(base_dir, expanded)


def _parse_profile(t: _Table, base_dir: str) -> Profile:
    profile_id = t.get("id", str, "")
    if not profile_id:
        raise t.error("id", "every profile needs a non-empty id")
    port = t.get("port", int, 22)
    if not 1 <= port <= 65535:
        raise t.error("port", f"{port} is not a TCP port (1-65535)")
    auth = t.get_str_list("auth", AUTH_METHODS)
    bad = [a for a in auth if a not in AUTH_METHODS]
    if bad or not auth:
        raise t.error("auth", f"{bad or auth} must be a non-empty list of: password, publickey")
    profile = Profile(
        id=profile_id,
        host=t.get("host", str, ""),
        port=port,
        user=t.get("user", str, ""),
        auth=auth,
        identity_files=tuple(
            _resolve_path(p, base_dir) for p in t.get_str_list("identity_files", ())
        ),
        known_hosts=_resolve_path(t.get("known_hosts", str, "~/.ssh/known_hosts"), base_dir),
        host_key_policy=t.choice(
            "host_key_policy", HostKeyPolicy, HostKeyPolicy.STRICT, "strict, accept-new, insecure"
        ),
        gateway=t.get("gateway", str, ""),
        keepalive_interval=_positive(t, "keepalive_interval", 15.0),
        keepalive_count_max=_within(t, "keepalive_count_max", 3, 1),
        idle_timeout=_positive(t, "idle_timeout", 300.0),
        channel_window_mib=_within(t, "channel_window_mib", 16, 1, 1024),
        ciphers=t.get_str_list("ciphers", ()),
        nodelay_command=t.get("nodelay_command", str, "true"),
        line_ending=t.choice("line_ending", LineEnding, LineEnding.LF, "lf, crlf"),
        users=_users(t),
    )
    if profile.identity_files and profile.users is None:
        raise t.error("users", f"profile {profile_id!r} logs in with a key file, which every "
                      "local user who can reach the proxy could then use: say who may, e.g. "
                      "users = [\"batch\", \"@ftpjobs\"], or users = [\"*\"] for anyone")
    t.finish()
    return profile


def _users(t: _Table) -> UserSet | None:
    if "users" not in t.data:
        t.read.add("users")
        return None
    try:
        return UserSet(t.get_str_list("users", ()))
    except ValueError as exc:
        raise t.error("users", str(exc)) from None


def _parse_rule(t: _Table, index: int, base_dir: str) -> Rule:
    try:
        dst = DstMatcher(t.get("dst", str, "*"))
    except ValueError as exc:
        raise t.error("dst", str(exc)) from None
    try:
        ports = PortSet(t.get("ports", str, "*"))
    except ValueError as exc:
        raise t.error("ports", str(exc)) from None
    if "action" not in t.data:
        raise t.error("action", "every rule needs an action")
    action = t.choice(
        "action", Action, Action.REJECT, ", ".join(a.value for a in Action)
    )
    profile = t.get("profile", str, "") or None
    if action.needs_profile and profile is None:
        raise t.error("profile", f"action {action.value!r} needs a profile id")
    rule = Rule(
        id=t.get("id", str, f"rule#{index}"),
        dst=dst,
        ports=ports,
        action=action,
        profile=profile,
        fallback_to_plain=t.get("fallback_to_plain", bool, False),
        users=_users(t),
        last_hop=_last_hop(t, action, base_dir),
    )
    t.finish()
    return rule


def _last_hop(t: _Table, action: Action, base_dir: str) -> LastHopTls:
    mode = t.choice("last_hop_tls", TlsMode, TlsMode.OFF, "off, try, require")
    ca_file = t.get("last_hop_ca", str, "")
    pin = t.get("last_hop_fingerprint", str, "")
    insecure = t.get("last_hop_insecure", bool, False)
    given = [key for key in ("last_hop_ca", "last_hop_fingerprint", "last_hop_insecure")
             if key in t.data]
    if mode is TlsMode.OFF:
        if given:
            raise t.error(given[0], "has no effect with last_hop_tls = \"off\" (the default); "
                          "set last_hop_tls = \"require\" or \"try\"")
        return LastHopTls()
    if action is not Action.FTP_TUNNEL:
        raise t.error("last_hop_tls", f"only the ftp-tunnel action speaks FTP to the server "
                      f"(this rule's action is {action.value!r})")
    if len([key for key in given if key != "last_hop_insecure" or insecure]) > 1:
        raise t.error(given[-1], "choose one way to authenticate the FTP server: "
                      "last_hop_ca, last_hop_fingerprint or last_hop_insecure")
    try:
        fingerprint = parse_fingerprint(pin) if pin else b""
    except ValueError as exc:
        raise t.error("last_hop_fingerprint", str(exc)) from None
    policy = LastHopTls(mode, _resolve_path(ca_file, base_dir) if ca_file else "",
                        fingerprint, insecure)
    problem = unusable_ca(policy)  # a CA file that cannot be used is a config error, now
    if problem:
        raise t.error("last_hop_ca", problem)
    return policy


def _check_references(profiles: tuple[Profile, ...], rules: list[Rule], locate: _Locator) -> None:
    ids: dict[str, int] = {}
    for index, profile in enumerate(profiles, start=1):
        if profile.id in ids:
            raise locate.error(f"profile[{index}].id", f"duplicate profile id {profile.id!r}")
        ids[profile.id] = index
    by_id = {p.id: p for p in profiles}
    for profile in profiles:
        seen = [profile.id]
        hop = profile
        while hop.gateway:
            if hop.gateway not in by_id:
                raise locate.error(f"profile[{ids[hop.id]}].gateway",
                                   f"no profile has id {hop.gateway!r}")
            if hop.gateway in seen:
                raise locate.error(f"profile[{ids[profile.id]}].gateway",
                                   f"gateway loop: {' -> '.join([*seen, hop.gateway])}")
            seen.append(hop.gateway)
            hop = by_id[hop.gateway]
    for index, rule in enumerate(rules, start=1):
        if rule.profile is not None and rule.profile not in by_id:
            raise locate.error(f"rule[{index}].profile", f"no profile has id {rule.profile!r}")
