"""Transparent capture, the pure parts: the original destination's sockaddr, the ruleset
`tunnel nft` derives from the rules (and what `tunnel explain` says of it), the set
elements the daemon adds, and the testbed's default route and capture faults."""

from __future__ import annotations

import os
import re
import shutil
import socket
import struct
import subprocess
import sys

import pytest

from testbed import runner
from testbed.matrix import render
from testbed.topology import TopologyError, build
from tunnel import config, nft
from tunnel.nftset import active_element, elements
from tunnel.transparent import parse_original_dst

BASE = """
[proxy]
transparent = ["127.0.0.1:1081"]
{proxy}
[[profile]]
id = "gw"
host = "10.0.2.2"
known_hosts = "/dev/null"
{rules}
"""
FTP = """
[[rule]]
id = "ftp"
dst = "10.0.3.0/24"
ports = "21,2121"
action = "ftp-tunnel"
profile = "gw"
"""
LAN_DIRECT = """
[[rule]]
id = "lan"
dst = "10.0.9.0/24"
action = "direct"
"""
BY_NAME = """
[[rule]]
id = "byname"
dst = "*.corp.example"
ports = "990"
action = "ftp-tunnel"
profile = "gw"
"""


def cfg(rules: str = FTP, proxy: str = "") -> config.Config:
    text = BASE.format(proxy=proxy, rules=rules)
    if "transparent =" in proxy:  # the test's own listeners instead
        text = text.replace('transparent = ["127.0.0.1:1081"]\n', "", 1)
    return config.parse(text, "t.toml")


# -- SO_ORIGINAL_DST ----------------------------------------------------------------------------
def sockaddr_in(host: str, port: int) -> bytes:
    return (socket.AF_INET.to_bytes(2, sys.byteorder) + struct.pack("!H", port)
            + socket.inet_aton(host) + bytes(8))


def test_an_ipv4_original_destination_is_read_in_network_order() -> None:
    assert parse_original_dst(sockaddr_in("10.77.2.2", 21)) == ("10.77.2.2", 21)
    assert parse_original_dst(sockaddr_in("192.0.2.1", 65535)) == ("192.0.2.1", 65535)


def test_an_ipv6_original_destination() -> None:
    raw = (socket.AF_INET6.to_bytes(2, sys.byteorder) + struct.pack("!H", 2121) + bytes(4)
           + socket.inet_pton(socket.AF_INET6, "fd77:0:2::2") + bytes(4))
    assert parse_original_dst(raw) == ("fd77:0:2::2", 2121)


@pytest.mark.parametrize("raw", [b"", bytes(6), (99).to_bytes(2, sys.byteorder) + bytes(14)])
def test_a_sockaddr_of_no_known_family_is_refused(raw: bytes) -> None:
    with pytest.raises(ValueError, match="sockaddr"):
        parse_original_dst(raw)


# -- the plan and the script ----------------------------------------------------------------------
def test_rules_become_capture_lines_in_file_order() -> None:
    plan = nft.plan(cfg(LAN_DIRECT + FTP + BY_NAME))
    assert [(line.label, line.redirect) for line in plan.lines] == [
        ("rule lan (direct)", False),
        ("rule ftp (ftp-tunnel)", True),
        # unmatched = reject (the default): every capturing rule's ports, anywhere,
        # the name rule's included: refused by the proxy rather than sent in clear
        ("unmatched = reject: the rules' ports, any other destination", True),
    ]
    assert plan.lines[-1].ports == ((21, 21), (990, 990), (2121, 2121))
    assert plan.lines[-1].network is None
    assert plan.warnings and "byname" in plan.warnings[0]  # a name cannot be captured


def test_unmatched_direct_captures_only_what_the_rules_name() -> None:
    plan = nft.plan(cfg(FTP, proxy='unmatched = "direct"'))
    assert [line.label for line in plan.lines] == ["rule ftp (ftp-tunnel)"]


def test_the_proxy_never_captures_itself_and_loopback_is_never_taken() -> None:
    text = nft.script(nft.plan(cfg()), "t.toml")
    output_rules = [line for line in text.splitlines()
                    if line.startswith("add rule inet ftp_ssh_tunnel output")]
    # The mark's `return` is the output chain's first rule: nothing before it can redirect.
    assert output_rules[0].endswith("meta mark 0x1080 return comment \"the proxy's own "
                                    "connections\"")
    assert "ip daddr 127.0.0.0/8 return" in output_rules[1]
    assert output_rules[-1].endswith("meta l4proto tcp jump capture")
    redirects = [line for line in text.splitlines() if "redirect" in line]
    assert redirects and all(line.split("redirect to ")[1].startswith(":1081 ")
                             or line.endswith(":1081") for line in redirects)


def test_the_script_never_deletes_the_table_it_reloads() -> None:
    """A reload keeps the data sets' elements and live redirected sessions (see nft.py)."""
    text = nft.script(nft.plan(cfg()), "t.toml")
    assert "delete table" not in text
    assert "flush chain inet ftp_ssh_tunnel capture" in text
    assert text.rstrip().endswith("delete chain inet ftp_ssh_tunnel prerouting")
    assert "delete table inet ftp_ssh_tunnel" in nft.delete_script()


def test_a_socket_mark_of_the_config_is_the_one_the_script_lets_pass() -> None:
    text = nft.script(nft.plan(cfg(proxy="socket_mark = 0x77")), "t.toml")
    assert "meta mark 0x77 return" in text


def test_gateway_mode_takes_routed_clients_on_one_interface() -> None:
    plan = nft.plan(cfg(proxy='allow_relay = true\ntransparent = ["0.0.0.0:1082"]'), "eth1")
    text = nft.script(plan, "t.toml")
    assert 'add rule inet ftp_ssh_tunnel prerouting iifname "eth1" meta l4proto tcp jump ' \
           'capture' in text
    assert "redirect to :1082" in text and "chain output" not in text.split("delete chain")[0]


@pytest.mark.parametrize(("proxy", "gateway", "reason"), [
    ('transparent = []', "", "no transparent listener"),
    ('transparent = ["0.0.0.0:1081"]', "eth1", "set [proxy] allow_relay = true"),
    ('allow_relay = true\ntransparent = ["127.0.0.1:1081"]', "eth1",
     "needs a transparent listener off loopback"),
    ('transparent = ["10.0.0.1:1081"]', "", "local mode needs a transparent listener on "
     "loopback"),
])
def test_a_capture_that_cannot_work_is_refused_with_the_reason(proxy: str, gateway: str,
                                                               reason: str) -> None:
    text = BASE.replace('transparent = ["127.0.0.1:1081"]\n', "").format(proxy=proxy, rules=FTP)
    with pytest.raises(nft.NftConfigError, match=re.escape(reason)):
        nft.plan(config.parse(text, "t.toml"), gateway)


@pytest.mark.parametrize(("host", "port", "said"), [
    ("10.0.3.7", 21, "redirected to :1081 by rule ftp (ftp-tunnel)"),
    ("10.0.3.7", 80, "not captured (no capture line names it)"),
    ("10.0.9.5", 21, "passes (not captured) by rule lan (direct)"),
    ("192.0.2.1", 2121, "redirected to :1081 by unmatched = reject"),
    ("127.0.0.1", 21, "not captured (a loopback destination)"),
    ("ftp.example", 21, "not decidable for a name"),
])
def test_explain_walks_the_same_lines_as_the_kernel(host: str, port: int, said: str) -> None:
    assert said in nft.captured_by(nft.plan(cfg(LAN_DIRECT + FTP)), host, port)


@pytest.mark.skipif(shutil.which("nft") is None, reason="needs nft (Debian: nftables)")
@pytest.mark.skipif(os.geteuid() != 0, reason="nft -c needs CAP_NET_ADMIN (run as root)")
def test_the_kernel_accepts_both_scripts() -> None:
    for gateway, proxy in (("", ""), ("eth0", 'allow_relay = true\ntransparent = '
                                                '["0.0.0.0:1081"]')):
        text = nft.script(nft.plan(cfg(LAN_DIRECT + FTP + BY_NAME, proxy), gateway), "t")
        checked = subprocess.run(["nft", "-c", "-f", "-"], input=text, text=True,
                                 capture_output=True, check=False)
        assert checked.returncode == 0, checked.stderr


# -- the set elements ---------------------------------------------------------------------------
def test_one_element_per_address_of_the_clients_family() -> None:
    got = elements("10.77.1.1", {"10.77.2.2", "ftp.example", "127.0.0.1", "fd00::1"}, 40000)
    assert got == {"data4": ["10.77.1.1 . 10.77.2.2 . 40000"]}  # no timeout: see nftset.py
    assert elements("::ffff:10.0.0.1", {"10.0.0.2"}, 5) == {"data4": ["10.0.0.1 . 10.0.0.2 . 5"]}
    assert elements("fd77::1", {"fd77::2", "10.0.0.2"}, 7) == {"data6": ["fd77::1 . fd77::2 . 7"]}
    assert elements("not-an-address", {"10.0.0.2"}, 7) == {}


def test_an_active_connection_leaves_from_the_ftp_servers_address() -> None:
    assert active_element("10.77.1.1", 40123, "10.77.2.2") == (
        "active4", "10.77.1.1 . 40123", "10.77.2.2")
    assert active_element("fd77::1", 7, "fd77:0:2::2") == ("active6", "fd77::1 . 7",
                                                           "fd77:0:2::2")
    assert active_element("10.77.1.1", 7, "fd77::2") is None  # families differ
    text = nft.script(nft.plan(cfg()), "t.toml")
    # Only the daemon's own (marked) connections are given the server's address.
    assert ("add rule inet ftp_ssh_tunnel postrouting meta mark 0x1080 snat ip to ip daddr . "
            "tcp dport map @active4") in text


# -- the testbed ----------------------------------------------------------------------------------
def test_a_host_behind_a_gateway_gets_a_default_route_through_it() -> None:
    topo = build([{"name": "c", "gateway": "g"}, {"name": "g", "forward": True}, {"name": "s"}],
                 [{"name": "lan", "hosts": ["c", "g"]}, {"name": "wan", "hosts": ["g", "s"]}])
    routes = [(str(net), via) for net, via in topo.routes("c")]
    assert ("0.0.0.0/0", topo.address("g", "lan")) in routes
    with pytest.raises(TopologyError, match="is not a neighbour"):
        build([{"name": "c", "gateway": "s"}, {"name": "g"}, {"name": "s"}],
              [{"name": "lan", "hosts": ["c", "g"]}, {"name": "wan", "hosts": ["g", "s"]}])


def test_break_capture_keeps_the_redirects_but_not_the_data_sets() -> None:
    loaded = nft.script(nft.plan(cfg()), "t.toml")
    broken = runner.without_data_sets(loaded)
    assert "@data4" not in broken and "set data4" not in broken
    lines = broken.splitlines()
    assert lines.index("delete set inet ftp_ssh_tunnel data4") > max(
        n for n, line in enumerate(lines) if line.startswith("flush chain"))
    assert "ip daddr 10.0.3.0/24 tcp dport { 21, 2121 } redirect to :1081" in broken


def test_the_transparent_matrix_has_no_socks_and_rules_by_address() -> None:
    text = render("vsftpd", transparent=True)
    assert 'name = "matrix-transparent-vsftpd"' in text and 'transparent = "local"' in text
    assert 'dst = "ftp"' not in text  # a redirected connection never carries the name
