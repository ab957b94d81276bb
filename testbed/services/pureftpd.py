"""Pure-FTPd in the foreground, from the private unpack ci/setup makes. System users log
in (`-l unix`) and land in their home directory. It logs commands only to syslog, so the
wire captures are the record of what it saw."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from testbed.services.base import PKG_ROOT, Service
from testbed.tlsca import ServerTls, openssl_cap_config

PUREFTPD = PKG_ROOT / "pure-ftpd/usr/sbin/pure-ftpd"


class PureFtpd(Service):
    def __init__(self, workdir: Path, port: int, host: str = "0.0.0.0",
                 passive_ports: tuple[int, int] = (30000, 30999),
                 prefix: Sequence[str] = (), tls: ServerTls | None = None) -> None:
        """`tls`: `-Y 3`, TLS required on control and data (`-Y 2` would still take a
        clear data connection), with its certificate and key (`-2 cert,key`)."""
        self.host, self.port = host, port
        workdir.mkdir(parents=True, exist_ok=True)
        argv = [str(PUREFTPD), "-S", f"{host},{port}", "-l", "unix", "-E", "-H",
                "-p", f"{passive_ports[0]}:{passive_ports[1]}", "-c", "200", "-C", "200",
                "-O", f"clf:{workdir / 'transfer.log'}", "-g", str(workdir / "pure-ftpd.pid")]
        if tls:
            argv += ["-Y", "3", "-2", f"{tls.cert},{tls.key}"]
            if tls.max_version:  # pure-ftpd has no setting for the highest version
                cap = openssl_cap_config(workdir / "openssl-cap.cnf", tls.max_version)
                argv = ["env", f"OPENSSL_CONF={cap}", *argv]  # `env`: into a container too
        super().__init__(f"pure-ftpd:{port}", argv, workdir / "pure-ftpd.log",
                         ready=(host, port), prefix=prefix)

    @staticmethod
    def available() -> str | None:
        return None if PUREFTPD.exists() else f"{PUREFTPD} is missing (ci/setup unpacks it)"
