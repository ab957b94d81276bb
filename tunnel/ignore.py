"""asyncssh's empty SSH_MSG_IGNORE before every packet, kept only where it protects something.

After the key exchange asyncssh sends an empty SSH_MSG_IGNORE ahead of every packet it
sends (connection.py `send_packet`). That is the countermeasure of RFC 4251 §9.3.1 for CBC
ciphers, whose next IV an observer knows (the last ciphertext block): a packet of random
padding in between makes a chosen-plaintext guess useless. With CTR, GCM or
chacha20-poly1305 there is no chained IV to predict, and OpenSSH sends no such packets.
asyncssh pays for one regardless: padding, `os.urandom`, an AEAD seal and a write per
packet, so every 32 KiB of file costs two packets.

`install()` wraps `SSHConnection.send_packet` so that this one packet (an empty IGNORE that
asyncssh itself inserts) is left out when the cipher we send with is not CBC. Everything
else, and every packet under a CBC cipher, passes unchanged.
"""

from __future__ import annotations

import logging
from typing import Any

from asyncssh import connection as asyncssh_connection
from asyncssh.constants import MSG_IGNORE
from asyncssh.packet import String

log = logging.getLogger("tunnel.ssh")

_EMPTY = String(b"")


def needs_ignore(cipher: bytes) -> bool:
    """Whether packets sent with this cipher still want the IGNORE in front (CBC only)."""
    return cipher.endswith(b"-cbc") or b"-cbc@" in cipher or cipher == b""


def _send_cipher(conn: Any) -> bytes:
    # The proxy is always the client; a server's send direction is the other one.
    cipher: bytes = conn._enc_alg_cs if conn.is_client() else conn._enc_alg_sc
    return cipher


def install() -> bool:
    """Patch asyncssh once; False (with a warning) where its connection is not as expected."""
    cls = asyncssh_connection.SSHConnection
    if getattr(cls, "_tunnel_ignore_patched", False):
        return True
    send_packet = cls.send_packet
    if ("MSG_IGNORE" not in send_packet.__code__.co_names or not hasattr(cls, "is_client")
            or "_enc_alg_cs" not in cls.__init__.__code__.co_names):
        log.warning("asyncssh's send_packet has changed: its per-packet SSH_MSG_IGNORE is "
                    "left as it is")
        return False

    def without_ignore(self: Any, pkttype: int, *args: bytes, handler: Any = None) -> None:
        if (pkttype == MSG_IGNORE and args == (_EMPTY,)
                and not needs_ignore(_send_cipher(self))):
            return
        send_packet(self, pkttype, *args, handler=handler)

    cls.send_packet = without_ignore  # type: ignore[method-assign]
    cls._tunnel_ignore_patched = True  # type: ignore[attr-defined]
    return True
