"""last_hop_tls: the layer's FTPS dialogue with the server as transcripts, the policy's
config keys and fingerprints, and TlsPipe against a real TLS server object in memory."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tunnel import config
from tunnel.errors import ConfigError
from tunnel.ftp_layer import (
    Close,
    ConnectActive,
    ExpectData,
    FtpLayer,
    LastHop,
    Note,
    OpenUpstream,
    StartTls,
    State,
    ToClient,
    ToServer,
)
from tunnel.lasthop import LastHopTls, TlsMode, check_peer, client_context, parse_fingerprint
from tunnel.relay import Side
from tunnel.tls_pipe import TlsPipe, TlsServerSide


def tls_layer(mode: TlsMode = TlsMode.REQUIRE, from_app: bool = True) -> FtpLayer:
    return FtpLayer(client_host="127.0.0.1", server_host="ftp.example",
                    credentials_from_app=from_app, last_hop_tls=mode)


def wire(actions: list[object]) -> list[object]:
    return [a for a in actions if not isinstance(a, Note)]


def to_client(actions: list[object]) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, ToClient))


def up_to_auth(layer: FtpLayer) -> None:
    layer.start()
    layer.client_data(b"USER alice\r\nPASS s3cret\r\n")
    layer.upstream_opened()
    assert layer.server_data(b"220 real server\r\n") == [ToServer(b"AUTH TLS\r\n")]
    assert layer.state is State.TLS_AUTH


def logged_in_over_tls(layer: FtpLayer, protection: bytes = b"200 PROT P\r\n") -> None:
    """Greeting, AUTH TLS accepted, handshake done, login, PBSZ accepted; `protection` is
    the server's reply to PROT P (b"": left for the test to send)."""
    up_to_auth(layer)
    layer.server_data(b"234 go\r\n")
    layer.tls_ready()
    layer.server_data(b"331 p\r\n")
    layer.server_data(b"230 in\r\n200 PBSZ=0\r\n" + protection)


def test_require_logs_in_over_tls_then_protects_the_data() -> None:
    layer = tls_layer()
    up_to_auth(layer)
    assert layer.server_data(b"234 Proceed with negotiation.\r\n") == [StartTls()]
    # Nothing of the login goes out before the glue says the server is authenticated.
    assert layer.state is State.TLS_HANDSHAKE
    assert wire(layer.tls_ready()) == [LastHop("tls-control"), ToServer(b"USER alice\r\n")]
    assert layer.server_data(b"331 Password?\r\n") == [ToServer(b"PASS s3cret\r\n")]
    out = wire(layer.server_data(b"230 Logged in\r\n"))
    assert out[1:] == [ToServer(b"PBSZ 0\r\n"), ToServer(b"PROT P\r\n")]
    assert to_client(out).startswith(b"230-")
    # A client pipelining PASV after the 230: PBSZ and PROT reach the server first.
    assert layer.client_data(b"PASV\r\n") == [ToServer(b"PASV\r\n")]
    assert layer.server_data(b"200 PBSZ=0\r\n") == []
    assert wire(layer.server_data(b"200 PROT now Private.\r\n")) == [LastHop("tls")]
    assert layer.data_tls
    out = layer.server_data(b"227 Entering Passive Mode (10,0,0,5,117,48).\r\n")
    assert ExpectData("10.0.0.5", "ftp.example", 30000, tls=True) in out


def test_active_transfers_are_tls_too() -> None:
    layer = tls_layer()
    logged_in_over_tls(layer)
    layer.client_data(b"PORT 127,0,0,1,200,10\r\n")
    assert layer.client_data(b"RETR f\r\n") == [ToServer(b"EPSV\r\n")]
    out = layer.server_data(b"229 Entering Extended Passive Mode (|||30001|)\r\n")
    assert out == [ConnectActive("ftp.example", 30001, "127.0.0.1", 51210, tls=True)]


def test_require_refused_auth_tls_ends_the_session_before_the_login() -> None:
    layer = tls_layer()
    up_to_auth(layer)
    out = layer.server_data(b"530 Please login with USER and PASS.\r\n")
    assert to_client(out).startswith(b"421 Service not available: the FTP server refused "
                                     b"AUTH TLS (530")
    failure = next(a for a in out if isinstance(a, LastHop))
    assert failure.protection == "clear" and "refused AUTH TLS" in failure.failure
    assert isinstance(out[-1], Close)
    assert not any(isinstance(a, ToServer) for a in out)  # no USER, no PASS


def test_try_falls_back_to_clear_and_says_so() -> None:
    layer = tls_layer(TlsMode.TRY)
    up_to_auth(layer)
    out = wire(layer.server_data(b"500 AUTH not understood\r\n"))
    assert out == [LastHop("clear"), ToServer(b"USER alice\r\n")]
    layer.server_data(b"331 p\r\n")
    out = wire(layer.server_data(b"230 in\r\n"))
    assert not any(isinstance(a, ToServer) for a in out)  # no PBSZ/PROT without TLS
    assert not layer.data_tls


def test_try_with_prot_refused_keeps_tls_on_the_control_connection_only() -> None:
    layer = tls_layer(TlsMode.TRY)
    logged_in_over_tls(layer, protection=b"")
    assert wire(layer.server_data(b"536 PROT P not supported\r\n")) == [LastHop("tls-control")]
    assert not layer.data_tls and layer.state is State.RELAY


def test_require_with_prot_refused_closes() -> None:
    layer = tls_layer()
    logged_in_over_tls(layer, protection=b"")
    out = layer.server_data(b"536 no\r\n")
    assert to_client(out).startswith(b"421 ") and isinstance(out[-1], Close)


def test_a_failed_handshake_never_sends_the_login() -> None:
    layer = tls_layer()
    up_to_auth(layer)
    layer.server_data(b"234 go\r\n")
    out = layer.tls_failed("certificate verify failed: unable to get local issuer certificate")
    assert not any(isinstance(a, ToServer) for a in out)
    assert b"421 Service not available: TLS to the FTP server failed" in to_client(out)
    assert layer.state is State.CLOSED


def test_fixed_credentials_hear_the_greeting_once_the_hop_is_secured() -> None:
    layer = tls_layer(from_app=False)
    assert layer.start() == []
    assert layer.client_data(b"USER bob\r\n") == []  # held: the hop is not secured yet
    assert layer.server_data(b"220 hello\r\n") == [ToServer(b"AUTH TLS\r\n")]
    assert layer.server_data(b"234 go\r\n") == [StartTls()]
    out = wire(layer.tls_ready())
    assert out == [LastHop("tls-control"), ToClient(b"220 hello\r\n"), ToServer(b"USER bob\r\n")]
    out = wire(layer.server_data(b"230 no password needed\r\n"))
    assert out == [ToClient(b"230 no password needed\r\n"), ToServer(b"PBSZ 0\r\n"),
                   ToServer(b"PROT P\r\n")]


def test_the_clients_own_protection_commands_never_reach_the_server() -> None:
    layer = tls_layer()
    logged_in_over_tls(layer)
    for command in (b"PROT C\r\n", b"PBSZ 0\r\n", b"CCC\r\n"):
        out = layer.client_data(command)
        assert not any(isinstance(a, ToServer) for a in out)
        assert to_client(out).startswith(b"503 ")


def test_off_changes_nothing() -> None:
    layer = FtpLayer(client_host="127.0.0.1", server_host="ftp.example",
                     credentials_from_app=True)
    layer.start()
    layer.client_data(b"USER a\r\nPASS b\r\n")
    assert layer.client_data(b"") == []
    layer.upstream_opened()
    assert layer.server_data(b"220 x\r\n") == [ToServer(b"USER a\r\n")]
    assert isinstance(OpenUpstream("a", "b"), OpenUpstream)


# -- the policy ----------------------------------------------------------------------------------
BASE = """
[[profile]]
id = "p"
[[rule]]
dst = "ftp"
action = "ftp-tunnel"
profile = "p"
"""


def test_fingerprints_in_the_forms_people_copy() -> None:
    digest = bytes(range(32))
    colons = ":".join(f"{b:02X}" for b in digest)
    assert parse_fingerprint(f"sha256:{digest.hex()}") == digest
    assert parse_fingerprint(colons) == digest
    assert parse_fingerprint(f"sha256 Fingerprint={colons}") == digest
    with pytest.raises(ValueError, match="32"):
        parse_fingerprint("sha256:abcd")
    with pytest.raises(ValueError, match="hex"):
        parse_fingerprint("SHA256:uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek")


@pytest.mark.parametrize(("extra", "key", "reason"), [
    ('last_hop_tls = "yes"', "last_hop_tls", "not one of: off, try, require"),
    ('last_hop_ca = "/x"', "last_hop_ca", "no effect with last_hop_tls"),
    ('last_hop_tls = "require"\nlast_hop_ca = "/nonexistent/ca.pem"', "last_hop_ca",
     "cannot load"),
    ('last_hop_tls = "require"\nlast_hop_fingerprint = "sha256:00"', "last_hop_fingerprint",
     "32"),
    ('last_hop_tls = "require"\nlast_hop_insecure = true\nlast_hop_fingerprint = "sha256:'
     + "00" * 32 + '"', "last_hop_", "choose one way"),
])
def test_bad_last_hop_keys_name_the_key(extra: str, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config.parse(BASE + extra)
    assert f"rule[1].{key}" in str(caught.value) and reason in str(caught.value)


def test_only_ftp_tunnel_can_protect_the_last_hop() -> None:
    with pytest.raises(ConfigError, match="only the ftp-tunnel action"):
        config.parse(BASE.replace("ftp-tunnel", "tunnel") + 'last_hop_tls = "try"')


def test_the_policy_describes_itself() -> None:
    cfg = config.parse(BASE + 'last_hop_tls = "require"')
    policy = cfg.rules.rules[0].last_hop
    assert policy.mode is TlsMode.REQUIRE and not policy.fingerprint
    assert "system's trusted CAs" in policy.describe()
    assert "NOT authenticated" in LastHopTls(TlsMode.TRY, insecure=True).describe()
    assert config.parse(BASE).rules.rules[0].last_hop.describe().startswith("clear")


# -- TlsPipe against a real TLS server in memory ---------------------------------------------------
def make_cert(tmp: Path, name: str) -> tuple[Path, Path, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / f"{name}.crt", tmp / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path, cert.public_bytes(serialization.Encoding.DER)


def handshake(pipe: TlsPipe, server_ctx: ssl.SSLContext) -> tuple[ssl.SSLObject, bool]:
    """Pump bytes between the pipe and a server SSLObject until both are done."""
    s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    s_in.write(pipe.start())
    done = False
    for _ in range(10):
        with contextlib.suppress(ssl.SSLWantReadError):
            server.do_handshake()
        got = pipe.receive(s_out.read())
        done = done or got.handshake_done
        if got.to_send:
            s_in.write(got.to_send)
        if pipe.handshaken:
            break
    return server, done


def test_pipe_verifies_the_ca_and_the_name_and_carries_bytes(tmp_path: Path) -> None:
    cert, key, der = make_cert(tmp_path, "ftp.example")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    policy = LastHopTls(TlsMode.REQUIRE, ca_file=str(cert))
    pipe = TlsPipe(client_context(policy), "ftp.example")
    _, done = handshake(pipe, server_ctx)
    assert done and check_peer(policy, pipe.peer_certificate) is None
    wire_bytes = pipe.send(b"USER alice\r\n")
    assert b"alice" not in wire_bytes
    # The wrong name fails the handshake: a certificate for someone else is an impostor's.
    other = TlsPipe(client_context(policy), "impostor.example")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(other, server_ctx)
    pinned = LastHopTls(TlsMode.REQUIRE, fingerprint=hashlib.sha256(der).digest())
    pipe = TlsPipe(client_context(pinned), "10.0.0.5")
    handshake(pipe, server_ctx)
    assert check_peer(pinned, pipe.peer_certificate) is None
    wrong = LastHopTls(TlsMode.REQUIRE, fingerprint=bytes(32))
    assert "not the pinned" in (check_peer(wrong, pipe.peer_certificate) or "")


# -- TlsServerSide: a data connection's server side in TLS -----------------------------------
class FakeRelay:
    """Records what the TLS side hands the relay (the Sink calls)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.data_in = b""

    def attach(self, side: Side, endpoint: object) -> None:
        self.calls.append(("attach", side))

    def data(self, side: Side, data: bytes) -> None:
        self.data_in += data

    def eof(self, side: Side) -> None:
        self.calls.append(("eof", side))

    def pause_writing(self, side: Side) -> None:
        self.calls.append(("pause_writing", side))

    def resume_writing(self, side: Side) -> None:
        self.calls.append(("resume_writing", side))

    def lost(self, side: Side, exc: BaseException | None) -> None:
        self.calls.append(("lost", str(exc)))


class WireEnd:
    """The SSH channel under the TLS side: what it was asked to send."""

    def __init__(self) -> None:
        self.sent = b""
        self.eof = self.closed = False

    def write(self, data: bytes) -> None:
        self.sent += data

    def write_eof(self) -> None:
        self.eof = True

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...

    def close(self) -> None:
        self.closed = True


def tls_side(tmp_path: Path, check: Callable[[TlsPipe], str | None] = lambda p: None,
             ) -> tuple[TlsServerSide, FakeRelay, WireEnd, ssl.SSLObject, ssl.MemoryBIO,
                        ssl.MemoryBIO]:
    cert, key, _ = make_cert(tmp_path, "ftp.example")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    relay, wire_end = FakeRelay(), WireEnd()
    side = TlsServerSide(relay, TlsPipe(client_context(LastHopTls(
        TlsMode.REQUIRE, ca_file=str(cert))), "ftp.example"), check)
    side.attach(Side.SERVER, wire_end)
    return side, relay, wire_end, server, s_in, s_out


def pump(side: TlsServerSide, wire_end: WireEnd, server: ssl.SSLObject, s_in: ssl.MemoryBIO,
         s_out: ssl.MemoryBIO) -> None:
    for _ in range(6):
        s_in.write(wire_end.sent)
        wire_end.sent = b""
        with contextlib.suppress(ssl.SSLWantReadError):
            server.do_handshake()
        if s_out.pending:
            side.data(Side.SERVER, s_out.read())


def test_an_upload_waits_for_the_handshake_without_piling_up(tmp_path: Path) -> None:
    side, relay, wire_end, server, s_in, s_out = tls_side(tmp_path)
    block = b"x" * (64 * 1024)
    for _ in range(5):  # 320 KiB before the handshake: the client is paused past 256 KiB
        side.write(block)
    side.write_eof()
    assert ("pause_writing", Side.SERVER) in relay.calls
    assert b"x" * 100 not in wire_end.sent
    pump(side, wire_end, server, s_in, s_out)
    assert ("resume_writing", Side.SERVER) in relay.calls and wire_end.eof
    received = b""
    with contextlib.suppress(ssl.SSLWantReadError, ssl.SSLZeroReturnError):
        while chunk := server.read(1 << 20):
            received += chunk
    assert received == block * 5  # whole, in order, then close_notify


def test_the_servers_close_notify_ends_the_download(tmp_path: Path) -> None:
    side, relay, wire_end, server, s_in, s_out = tls_side(tmp_path)
    pump(side, wire_end, server, s_in, s_out)
    server.write(b"file bytes")
    with contextlib.suppress(ssl.SSLWantReadError):
        server.unwrap()
    side.data(Side.SERVER, s_out.read())
    assert relay.data_in == b"file bytes" and ("eof", Side.SERVER) in relay.calls
    assert wire_end.sent  # our close_notify went back: vsftpd waits for it
    side.eof(Side.SERVER)  # the TCP end after it: heard once, not twice
    assert relay.calls.count(("eof", Side.SERVER)) == 1


def test_a_refused_certificate_loses_the_connection_before_any_byte(tmp_path: Path) -> None:
    side, relay, wire_end, server, s_in, s_out = tls_side(tmp_path, lambda p: "not pinned")
    side.write(b"secret file")
    pump(side, wire_end, server, s_in, s_out)
    assert any(name == "lost" and "not pinned" in str(arg) for name, arg in relay.calls)
    assert wire_end.closed


def test_a_download_the_client_left_is_drained_not_cut(tmp_path: Path) -> None:
    """proftpd drops the whole session on a broken pipe on a TLS data connection: the
    server is told the end in TLS and read until it ends, never cut mid-write."""

    async def run() -> None:
        side, relay, wire_end, server, s_in, s_out = tls_side(tmp_path)
        pump(side, wire_end, server, s_in, s_out)
        wire_end.sent = b""
        side.close()  # the relay is done: its client reset the connection
        assert not wire_end.closed and wire_end.eof and wire_end.sent  # close_notify, EOF
        server.write(b"more of the file")
        side.data(Side.SERVER, s_out.read())  # read and dropped
        assert relay.data_in == b"" and not wire_end.closed
        side.eof(Side.SERVER)  # the server ended it: now it is closed
        assert wire_end.closed
        assert ("eof", Side.SERVER) not in relay.calls  # the relay was already done

    asyncio.run(run())


def test_the_channels_end_after_the_relay_closed_is_harmless(tmp_path: Path) -> None:
    """asyncssh delivers the channel's EOF after the close_notify ended the relay: an
    exception there would take the whole SSH connection down."""
    side, relay, wire_end, server, s_in, s_out = tls_side(tmp_path)
    pump(side, wire_end, server, s_in, s_out)
    with contextlib.suppress(ssl.SSLWantReadError):
        server.unwrap()
    side.data(Side.SERVER, s_out.read())
    side.close()  # ended: closed at once
    assert wire_end.closed
    side.eof(Side.SERVER)
    side.data(Side.SERVER, b"late")
    assert relay.calls.count(("eof", Side.SERVER)) == 1


def test_feat_does_not_offer_what_the_proxy_refuses() -> None:
    layer = tls_layer()
    logged_in_over_tls(layer)
    assert layer.client_data(b"FEAT\r\n") == [ToServer(b"FEAT\r\n")]
    out = layer.server_data(b"211-Features:\r\n AUTH TLS\r\n PBSZ\r\n PROT\r\n EPSV\r\n"
                            b" MDTM\r\n211 End\r\n")
    assert to_client(out) == b"211-Features:\r\n EPSV\r\n MDTM\r\n211 End\r\n"
