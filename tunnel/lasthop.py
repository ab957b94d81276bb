"""The last hop's protection: explicit FTPS (RFC 4217) from the SSH server to the FTP server.

Under `ftp-tunnel` the proxy terminates the FTP control channel, so it can speak FTPS to the
server itself, inside the SSH channel: the client goes on talking plain FTP to the proxy on
loopback, the hop to the SSH server is SSH, and the hop from there to a third host is TLS.
This module is the policy (a rule's `last_hop_*` keys) and the server's authentication;
tls_pipe.py runs the TLS itself.

A TLS hop that anyone on the DMZ can intercept protects nothing, so the server is
authenticated by default: its chain against `last_hop_ca` (or the system's CAs) and the host
name the client asked for, or a pinned SHA-256 fingerprint of its certificate. `insecure`
exists for test beds and says so on every session, like host_key_policy = "insecure".
"""

from __future__ import annotations

import enum
import functools
import hashlib
import os
import ssl
from dataclasses import dataclass


class TlsMode(enum.Enum):
    OFF = "off"  # plain FTP on the last hop, as before
    TRY = "try"  # FTPS if the server accepts AUTH TLS, else clear (the audit says which)
    REQUIRE = "require"  # FTPS or no session


@dataclass(frozen=True)
class LastHopTls:
    mode: TlsMode = TlsMode.OFF
    ca_file: str = ""  # "" = the system's trusted CAs
    fingerprint: bytes = b""  # SHA-256 of the server certificate (DER); b"" = check the chain
    insecure: bool = False  # no check at all: test beds only

    @property
    def on(self) -> bool:
        return self.mode is not TlsMode.OFF

    def describe(self) -> str:
        """For `tunnel explain` and the log."""
        if not self.on:
            return "clear (last_hop_tls = off)"
        how = ("required" if self.mode is TlsMode.REQUIRE
               else "if the server accepts AUTH TLS, else clear")
        return f"FTPS (AUTH TLS, PROT P), {how}; server {self.authentication()}"

    def authentication(self) -> str:
        if self.insecure:
            return "NOT authenticated (last_hop_insecure = true: test beds only)"
        if self.fingerprint:
            return f"pinned by certificate fingerprint sha256:{self.fingerprint.hex()}"
        where = self.ca_file or "the system's trusted CAs"
        return f"certificate checked against {where} and the destination's name"


PLAIN = LastHopTls()  # the default: the last hop as it always was


def parse_fingerprint(text: str) -> bytes:
    """A SHA-256 fingerprint as people copy it: "sha256:<hex>", OpenSSL's "AB:CD:..." (from
    `openssl x509 -noout -fingerprint -sha256`), with or without its "sha256 Fingerprint="
    prefix. Raises ValueError with the reason."""
    value = text.strip()
    lowered = value.lower()
    for prefix in ("sha256 fingerprint=", "sha256:", "sha256="):
        if lowered.startswith(prefix):
            value = value[len(prefix):]
            break
    digits = value.replace(":", "").strip()
    try:
        digest = bytes.fromhex(digits)
    except ValueError:
        raise ValueError(f"{text!r} is not a SHA-256 fingerprint in hex (\"sha256:<64 hex "
                         "digits>\", or AB:CD:... as openssl x509 -fingerprint -sha256 prints "
                         "it)") from None
    if len(digest) != hashlib.sha256().digest_size:
        raise ValueError(f"{text!r} has {len(digest)} bytes; a SHA-256 fingerprint has 32")
    return digest


def client_context(policy: LastHopTls) -> ssl.SSLContext:
    """The TLS client context for a policy. One per policy and CA file version (cached):
    session reuse on data connections needs the control connection's own context, and
    loading a CA file per session would cost more than the handshake. Raises OSError or
    ssl.SSLError for a CA file that cannot be read."""
    mtime = os.stat(policy.ca_file).st_mtime_ns if policy.ca_file else 0
    return _context(policy, mtime)


def unusable_ca(policy: LastHopTls) -> str | None:
    """None if the policy's CA file loads, else why not (for the config's error)."""
    try:
        client_context(policy)
    except (OSError, ssl.SSLError) as exc:
        return f"cannot load {policy.ca_file}: {getattr(exc, 'strerror', None) or exc}"
    return None


@functools.lru_cache(maxsize=32)
def _context(policy: LastHopTls, ca_mtime: int) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=policy.ca_file or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # Offer a P-256 key share alone. OpenSSL's client leads with X25519, which vsftpd and
    # pure-ftpd do not take: each connection, control and every data connection, then
    # began with a HelloRetryRequest, one more round trip through SSH and the DMZ. P-256 is
    # the group every TLS 1.3 server must support (RFC 8446 §9.1).
    context.set_ecdh_curve("prime256v1")
    if policy.insecure or policy.fingerprint:
        # The pin replaces the chain and the name: a self-signed server certificate is the
        # usual reason to pin. check_peer() compares it before a byte of FTP is sent.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def check_peer(policy: LastHopTls, certificate: bytes | None) -> str | None:
    """After the handshake: None if the server is the one the policy names, else why not.
    The chain and name were checked by OpenSSL during the handshake; this adds the pin."""
    if not policy.fingerprint or policy.insecure:
        return None
    if certificate is None:
        return "the FTP server sent no certificate"
    seen = hashlib.sha256(certificate).digest()
    if seen != policy.fingerprint:
        return (f"the FTP server's certificate is sha256:{seen.hex()}, not the pinned "
                f"sha256:{policy.fingerprint.hex()}")
    return None
