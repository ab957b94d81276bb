"""TLS as seen on the wire, read by hand from reassembled TCP streams: records (RFC 8446
§5.1), the clear handshake messages at their start (ClientHello, ServerHello, and in TLS
1.2 the Certificate), and explicit FTPS's clear prefix (RFC 4217 §4: `AUTH TLS`, `234`).

A TLS 1.3 server that wants another key share answers with a HelloRetryRequest, a
ServerHello with a fixed random (RFC 8446 §4.1.3), then most often a ChangeCipherSpec for
middlebox compatibility (§D.4), and only after the client's second ClientHello the
ServerHello that counts (vsftpd, which offers only P-256, does so to every client whose
first key share is X25519). So in TLS 1.3 the clear handshake goes on past a
ChangeCipherSpec, up to the first application data record, and the ServerHello is the
first one that is not a HelloRetryRequest.

Bytes in, plain data out: no socket, no scapy, no ssl module. What cannot be read raises
NotTls with the reason, for the `tls` verdict to say.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.x509.oid import NameOID

CHANGE_CIPHER_SPEC, ALERT, HANDSHAKE, APPLICATION_DATA = 20, 21, 22, 23
CLIENT_HELLO, SERVER_HELLO, CERTIFICATE = 1, 2, 11
EXT_SERVER_NAME, EXT_SUPPORTED_VERSIONS, EXT_PRE_SHARED_KEY = 0, 43, 41
# RFC 8446 §4.1.3: a HelloRetryRequest is a ServerHello with this random, SHA-256 of
# "HelloRetryRequest".
HELLO_RETRY_RANDOM = bytes.fromhex(
    "cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")
MAX_RECORD = (1 << 14) + 2048  # RFC 8446 §5.2: a ciphertext record's length limit
VERSIONS = {0x0301: "TLSv1.0", 0x0302: "TLSv1.1", 0x0303: "TLSv1.2", 0x0304: "TLSv1.3"}
# RFC 4217 §4: the client's AUTH command, and the server's 234 that starts the handshake.
AUTH_LINE = re.compile(rb"AUTH (TLS|SSL|TLS-C)\r?\n", re.IGNORECASE)
REPLY_234 = re.compile(rb"234 [^\n]*\n")


class NotTls(ValueError):
    """Bytes that are not TLS records where TLS was due; the message says what they are."""


@dataclass(frozen=True)
class Record:
    type: int
    version: int
    payload: bytes


@dataclass(frozen=True)
class Hello:
    """A ClientHello's or ServerHello's fields a verdict needs. For a ServerHello,
    `version` is the one chosen (supported_versions, RFC 8446 §4.2.1, else legacy)."""

    version: int
    session_id: bytes
    extensions: frozenset[int]
    server_name: str | None = None  # ClientHello only: SNI host_name (RFC 6066 §3)
    retry: bool = False  # ServerHello only: a HelloRetryRequest (RFC 8446 §4.1.4)

    @property
    def version_name(self) -> str:
        return VERSIONS.get(self.version, f"0x{self.version:04x}")


@dataclass
class Handshake:
    """What the clear handshake of one connection showed. `client` is the ClientHello the
    ServerHello answers (the second one after a HelloRetryRequest), `server` the ServerHello
    proper, never the HelloRetryRequest, which is `retry`."""

    client: Hello | None = None
    server: Hello | None = None
    retry: Hello | None = None
    certificates: list[bytes] = field(default_factory=list)  # DER, leaf first (TLS <= 1.2)

    @property
    def tls13(self) -> bool:
        return self.server is not None and self.server.version == 0x0304

    @property
    def resumed(self) -> bool:
        """A resumed session: a PSK accepted (TLS 1.3), or the client's session id echoed
        with no Certificate (TLS <= 1.2, RFC 5246 §7.3); a ticket resumption does the same."""
        if self.server is None or self.client is None:
            return False
        if self.tls13:
            return EXT_PRE_SHARED_KEY in self.server.extensions
        return not self.certificates and bool(self.server.session_id) and (
            self.server.session_id == self.client.session_id
            or 35 in self.client.extensions)  # 35: session_ticket (RFC 5077)


def describe(data: bytes) -> str:
    """A few bytes of something that is not TLS, said readably (b'220 (vsFTPd 3.0.3)')."""
    return repr(data[:24])


def records(data: bytes) -> list[Record]:
    """Every record in `data`, which must start with one. A last record cut short (the
    capture ended, the connection was reset) is dropped, not an error."""
    out, at = [], 0
    while len(data) - at >= 5:
        kind, version, length = data[at], int.from_bytes(data[at + 1:at + 3]), \
            int.from_bytes(data[at + 3:at + 5])
        if kind not in (CHANGE_CIPHER_SPEC, ALERT, HANDSHAKE, APPLICATION_DATA) or \
                version >> 8 != 3 or length > MAX_RECORD:
            where = "starts with" if at == 0 else f"has at byte {at}"
            raise NotTls(f"{where} {describe(data[at:])}, not a TLS record")
        out.append(Record(kind, version, data[at + 5:at + 5 + length]))
        at += 5 + length
    if at == 0 and data:
        raise NotTls(f"holds {describe(data)}, too short for a TLS record")
    return out


def handshake_messages(stream: list[Record], tls13: bool = False
                       ) -> list[tuple[int, bytes]]:
    """(type, body) of the handshake messages in the clear records at the start of a
    stream: the handshake records before the first application data or alert record, and
    before the first ChangeCipherSpec unless `tls13`. In TLS <= 1.2 a ChangeCipherSpec
    starts encryption (the Finished after it is an encrypted handshake record); in TLS 1.3
    it is a dummy for middleboxes (RFC 8446 §D.4), which can come between a
    HelloRetryRequest and the ServerHello, and everything encrypted is application data
    (§5.2). Messages may span records and records may hold several (§5.1)."""
    clear = bytearray()
    for record in stream:
        if tls13 and record.type == CHANGE_CIPHER_SPEC:
            continue
        if record.type != HANDSHAKE:
            break
        clear += record.payload
    messages, at = [], 0
    while len(clear) - at >= 4:
        length = int.from_bytes(clear[at + 1:at + 4])
        if at + 4 + length > len(clear):
            break  # cut short: the rest is in a record we did not get
        messages.append((clear[at], bytes(clear[at + 4:at + 4 + length])))
        at += 4 + length
    return messages


class _Reader:
    """Length-prefixed fields of a handshake message (RFC 8446 §3.4)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise NotTls("a handshake message is shorter than its fields")
        part = self.data[self.at:self.at + n]
        self.at += n
        return part

    def number(self, n: int) -> int:
        return int.from_bytes(self.take(n))

    def vector(self, length_bytes: int) -> bytes:
        return self.take(self.number(length_bytes))

    def extensions(self) -> dict[int, bytes]:
        if self.at >= len(self.data):
            return {}
        block = _Reader(self.vector(2))
        found = {}
        while block.at < len(block.data):
            kind = block.number(2)
            found[kind] = block.vector(2)
        return found


def _server_name(extension: bytes) -> str | None:
    names = _Reader(_Reader(extension).vector(2))
    while names.at < len(names.data):
        kind, name = names.number(1), names.vector(2)
        if kind == 0:  # host_name
            return name.decode("ascii", errors="replace")
    return None


def client_hello(body: bytes) -> Hello:
    reader = _Reader(body)
    version = reader.number(2)
    reader.take(32)  # random
    session_id = reader.vector(1)
    reader.vector(2)  # cipher suites
    reader.vector(1)  # compression methods
    extensions = reader.extensions()
    sni = _server_name(extensions[EXT_SERVER_NAME]) if EXT_SERVER_NAME in extensions else None
    return Hello(version, session_id, frozenset(extensions), sni)


def server_hello(body: bytes) -> Hello:
    reader = _Reader(body)
    version = reader.number(2)
    random = reader.take(32)
    session_id = reader.vector(1)
    reader.take(3)  # cipher suite, compression method
    extensions = reader.extensions()
    chosen = extensions.get(EXT_SUPPORTED_VERSIONS, b"")
    if len(chosen) == 2:
        version = int.from_bytes(chosen)
    return Hello(version, session_id, frozenset(extensions),
                 retry=random == HELLO_RETRY_RANDOM)


def certificate_list(body: bytes) -> list[bytes]:
    """The DER certificates of a TLS 1.2 Certificate message (RFC 5246 §7.4.2)."""
    chain = _Reader(_Reader(body).vector(3))
    ders = []
    while chain.at < len(chain.data):
        ders.append(chain.vector(3))
    return ders


def handshake(to_server: bytes, to_client: bytes) -> Handshake:
    """The clear handshake of one connection from its two TLS streams."""
    seen = Handshake()
    from_server, from_client = records(to_client), records(to_server)
    # The server's first message, ServerHello or HelloRetryRequest, comes before any
    # ChangeCipherSpec of its own and says whether TLS 1.3 was chosen (both carry
    # supported_versions); only then may the clear part go on past a ChangeCipherSpec.
    first = next((server_hello(body) for kind, body in handshake_messages(from_server)
                  if kind == SERVER_HELLO), None)
    tls13 = first is not None and first.version == 0x0304
    for kind, body in handshake_messages(from_client, tls13):
        if kind == CLIENT_HELLO and (seen.client is None or tls13):
            seen.client = client_hello(body)  # TLS 1.3: the last, after a retry
    for kind, body in handshake_messages(from_server, tls13):
        if kind == SERVER_HELLO and seen.server is None:
            hello = server_hello(body)
            if hello.retry:
                seen.retry = seen.retry or hello
            else:
                seen.server = hello
        elif kind == CERTIFICATE and not seen.certificates and not seen.tls13:
            seen.certificates = certificate_list(body)
    return seen


def certificate_names(der: bytes) -> tuple[list[str], list[str]]:
    """(subject CNs, SAN DNS names and IP addresses) of a DER certificate."""
    cert = x509.load_der_x509_certificate(der)
    cns = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return cns, []
    ips: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [
        ip for ip in san.get_values_for_type(x509.IPAddress)
        if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address)]
    return cns, [*san.get_values_for_type(x509.DNSName), *(str(ip) for ip in ips)]


def explicit_split(to_server: bytes, to_client: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """An explicit FTPS control connection cut where TLS starts: (client's clear commands,
    client's TLS, server's clear replies, server's TLS). NotTls if it never asked, or the
    bytes after `AUTH` / `234` are not TLS records."""
    auth = _tls_after(AUTH_LINE, to_server)
    if auth is None:
        raise NotTls(f"clear FTP: no AUTH TLS (the client sent {describe(to_server)})")
    reply = _tls_after(REPLY_234, to_client)
    if reply is None:
        raise NotTls(f"clear FTP: the server never said 234 to AUTH (it sent "
                     f"{describe(to_client)})")
    clear_commands = to_server[:auth.end()]
    for line in clear_commands.splitlines():
        if line[:5].upper() in (b"USER ", b"PASS "):
            raise NotTls(f"clear FTP: {line[:4].decode(errors='replace')} before AUTH TLS")
    return clear_commands, to_server[auth.end():], to_client[:reply.end()], \
        to_client[reply.end():]


def _tls_after(line: re.Pattern[bytes], data: bytes) -> re.Match[bytes] | None:
    """The `line` after which TLS starts (curl's AUTH SSL may be refused before its AUTH
    TLS is taken), else the last one, whose clear sequel explicit_split then reports."""
    found = list(line.finditer(data))
    return next((m for m in found if data[m.end():m.end() + 1] == bytes([HANDSHAKE])),
                found[-1] if found else None)
