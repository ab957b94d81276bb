"""The local backend run by a user without root: real sshd, pyftpdlib, `tunnel serve` and
curl/ftplib, all on loopback, all as that user. Root is needed only to create the user.

The project's venv uses an interpreter under /root, which other users cannot enter, so the
test gives the user a venv of Debian's python3.11 that points at the project's packages.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.users import ensure_user

REPO = Path(__file__).resolve().parents[2]
USER = "fts-nonroot"
SCENARIO = REPO / "scenarios" / "portable-key-user.toml"
SYSTEM_PYTHON = Path("/usr/bin/python3.11")


@pytest.fixture(scope="module")
def unprivileged() -> Iterator[tuple[list[str], Path]]:
    """(argv prefix running `python` as the user, a folder the user owns)."""
    if os.geteuid() != 0:
        pytest.skip("creating the unprivileged test user needs root")
    if not SYSTEM_PYTHON.exists():
        pytest.skip(f"{SYSTEM_PYTHON} is missing (Debian's python3)")
    ensure_user(USER, "unused-" + os.urandom(6).hex())
    base = Path("/var/tmp") / f"fts-local-{os.getpid()}"
    subprocess.run(["rm", "-rf", str(base)], check=True)
    venv = base / "venv"
    subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(Path(sys.prefix).glob("lib/python3.*/site-packages"))
    (venv / "lib" / "python3.11" / "site-packages" / "project.pth").write_text(
        f"{site}\n{REPO}\n")
    work = base / "work"
    work.mkdir()
    uid = pwd.getpwnam(USER).pw_uid
    os.chown(work, uid, -1)
    # XDG_RUNTIME_DIR: where `testbed up` keeps its state for this user.
    env = ["env", f"HOME={work}", f"XDG_RUNTIME_DIR={work}"]
    yield ["runuser", "-u", USER, "--", *env, str(venv / "bin" / "python")], work
    subprocess.run(["rm", "-rf", str(base)], check=False)


def test_a_user_without_root_runs_a_scenario_and_is_told_what_is_not_judged(
        unprivileged: tuple[list[str], Path]) -> None:
    python, work = unprivileged
    got = subprocess.run([*python, "-m", "testbed.cli", "run", "--backend", "local", "--keep",
                          "--out", str(work / "out"), str(SCENARIO)], capture_output=True,
                         text=True, timeout=300, cwd=work)
    print(got.stdout, got.stderr)
    assert got.returncode == 0, got.stdout + got.stderr
    assert "portable-key-user: PASS" in got.stdout
    for line in ("step1", "step2", "step3"):
        assert f"[ok ] {line}" in got.stdout
    assert got.stdout.count("not judged: the local backend has no per-link capture") == 2
    assert "integrity                    expected pass got pass" in got.stdout
    # Everything ran as the user: sshd, which only lets in the user running it, did.
    [sshd_log] = (work / "out").glob("portable-key-user-*/sshd-ssh/sshd.log")
    assert f"Accepted publickey for {USER}" in sshd_log.read_text()
    assert sshd_log.stat().st_uid == pwd.getpwnam(USER).pw_uid


def test_up_exec_list_down_without_root(unprivileged: tuple[list[str], Path]) -> None:
    python, work = unprivileged
    testbed = [*python, "-m", "testbed.cli"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*testbed, *args], capture_output=True, text=True, timeout=120,
                              cwd=work)

    up = run("up", "--backend", "local", "--out", str(work / "up"), str(SCENARIO))
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        ftp_line = next(line for line in up.stdout.splitlines() if line.strip().startswith("ftp "))
        ftp_address = ftp_line.split()[1]
        assert ftp_address.startswith("127.")
        listed = run("list")
        assert "portable-key-user (local): 3 of 3 services running" in listed.stdout
        # The FTP server answers on its host's address, port 21 moved to 20021 for a user.
        banner = run("exec", "client", "--", "curl", "-sS", "--max-time", "5",
                     f"ftp://{ftp_address}:20021/", "-u", "nobody:wrong")
        assert "530" in banner.stdout + banner.stderr, banner
    finally:
        down = run("down")
    assert down.returncode == 0 and "portable-key-user: down" in down.stdout
    assert "portable-key-user" not in run("list").stdout
