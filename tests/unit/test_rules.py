"""Filter rules: dst forms, port sets, first match wins, name vs resolved address."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunnel.rules import Action, DstMatcher, MatchedBy, PortSet, Rule, RuleSet


def rule(dst: str, ports: str = "*", action: Action = Action.TUNNEL, rid: str = "r") -> Rule:
    return Rule(rid, DstMatcher(dst), PortSet(ports), action, "gw")


@pytest.mark.parametrize(("pattern", "host", "expected"), [
    ("10.1.0.0/16", "10.1.200.3", True),
    ("10.1.0.0/16", "10.2.0.1", False),
    ("10.1.2.3", "10.1.2.3", True),
    ("fd00::/64", "fd00::5", True),
    ("fd00::/64", "[fd00::5]", True),
    ("*.corp.example", "ftp.corp.example", True),
    ("*.corp.example", "FTP.CORP.EXAMPLE", True),
    ("*.corp.example", "corp.example", False),
    ("ftp?.example", "ftp1.example", True),
    ("*", "anything.at.all", True),
    ("*", "192.0.2.1", True),
    ("re:ftp[0-9]+\\.example", "ftp12.example", True),
    ("re:ftp[0-9]+\\.example", "xftp12.example.org", False),
    ("re:10\\.1\\..*", "10.1.9.9", True),
    ("10.1.0.0/16", "ftp.corp.example", False),
])
def test_dst_forms(pattern: str, host: str, expected: bool) -> None:
    assert DstMatcher(pattern).match_host(host) is expected


@pytest.mark.parametrize(("pattern", "reason"), [
    ("10.1.2.300", "invalid IP"),
    ("10.1.0.0/33", "invalid IP"),
    ("10.1.0.1/16", "has host bits set"),
    ("re:(", "invalid regular expression"),
    ("", "empty destination"),
    ("a b", "white space"),
])
def test_bad_dst_says_why(pattern: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        DstMatcher(pattern)


@pytest.mark.parametrize(("spec", "inside", "outside"), [
    ("21", [21], [20, 22]),
    ("21-25", [21, 23, 25], [20, 26]),
    ("21,2121, 3000-3001", [21, 2121, 3000, 3001], [22, 2999, 3002]),
    ("*", [1, 65535], []),
])
def test_port_sets(spec: str, inside: list[int], outside: list[int]) -> None:
    ports = PortSet(spec)
    assert all(p in ports for p in inside)
    assert not any(p in ports for p in outside)


@pytest.mark.parametrize("spec", ["0", "25-21", "70000", "ftp", "21,", "1-2-3"])
def test_bad_port_sets(spec: str) -> None:
    with pytest.raises(ValueError):
        PortSet(spec)


def test_first_match_wins_in_file_order() -> None:
    rules = RuleSet([
        rule("10.1.2.3", "21", Action.REJECT, "deny-one"),
        rule("10.1.0.0/16", "21", Action.TUNNEL, "corp-ftp"),
        rule("*", "*", Action.DIRECT, "rest"),
    ])
    assert rules.decide("10.1.2.3", 21).rule_id == "deny-one"
    assert rules.decide("10.1.2.4", 21).rule_id == "corp-ftp"
    assert rules.decide("10.1.2.4", 22).rule_id == "rest"


def test_unmatched_defaults_to_reject_and_can_be_direct() -> None:
    only = [rule("10.0.0.0/8", "21")]
    decision = RuleSet(only).decide("192.0.2.1", 21)
    assert (decision.action, decision.rule_id, decision.matched_by) == (
        Action.REJECT, None, MatchedBy.UNMATCHED)
    assert RuleSet(only, Action.DIRECT).decide("192.0.2.1", 21).action is Action.DIRECT
    with pytest.raises(ValueError):
        RuleSet(only, Action.TUNNEL)


def test_host_name_matches_ip_rules_by_its_resolved_address() -> None:
    rules = RuleSet([rule("*.corp.example", "21", rid="by-name"),
                     rule("10.1.0.0/16", "21", rid="by-net")])
    assert rules.wants_resolution("ftp.other.example")
    assert not rules.wants_resolution("10.1.2.3")
    by_name = rules.decide("ftp.corp.example", 21, [ipaddress.ip_address("10.1.2.3")])
    assert (by_name.rule_id, by_name.matched_by) == ("by-name", MatchedBy.NAME)
    by_addr = rules.decide("ftp.other.example", 21, [ipaddress.ip_address("10.1.2.3")])
    assert (by_addr.rule_id, by_addr.matched_by) == ("by-net", MatchedBy.ADDRESS)
    assert "10.1.2.3" in by_addr.describe()
    assert rules.decide("ftp.other.example", 21).rule_id is None


def test_no_resolution_wanted_when_only_name_rules() -> None:
    assert not RuleSet([rule("*.corp.example")]).wants_resolution("ftp.x.example")


@given(st.integers(min_value=1, max_value=65535), st.integers(min_value=1, max_value=65535),
       st.integers(min_value=1, max_value=65535))
def test_property_range_membership(low: int, high: int, port: int) -> None:
    low, high = min(low, high), max(low, high)
    assert (port in PortSet(f"{low}-{high}")) == (low <= port <= high)
