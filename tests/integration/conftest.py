"""Fixtures that start real processes: OpenSSH sshd, pyftpdlib, and `tunnel serve`.

Each skips with the reason when its binary or root is missing; on CI nothing may skip.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from testbed.net import free_port
from testbed.proxy import TunnelProxy
from testbed.services.pyftpd import PyFtpd
from testbed.services.sshd import Sshd, keygen

BIG_FILE_SIZE = 64 * 1024 * 1024
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


def sshd_log_count(server: Sshd, needle: str) -> int:
    return server.log().count(needle)
