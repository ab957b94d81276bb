"""The testbed's TLS side without a network: the run PKI, TLS records read by hand, and the
`tls` verdict on streams made by real in-memory TLS handshakes (ssl.MemoryBIO), clear
FTP as its positive control, and a small pcap through scapy's reassembly."""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from testbed import capture, runner, tlsca, tlswire
from testbed.capture import Capture
from testbed.scenario import ScenarioError, load

CLIENT, SERVER = "10.77.2.1", "10.77.2.2"
NEEDLES = [b"pw-secret-0123", b"FILEMARK-abcdef", b"dir-77aa"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tlsca.RunPki:
    return tlsca.write_run_pki(tmp_path_factory.mktemp("pki"),
                               {"ftp": ([SERVER, "fd77:0:2::2"], "run"),
                                "fake": ([SERVER], "other")})


# --- the PKI ------------------------------------------------------------------------------

def test_server_certificate_names_the_host_and_its_addresses(pki: tlsca.RunPki) -> None:
    cert = x509.load_pem_x509_certificate(pki.servers["ftp"].cert.read_bytes())
    ca = x509.load_pem_x509_certificate(pki.ca.read_bytes())
    cert.verify_directly_issued_by(ca)
    assert cert.subject.rfc4514_string() == "CN=ftp"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["ftp", "ftp-v6"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(SERVER),
                                                       ipaddress.ip_address("fd77:0:2::2")]
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= tlsca.VALIDITY + tlsca.SKEW
    der = cert.public_bytes(serialization.Encoding.DER)
    assert pki.fingerprints["ftp"] == "sha256:" + hashlib.sha256(der).hexdigest()
    assert pki.servers["ftp"].key.stat().st_mode & 0o777 == 0o600


def test_other_ca_signs_an_impostor_the_run_ca_refuses(pki: tlsca.RunPki) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(pki, "fake")


def test_placeholders_name_the_first_and_each_host(pki: tlsca.RunPki) -> None:
    values = runner.tls_placeholders(pki)
    assert values["tls_ca"] == str(pki.ca)
    assert values["tls_fingerprint"] == values["tls_fingerprint_ftp"] == pki.fingerprints["ftp"]
    assert values["tls_fingerprint_fake"].startswith("sha256:")
    assert len(values["tls_fingerprint"]) == len("sha256:") + 64


# --- real handshakes in memory -------------------------------------------------------------

@dataclass
class Wire:
    to_server: bytearray
    to_client: bytearray
    session: ssl.SSLSession | None = None


def contexts(pki: tlsca.RunPki, host: str = "ftp", max_version: str = "1.3",
             p256_only: bool = False) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(client, server): one pair per connection group, as resumption needs the same.
    `p256_only`: the server takes no other group, as vsftpd and pure-ftpd do, so a TLS
    1.3 client whose first key share is X25519 gets a HelloRetryRequest (OpenSSL 3 makes
    set_ecdh_curve the only group)."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pki.servers[host].cert, pki.servers[host].key)
    server_ctx.maximum_version = ssl.TLSVersion[f"TLSv1_{max_version[-1]}"]
    if p256_only:
        server_ctx.set_ecdh_curve("prime256v1")
    return ssl.create_default_context(cafile=str(pki.ca)), server_ctx


def handshake(pki: tlsca.RunPki, host: str = "ftp", max_version: str = "1.3",
              session: ssl.SSLSession | None = None, sni: str | None = "ftp",
              payload: bytes = b"",
              pair: tuple[ssl.SSLContext, ssl.SSLContext] | None = None) -> Wire:
    """A client (trusting the run CA) and the host's server through memory BIOs, then
    `payload` from the client: the bytes each way, as a capture would hold them."""
    client_ctx, server_ctx = pair or contexts(pki, host, max_version)
    bios = [ssl.MemoryBIO() for _ in range(4)]
    client = client_ctx.wrap_bio(bios[0], bios[1], server_hostname=sni, session=session)
    server = server_ctx.wrap_bio(bios[2], bios[3], server_side=True)
    wire = Wire(bytearray(), bytearray())

    def pump() -> None:
        out = bios[1].read()
        wire.to_server += out
        bios[2].write(out)
        back = bios[3].read()
        wire.to_client += back
        bios[0].write(back)

    done = [False, False]
    for _ in range(10):
        for n, side in enumerate((client, server)):
            if not done[n]:
                try:
                    side.do_handshake()
                    done[n] = True
                except ssl.SSLWantReadError:
                    pass
            pump()
    assert all(done)
    client.write(payload or b"x")
    pump()
    server.read(1 << 16)
    pump()
    # TLS 1.3: the tickets arrive after the handshake; read them to get a session
    with contextlib.suppress(ssl.SSLWantReadError):
        client.read(1)
    wire.session = client.session
    return wire


def explicit(wire: Wire) -> tuple[bytes, bytes]:
    """An explicit FTPS control connection carrying that handshake."""
    return (b"AUTH TLS\r\n" + bytes(wire.to_server),
            b"220 ready\r\n234 Proceed with negotiation.\r\n" + bytes(wire.to_client))


def ftps_capture(pki: tlsca.RunPki, max_version: str = "1.3", sni: str = "ftp",
                 clear_data: bytes = b"", p256_only: bool = False) -> Capture:
    pair = contexts(pki, max_version=max_version, p256_only=p256_only)
    pair[0].check_hostname = sni == "ftp"  # a client sending another name must still connect
    control = handshake(pki, sni=sni, payload=b"USER fts\r\n", pair=pair)
    data = handshake(pki, session=control.session, sni=sni, payload=b"random file bytes",
                     pair=pair)
    to_server, to_client = explicit(control)
    streams = {(CLIENT, 40001, SERVER, 21): to_server, (SERVER, 21, CLIENT, 40001): to_client,
               (CLIENT, 40002, SERVER, 30001): bytes(data.to_server),
               (SERVER, 30001, CLIENT, 40002): bytes(data.to_client),
               # active mode: the server opens it, and it is TLS all the same
               (SERVER, 20, CLIENT, 50001): b"", (CLIENT, 50001, SERVER, 20): b""}
    if clear_data:
        streams[(CLIENT, 40003, SERVER, 30002)] = clear_data
    return Capture("dmz", Path("/nonexistent.pcap"), packets=40, dropped=0, _streams=streams)


def controls_capture(pki: tlsca.RunPki, snis: list[str | None], max_version: str = "1.3"
                     ) -> Capture:
    """One explicit FTPS control connection per SNI (None: the client connected by
    address and sent none, as RFC 6066 §3 wants), from port 40001 on."""
    streams = {}
    for n, sni in enumerate(snis):
        pair = contexts(pki, max_version=max_version)
        pair[0].check_hostname = sni == "ftp"
        to_server, to_client = explicit(handshake(pki, sni=sni, payload=b"USER fts\r\n",
                                                  pair=pair))
        streams[(CLIENT, 40001 + n, SERVER, 21)] = to_server
        streams[(SERVER, 21, CLIENT, 40001 + n)] = to_client
    return Capture("dmz", Path("/nonexistent.pcap"), packets=40, dropped=0, _streams=streams)


def judge(taken: Capture, name: str = "ftp") -> capture.Verdict:
    return capture.tls(taken, NEEDLES, [SERVER], 21, name, skip_ports=[22])


# --- the records --------------------------------------------------------------------------

def test_records_and_their_handshake_messages(pki: tlsca.RunPki) -> None:
    wire = handshake(pki, max_version="1.2")
    seen = tlswire.handshake(bytes(wire.to_server), bytes(wire.to_client))
    assert seen.client is not None and seen.client.server_name == "ftp"
    assert seen.server is not None and seen.server.version_name == "TLSv1.2"
    assert tlswire.certificate_names(seen.certificates[0])[0] == ["ftp"]
    cut = bytes(wire.to_server)[:-3]  # a last record cut short is dropped, not an error
    assert tlswire.records(cut)[0].type == tlswire.HANDSHAKE


def test_resumption_after_a_hello_retry_request(pki: tlsca.RunPki) -> None:
    """vsftpd (P-256 only) answers a first X25519 key share with a HelloRetryRequest, then
    a middlebox-compatibility ChangeCipherSpec, then the ServerHello that accepts the PSK:
    taking the first ServerHello (the retry, extensions [43, 51]) or stopping at the
    ChangeCipherSpec said "0 resumed" where vsftpd said "reused"."""
    pair = contexts(pki, p256_only=True)
    control = handshake(pki, pair=pair)
    data = handshake(pki, session=control.session, pair=pair)
    assert [r.type for r in tlswire.records(bytes(data.to_client))][:3] == [
        tlswire.HANDSHAKE, tlswire.CHANGE_CIPHER_SPEC, tlswire.HANDSHAKE]
    seen = tlswire.handshake(bytes(data.to_server), bytes(data.to_client))
    assert seen.retry is not None and seen.retry.retry
    assert seen.retry.extensions == {tlswire.EXT_SUPPORTED_VERSIONS, 51}  # 51: key_share
    assert seen.server is not None and not seen.server.retry
    assert tlswire.EXT_PRE_SHARED_KEY in seen.server.extensions
    assert seen.tls13 and seen.resumed
    assert seen.client is not None and tlswire.EXT_PRE_SHARED_KEY in seen.client.extensions
    first = tlswire.handshake(bytes(control.to_server), bytes(control.to_client))
    assert first.retry is not None and first.server is not None and not first.resumed
    verdict = judge(ftps_capture(pki, p256_only=True))
    assert verdict.passed, verdict.detail
    assert "1 of 2 data connections TLS (1 resumed)" in verdict.detail


def test_tls12_stops_at_the_change_cipher_spec(pki: tlsca.RunPki) -> None:
    """In TLS 1.2 the Finished after a ChangeCipherSpec is an encrypted handshake record:
    it must not be read as a clear message (a resumed session shows no Certificate)."""
    pair = contexts(pki, max_version="1.2")
    data = handshake(pki, session=handshake(pki, pair=pair).session, pair=pair)
    assert tlswire.records(bytes(data.to_client))[2].type == tlswire.HANDSHAKE  # Finished
    seen = tlswire.handshake(bytes(data.to_server), bytes(data.to_client))
    assert seen.resumed and not seen.certificates and seen.retry is None
    assert [kind for kind, _ in tlswire.handshake_messages(
        tlswire.records(bytes(data.to_client)))] == [tlswire.SERVER_HELLO]


@pytest.mark.parametrize("data", [b"220 (vsFTPd 3.0.3)\r\n", b"\x16\x09\x01\x00\x05hello",
                                  b"\x17\x03\x03\xff\xff" + b"x" * 10, b"\x16\x03"])
def test_what_is_not_a_record_is_said(data: bytes) -> None:
    with pytest.raises(tlswire.NotTls):
        tlswire.records(data)


def test_auth_ssl_refused_then_auth_tls_taken(pki: tlsca.RunPki) -> None:
    wire = handshake(pki)
    to_server = b"AUTH SSL\r\nAUTH TLS\r\n" + bytes(wire.to_server)
    to_client = b"220 hi\r\n504 no\r\n234 go\r\n" + bytes(wire.to_client)
    _, client_tls, _, server_tls = tlswire.explicit_split(to_server, to_client)
    assert client_tls == bytes(wire.to_server) and server_tls == bytes(wire.to_client)


# --- the verdict ----------------------------------------------------------------------------

def test_tls12_passes_and_reads_the_certificate(pki: tlsca.RunPki) -> None:
    verdict = judge(ftps_capture(pki, max_version="1.2"))
    assert verdict.passed, verdict.detail
    assert "TLSv1.2" in verdict.detail and "certificate CN ftp" in verdict.detail
    assert "1 of 2 data connections TLS (1 resumed)" in verdict.detail


def test_tls13_passes_on_the_sni_and_says_the_certificate_was_not_seen(
        pki: tlsca.RunPki) -> None:
    verdict = judge(ftps_capture(pki))
    assert verdict.passed, verdict.detail
    assert "certificate not visible (TLSv1.3), SNI 'ftp'" in verdict.detail
    assert "(1 resumed)" in verdict.detail


def test_tls13_with_another_sni_fails(pki: tlsca.RunPki) -> None:
    verdict = judge(ftps_capture(pki, sni="elsewhere"))
    assert not verdict.passed and "want 'ftp'" in verdict.detail


def test_tls13_every_control_connection_by_name(pki: tlsca.RunPki) -> None:
    verdict = judge(controls_capture(pki, ["ftp", "ftp", "ftp"]))
    assert verdict.passed, verdict.detail
    assert "SNI 'ftp': named by SNI on 3 of 3 control connections;" in verdict.detail
    assert "by address" not in verdict.detail


def test_tls13_some_control_connections_by_address_pass(pki: tlsca.RunPki) -> None:
    """lftp resolves the name itself, so the proxy reaches the server by address and sends
    no SNI: that connection shows nothing, which is no failure while another names it."""
    verdict = judge(controls_capture(pki, [None, "ftp", None, "ftp"]))
    assert verdict.passed, verdict.detail
    assert ("named by SNI on 2 of 4 control connections, 2 by address (identity not "
            "visible in TLS 1.3)") in verdict.detail


def test_tls13_all_control_connections_by_address_fail(pki: tlsca.RunPki) -> None:
    verdict = judge(controls_capture(pki, [None, None]))
    assert not verdict.passed
    assert ("named on 0 of 2 control connections, 2 by address (identity not visible in "
            "TLS 1.3)") in verdict.detail
    assert "no control connection shows 'ftp'" in verdict.detail
    assert "nothing proves the server" in verdict.detail


def test_tls13_one_wrong_sni_among_good_ones_fails(pki: tlsca.RunPki) -> None:
    verdict = judge(controls_capture(pki, ["ftp", "elsewhere", None]))
    assert not verdict.passed
    assert ("named by SNI on 1 of 3 control connections, 1 by address (identity not "
            "visible in TLS 1.3), 1 naming another server") in verdict.detail
    assert (f"FAIL: control {CLIENT}:40002<->{SERVER}:21: certificate not visible "
            "(TLSv1.3), SNI 'elsewhere': want 'ftp'") in verdict.detail
    assert "nothing proves" not in verdict.detail


def test_tls12_certificates_on_every_control_connection(pki: tlsca.RunPki) -> None:
    verdict = judge(controls_capture(pki, ["ftp", None], max_version="1.2"))
    assert verdict.passed, verdict.detail
    assert "TLSv1.2 on 2 of 2 control connections; certificate CN ftp" in verdict.detail
    assert "named by certificate on 2 of 2 control connections;" in verdict.detail
    assert judge(controls_capture(pki, ["ftp", None], max_version="1.2"),
                 name="ftp2").detail.count("does not name 'ftp2'") == 2


def test_an_ip_literal_sni_of_the_server_is_by_address() -> None:
    def seen(sni: str) -> tlswire.Handshake:
        return tlswire.Handshake(tlswire.Hello(0x0303, b"", frozenset(), sni),
                                 tlswire.Hello(0x0304, b"", frozenset({43})))
    assert capture._names_server(seen(SERVER), "ftp", [SERVER])[0] == "hidden"
    assert capture._names_server(seen("10.9.9.9"), "ftp", [SERVER])[0] == "wrong"
    assert capture._names_server(seen("ftp-v6"), "ftp", [SERVER])[0] == "sni"


def test_tls12_certificate_for_another_name_fails(pki: tlsca.RunPki) -> None:
    verdict = judge(ftps_capture(pki, max_version="1.2"), name="ftp2")
    assert not verdict.passed and "does not name 'ftp2'" in verdict.detail


def test_a_clear_data_connection_fails(pki: tlsca.RunPki) -> None:
    verdict = judge(ftps_capture(pki, clear_data=b"random but clear bytes"))
    assert not verdict.passed
    assert f"data {CLIENT}:40003<->{SERVER}:30002: clear" in verdict.detail


def test_clear_ftp_fails_positive_control() -> None:
    streams = {(CLIENT, 40001, SERVER, 21): b"USER fts\r\nPASS pw-secret-0123\r\n",
               (SERVER, 21, CLIENT, 40001): b"220 hi\r\n331 pw\r\n230 in\r\n",
               (CLIENT, 40002, SERVER, 30001): b"FILEMARK-abcdef"}
    verdict = judge(Capture("dmz", Path("/x.pcap"), packets=12, dropped=0, _streams=streams))
    assert not verdict.passed
    assert "no AUTH TLS" in verdict.detail and "clear" in verdict.detail
    assert "2 of 3 needles in clear" in verdict.detail


def test_user_before_auth_and_no_capture_fail(pki: tlsca.RunPki) -> None:
    wire = handshake(pki)
    streams = {(CLIENT, 40001, SERVER, 21): b"USER fts\r\nAUTH TLS\r\n" + bytes(wire.to_server),
               (SERVER, 21, CLIENT, 40001): b"220 hi\r\n234 go\r\n" + bytes(wire.to_client)}
    verdict = judge(Capture("dmz", Path("/x.pcap"), packets=8, dropped=0, _streams=streams))
    assert not verdict.passed and "USER before AUTH TLS" in verdict.detail
    assert not judge(Capture("dmz", Path("/x.pcap"), packets=0)).passed
    other = Capture("dmz", Path("/x.pcap"), packets=3, dropped=0,
                    _streams={(CLIENT, 40001, SERVER, 22): b"SSH-2.0-x\r\n"})
    assert "no FTP control connection" in judge(other).detail


def test_link_state_says_tls(pki: tlsca.RunPki) -> None:
    assert capture.link_state(ftps_capture(pki), NEEDLES) == "tls"
    plain = Capture("dmz", Path("/x.pcap"), packets=3, dropped=0,
                    _streams={(CLIENT, 1, SERVER, 21): b"USER a\r\n"})
    assert capture.link_state(plain, NEEDLES) == "other"


def test_the_verdict_reads_a_pcap(pki: tlsca.RunPki, tmp_path: Path) -> None:
    from scapy.layers.inet import IP, TCP
    from scapy.utils import wrpcap

    taken = ftps_capture(pki, max_version="1.2")
    packets = []
    for (src, sport, dst, dport), data in taken.streams().items():
        packets.append(IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags="S", seq=99))
        for at in range(0, len(data), 500):  # segments of 500 bytes, the last one first
            packets.insert(len(packets) - (at > 0), IP(src=src, dst=dst) / TCP(
                sport=sport, dport=dport, flags="PA", seq=100 + at) / data[at:at + 500])
    pcap = tmp_path / "dmz.pcap"
    wrpcap(str(pcap), packets)
    verdict = judge(Capture("dmz", pcap, packets=len(packets), dropped=0))
    assert verdict.passed, verdict.detail


# --- scenario keys ----------------------------------------------------------------------------

SCENARIO = """
[[topology.host]]
name = "ssh"
[[topology.host]]
name = "ftp"
[[topology.link]]
name = "dmz"
hosts = ["ssh", "ftp"]
[[service]]
kind = "sshd"
host = "ssh"
[[service]]
kind = "vsftpd"
host = "ftp"
{service}
[[step]]
client = "curl"
[[check]]
verdict = "tls"
link = "dmz"
{check}
"""


def test_tls_keys_and_verdict_load(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(SCENARIO.format(service='tls = true\ntls_ca = "other"\ntls_max = "1.2"',
                                    check=""))
    scenario = load(path)
    ftp = scenario.service("vsftpd")
    assert (ftp.tls, ftp.tls_ca, ftp.tls_max) == (True, "other", "1.2")
    assert scenario.checks[0].server == "ftp"


@pytest.mark.parametrize(("service", "check", "reason"), [
    ("tls_ca = \"run\"", "", "only with tls = true"),
    ("tls = true\ntls_ca = \"mine\"", "", "is not one of run, other"),
    ("tls = true\ntls_max = \"1.3\"", "", "is not one of , 1.2"),
    ("tls = \"yes\"", "", "is not true or false"),
    ("", "", "no TLS service on link 'dmz'"),
    ("tls = true", "server = \"ssh\"", "'ssh' is not a host with a TLS service"),
])
def test_bad_tls_keys_say_where(tmp_path: Path, service: str, check: str, reason: str) -> None:
    path = tmp_path / "s.toml"
    path.write_text(SCENARIO.format(service=service, check=check))
    with pytest.raises(ScenarioError, match=reason):
        load(path)
