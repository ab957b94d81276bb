"""ProFTPD in the foreground (-n), from the private unpack ci/setup makes (apt installs only
one of vsftpd/proftpd/pure-ftpd: they Conflict on `ftp-server`). System users log in
(mod_auth_unix) and land in their home directory."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from testbed.services.base import PKG_ROOT, Service

PROFTPD = PKG_ROOT / "proftpd-core/usr/sbin/proftpd"


class Proftpd(Service):
    def __init__(self, workdir: Path, port: int, host: str = "0.0.0.0",
                 passive_ports: tuple[int, int] = (30000, 30999),
                 prefix: Sequence[str] = ()) -> None:
        self.host, self.port = host, port
        workdir.mkdir(parents=True, exist_ok=True)
        workdir.chmod(0o755)  # proftpd refuses a world-writable scoreboard directory
        self.command_log = workdir / "commands.log"
        config = workdir / "proftpd.conf"
        config.write_text("\n".join([
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
    def available() -> str | None:
        return None if PROFTPD.exists() else f"{PROFTPD} is missing (ci/setup unpacks it)"
