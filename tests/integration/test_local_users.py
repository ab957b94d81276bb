"""Local users on a multi-user host, for real: two system users run curl through the proxy
with a fixed-key profile that names one of them. The other is refused before anything
reaches SSH; the first is served; sshd logs exactly one login; the audit names both."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from testbed.services.sshd import Sshd
from testbed.users import ensure_user

from .conftest import FtpSite, ProxyFactory, require, sshd_log_count
from .test_proxy import _wait_audit, ftp_url, profile_toml, rule_toml

ALLOWED, OTHER = "fts-lu-alice", "fts-lu-bob"


def as_user(user: str, argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups",
                           *argv], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_a_key_profile_serves_only_the_local_users_it_names(
        start_proxy: ProxyFactory, sshd: Sshd, keys: Path, known_hosts: Path,
        ftp_site: FtpSite) -> None:
    require("curl", "setpriv")
    if os.geteuid() != 0:
        pytest.skip("needs root to create two system users")
    for user in (ALLOWED, OTHER):
        ensure_user(user, "unused-" + user)
    body = (profile_toml(sshd, keys, known_hosts).replace('users = ["*"]',
                                                          f'users = ["{ALLOWED}"]')
            + rule_toml("localhost", "tunnel"))
    proxy = start_proxy(body)
    # Where both users may write (pytest's own folders are root's alone).
    work = Path(tempfile.mkdtemp(prefix="fts-local-users-"))
    work.chmod(0o1777)
    logins_before = sshd_log_count(sshd, "Accepted publickey for root")
    url = ftp_url("localhost", ftp_site, "small.txt")

    refused = as_user(OTHER, ["curl", "-sS", "--socks5-hostname", proxy.url, "-o",
                              str(work / "bob.txt"), url], work)
    assert refused.returncode == 97, refused.stderr  # curl: the SOCKS proxy refused
    assert sshd_log_count(sshd, "Accepted publickey for root") == logins_before  # no SSH

    served = as_user(ALLOWED, ["curl", "-sS", "--socks5-hostname", proxy.url, "-o",
                               str(work / "alice.txt"), url], work)
    assert served.returncode == 0, served.stderr
    assert (work / "alice.txt").read_text() == (Path(ftp_site.server.root) / "small.txt"
                                                ).read_text()
    assert sshd_log_count(sshd, "Accepted publickey for root") == logins_before + 1

    records = _wait_audit(proxy, 3)
    bob = [r for r in records if r["local_user"] == OTHER]
    alice = [r for r in records if r["local_user"] == ALLOWED]
    assert len(bob) == 1 and bob[0]["result"] == "refused" and bob[0]["reply"] == 2
    assert bob[0]["local_uid"] == pwd.getpwnam(OTHER).pw_uid
    assert "refused: local user fts-lu-bob may not use profile 'lo'" in bob[0]["error"]
    assert len(alice) == 2 and all(r["result"] == "closed" for r in alice)  # control, data
    shutil.rmtree(work)
