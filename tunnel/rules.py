"""Filter rules: (destination host, port, resolved addresses) -> Decision. Pure; first match wins.

`dst` forms (ARCHITECTURE.md config contract):
- an IP address ("10.1.2.3", "fd00::5") or a CIDR network ("10.1.0.0/16");
- a host glob, case-insensitive ("*.corp.example", "ftp?.example.com", "*" for anything);
- "re:<regex>", matched in full and case-insensitively against the host as the client named it
  and against each resolved address.

A request may name its destination by host name (SOCKS4a, SOCKS5 ATYP 3). IP and CIDR rules
then match the addresses the name resolves to, if the caller resolved it; the Decision says
whether it matched by name or by address, and `tunnel explain` prints that.
"""

from __future__ import annotations

import enum
import fnmatch
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

from tunnel.lasthop import PLAIN, LastHopTls
from tunnel.users import LocalUser, UserSet

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Action(enum.Enum):
    FTP_TUNNEL = "ftp-tunnel"
    FTP_SFTP = "ftp-sftp"
    TUNNEL = "tunnel"
    DIRECT = "direct"
    REJECT = "reject"

    @property
    def needs_profile(self) -> bool:
        return self in (Action.FTP_TUNNEL, Action.FTP_SFTP, Action.TUNNEL)


class MatchedBy(enum.Enum):
    NAME = "name"  # the host string as the client sent it (name or IP literal)
    ADDRESS = "address"  # an address the client's host name resolved to
    UNMATCHED = "unmatched"  # no rule matched; proxy.unmatched decided


class DstMatcher:
    """One compiled `dst` pattern."""

    def __init__(self, pattern: str) -> None:
        """Raises ValueError with a reason a user can act on."""
        self.pattern = pattern
        self.network: IPNetwork | None = None
        self.regex: re.Pattern[str] | None = None
        self.glob: str | None = None
        if pattern.startswith("re:"):
            try:
                self.regex = re.compile(pattern[3:], re.IGNORECASE)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {pattern[3:]!r}: {exc}") from None
            return
        if not pattern:
            raise ValueError('empty destination; use "*" to match any host')
        # Anything shaped like an address must be a valid one: "10.1.2.300" is a typo, not a
        # host glob that silently never matches.
        numeric = all(ch.isdigit() or ch == "." for ch in pattern)
        if numeric or "/" in pattern or ":" in pattern:
            try:
                self.network = ipaddress.ip_network(pattern, strict=True)
            except ValueError as exc:
                raise ValueError(f"invalid IP address or network {pattern!r}: {exc}") from None
            return
        if any(ch.isspace() for ch in pattern):
            raise ValueError(f"host pattern {pattern!r} contains white space")
        self.glob = pattern.lower()

    @property
    def names_addresses(self) -> bool:
        """True if this pattern can match a resolved address (so resolving a name may matter)."""
        return self.network is not None or self.regex is not None

    def match_host(self, host: str) -> bool:
        """Match the destination exactly as the client sent it."""
        if self.network is not None:
            addr = _parse_ip(host)
            return addr is not None and addr in self.network
        if self.regex is not None:
            return self.regex.fullmatch(host) is not None
        assert self.glob is not None
        return fnmatch.fnmatchcase(host.lower(), self.glob)

    def match_address(self, addr: IPAddress) -> bool:
        if self.network is not None:
            return addr in self.network
        if self.regex is not None:
            return self.regex.fullmatch(str(addr)) is not None
        return False


def _parse_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


class PortSet:
    """`ports`: "21", "21-25", "21,2121,3000-3010", or "*" / "1-65535" for all."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.ranges: list[tuple[int, int]] = []
        if spec.strip() == "*":
            self.ranges.append((1, 65535))
            return
        for part in spec.split(","):
            part = part.strip()
            if not part:
                raise ValueError(f"empty element in port list {spec!r}")
            low_text, sep, high_text = part.partition("-")
            try:
                low = int(low_text)
                high = int(high_text) if sep else low
            except ValueError:
                raise ValueError(f"{part!r} is not a port or a range like 21-25") from None
            if not (1 <= low <= high <= 65535):
                raise ValueError(f"port range {part!r} must lie within 1-65535, low to high")
            self.ranges.append((low, high))

    def __contains__(self, port: int) -> bool:
        return any(low <= port <= high for low, high in self.ranges)


@dataclass(frozen=True)
class Rule:
    id: str
    dst: DstMatcher
    ports: PortSet
    action: Action
    profile: str | None = None
    fallback_to_plain: bool = False
    users: UserSet | None = None  # only these local users' connections match (users.py)
    last_hop: LastHopTls = PLAIN  # ftp-tunnel: FTPS to the FTP server (lasthop.py)


@dataclass(frozen=True)
class Decision:
    action: Action
    rule_id: str | None
    matched_by: MatchedBy
    profile: str | None = None
    fallback_to_plain: bool = False
    address: IPAddress | None = None  # the resolved address that matched, if any
    # The first rule that matched the destination but is for other local users.
    passed_over: str | None = None
    last_hop: LastHopTls = PLAIN

    def describe(self) -> str:
        if self.rule_id is None:
            other = (f" (rule {self.passed_over!r} is for other local users)"
                     if self.passed_over else "")
            return f"no rule matched{other}; proxy.unmatched = {self.action.value!r}"
        how = (
            f"by resolved address {self.address}"
            if self.matched_by is MatchedBy.ADDRESS
            else "by the destination as sent"
        )
        return f"rule {self.rule_id!r} matched {how}"


class RuleSet:
    def __init__(self, rules: Sequence[Rule], unmatched: Action = Action.REJECT) -> None:
        if unmatched not in (Action.REJECT, Action.DIRECT):
            raise ValueError("unmatched must be reject or direct")
        self.rules = tuple(rules)
        self.unmatched = unmatched

    def wants_resolution(self, host: str) -> bool:
        """Whether resolving this destination could change the decision: it is a name and
        some rule matches addresses."""
        return _parse_ip(host) is None and any(r.dst.names_addresses for r in self.rules)

    def decide(self, host: str, port: int, addresses: Sequence[IPAddress] = (),
               user: LocalUser | None = None) -> Decision:
        """First match wins, in file order. Each rule is tried against the destination as
        sent, then against each resolved address, before the next rule is tried. A rule
        with `users` matches only the connections of those local users."""
        passed_over: str | None = None
        for rule in self.rules:
            if port not in rule.ports:
                continue
            how: tuple[MatchedBy, IPAddress | None] | None = None
            if rule.dst.match_host(host):
                how = (MatchedBy.NAME, None)
            else:
                found = next((a for a in addresses if rule.dst.match_address(a)), None)
                if found is not None:
                    how = (MatchedBy.ADDRESS, found)
            if how is None:
                continue
            if rule.users is not None and not rule.users.matches(user):
                passed_over = passed_over or rule.id
                continue
            return self._decision(rule, *how)
        return Decision(self.unmatched, None, MatchedBy.UNMATCHED, passed_over=passed_over)

    @staticmethod
    def _decision(rule: Rule, how: MatchedBy, addr: IPAddress | None = None) -> Decision:
        return Decision(rule.action, rule.id, how, rule.profile, rule.fallback_to_plain, addr,
                        last_hop=rule.last_hop)
