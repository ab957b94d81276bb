"""Fixtures that start real processes: OpenSSH sshd, pyftpdlib, and `tunnel serve`.

Each skips with the reason when its binary or root is missing; on CI nothing may skip.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from testbed.net import free_port
from testbed.proxy import TunnelProxy
from testbed.services.pyftpd import PyFtpd
from testbed.services.sshd import Sshd, keygen
from testbed.users import ensure_user

BIG_FILE_SIZE = 64 * 1024 * 1024
DATA_SIZE = 8 * 1024 * 1024  # the `site` fixture's data.bin
FTP_USER, FTP_PASSWORD = "ftpuser", "ftp-secret-7d41"


def require(*binaries: str) -> None:
    reason = Sshd.available()
    if reason:
        pytest.skip(reason)
    for binary in binaries:
        if shutil.which(binary) is None:
            pytest.skip(f"{binary} is not installed (ci/setup installs it)")


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require()
    return keygen(tmp_path_factory.mktemp("keys") / "id_ed25519", "tunnel-test-user")


@dataclass
class FtpSite:
    server: PyFtpd
    files: dict[str, str]  # name -> sha256

    @property
    def port(self) -> int:
        return self.server.port


@pytest.fixture(scope="session")
def ftp_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FtpSite]:
    root = tmp_path_factory.mktemp("ftproot")
    files = {}
    big = root / "big.bin"
    with open(big, "wb") as fh:
        for _ in range(BIG_FILE_SIZE // (1 << 20)):
            fh.write(os.urandom(1 << 20))
    files["big.bin"] = hashlib.sha256(big.read_bytes()).hexdigest()
    small = root / "small.txt"
    small.write_bytes(b"hello through the tunnel\n" * 40)
    files["small.txt"] = hashlib.sha256(small.read_bytes()).hexdigest()
    server = PyFtpd(root, free_port(), FTP_USER, FTP_PASSWORD,
                    log_path=root.parent / "pyftpd.log").start()
    yield FtpSite(server, files)
    server.stop()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory, keys: Path) -> Iterator[Sshd]:
    server = Sshd(tmp_path_factory.mktemp("sshd"), free_port(), authorized_keys=[keys]).start()
    yield server
    server.stop()


@pytest.fixture
def known_hosts(tmp_path: Path, sshd: Sshd) -> Path:
    path = tmp_path / "known_hosts"
    path.write_text(sshd.known_hosts_line())
    return path


ProxyFactory = Callable[..., TunnelProxy]


@pytest.fixture
def start_proxy(tmp_path: Path) -> Iterator[ProxyFactory]:
    started: list[TunnelProxy] = []

    def start(config_body: str, proxy_extra: str = "") -> TunnelProxy:
        proxy = TunnelProxy(tmp_path / f"proxy{len(started)}", config_body,
                            proxy_extra=proxy_extra)
        started.append(proxy)
        return proxy.start()

    yield start
    for proxy in started:
        code = proxy.stop()
        # SIGTERM must drain and exit cleanly, never die on a traceback.
        assert code == 0, f"tunnel exited {code} on SIGTERM:\n{proxy.log()[-3000:]}"
        assert "Traceback" not in proxy.log(), proxy.log()[-3000:]


@pytest.fixture(scope="module")
def users() -> dict[str, str]:
    require("useradd", "chpasswd")
    creds = {"fts-carol": "pw-" + secrets.token_hex(8), "fts-dave": "pw-" + secrets.token_hex(8)}
    for name, password in creds.items():
        ensure_user(name, password)
    return creds


@pytest.fixture(scope="module")
def site() -> Iterator[Path]:
    """The FTP servers' shared directory. Outside pytest's 0700 tmp tree, because vsftpd
    enters it as the logged-in user."""
    root = Path(tempfile.mkdtemp(prefix="fts-site-", dir="/var/tmp"))
    root.chmod(0o777)
    (root / "data.bin").write_bytes(os.urandom(DATA_SIZE))
    (root / "hello.txt").write_bytes(b"hello over ssh\r\n")
    for path in root.iterdir():
        path.chmod(0o666)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def sshd_log_count(server: Sshd, needle: str) -> int:
    return server.log().count(needle)
