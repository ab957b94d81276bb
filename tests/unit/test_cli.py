"""`tunnel check` and `tunnel explain` as a user runs them (in process; no network)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tunnel.cli import main

CONFIG = """
[[profile]]
id = "jump"
host = "jump.example"
user = "ops"

[[profile]]
id = "gw"
host = "gw.example"
user = ""
gateway = "jump"

[[profile]]
id = "self"
host = ""
user = "ftp"
auth = ["publickey"]

[[rule]]
id = "corp"
dst = "10.1.0.0/16"
ports = "21"
action = "tunnel"
profile = "gw"
fallback_to_plain = true

[[rule]]
id = "on-host"
dst = "*.files.example"
ports = "21"
action = "tunnel"
profile = "self"
"""


@pytest.fixture
def cfg(tmp_path: Path) -> str:
    path = tmp_path / "t.toml"
    path.write_text(CONFIG)
    return str(path)


def test_check_ok_and_bad(cfg: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", cfg]) == 0
    assert "OK (3 profiles, 2 rules" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\naction = "tunnel"\nprofile = "none"\n')
    assert main(["check", "-c", str(bad)]) == 2
    assert "bad.toml:3: rule[1].profile: no profile has id 'none'" in capsys.readouterr().err


def test_explain_third_host_via_gateway(cfg: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "-c", cfg, "10.1.2.3:21"]) == 0
    out = capsys.readouterr().out
    assert "rule 'corp' matched by the destination as sent" in out
    assert "ssh server: gw.example:22 (profile 'gw')" in out
    assert "via gateway jump.example:22 (profile 'jump')" in out
    assert "from the application" in out
    assert "last hop: CLEAR from gw.example to 10.1.2.3:21" in out
    assert "fallback: connects directly" in out


def test_explain_ssh_host_is_destination(cfg: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "-c", cfg, "--no-resolve", "ftp.files.example:21"]) == 0
    out = capsys.readouterr().out
    assert "ssh server: ftp.files.example:22 (profile 'self', the SOCKS destination itself)" in out
    assert "ssh user: 'ftp' (from the profile)" in out
    assert "last hop: inside the SSH server" in out


def test_explain_unmatched_and_name_resolution(
        cfg: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "-c", cfg, "--no-resolve", "other.example:21"]) == 0
    out = capsys.readouterr().out
    assert "not resolved (--no-resolve)" in out
    assert "no rule matched; proxy.unmatched = 'reject'" in out
    assert main(["explain", "-c", cfg, "localhost:22"]) == 0
    assert "resolution: " in capsys.readouterr().out


def test_serve_check_binds_and_exits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import resource
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    path = tmp_path / "t.toml"
    control = tmp_path / "ctl.sock"
    path.write_text(f'[proxy]\nlisten = ["127.0.0.1:{port}"]\n'
                    f'audit_log = "{tmp_path / "audit.jsonl"}"\n'
                    f'control_socket = "{control}"\n')
    core_limit = resource.getrlimit(resource.RLIMIT_CORE)
    assert main(["serve", "--check", "-c", str(path)]) == 0
    assert "would start" in capsys.readouterr().out
    # A dry start leaves its process as it found it: a real start forbids cores for good,
    # and in here that would have been the test runner's own limit.
    assert resource.getrlimit(resource.RLIMIT_CORE) == core_limit
    with socket.socket() as busy:  # a port in use: the dry start says so and fails
        busy.bind(("127.0.0.1", port))
        busy.listen()
        assert main(["serve", "--check", "-c", str(path)]) == 1
    assert "cannot serve" in capsys.readouterr().err
    assert not control.exists()  # the control socket, made before the listeners, is gone


@pytest.mark.parametrize("example", sorted(
    (Path(__file__).resolve().parents[2] / "examples").glob("*.toml")), ids=lambda p: p.name)
def test_every_example_passes_tunnel_check(example: Path) -> None:
    """One example per documented setup; each must validate as shipped."""
    done = subprocess.run([sys.executable, "-m", "tunnel.cli", "check", "-c", str(example)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and ": OK (" in done.stdout, done.stdout + done.stderr
