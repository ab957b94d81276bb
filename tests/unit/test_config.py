"""Config: the full contract parses; every error names file, key (with line) and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunnel import config
from tunnel.config import HostKeyPolicy, Listen
from tunnel.errors import ConfigError
from tunnel.rules import Action
from tunnel.socks import AuthMethod

FULL = """
[proxy]
listen = ["127.0.0.1:1080", "[::1]:1081"]
allow_relay = false
unmatched = "reject"
socks5_auth = ["username", "none"]

[[profile]]
id = "jump"
host = "jump.example"
user = "ops"
auth = ["publickey"]
identity_files = ["keys/id_ed25519"]
users = ["ops", "@wheel"]

[[profile]]
id = "gw"
host = ""
port = 2222
user = ""
auth = ["password", "publickey"]
known_hosts = "/etc/tunnel/known_hosts"
host_key_policy = "accept-new"
gateway = "jump"

[[rule]]
id = "corp-ftp"
dst = "10.1.0.0/16"
ports = "21"
action = "tunnel"
profile = "gw"
fallback_to_plain = false

[[rule]]
dst = "*"
ports = "*"
action = "direct"
"""


def test_full_contract_parses(tmp_path: Path) -> None:
    path = tmp_path / "tunnel.toml"
    path.write_text(FULL)
    cfg = config.load(str(path))
    assert cfg.proxy.listen == (Listen("127.0.0.1", 1080), Listen("::1", 1081))
    assert cfg.proxy.socks5_auth == (AuthMethod.USERNAME_PASSWORD, AuthMethod.NO_AUTH)
    jump, gw = cfg.profiles
    assert jump.identity_files == (str(tmp_path / "keys/id_ed25519"),)
    assert gw.user_from_app and gw.port == 2222 and gw.gateway == "jump"
    assert gw.host_key_policy is HostKeyPolicy.ACCEPT_NEW
    first, second = cfg.rules.rules
    assert (first.id, first.action, first.profile) == ("corp-ftp", Action.TUNNEL, "gw")
    assert second.id == "rule#2"


def test_defaults_are_the_safe_ones() -> None:
    cfg = config.parse("")
    assert cfg.proxy.listen == (Listen("127.0.0.1", 1080),)
    assert cfg.proxy.allow_relay is False
    assert cfg.proxy.unmatched is Action.REJECT
    assert cfg.proxy.listen_backlog == 1024
    assert cfg.proxy.max_openings_per_server == 8
    cfg = config.parse('[[profile]]\nid = "p"\n')
    assert cfg.profiles[0].host_key_policy is HostKeyPolicy.STRICT


@pytest.mark.parametrize(("text", "where", "reason"), [
    ("[proxy]\nlisten = [\"1080\"]\n", "f.toml:2: proxy.listen", "not HOST:PORT"),
    ("[proxy]\nallow_relay = \"no\"\n", "f.toml:2: proxy.allow_relay", "expected true or false"),
    ("[proxy]\nunmatched = \"tunnel\"\n", "f.toml:2: proxy.unmatched", "not one of"),
    ("[proxy]\nlisen = []\n", "f.toml:2: proxy.lisen", "unknown key"),
    ("[proxy]\nsocks5_auth = [\"gssapi\"]\n", "proxy.socks5_auth", "none, username"),
    ("[proxy]\nheap_trim_after = -1\n", "f.toml:2: proxy.heap_trim_after", "0 or more"),
    ("[proxy]\nlisten_backlog = 0\n", "proxy.listen_backlog", "from 1 to 65535"),
    ("[proxy]\nmax_openings_per_server = 0\n", "proxy.max_openings_per_server",
     "from 1 to 1024"),
    ("[[profile]]\nhost = \"x\"\n", "profile[1].id", "non-empty id"),
    ("[[profile]]\nid = \"a\"\nport = 70000\n", "f.toml:3: profile[1].port", "not a TCP port"),
    ("[[profile]]\nid = \"a\"\nport = true\n", "profile[1].port", "expected an integer"),
    ("[[profile]]\nid = \"a\"\nkeepalive_count_max = 0\n", "profile[1].keepalive_count_max",
     "1 or more"),
    ("[[profile]]\nid = \"a\"\nchannel_window_mib = 0\n", "profile[1].channel_window_mib",
     "from 1 to 1024"),
    ("[[profile]]\nid = \"a\"\nauth = [\"kerberos\"]\n", "profile[1].auth", "password, publickey"),
    ("[[profile]]\nid = \"a\"\nhost_key_policy = \"yolo\"\n", "profile[1].host_key_policy",
     "strict, accept-new, insecure"),
    ("[[profile]]\nid = \"a\"\ngateway = \"b\"\n", "profile[1].gateway", "no profile has id 'b'"),
    ("[[profile]]\nid = \"a\"\ngateway = \"a\"\n", "profile[1].gateway", "gateway loop: a -> a"),
    ("[[profile]]\nid = \"a\"\n[[profile]]\nid = \"a\"\n", "f.toml:4: profile[2].id",
     "duplicate profile id"),
    ("[[rule]]\ndst = \"10.0.0.0/33\"\naction = \"direct\"\n", "f.toml:2: rule[1].dst",
     "invalid IP"),
    ("[[rule]]\nports = \"99999\"\naction = \"direct\"\n", "rule[1].ports", "1-65535"),
    ("[[rule]]\ndst = \"*\"\n", "rule[1].action", "needs an action"),
    ("[[rule]]\naction = \"teleport\"\n", "rule[1].action", "ftp-tunnel, ftp-sftp"),
    ("[[rule]]\naction = \"tunnel\"\n", "rule[1].profile", "needs a profile id"),
    ("[[rule]]\naction = \"tunnel\"\nprofile = \"nope\"\n", "rule[1].profile",
     "no profile has id"),
    ("[[rule]]\naction = \"direct\"\nfalback_to_plain = true\n", "f.toml:3: rule[1].falback",
     "unknown key"),
    ("[proxy]\ntransparent = [\"1081\"]\n", "f.toml:2: proxy.transparent", "not HOST:PORT"),
    ("[proxy]\ntransparent = [\"127.0.0.1:1080\"]\n", "proxy.transparent",
     "is also a SOCKS listener"),
    ("[proxy]\nsocket_mark = 0\n", "proxy.socket_mark", "from 1 to 4294967295"),
    ("[proxy\n", "f.toml", "TOML syntax"),
    ("profile = 3\n", "profile", "expected a list"),
])
def test_errors_name_file_key_and_reason(text: str, where: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.parse(text, "f.toml")
    message = str(info.value)
    assert where in message and reason in message, message


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(str(tmp_path / "absent.toml"))


def test_example_config_in_repo_is_valid() -> None:
    root = Path(__file__).resolve().parents[2]
    cfg = config.load(str(root / "examples" / "tunnel.toml"))
    assert cfg.rules.rules


def test_group_or_world_writable_config_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tunnel.toml"
    path.write_text("")
    path.chmod(0o664)
    with pytest.raises(ConfigError, match=r"writable by group or others \(mode 0664\)"):
        config.load(str(path))
    path.chmod(0o644)
    assert config.load(str(path)).rules.rules == ()
