"""System users for servers that authenticate against the host (sshd passwords, vsftpd)."""

from __future__ import annotations

import pwd
import subprocess

# Testbed users carry this prefix so they are recognisable and never collide with people.
USER_PREFIX = "fts"


def ensure_user(name: str, password: str) -> None:
    """Create the user if missing (no home, no login shell beyond sh) and set its password."""
    if not name.startswith(USER_PREFIX):
        raise ValueError(f"testbed users must start with {USER_PREFIX!r}: {name!r}")
    try:
        pwd.getpwnam(name)
    except KeyError:
        # Home "/": it exists everywhere, so sshd and vsftpd can chdir there; FTP servers
        # get their own directory (vsftpd local_root, pyftpdlib's home).
        subprocess.run(["useradd", "--no-create-home", "--home-dir", "/", "--shell", "/bin/sh",
                        name], check=True)
    subprocess.run(["chpasswd"], input=f"{name}:{password}\n".encode(), check=True)
