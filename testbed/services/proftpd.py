"""ProFTPD in the foreground (-n), from the private unpack ci/setup makes (apt installs only
one of vsftpd/proftpd/pure-ftpd: they Conflict on `ftp-server`). System users log in
(mod_auth_unix) and land in their home directory."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from testbed.services.base import PKG_ROOT, Service
from testbed.tlsca import ServerTls

PROFTPD = PKG_ROOT / "proftpd-core/usr/sbin/proftpd"
# mod_tls is not in proftpd-core on bookworm but in proftpd-mod-crypto (ci/setup unpacks it).
TLS_MODULES = PKG_ROOT / "proftpd-mod-crypto/usr/lib/proftpd"


def tls_lines(tls: ServerTls, workdir: Path) -> list[str]:
    """mod_tls, explicit FTPS required on control and data (TLSRequired on). TLSOptions is
    left empty on purpose: without NoSessionReuseRequired, a data connection must resume
    the control connection's TLS session ("450 ... unable to reuse TLS session")."""
    protocols = "TLSv1.2" if tls.max_version == "1.2" else "TLSv1.2 TLSv1.3"
    return [
        f"ModulePath {TLS_MODULES}", "LoadModule mod_tls.c", "TLSEngine on",
        "TLSRequired on", f"TLSECCertificateFile {tls.cert}",
        f"TLSECCertificateKeyFile {tls.key}", f"TLSProtocol {protocols}",
        "TLSVerifyClient off", f"TLSLog {workdir}/tls.log",
    ]


class Proftpd(Service):
    def __init__(self, workdir: Path, port: int, host: str = "0.0.0.0",
                 passive_ports: tuple[int, int] = (30000, 30999),
                 prefix: Sequence[str] = (), tls: ServerTls | None = None) -> None:
        self.host, self.port = host, port
        workdir.mkdir(parents=True, exist_ok=True)
        workdir.chmod(0o755)  # proftpd refuses a world-writable scoreboard directory
        self.command_log = workdir / "commands.log"
        config = workdir / "proftpd.conf"
        config.write_text("\n".join([*(tls_lines(tls, workdir) if tls else []),
            'ServerName "testbed proftpd"', "ServerType standalone", "DefaultServer on",
            # Without DefaultAddress proftpd resolves the machine's host name, which a
            # namespace's /etc/hosts does not carry: "no valid servers configured".
            f"Port {port}", f"DefaultAddress {host}", "UseIPv6 off", "User nobody", "Group nogroup",
            "MaxInstances 200", f"PidFile {workdir}/proftpd.pid",
            f"ScoreboardFile {workdir}/proftpd.scoreboard",
            f"DelayTable {workdir}/proftpd.delay", "WtmpLog off", "RequireValidShell off",
            "AuthPAM off", "AuthOrder mod_auth_unix.c", "UseReverseDNS off",
            "AllowOverwrite on", f"PassivePorts {passive_ports[0]} {passive_ports[1]}",
            f"SystemLog {workdir}/proftpd.log", f"TransferLog {workdir}/xferlog",
            'LogFormat commands "%h %u %r"', f"ExtendedLog {self.command_log} ALL commands",
            "",
        ]))
        super().__init__(f"proftpd:{port}", [str(PROFTPD), "-n", "-q", "-c", str(config)],
                         workdir / "proftpd.out", ready=(host, port), prefix=prefix)

    def commands_seen(self) -> str:
        try:
            return self.command_log.read_text(errors="replace")
        except OSError:
            return ""

    @staticmethod
    def available(tls: bool = False) -> str | None:
        if not PROFTPD.exists():
            return f"{PROFTPD} is missing (ci/setup unpacks it)"
        if tls and not (TLS_MODULES / "mod_tls.so").exists():
            return f"{TLS_MODULES}/mod_tls.so is missing (ci/setup unpacks proftpd-mod-crypto)"
        return None
