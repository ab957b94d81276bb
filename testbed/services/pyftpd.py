"""pyftpdlib as a real FTP server process on loopback (or inside a host)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from testbed.services.base import Service


class PyFtpd(Service):
    def __init__(self, root: Path, port: int, user: str, password: str,
                 host: str = "127.0.0.1", passive_ports: tuple[int, int] | None = None,
                 log_path: Path | None = None, prefix: Sequence[str] = ()) -> None:
        self.root, self.host, self.port = root, host, port
        self.user, self.password = user, password
        argv = [sys.executable, "-m", "pyftpdlib", "-i", host, "-p", str(port), "-w",
                "-d", str(root), "-u", user, "-P", password]
        if passive_ports:
            argv += ["-r", f"{passive_ports[0]}-{passive_ports[1]}"]
        super().__init__(f"pyftpdlib:{port}", argv, log_path or root.parent / "pyftpd.log",
                         ready=(host, port), prefix=prefix)
