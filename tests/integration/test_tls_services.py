"""The FTP servers with `tls = true`, each in a namespace of its own, against curl: explicit
FTPS required on control and data, the certificate from the run CA naming the host, TLS
1.2 when capped; a clear client is refused by the server itself."""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.backends import netns
from testbed.backends.netns import NetnsBackend
from testbed.services.base import Service
from testbed.services.proftpd import Proftpd
from testbed.services.pureftpd import PureFtpd
from testbed.services.vsftpd import Vsftpd
from testbed.tlsca import ServerTls, write_run_pki
from testbed.topology import build
from testbed.users import ensure_user

pytestmark = pytest.mark.integration

USER, PASSWORD = "fts-tls-test", "pw-tls-test-5c1e"
KINDS = ("vsftpd", "proftpd", "pure-ftpd")
CLIENT = Path(__file__).with_name("ftps_client.py")


@pytest.fixture(scope="module")
def hosts() -> Iterator[NetnsBackend]:
    reason = netns.available()
    if reason:
        pytest.skip(reason)
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (ci/setup installs it)")
    backend = NetnsBackend(build([{"name": "client"}, {"name": "ftp"}],
                                 [{"name": "lan", "hosts": ["client", "ftp"]}]))
    backend.up()
    yield backend
    backend.down()


def start(kind: str, workdir: Path, site: Path, prefix: list[str], tls: ServerTls) -> Service:
    reason = {"vsftpd": Vsftpd.available(), "proftpd": Proftpd.available(tls=True),
              "pure-ftpd": PureFtpd.available()}[kind]
    if reason:
        pytest.skip(reason)
    ensure_user(USER, PASSWORD, home=str(site))
    server: Service
    if kind == "vsftpd":
        server = Vsftpd(workdir, site, 21, host="0.0.0.0", prefix=prefix, tls=tls)
    elif kind == "proftpd":
        server = Proftpd(workdir, 21, "10.77.1.2", prefix=prefix, tls=tls)
    else:
        server = PureFtpd(workdir, 21, prefix=prefix, tls=tls)
    return server.start()


def curl(hosts: NetnsBackend, *args: str) -> tuple[int, str]:
    done = hosts.run("client", ["curl", "-sS", "-v", "--max-time", "20", *args], timeout=40)
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize("tls_max", ["", "1.2"])
@pytest.mark.parametrize("kind", KINDS)
def test_tls_service_takes_ftps_only(hosts: NetnsBackend, tmp_path: Path, kind: str,
                                     tls_max: str) -> None:
    pki = write_run_pki(tmp_path / "tls", {"ftp": (["10.77.1.2"], "run")})
    # Not under tmp_path: pytest's /tmp/pytest-of-root is 0700, and a user who cannot enter
    # the FTP root makes vsftpd write "500 OOPS" in clear inside the TLS session.
    site = Path(tempfile.mkdtemp(prefix="fts-tls-site-", dir="/var/tmp"))
    site.chmod(0o777)
    payload = tmp_path / "payload.bin"
    payload.write_bytes(os.urandom(300_000))
    tls = ServerTls(pki.servers["ftp"].cert, pki.servers["ftp"].key, tls_max)
    server = start(kind, tmp_path / kind, site, hosts.exec_prefix("ftp"), tls)
    url = f"ftp://{USER}:{PASSWORD}@ftp/"
    ca = ["--ssl-reqd", "--cacert", str(pki.ca)]
    try:
        for mode in ([], ["--disable-epsv"]):
            name = f"up{len(mode)}.bin"
            code, said = curl(hosts, *ca, *mode, "-T", str(payload), url + name)
            assert code == 0, f"{kind} {mode} upload: {said[-1500:]}"
            version = re.search(r"SSL connection using (TLSv[\d.]+)", said)
            assert version and version.group(1) == ("TLSv1.2" if tls_max else "TLSv1.3")
            back = tmp_path / f"down-{name}"
            code, said = curl(hosts, *ca, *mode, "-o", str(back), url + name)
            assert code == 0, f"{kind} {mode} download: {said[-1500:]}"
            assert back.read_bytes() == payload.read_bytes()
        # Active mode with ftplib: curl 7.88's active data connection never starts TLS
        # (an upload goes out in clear and is reset, a download hangs): its bug, not theirs.
        for mode in ("active", "passive"):
            back = tmp_path / f"down-ftplib-{mode}.bin"
            done = hosts.run("client", [sys.executable, str(CLIENT), "ftp", str(pki.ca), USER,
                                        PASSWORD, mode, str(payload), f"{mode}.bin",
                                        str(back)], timeout=60)
            assert done.returncode == 0, f"{kind} ftplib {mode}: {done.stderr[-1500:]}"
            assert back.read_bytes() == payload.read_bytes()
        code, said = curl(hosts, url)  # plain FTP: the server must refuse the login
        assert code != 0, f"{kind} took a clear login: {said[-1500:]}"
        code, said = curl(hosts, "--ssl-reqd", "--cacert", str(pki.other_ca), url)
        assert code != 0 and "certificate" in said.lower(), said[-1500:]
    finally:
        server.stop()
        shutil.rmtree(site, ignore_errors=True)
