"""Local users, the pure parts: the inet_diag request and reply, /proc/net/tcp, the
`users` lists of rules and profiles (properties), rules that pass over other users, the
config's refusal of an unrestricted key, and data connections bound to their user."""

from __future__ import annotations

import socket
import struct
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunnel import config
from tunnel.datachannels import DataExpectations
from tunnel.errors import ConfigError
from tunnel.localuser import (
    NLMSG_ERROR,
    SOCK_DIAG_BY_FAMILY,
    LocalUsers,
    diag_request,
    diag_uid,
    proc_net_uid,
    proc_net_uids_to,
)
from tunnel.rules import Action, DstMatcher, PortSet, Rule, RuleSet
from tunnel.users import LocalUser, UserSet

ALICE = LocalUser(1001, "alice", frozenset({"alice", "ftpbatch"}))
BOB = LocalUser(1002, "bob", frozenset({"bob"}))


# -- the kernel's answers -------------------------------------------------------------------------
def test_the_diag_request_names_one_socket_exactly() -> None:
    raw = diag_request(("127.0.0.1", 40000), ("127.0.0.1", 1080), seq=7)
    length, kind, flags, seq, _ = struct.unpack_from("=IHHII", raw)
    assert (length, kind, flags, seq) == (len(raw), SOCK_DIAG_BY_FAMILY, 1, 7) and length == 72
    family, protocol = raw[16], raw[17]
    assert (family, protocol) == (socket.AF_INET, socket.IPPROTO_TCP)
    sport, dport = struct.unpack_from("!HH", raw, 24)
    assert (sport, dport) == (40000, 1080)
    assert raw[28:32] == socket.inet_aton("127.0.0.1") and raw[44:48] == socket.inet_aton(
        "127.0.0.1")
    assert struct.unpack_from("=II", raw, 64) == (0xFFFFFFFF, 0xFFFFFFFF)  # no cookie
    # An IPv4 client seen on an IPv6 socket is asked for as IPv4.
    assert diag_request(("::ffff:127.0.0.1", 1), ("127.0.0.1", 2))[16] == socket.AF_INET
    with pytest.raises(ValueError, match="one address family"):
        diag_request(("::1", 1), ("127.0.0.1", 2))


def test_the_uid_is_read_from_the_reply_and_an_error_is_none() -> None:
    body = bytes(4 + 48 + 12) + struct.pack("=II", 1001, 12345)
    reply = struct.pack("=IHHII", 16 + len(body), SOCK_DIAG_BY_FAMILY, 0, 1, 0) + body
    assert diag_uid(reply) == 1001
    error = struct.pack("=IHHII", 36, NLMSG_ERROR, 0, 1, 0) + struct.pack("=i", -2) + bytes(16)
    assert diag_uid(error) is None
    with pytest.raises(ValueError):
        diag_uid(b"\x00" * 4)


def test_proc_net_tcp_gives_the_same_uid() -> None:
    little = sys.byteorder == "little"
    local = "0100007F:9C40" if little else "7F000001:9C40"
    remote = "0100007F:0438" if little else "7F000001:0438"
    table = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt"
             "   uid  timeout inode\n"
             f"   0: {remote} {local} 01 00000000:00000000 00:00000000 00000000  0 0 1\n"
             f"   1: {local} {remote} 01 00000000:00000000 00:00000000 00000000  1001 0 2\n")
    assert proc_net_uid(table, ("127.0.0.1", 40000), ("127.0.0.1", 1080)) == 1001
    assert proc_net_uid(table, ("127.0.0.1", 40001), ("127.0.0.1", 1080)) is None


def _proc_line(n: int, local: tuple[str, int], remote: tuple[str, int], state: str,
               uid: int) -> str:
    def hexed(address: str, port: int) -> str:
        word = struct.unpack("=I", bytes(int(x) for x in address.split(".")))[0]
        return f"{word:08X}:{port:04X}"
    return (f"   {n}: {hexed(*local)} {hexed(*remote)} {state} 00000000:00000000 "
            f"00:00000000 00000000  {uid} 0 {n}\n")


def test_a_nat_remapped_port_is_found_by_its_destination_when_one_user_owns_it() -> None:
    """NAT gave a redirected connection another source port: the client's socket is still
    among the established ones from its address to the original destination."""
    head = "  sl  local_address rem_address   st ...\n"
    ftp = ("10.77.2.2", 21)
    own = _proc_line(0, ("10.77.1.1", 52202), ftp, "01", 1001)
    table = head + own + _proc_line(1, ("10.77.1.1", 40000), ftp, "06", 0)  # TIME_WAIT
    assert proc_net_uid(table, ("10.77.1.1", 61000), ftp) is None  # the remapped port
    assert proc_net_uids_to(table, "10.77.1.1", ftp) == {1001}
    # Another user's connection to the same server: ambiguous, so unknown (owner_uid
    # then returns None and a users rule refuses; it never names the wrong user).
    table += _proc_line(2, ("10.77.1.1", 52203), ftp, "01", 1002)
    assert proc_net_uids_to(table, "10.77.1.1", ftp) == {1001, 1002}
    assert proc_net_uids_to(table, "10.77.1.2", ftp) == set()


def test_names_are_remembered_for_a_while() -> None:
    now = [0.0]
    users = LocalUsers(ttl=60, clock=lambda: now[0])
    first = users.describe(0)
    assert first.name == "root" and users.describe(0) is first
    now[0] = 61.0
    assert users.describe(0) is not first


# -- `users` lists --------------------------------------------------------------------------------
names = st.sampled_from(["alice", "bob", "carol", "1001"])
groups = st.sampled_from(["ftpbatch", "wheel", "bob"])
items = st.lists(st.one_of(names, groups.map(lambda g: "@" + g), st.just("*")), min_size=1,
                 max_size=5)
users = st.one_of(st.none(), st.builds(
    LocalUser, st.sampled_from([0, 1001, 1002]), names,
    st.frozensets(groups, max_size=3)))


@given(items, users)
def test_a_star_matches_anyone_and_an_unknown_user_only_a_star(spec: list[str],
                                                               user: LocalUser | None) -> None:
    matched = UserSet(spec).matches(user)
    if "*" in spec:
        assert matched
    elif user is None:
        assert not matched


@given(items, items, users)
def test_naming_more_never_matches_fewer(spec: list[str], more: list[str],
                                         user: LocalUser | None) -> None:
    if UserSet(spec).matches(user):
        assert UserSet(spec + more).matches(user)


@given(users)
def test_a_name_a_uid_or_a_group_matches_exactly_their_users(user: LocalUser | None) -> None:
    if user is None:
        return
    assert UserSet([user.name]).matches(user)
    assert UserSet([str(user.uid)]).matches(user)
    for group in ("ftpbatch", "wheel"):
        assert UserSet(["@" + group]).matches(user) == (group in user.groups)
    assert not UserSet(["nobody-else"]).matches(user)


@pytest.mark.parametrize("bad", [[], [""], ["@"], ["al ice"], ["a:b"]])
def test_malformed_users_lists_are_refused(bad: list[str]) -> None:
    with pytest.raises(ValueError):
        UserSet(bad)


# -- rules and profiles ---------------------------------------------------------------------------
def test_a_rule_for_other_users_is_passed_over() -> None:
    rules = RuleSet([
        Rule("batch", DstMatcher("10.0.0.0/8"), PortSet("21"), Action.FTP_TUNNEL, "key",
             users=UserSet(["@ftpbatch"])),
        Rule("others", DstMatcher("10.0.0.0/8"), PortSet("21"), Action.FTP_TUNNEL, "pw"),
    ])
    assert rules.decide("10.1.1.1", 21, (), ALICE).rule_id == "batch"
    assert rules.decide("10.1.1.1", 21, (), BOB).rule_id == "others"
    assert rules.decide("10.1.1.1", 21, (), None).rule_id == "others"  # relayed: unknown
    only = RuleSet([rules.rules[0]])
    refused = only.decide("10.1.1.1", 21, (), BOB)
    assert refused.action is Action.REJECT
    assert "rule 'batch' is for other local users" in refused.describe()


KEY_PROFILE = """
[[profile]]
id = "batch"
user = "ftpbatch"
auth = ["publickey"]
identity_files = ["/etc/ftp-ssh-tunnel/batch_key"]
known_hosts = "/dev/null"
"""


def test_a_key_profile_must_say_who_may_use_it() -> None:
    with pytest.raises(ConfigError, match=r"profile\[1\]\.users: profile 'batch' logs in with "
                                          r"a key file"):
        config.parse(KEY_PROFILE, "f.toml")
    ok = config.parse(KEY_PROFILE + 'users = ["*"]\n', "f.toml")
    assert ok.profiles[0].users is not None and ok.profiles[0].users.anyone
    with pytest.raises(ConfigError, match=r"rule\[1\]\.users"):
        config.parse('[[rule]]\naction = "reject"\nusers = []\n', "f.toml")


def test_a_data_connection_is_only_its_control_sessions_users() -> None:
    expected: DataExpectations[str] = DataExpectations()
    expected.add("ctl", "127.0.0.1", {"ftp"}, 40000, "ftp", now=0.0, client_uid=1001)
    assert expected.take("127.0.0.1", "ftp", 40000, 1.0, client_uid=1002) is None  # bob
    assert expected.take("127.0.0.1", "ftp", 40000, 1.0, client_uid=1001) is not None
