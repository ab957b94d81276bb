"""pyftpdlib as a real FTP server process on loopback (or inside a host)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from testbed.services.base import Service


class PyFtpd(Service):
    def __init__(self, root: Path, port: int, user: str, password: str,
                 host: str = "127.0.0.1", passive_ports: tuple[int, int] | None = None,
                 log_path: Path | None = None, prefix: Sequence[str] = (),
                 more_users: Sequence[tuple[str, str]] = (), debug: bool = False,
                 permit_foreign_addresses: bool = False, masquerade_address: str = "") -> None:
        self.root, self.host, self.port = root, host, port
        self.user, self.password = user, password
        argv = [sys.executable, "-m", "testbed.services.pyftpd_main", "--host", host,
                "--port", str(port), "--root", str(root)]
        for name, secret in [(user, password), *more_users]:
            argv += ["--user", f"{name}:{secret}"]
        if passive_ports:
            argv += ["--passive-ports", f"{passive_ports[0]}-{passive_ports[1]}"]
        if debug:
            argv.append("--debug")
        if permit_foreign_addresses:
            argv.append("--permit-foreign-addresses")
        if masquerade_address:
            argv += ["--masquerade-address", masquerade_address]
        super().__init__(f"pyftpdlib:{port}", argv, log_path or root.parent / "pyftpd.log",
                         ready=(host, port), prefix=prefix)
