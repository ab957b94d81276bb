"""Transparent listeners on a real daemon, in the root network namespace (the scenarios
transparent-* run the kernel's redirect itself, in namespaces of their own): every
connection the daemon opens carries the socket mark the ruleset lets pass, a connection
straight to the listener is reset, and without CAP_NET_ADMIN the daemon will not start."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
from pathlib import Path

from testbed.net import free_port
from testbed.proxy import tunnel_argv
from testbed.services.sshd import Sshd
from testbed.socks_client import socks5_connect

from .conftest import FtpSite, ProxyFactory, require
from .test_proxy import _wait_audit, profile_toml, rule_toml

MARK = 0x1080


def transparent_keys() -> str:
    return f'transparent = ["127.0.0.1:{free_port("127.0.0.1")}"]'


def marks_towards(port: int) -> list[str]:
    """The fwmark of each established connection to this local port, as `ss -e` shows."""
    shown = subprocess.run(["ss", "-Htnie", "state", "established", "dport", f"= :{port}"],
                           capture_output=True, text=True, check=True).stdout
    return [word.split(":", 1)[1] if word.startswith("fwmark:") else "none"
            for line in shown.splitlines() if not line.startswith("\t")
            for word in [next((w for w in line.split() if w.startswith("fwmark:")),
                              "none")]]


def test_every_connection_the_daemon_opens_carries_the_mark(
        start_proxy: ProxyFactory, sshd: Sshd, keys: Path, known_hosts: Path,
        ftp_site: FtpSite) -> None:
    """The loop guard's half in the daemon: the direct upstream and the SSH connection
    both carry the mark (the other half is the ruleset's first rule, test_transparent)."""
    require("ss")
    body = (profile_toml(sshd, keys, known_hosts)
            + rule_toml("localhost", "tunnel")
            + rule_toml("127.0.0.1", "direct", ports=str(ftp_site.port)))
    proxy = start_proxy(body, proxy_extra=transparent_keys())
    _, direct = socks5_connect(("127.0.0.1", proxy.port), "127.0.0.1", ftp_site.port)
    _, tunnelled = socks5_connect(("127.0.0.1", proxy.port), "localhost", ftp_site.port)
    try:
        assert direct.recv(3) == b"220" and tunnelled.recv(3) == b"220"
        # Ours (the direct upstream) is marked; sshd's own, for the tunnelled one, is not:
        # the control that `ss` tells them apart.
        assert sorted(marks_towards(ftp_site.port)) == [hex(MARK), "none"]
        assert marks_towards(sshd.port) == [hex(MARK)]  # the SSH connection
    finally:
        direct.close()
        tunnelled.close()


def test_a_connection_straight_to_the_transparent_listener_is_reset(
        start_proxy: ProxyFactory) -> None:
    keys = transparent_keys()
    proxy = start_proxy("", proxy_extra=keys)
    port = int(keys.split(":")[1].rstrip('"]'))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            got = sock.recv(10)
        except ConnectionResetError:
            got = b"reset"
    assert got == b"reset"  # not a FIN: no destination was ever served
    records = _wait_audit(proxy, 1)
    assert records[-1]["version"] == "transparent"
    assert records[-1]["result"] == "refused" and records[-1]["reply"] is None
    assert "not a redirected connection" in str(records[-1]["error"])


def test_without_cap_net_admin_the_daemon_does_not_start() -> None:
    """It would otherwise capture itself, or let data connections out in clear."""
    require("setpriv")
    if os.geteuid() != 0:
        import pytest
        pytest.skip("needs root to drop to an unprivileged user")
    with tempfile.TemporaryDirectory() as folder:  # readable by the unprivileged user
        Path(folder).chmod(0o755)
        config = Path(folder) / "t.toml"
        config.write_text(f"[proxy]\nlisten = [\"127.0.0.1:{free_port('127.0.0.1')}\"]\n"
                          f"{transparent_keys()}\n")
        config.chmod(0o644)
        done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                               *tunnel_argv(), "serve", "--check", "-c", str(config)],
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "proxy.transparent: transparent listeners need CAP_NET_ADMIN" in done.stderr
    assert "Traceback" not in done.stderr
