"""Tectia XML import: the documented example and a file full of things to carry or flag."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunnel import config
from tunnel.cli import main
from tunnel.rules import Action
from tunnel.tectia import convert

DATA = Path(__file__).parent / "data"


def test_documented_example_becomes_a_working_ftp_tunnel_config() -> None:
    text = convert((DATA / "tectia-documented.xml").read_text(), "tectia-documented.xml")
    cfg = config.parse(text)
    assert [str(listen) for listen in cfg.proxy.listen] == ["127.0.0.1:1080"]
    assert cfg.proxy.allow_relay is False
    (profile,) = cfg.profiles
    assert (profile.id, profile.host, profile.port, profile.user) == ("id1", "", 22, "")
    assert profile.auth == ("password",)  # password and keyboard-interactive
    (rule,) = cfg.rules.rules
    assert (rule.action, rule.profile, rule.fallback_to_plain) == (Action.FTP_TUNNEL, "id1",
                                                                   False)
    assert rule.dst.match_host("any.host.example") and 21 in rule.ports and 22 not in rule.ports
    assert "keyboard-interactive: answered with the password" in text


def test_everything_not_carried_is_said() -> None:
    text = convert((DATA / "tectia-mixed.xml").read_text(), "tectia-mixed.xml")
    cfg = config.parse(text)
    assert [str(listen) for listen in cfg.proxy.listen] == ["10.0.0.5:1081"]
    assert cfg.proxy.allow_relay is True
    ids = [p.id for p in cfg.profiles]
    assert ids == ["jump", "gw", "gw-from-app-1"]
    gw, derived = cfg.profile("gw"), cfg.profile("gw-from-app-1")
    assert (gw.port, gw.user, gw.gateway, gw.auth) == (2222, "batch", "jump", ("publickey",))
    # username-from-app on a profile with a fixed user: a copy with user "" serves the rule.
    assert (derived.user, derived.host, derived.gateway) == ("", "ssh-gw.corp.example", "jump")
    first, direct, block = cfg.rules.rules
    assert first.profile == "gw-from-app-1" and first.fallback_to_plain
    assert first.dst.match_host("10.1.2.3") and not first.dst.match_host("10.2.0.1")
    assert direct.action is Action.DIRECT and block.action is Action.REJECT
    for said in ("NOT CARRIED: authentication method <auth-gssapi>",
                 "NOT CARRIED: connect-on-startup",
                 "NOT CARRIED: static tunnel of type 'local'",
                 "NOT CARRIED: rule 4 with action 'telnet-magic'"):
        assert said in text, said


def test_bad_xml_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="not well-formed XML"):
        convert("<secsh-broker>", "broken.xml")


def test_cli_writes_a_file_that_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "imported.toml"
    assert main(["import-tectia", str(DATA / "tectia-documented.xml"), "-o", str(out)]) == 0
    assert main(["check", "-c", str(out)]) == 0
    assert "OK (1 profiles, 1 rules" in capsys.readouterr().out
