"""vsftpd in the foreground (background=NO) with its own config; system users log in
through PAM, so one account serves both sshd and vsftpd, as on a real FTP+SSH host."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from testbed.services.base import Service
from testbed.tlsca import ServerTls, openssl_cap_config

VSFTPD = "/usr/sbin/vsftpd"
EMPTY_DIR = Path("/var/run/vsftpd/empty")  # secure_chroot_dir: vsftpd refuses to start without


def tls_lines(tls: ServerTls) -> list[str]:
    """Explicit FTPS required of every local login, on control and data. require_ssl_reuse
    (vsftpd's default, said here so nobody drops it): a data connection must resume the
    control connection's TLS session, or vsftpd refuses it ("522 SSL connection failed:
    session reuse required"). HIGH: the default, DES-CBC3-SHA, is refused by OpenSSL 3."""
    return [
        "ssl_enable=YES", f"rsa_cert_file={tls.cert}", f"rsa_private_key_file={tls.key}",
        "allow_anon_ssl=NO", "force_local_logins_ssl=YES", "force_local_data_ssl=YES",
        "require_ssl_reuse=YES", "ssl_ciphers=HIGH", "ssl_sslv2=NO", "ssl_sslv3=NO",
        "ssl_tlsv1=YES", "debug_ssl=YES",
    ]


class Vsftpd(Service):
    def __init__(self, workdir: Path, root: Path, port: int, host: str = "127.0.0.1",
                 passive_ports: tuple[int, int] | None = None,
                 prefix: Sequence[str] = (), tls: ServerTls | None = None) -> None:
        """`root` is every user's directory (local_root); users need x on its parents.
        `tls`: explicit FTPS, required on control and data (see tls_lines)."""
        self.root, self.host, self.port = root, host, port
        workdir.mkdir(parents=True, exist_ok=True)
        EMPTY_DIR.mkdir(parents=True, exist_ok=True)
        lines = [
            "listen=YES", "listen_ipv6=NO", f"listen_address={host}", f"listen_port={port}",
            "background=NO", "anonymous_enable=NO", "local_enable=YES", "write_enable=YES",
            "local_umask=022", f"local_root={root}", "chroot_local_user=NO",
            "pasv_enable=YES", "port_enable=YES", f"secure_chroot_dir={EMPTY_DIR}",
            "pam_service_name=vsftpd", "seccomp_sandbox=NO", "userlist_enable=NO",
            "xferlog_enable=YES", "log_ftp_protocol=YES",
            f"vsftpd_log_file={workdir / 'vsftpd-protocol.log'}", "dual_log_enable=NO",
            "syslog_enable=NO", "use_localtime=NO", "max_clients=500", "max_per_ip=500",
        ]
        if passive_ports:
            lines += [f"pasv_min_port={passive_ports[0]}", f"pasv_max_port={passive_ports[1]}"]
        lines += tls_lines(tls) if tls else ["ssl_enable=NO"]
        config = workdir / "vsftpd.conf"
        config.write_text("\n".join(lines) + "\n")
        self.protocol_log = workdir / "vsftpd-protocol.log"
        argv = [VSFTPD, str(config)]
        if tls and tls.max_version:  # vsftpd 3.0.3 has no setting for it: OpenSSL's own
            cap = openssl_cap_config(workdir / "openssl-cap.cnf", tls.max_version)
            argv = ["env", f"OPENSSL_CONF={cap}", *argv]  # `env`: passes into a container too
        super().__init__(f"vsftpd:{port}", argv, workdir / "vsftpd.log",
                         ready=(host, port), prefix=prefix)

    def commands_seen(self) -> str:
        """The protocol log: every command the server received (FTP command lines)."""
        try:
            return self.protocol_log.read_text(errors="replace")
        except OSError:
            return ""

    @staticmethod
    def available() -> str | None:
        if not Path(VSFTPD).exists():
            return f"{VSFTPD} is missing (apt-get install vsftpd; ci/setup does it)"
        if shutil.which("chpasswd") is None:
            return "chpasswd is missing"
        return None
