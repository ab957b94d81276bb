"""System users for servers that authenticate against the host (sshd passwords, vsftpd)."""

from __future__ import annotations

import pwd
import subprocess

# Testbed users carry this prefix so they are recognisable and never collide with people.
USER_PREFIX = "fts"


def ensure_user(name: str, password: str, home: str = "/") -> None:
    """Create the user if missing (home not created, shell sh) and set password and home.
    A scenario points `home` at its FTP directory: servers that serve the home (pure-ftpd,
    proftpd) then serve the same files as the others."""
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
    if pwd.getpwnam(name).pw_dir != home:
        subprocess.run(["usermod", "--home", home, name], check=True)
