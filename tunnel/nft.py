"""`tunnel nft`: the nftables ruleset for transparent capture, derived from the config's
rules, so that what the kernel captures and what the proxy decides have one source.

Pure: a Config in, a capture plan out (`plan`), and two views of it: the script (`script`)
and the answer to "would this destination be captured?" (`captured_by`, for `tunnel
explain`). Both walk the same list of lines in the same order, as the kernel will.

What is captured, in order (first match wins):
1. never the daemon's own connections (its socket mark), nor loopback destinations;
2. the passive data connections the daemon announced (the `data4`/`data6` sets, nftset.py);
3. each rule in file order: a `direct` rule lets its destinations pass, every other action
   (ftp-tunnel, ftp-sftp, tunnel, reject) redirects them to the transparent listener;
4. with `unmatched = "reject"`: the rules' ports to any other destination, so an FTP client
   pointed at a server no rule names is refused by the proxy, not sent in clear; other
   ports (a web server, an admin's `ssh`) are not touched.
A rule naming hosts by name (glob, regex) cannot become a kernel match: a redirected
connection carries an address only. It is reported, and under `unmatched = "reject"` its
ports are still captured (and refused), never leaked.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from tunnel.addresses import is_loopback
from tunnel.config import Config, Listen
from tunnel.rules import Action, IPNetwork

TABLE = "inet ftp_ssh_tunnel"
DATA_SETS = {4: "data4", 6: "data6"}
ACTIVE_MAPS = {4: "active4", 6: "active6"}
_ALL_PORTS = ((1, 65535),)


class NftConfigError(Exception):
    """The config cannot be captured as asked (no transparent listener, gateway without
    allow_relay...)."""


@dataclass(frozen=True)
class Line:
    """One capture decision: destinations (None = any), ports, redirect or pass."""

    label: str
    network: IPNetwork | None
    ports: tuple[tuple[int, int], ...]
    redirect: bool


@dataclass(frozen=True)
class Plan:
    port: int  # the transparent listener the kernel redirects to
    mark: int
    gateway: str  # "" = local mode (output hook)
    lines: tuple[Line, ...]
    warnings: tuple[str, ...]


def plan(config: Config, gateway: str = "") -> Plan:
    proxy = config.proxy
    listener = _listener(proxy.transparent, gateway)
    if gateway and not proxy.allow_relay:
        raise NftConfigError("gateway mode captures clients on other hosts: set "
                             "[proxy] allow_relay = true, or the proxy refuses them")
    lines: list[Line] = []
    warnings: list[str] = []
    captured_ports: list[tuple[int, int]] = []
    for rule in config.rules.rules:
        redirect = rule.action is not Action.DIRECT
        ports = tuple(rule.ports.ranges)
        if redirect:
            captured_ports.extend(ports)
        if rule.dst.network is None and rule.dst.glob != "*":
            warnings.append(f"rule {rule.id!r}: dst {rule.dst.pattern!r} names hosts by name; "
                            "a redirected connection carries an address only, so this rule "
                            "cannot match it (use an address or network)")
            continue
        lines.append(Line(f"rule {rule.id} ({rule.action.value})", rule.dst.network,
                          ports, redirect))
    if config.rules.unmatched is Action.REJECT and captured_ports:
        lines.append(Line("unmatched = reject: the rules' ports, any other destination",
                          None, _merge(captured_ports), True))
    return Plan(listener.port, proxy.socket_mark, gateway, tuple(lines), tuple(warnings))


def _listener(listeners: tuple[Listen, ...], gateway: str) -> Listen:
    """Local mode redirects to loopback; gateway mode to the incoming interface's address,
    which only a wildcard or that address's listener receives."""
    if not listeners:
        raise NftConfigError("no transparent listener: set [proxy] transparent = "
                             "[\"127.0.0.1:1081\"] (local) or [\"0.0.0.0:1081\"] (gateway)")
    wildcard = ("0.0.0.0", "::")
    for listen in listeners:
        if (gateway and not is_loopback(listen.host)) or (
                not gateway and (is_loopback(listen.host) or listen.host in wildcard)):
            return listen
    raise NftConfigError(
        "gateway mode needs a transparent listener off loopback (e.g. \"0.0.0.0:1081\"): "
        "the kernel redirects routed connections to the interface's own address"
        if gateway else "local mode needs a transparent listener on loopback "
        "(e.g. \"127.0.0.1:1081\")")


def _merge(ranges: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    for low, high in sorted(ranges):
        if out and low <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], high))
        else:
            out.append((low, high))
    return tuple(out)


# -- the script --------------------------------------------------------------------------------
def script(p: Plan, config_path: str) -> str:
    """The ruleset, loadable again at any time (`nft -f` runs it as one transaction).

    It never deletes the table: it declares it (a no-op when it is there) and replaces the
    rules of its chains. So a reload keeps the data sets' elements, and the sessions being
    redirected stay redirected. The kernel keeps translating an established redirected
    connection only while a rule would still redirect it: with the table deleted, or a
    rule gone, the live session's next packets go to the real destination (measured, and
    the scenario transparent-capture-lost keeps it in view)."""
    redirect = f"redirect to :{p.port}"
    mode = f"gateway mode, interface {p.gateway}" if p.gateway else "local mode"
    hook, other = ("prerouting", "output") if p.gateway else ("output", "prerouting")
    base = f"type nat hook {hook} priority -100; policy accept;"
    out = [
        f"# ftp-ssh-tunnel transparent capture for {config_path} ({mode})",
        f"# Load or reload: tunnel nft -c {config_path}"
        f"{' --gateway ' + p.gateway if p.gateway else ''} | nft -f -",
        f"# Undo (with no transparent session running): tunnel nft -c {config_path} --delete"
        " | nft -f -",
        *(f"# WARNING: {w}" for w in p.warnings),
        f"table {TABLE} {{",
        "    # Passive data connections (client . server . port), added by the daemon as",
        "    # each 227/229 reply passes, for the life of that control session.",
        *(f"    set {name} {{ type {kind}_addr . {kind}_addr . inet_service; flags timeout; }}"
          for name, kind in ((DATA_SETS[4], "ipv4"), (DATA_SETS[6], "ipv6"))),
        "    # Active-mode connections of the proxy to a client (client . port : FTP server),",
        "    # added by the daemon before it connects: they come from the server's address.",
        *(f"    map {name} {{ type {kind}_addr . inet_service : {kind}_addr; }}"
          for name, kind in ((ACTIVE_MAPS[4], "ipv4"), (ACTIVE_MAPS[6], "ipv6"))),
        "    chain capture { }",
        f"    chain {hook} {{ {base} }}",
        "    chain postrouting { type nat hook postrouting priority 100; policy accept; }",
        "}",
        f"flush chain {TABLE} capture",
        f"flush chain {TABLE} {hook}",
        f"flush chain {TABLE} postrouting",
        f"add rule {TABLE} postrouting meta mark {p.mark:#x} snat ip to ip daddr . tcp dport "
        f"map @{ACTIVE_MAPS[4]}",
        f"add rule {TABLE} postrouting meta mark {p.mark:#x} snat ip6 to ip6 daddr . "
        f"tcp dport map @{ACTIVE_MAPS[6]}",
        f"add rule {TABLE} capture ip saddr . ip daddr . tcp dport @{DATA_SETS[4]} {redirect}",
        f"add rule {TABLE} capture ip6 saddr . ip6 daddr . tcp dport @{DATA_SETS[6]} {redirect}",
    ]
    for line in p.lines:
        verdict = redirect if line.redirect else "return"
        out.append(f"add rule {TABLE} capture {_match(line)}{verdict} "
                   f"comment {_quote(line.label)}")
    if p.gateway:
        out.append(f"add rule {TABLE} {hook} iifname {_quote(p.gateway)} "
                   "meta l4proto tcp jump capture")
    else:
        out += [
            f"add rule {TABLE} {hook} meta mark {p.mark:#x} return "
            "comment \"the proxy's own connections\"",
            f"add rule {TABLE} {hook} ip daddr 127.0.0.0/8 return",
            f"add rule {TABLE} {hook} ip6 daddr ::1 return",
            f"add rule {TABLE} {hook} meta l4proto tcp jump capture",
        ]
    out += [
        "# The other mode's chain, if an earlier load made one (declared, so that the",
        "# delete cannot fail):",
        f"add chain {TABLE} {other} {{ type nat hook {other} priority -100; policy accept; }}",
        f"delete chain {TABLE} {other}",
    ]
    return "\n".join(out) + "\n"


def delete_script() -> str:
    return (
        "# Stop the daemon first: without the table, the kernel stops translating live\n"
        "# redirected sessions, and their next packets go to their real destination.\n"
        # `table` first: deleting a table that is not there would fail the whole script.
        f"table {TABLE}\ndelete table {TABLE}\n")


def _match(line: Line) -> str:
    parts = []
    if line.network is not None:
        family = "ip6" if line.network.version == 6 else "ip"
        parts.append(f"{family} daddr {line.network}")
    if line.ports != _ALL_PORTS:
        items = [str(low) if low == high else f"{low}-{high}" for low, high in line.ports]
        ports = items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"
        parts.append(f"tcp dport {ports}")
    else:
        parts.append("meta l4proto tcp")
    return " ".join(parts) + " "


def _quote(text: str) -> str:
    return '"' + text.replace('"', "'") + '"'


# -- explain -----------------------------------------------------------------------------------
def captured_by(p: Plan, host: str, port: int) -> str:
    """What transparent capture does with a new connection to host:port, in words."""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return ("transparent capture: not decidable for a name; the kernel sees the address "
                "it resolves to (ask again with the address)")
    if addr.is_loopback and not p.gateway:
        return "transparent capture: not captured (a loopback destination)"
    for line in p.lines:
        in_net = line.network is None or (line.network.version == addr.version
                                          and addr in line.network)
        if in_net and any(low <= port <= high for low, high in line.ports):
            verdict = f"redirected to :{p.port}" if line.redirect else "passes (not captured)"
            return f"transparent capture: {verdict} by {line.label}"
    return "transparent capture: not captured (no capture line names it)"
