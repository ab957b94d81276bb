"""last_hop_tls on loopback: real sshd, real vsftpd demanding FTPS on control and data (with
TLS session reuse), curl speaking plain FTP through the proxy. The server refusing clear
logins and clear data connections is what proves the proxy spoke TLS to it; the scenarios
(last-hop-tls-*) prove it again on captured links."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.net import free_port
from testbed.proxy import TunnelProxy
from testbed.services.sshd import Sshd
from testbed.services.vsftpd import Vsftpd
from testbed.tlsca import RunPki, write_run_pki

from .conftest import ProxyFactory, require
from .test_ftp_tunnel import app_profile, curl, ftp_rule, key_profile, sha

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> RunPki:
    # "localhost" signed by the run CA; "impostor" by the other CA, with the same name.
    folder = tmp_path_factory.mktemp("pki")
    good = write_run_pki(folder / "good", {"localhost": (["127.0.0.1"], "run")})
    bad = write_run_pki(folder / "bad", {"localhost": (["127.0.0.1"], "other")})
    return RunPki(good.ca, good.other_ca, {"localhost": good.servers["localhost"],
                                           "impostor": bad.servers["localhost"]},
                  {"localhost": good.fingerprints["localhost"],
                   "impostor": bad.fingerprints["localhost"]})


def start_vsftpd(workdir: Path, site: Path, pki: RunPki | None, who: str) -> Iterator[Vsftpd]:
    reason = Vsftpd.available()
    if reason:
        pytest.skip(reason)
    server = Vsftpd(workdir, site, free_port(),
                    tls=pki.servers[who] if pki is not None else None).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ftps(tmp_path_factory: pytest.TempPathFactory, site: Path, pki: RunPki,
         users: dict[str, str]) -> Iterator[Vsftpd]:
    yield from start_vsftpd(tmp_path_factory.mktemp("ftps"), site, pki, "localhost")


@pytest.fixture(scope="module")
def impostor(tmp_path_factory: pytest.TempPathFactory, site: Path, pki: RunPki,
             users: dict[str, str]) -> Iterator[Vsftpd]:
    yield from start_vsftpd(tmp_path_factory.mktemp("impostor"), site, pki, "impostor")


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory, site: Path,
          users: dict[str, str]) -> Iterator[Vsftpd]:
    yield from start_vsftpd(tmp_path_factory.mktemp("plain"), site, None, "")


def audit(proxy: TunnelProxy, action: str = "ftp-tunnel") -> list[dict[str, object]]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        found = [r for r in proxy.audit() if r["action"] == action and r["result"] != "open"]
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"no closed {action} record in {proxy.audit_path}")


def tls_rule(server: Vsftpd, mode: str, auth_line: str) -> str:
    return ftp_rule(server.port, extra=f'last_hop_tls = "{mode}"\n{auth_line}')


@pytest.mark.parametrize("mode", ["epsv", "active"])
def test_require_carries_login_and_data_in_tls(
        start_proxy: ProxyFactory, sshd: Sshd, known_hosts: Path, ftps: Vsftpd, pki: RunPki,
        users: dict[str, str], site: Path, tmp_path: Path, mode: str) -> None:
    require("curl")
    user, password = next(iter(users.items()))
    proxy = start_proxy(app_profile(sshd, known_hosts)
                        + tls_rule(ftps, "require", f'last_hop_ca = "{pki.ca}"'))
    url = f"ftp://{user}:{password}@localhost:{ftps.port}/"
    got = tmp_path / "got.bin"
    extra = ["-P", "127.0.0.1"] if mode == "active" else []
    done = curl(proxy, url + "data.bin", *extra, "-o", str(got))
    assert done.returncode == 0, done.stderr + proxy.log()[-3000:]
    assert sha(got) == sha(site / "data.bin")
    upload = tmp_path / "up.bin"
    upload.write_bytes(os.urandom(1 << 20))
    done = curl(proxy, url + f"up-{mode}.bin", *extra, "-T", str(upload))
    assert done.returncode == 0, done.stderr + proxy.log()[-3000:]
    assert sha(site / f"up-{mode}.bin") == sha(upload)
    # vsftpd logs every command it got: the login and PROT P reached it (over TLS: it
    # refuses a clear login), the client's PORT never did.
    seen = ftps.commands_seen()
    assert '"AUTH TLS"' in seen and '"PROT P"' in seen and f'"USER {user}"' in seen
    records = audit(proxy)
    assert {r["last_hop"] for r in records} == {"tls"}, records
    assert "TLSv1." in proxy.log()


def test_pinned_fingerprint_and_fixed_credentials(
        start_proxy: ProxyFactory, sshd: Sshd, keys: Path, known_hosts: Path, ftps: Vsftpd,
        pki: RunPki, users: dict[str, str], site: Path, tmp_path: Path) -> None:
    """A fixed SSH user (key): the client logs in itself, after the proxy secured the hop;
    the server is pinned, not checked against a CA (the name does not matter then)."""
    require("curl")
    user, password = next(iter(users.items()))
    pin = pki.fingerprints["localhost"]
    proxy = start_proxy(key_profile(sshd, keys, known_hosts)
                        + ftp_rule(ftps.port, dst="127.0.0.1", extra=(
                            f'last_hop_tls = "require"\nlast_hop_fingerprint = "{pin}"')))
    got = tmp_path / "hello.txt"
    done = curl(proxy, f"ftp://{user}:{password}@127.0.0.1:{ftps.port}/hello.txt",
                "-o", str(got))
    assert done.returncode == 0, done.stderr + proxy.log()[-3000:]
    assert got.read_bytes() == (site / "hello.txt").read_bytes()
    assert audit(proxy)[0]["last_hop"] == "tls"


@pytest.mark.parametrize("check", ["ca", "pin"])
def test_an_impostor_never_hears_the_password(
        start_proxy: ProxyFactory, sshd: Sshd, known_hosts: Path, impostor: Vsftpd,
        pki: RunPki, users: dict[str, str], check: str) -> None:
    require("curl")
    user, password = next(iter(users.items()))
    line = (f'last_hop_ca = "{pki.ca}"' if check == "ca"
            else f'last_hop_fingerprint = "{pki.fingerprints["localhost"]}"')
    proxy = start_proxy(app_profile(sshd, known_hosts) + tls_rule(impostor, "require", line))
    done = curl(proxy, f"ftp://{user}:{password}@localhost:{impostor.port}/hello.txt")
    assert done.returncode != 0
    record = audit(proxy)[0]
    reason = "certificate verify failed" if check == "ca" else "not the pinned"
    assert reason in str(record["last_hop_failure"]), record
    assert record["last_hop"] == "clear"
    assert "USER" not in impostor.commands_seen() and password not in impostor.commands_seen()


def test_require_refused_and_try_falls_back(
        start_proxy: ProxyFactory, sshd: Sshd, known_hosts: Path, plain: Vsftpd, pki: RunPki,
        users: dict[str, str], site: Path, tmp_path: Path) -> None:
    require("curl")
    user, password = next(iter(users.items()))
    url = f"ftp://{user}:{password}@localhost:{plain.port}/hello.txt"
    proxy = start_proxy(app_profile(sshd, known_hosts)
                        + tls_rule(plain, "require", f'last_hop_ca = "{pki.ca}"'))
    done = curl(proxy, url, "-v")
    # curl reports a 421 as its error 28, "Timeout was reached"; -v shows the reply.
    assert done.returncode != 0 and "< 421 Service not available: the FTP server refused " \
        "AUTH TLS" in done.stderr
    record = audit(proxy)[0]
    assert "refused AUTH TLS" in str(record["last_hop_failure"])
    assert f"USER {user}" not in plain.commands_seen()
    proxy = start_proxy(app_profile(sshd, known_hosts)
                        + tls_rule(plain, "try", f'last_hop_ca = "{pki.ca}"'))
    got = tmp_path / "hello.txt"
    done = curl(proxy, url, "-o", str(got))
    assert done.returncode == 0, done.stderr
    assert got.read_bytes() == (site / "hello.txt").read_bytes()
    assert audit(proxy)[0]["last_hop"] == "clear"


def test_explain_says_how_the_last_hop_is_protected(tmp_path: Path, pki: RunPki) -> None:
    config = tmp_path / "tunnel.toml"
    config.write_text(f"""
[[profile]]
id = "gw"
host = "ssh.example"
[[rule]]
dst = "ftp.example"
ports = "21"
action = "ftp-tunnel"
profile = "gw"
last_hop_tls = "require"
last_hop_ca = "{pki.ca}"
""")
    config.chmod(0o600)
    out = subprocess.run([".venv/bin/tunnel", "explain", "-c", str(config), "ftp.example:21",
                          "--no-resolve"], capture_output=True, text=True,
                         cwd=Path(__file__).parents[2])
    assert out.returncode == 0, out.stderr
    assert "last hop: from ssh.example to ftp.example:21 in FTPS (AUTH TLS, PROT P), " \
        "required; server certificate checked against" in out.stdout
    assert str(pki.ca) in out.stdout


def test_fallback_to_plain_still_speaks_ftps_to_the_server(
        start_proxy: ProxyFactory, known_hosts: Path, ftps: Vsftpd, pki: RunPki,
        users: dict[str, str], site: Path, tmp_path: Path) -> None:
    """SSH unreachable and fallback_to_plain: the proxy connects straight to the server,
    and the hop is still FTPS (vsftpd refuses anything else), passive and active."""
    require("curl")
    user, password = next(iter(users.items()))
    nobody = free_port()  # no SSH server listens here
    profile = f"""
[[profile]]
id = "app"
host = "127.0.0.1"
port = {nobody}
auth = ["password"]
known_hosts = "{known_hosts}"
"""
    proxy = start_proxy(profile + ftp_rule(ftps.port, extra=(
        f'fallback_to_plain = true\nlast_hop_tls = "require"\nlast_hop_ca = "{pki.ca}"')))
    for extra in ([], ["-P", "127.0.0.1"]):
        got = tmp_path / "got.bin"
        done = curl(proxy, f"ftp://{user}:{password}@localhost:{ftps.port}/data.bin", *extra,
                    "-o", str(got))
        assert done.returncode == 0, done.stderr + proxy.log()[-3000:]
        assert sha(got) == sha(site / "data.bin")
    records = audit(proxy, "direct-fallback")
    assert {r["last_hop"] for r in records} == {"tls"}, records
