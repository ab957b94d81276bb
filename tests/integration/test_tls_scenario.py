"""The `tls` verdict on a real capture: a scenario with no proxy, curl asking for TLS
(trusting the run CA) straight to each FTP server with `tls = true`: `tls` passes on the
link, `cleartext` fails there (nothing readable), every file whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.backends import netns
from testbed.runner import ScenarioRun, table
from testbed.scenario import load

pytestmark = pytest.mark.integration

SCENARIO = """
[scenario]
name = "tls-direct-{kind}"
size_kib = 256
[[topology.host]]
name = "client"
[[topology.host]]
name = "ftp"
[[topology.link]]
name = "lan"
hosts = ["client", "ftp"]
[[service]]
kind = "{kind}"
host = "ftp"
tls = true
{tls_max}
[[step]]
client = "curl"
mode = "epsv"
ftps = true
ops = ["upload", "download", "list"]
[[check]]
verdict = "tls"
link = "lan"
[[check]]
verdict = "cleartext"
link = "lan"
expect = "fail"
[[check]]
verdict = "integrity"
"""


@pytest.mark.parametrize(("kind", "tls_max"), [("vsftpd", "1.2"), ("proftpd", ""),
                                               ("pure-ftpd", "")])
def test_tls_verdict_on_a_real_ftps_capture(tmp_path: Path, kind: str, tls_max: str) -> None:
    reason = netns.available()
    if reason:
        pytest.skip(reason)
    path = tmp_path / f"{kind}.toml"
    path.write_text(SCENARIO.format(kind=kind, tls_max=f'tls_max = "{tls_max}"'
                                    if tls_max else ""))
    result = ScenarioRun(load(path), tmp_path / "out").run()
    assert result.passed, table(result)
    tls = next(o for o in result.outcomes if o.name == "tls(lan)")
    want = "certificate CN ftp" if tls_max else "certificate not visible (TLSv1.3), SNI 'ftp'"
    assert want in tls.verdict.detail, tls.verdict.detail
