"""How much asyncio reads from each kind of socket at once (its own: 256 KiB a read).

- An SSH connection: 1 MiB. With many channels on one connection each gets a share of every
  read, and the relay writes each channel's share to its client in one send(): 50 downloads
  at once made a send() of 31 KiB per 32 KiB SSH packet (strace: 27,030 sends for 800 MiB).
  Larger reads need tunnel/inbuffer.py, or asyncssh's parsing copies grow with the square
  of the read. A/B (bench/ab.py readsize): 50 at once 360.0 -> 394.5 MB/s, 1.89 -> 1.69 CPU
  s/GiB; one RETR 471.3 -> 518.8, 1.54 -> 1.28; one STOR 402.2 -> 433.2, 1.78 -> 1.70.
- A SOCKS client: 1 MiB. An upload's read becomes one corked burst of SSH packets
  (coalesce.CorkedChannel). A/B (client-readsize), STOR: 470.6 -> 517.3 MB/s.
- An ftp-sftp data connection: asyncio's own again (None). An SFTP write takes 255 KiB, and
  slicing 1 MiB reads into it cost more than it saved (ftp-sftp STOR: 373.5 -> 338.7 MB/s).
"""

from __future__ import annotations

import asyncio

SSH_READ_SIZE = 1 << 20
CLIENT_READ_SIZE = 1 << 20


def set_read_size(transport: asyncio.BaseTransport, size: int | None) -> None:
    """Read up to `size` bytes at a time from now on, or asyncio's own size with None.
    Transports without asyncio's `max_size` (uvloop's) are left as they are."""
    if not isinstance(getattr(transport, "max_size", None), int):
        return
    if size is not None:
        transport.max_size = size  # type: ignore[attr-defined]
    elif "max_size" in vars(transport):
        del transport.max_size  # type: ignore[attr-defined]
