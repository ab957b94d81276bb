"""Python's ftplib with every connection (control and data) made through SOCKS5 by
python-socks, as an application with a SOCKS setting would do.

Passive mode only: ftplib's active mode listens on a local port and sends PORT, which this
class leaves as ftplib does it (the proxy converts it)."""

from __future__ import annotations

import ftplib
import socket
from typing import Any

from python_socks.sync import Proxy


class SocksFTP(ftplib.FTP):
    def __init__(self, proxy_url: str, timeout: float = 30.0, **kwargs: Any) -> None:
        self.proxy_url = proxy_url
        super().__init__(timeout=timeout, **kwargs)

    def _socks(self, host: str, port: int) -> socket.socket:
        sock = Proxy.from_url(self.proxy_url, rdns=True).connect(host, port,
                                                                 timeout=self.timeout)
        sock.settimeout(self.timeout)
        return sock

    def connect(self, host: str = "", port: int = 0, timeout: float = -999,
                source_address: Any = None) -> str:
        if host:
            self.host = host
        if port:
            self.port = port
        self.sock = self._socks(self.host, self.port)
        self.af = self.sock.family
        self.file = self.sock.makefile("r", encoding=self.encoding)
        self.welcome = self.getresp()
        return self.welcome

    def ntransfercmd(self, cmd: str,
                     rest: int | str | None = None) -> tuple[socket.socket, int | None]:
        if not self.passiveserver:
            return super().ntransfercmd(cmd, rest)
        # ftplib's makepasv() falls back to getpeername() for the PASV host, which behind
        # SOCKS is the proxy itself; a SOCKS-aware client names the control destination.
        host, port = self.makepasv()
        # (typeshed lacks ftplib's class attribute, present since Python 3.9)
        trusting = getattr(self, "trust_server_pasv_ipv4_address", False)
        if not trusting and self.af == socket.AF_INET:
            host = self.host
        conn = self._socks(host, port)
        try:
            if rest is not None:
                self.sendcmd(f"REST {rest}")
            resp = self.sendcmd(cmd)
            if resp[0] == "2":
                resp = self.getresp()
            if resp[0] != "1":
                raise ftplib.error_reply(resp)
        except BaseException:
            conn.close()
            raise
        return conn, None
