"""An explicit FTPS client for the TLS service tests, run inside a namespace as a script:
ftplib's FTP_TLS with the data connections resuming the control connection's TLS session
(ftplib's own does not, and every server here requires it), in active or passive mode.

    ftps_client.py HOST CA USER PASSWORD active|passive UPLOAD NAME DOWNLOAD
    ftps_client.py HOST CA - - early         # AUTH TLS, PBSZ 0, PROT P before USER
"""

from __future__ import annotations

import ftplib
import socket
import ssl
import sys
from typing import Any


class ReusingFTPS(ftplib.FTP_TLS):
    def ntransfercmd(self, cmd: str, rest: Any = None) -> tuple[socket.socket, int | None]:
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:  # type: ignore[attr-defined]
            conn = self.context.wrap_socket(conn, server_hostname=self.host,
                                            session=self.sock.session)  # type: ignore[union-attr]
        return conn, size


def main() -> None:
    host, ca, user, password, mode = sys.argv[1:6]
    context = ssl.create_default_context(cafile=ca)
    ftp = ReusingFTPS(context=context, timeout=20)
    ftp.connect(host, 21)
    if mode == "early":
        print("AUTH TLS ->", ftp.auth())
        for command in ("PBSZ 0", "PROT P"):
            try:
                print(f"{command} ->", ftp.voidcmd(command))
            except ftplib.Error as exc:
                print(f"{command} ->", exc)
        print("version", ftp.sock.version())  # type: ignore[union-attr]
        return
    upload, name, download = sys.argv[6:9]
    ftp.login(user, password)
    ftp.prot_p()
    ftp.set_pasv(mode == "passive")
    with open(upload, "rb") as fh:
        ftp.storbinary(f"STOR {name}", fh)
    with open(download, "wb") as out:
        ftp.retrbinary(f"RETR {name}", out.write)
    print("version", ftp.sock.version())  # type: ignore[union-attr]
    ftp.quit()


if __name__ == "__main__":
    main()
