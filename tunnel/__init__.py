"""ftp-ssh-tunnel: a SOCKS proxy that carries FTP (and any TCP) through SSH.

The protocol modules (`socks`, `rules`, `config`) are pure: bytes or values in, values out,
no sockets or event loop. The asyncio shell (`server`, `session`, `relay`, `ssh`) only moves
bytes and executes decisions.
"""

__version__ = "0.1.0"
