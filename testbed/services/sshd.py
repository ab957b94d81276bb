"""OpenSSH sshd on a chosen address and port, with its own host key and config.

Run from its absolute path with `-D -e -f` (never `-d`, which serves one connection and
exits), with /run/sshd present for privilege separation.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from testbed.services.base import Service

SSHD = "/usr/sbin/sshd"


def keygen(path: Path, comment: str = "testbed") -> Path:
    """An ed25519 key pair at path / path.pub; kept if already there."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment,
                        "-f", str(path)], check=True)
    return path


class Sshd(Service):
    def __init__(self, workdir: Path, port: int, host: str = "127.0.0.1",
                 authorized_keys: Sequence[Path] = (), password_auth: bool = True,
                 permit_open: str = "any", allow_tcp_forwarding: bool = True,
                 host_key: Path | None = None, prefix: Sequence[str] = (),
                 keyboard_interactive_only: bool = False, extra_config: Sequence[str] = ()
                 ) -> None:
        """`keyboard_interactive_only`: passwords only through PAM's keyboard-interactive
        prompt, as some hardened servers are set up (PasswordAuthentication no).
        `extra_config`: more sshd_config lines (e.g. `Ciphers +aes128-cbc`)."""
        self.workdir = workdir
        self.host, self.port = host, port
        workdir.mkdir(parents=True, exist_ok=True)
        self.host_key = keygen(host_key or workdir / "ssh_host_ed25519_key", "sshd-host-key")
        auth_keys = workdir / "authorized_keys"
        auth_keys.write_text("".join(Path(f"{k}.pub").read_text() for k in authorized_keys))
        os.chmod(auth_keys, 0o600)
        config = workdir / "sshd_config"
        config.write_text("\n".join([
            f"ListenAddress {host}",
            f"Port {port}",
            f"HostKey {self.host_key}",
            f"AuthorizedKeysFile {auth_keys}",
            "StrictModes no",
            f"UsePAM {'yes' if keyboard_interactive_only else 'no'}",
            "PermitRootLogin yes" if password_auth else "PermitRootLogin prohibit-password",
            "PasswordAuthentication "
            + ("yes" if password_auth and not keyboard_interactive_only else "no"),
            f"KbdInteractiveAuthentication {'yes' if keyboard_interactive_only else 'no'}",
            f"AllowTcpForwarding {'yes' if allow_tcp_forwarding else 'no'}",
            f"PermitOpen {permit_open}",
            "PidFile none",
            "LogLevel VERBOSE",
            "MaxSessions 1000",
            # In-process SFTP: the `ftp-sftp` action's far side, no sftp-server binary needed.
            "Subsystem sftp internal-sftp",
            "MaxStartups 1000:30:1000",
            *extra_config,
            "",
        ]))
        if os.geteuid() == 0:  # privilege separation; sshd run by a user goes without it
            Path("/run/sshd").mkdir(exist_ok=True)
        super().__init__(f"sshd:{port}", [SSHD, "-D", "-e", "-f", str(config)],
                         workdir / "sshd.log", ready=(host, port), prefix=prefix)

    def known_hosts_line(self, name: str | None = None) -> str:
        """The known_hosts line a client needs for this server."""
        public = Path(f"{self.host_key}.pub").read_text().split()
        who = name or self.host
        pattern = who if self.port == 22 else f"[{who}]:{self.port}"
        return f"{pattern} {public[0]} {public[1]}\n"

    @staticmethod
    def available() -> str | None:
        """None if sshd can run here, else the reason it cannot."""
        if not Path(SSHD).exists():
            return f"{SSHD} is missing (apt-get install openssh-server; ci/setup does it)"
        if shutil.which("ssh-keygen") is None:
            return "ssh-keygen is missing (openssh-client)"
        if os.geteuid() != 0:
            return "sshd needs root for privilege separation and logins; run as root"
        return None
