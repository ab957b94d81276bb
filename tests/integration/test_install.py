"""A production host installs the proxy alone: the wheel's `dependencies` (asyncssh), not the
testbed's (scapy, pyftpdlib, python-socks, docker, testcontainers: the `testbed` extra)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from testbed.net import free_port

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.integration
def test_the_wheel_without_extras_runs_the_proxy(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels),
                    str(REPO)], check=True, timeout=300, capture_output=True)
    wheel = next(wheels.glob("ftp_ssh_tunnel-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = venv / "bin" / "pip"
    subprocess.run([str(pip), "install", "-q", str(wheel)], check=True, timeout=600,
                   capture_output=True)
    installed = subprocess.run([str(pip), "list", "--format=freeze"], check=True,
                               capture_output=True, text=True).stdout.lower()
    assert "asyncssh==" in installed
    for testbed_only in ("scapy", "pyftpdlib", "python-socks", "testcontainers", "docker=="):
        assert testbed_only not in installed, f"{testbed_only} came with the proxy"
    tunnel = venv / "bin" / "tunnel"
    assert subprocess.run([str(tunnel), "--help"], capture_output=True, timeout=60
                          ).returncode == 0
    config = tmp_path / "tunnel.toml"
    config.write_text(f'[proxy]\nlisten = ["127.0.0.1:{free_port()}"]\n\n[[rule]]\n'
                      'dst = "*"\naction = "reject"\n')
    checked = subprocess.run([str(tunnel), "serve", "--check", "-c", str(config)],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The daemon's imports stop short of the testbed (nor is its runtime there).
    probe = ("import sys, tunnel.cli, tunnel.server, tunnel.ftp_sftp; "
             "assert not any(m.split('.')[0] == 'testbed' for m in sys.modules), 'testbed'")
    assert subprocess.run([str(venv / "bin" / "python"), "-c", probe], timeout=60,
                          cwd=tmp_path).returncode == 0
