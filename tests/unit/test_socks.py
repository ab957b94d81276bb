"""SOCKS codec as transcripts: hex vectors fed whole, in two parts, and one byte at a time."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunnel.errors import RemoteProtocolError
from tunnel.socks import (
    NEED_DATA,
    AddressType,
    AuthMethod,
    AuthRequest,
    Command,
    Credentials,
    Reply,
    Request,
    Socks4Reply,
    SocksServer,
    encode_socks4_reply,
    encode_socks4_request,
    encode_socks5_auth,
    encode_socks5_greeting,
    encode_socks5_reply,
    encode_socks5_request,
)

NO_AUTH = bytes.fromhex("050100")

# (name, request bytes after the greeting, expected Request)
GOOD_REQUESTS = [
    ("socks5 ipv4", "050100017f0000010015",
     Request(5, Command.CONNECT, "127.0.0.1", 21, AddressType.IPV4)),
    ("socks5 ipv6", "05010004" + "00" * 15 + "01" + "0015",
     Request(5, Command.CONNECT, "::1", 21, AddressType.IPV6)),
    ("socks5 name", "050100030f6674702e6578616d706c652e6f72670015",
     Request(5, Command.CONNECT, "ftp.example.org", 21, AddressType.DOMAIN)),
    ("socks5 bind", "050200017f0000010000",
     Request(5, Command.BIND, "127.0.0.1", 0, AddressType.IPV4)),
]

GOOD_SOCKS4 = [
    ("socks4 ip", "04010015c0a8000161646d696e00",
     Request(4, Command.CONNECT, "192.168.0.1", 21, AddressType.IPV4, "admin")),
    ("socks4a name", "04010015000000010066747000",
     Request(4, Command.CONNECT, "ftp", 21, AddressType.DOMAIN, "")),
]

S5_OK = "050100"  # greeting offering "no auth"
CHOSEN = "0500"  # the proxy's method selection
FAIL = "0001000000000000"  # RSV ATYP=1 0.0.0.0:0 after VER REP in a SOCKS5 failure reply

# (name, bytes, expected reply or None for "closed without a reply")
BAD_INPUTS = [
    ("unknown version", "06", None),
    ("socks5 no acceptable method", "050102", "05ff"),
    ("socks5 zero methods", "0500", "05ff"),
    ("socks5 bad request version", S5_OK + "040100017f0000010015", CHOSEN + "0501" + FAIL),
    ("socks5 bad command", S5_OK + "050900017f0000010015", CHOSEN + "0507" + FAIL),
    ("socks5 bad address type", S5_OK + "05010007", CHOSEN + "0508" + FAIL),
    ("socks5 empty name", S5_OK + "050100030000 15".replace(" ", ""), CHOSEN + "0501" + FAIL),
    ("socks5 name with space", S5_OK + "0501000303612062" + "0015", CHOSEN + "0501" + FAIL),
    ("socks5 name not utf8", S5_OK + "05010003 02 fffe 0015".replace(" ", ""),
     CHOSEN + "0501" + FAIL),
    ("socks4 udp associate", "04030015c0a8000100", "005b000000000000"),
    ("socks4 bad command", "04070015c0a8000100", "005b000000000000"),
    ("socks4 user id too long", "04010015c0a80001" + "41" * 300, "005b000000000000"),
    ("socks4a name too long", "0401001500000001" + "00" + "61" * 300, "005b000000000000"),
    ("socks4a empty name", "040100150000000100" + "00", "005b000000000000"),
]


def feed(server: SocksServer, data: bytes, chunk: int) -> tuple[list[object], bytes]:
    events: list[object] = []
    out = b""
    for i in range(0, len(data), chunk):
        server.receive_data(data[i : i + chunk])
        while True:
            event = server.next_event()
            out += server.data_to_send()
            if event is NEED_DATA:
                break
            events.append(event)
            if isinstance(event, AuthRequest):
                out += server.send_auth_result(True)
    return events, out


@pytest.mark.parametrize("chunk", [1, 2, 7, 1000])
@pytest.mark.parametrize(("name", "hexdata", "expected"), GOOD_REQUESTS, ids=lambda v: str(v))
def test_socks5_requests(name: str, hexdata: str, expected: Request, chunk: int) -> None:
    server = SocksServer()
    events, out = feed(server, NO_AUTH + bytes.fromhex(hexdata), chunk)
    assert events == [expected]
    assert out == b"\x05\x00"


@pytest.mark.parametrize("chunk", [1, 3, 1000])
@pytest.mark.parametrize(("name", "hexdata", "expected"), GOOD_SOCKS4, ids=lambda v: str(v))
def test_socks4_requests(name: str, hexdata: str, expected: Request, chunk: int) -> None:
    server = SocksServer()
    events, out = feed(server, bytes.fromhex(hexdata), chunk)
    assert events == [expected]
    assert out == b""
    assert server.send_reply(Reply.SUCCEEDED, "10.0.0.1", 2121) == bytes.fromhex("005a08490a000001")


def converse(server: SocksServer, data: bytes, chunk: int) -> tuple[bytes, RemoteProtocolError]:
    """Everything the session would write to a client that sends `data`, up to the error."""
    written = b""
    try:
        for i in range(0, len(data), chunk):
            server.receive_data(data[i : i + chunk])
            while server.next_event() is not NEED_DATA:
                written += server.data_to_send()
            written += server.data_to_send()
    except RemoteProtocolError as exc:
        return written + server.data_to_send() + (exc.reply or b""), exc
    raise AssertionError(f"no protocol error; wrote {written!r}")


@pytest.mark.parametrize("chunk", [1, 1000])
@pytest.mark.parametrize(("name", "hexdata", "reply"), BAD_INPUTS, ids=lambda v: str(v))
def test_malformed_input_gets_the_protocols_failure_reply(
        name: str, hexdata: str, reply: str | None, chunk: int) -> None:
    written, error = converse(SocksServer(), bytes.fromhex(hexdata), chunk)
    assert written == (bytes.fromhex(reply) if reply else b"")
    assert str(error)  # every error says what was wrong, for the log line


def test_rfc1929_credentials_are_offered_then_redacted() -> None:
    server = SocksServer([AuthMethod.USERNAME_PASSWORD, AuthMethod.NO_AUTH])
    data = (encode_socks5_greeting([AuthMethod.NO_AUTH, AuthMethod.USERNAME_PASSWORD])
            + encode_socks5_auth("alice", "s3cret")
            + encode_socks5_request(Command.CONNECT, "ftp.example", 21))
    events, out = feed(server, data, 1)
    assert events[0] == AuthRequest(Credentials("alice", "s3cret"))
    assert "s3cret" not in repr(events[0])
    assert out == b"\x05\x02\x01\x00"
    assert isinstance(events[1], Request) and events[1].host == "ftp.example"


def test_rfc1929_bad_subnegotiation_version() -> None:
    server = SocksServer([AuthMethod.USERNAME_PASSWORD])
    with pytest.raises(RemoteProtocolError) as info:
        feed(server, bytes.fromhex("050102" + "0501610162"), 1000)
    assert info.value.reply == b"\x01\x01"


def test_auth_failure_reply_and_state() -> None:
    server = SocksServer([AuthMethod.USERNAME_PASSWORD])
    server.receive_data(encode_socks5_greeting([AuthMethod.USERNAME_PASSWORD])
                        + encode_socks5_auth("a", "b"))
    assert isinstance(server.next_event(), AuthRequest)
    assert server.send_auth_result(False) == b"\x01\x01"
    with pytest.raises(RuntimeError):
        server.send_reply(Reply.SUCCEEDED)


def test_trailing_optimistic_data_is_kept_for_the_relay() -> None:
    server = SocksServer()
    server.receive_data(NO_AUTH + encode_socks5_request(Command.CONNECT, "h", 21) + b"USER x\r\n")
    assert isinstance(server.next_event(), Request)
    assert server.trailing_data() == b"USER x\r\n"


@pytest.mark.parametrize("code", list(Reply))
def test_every_rfc1928_reply_code_encodes(code: Reply) -> None:
    server = SocksServer()
    server.receive_data(NO_AUTH + encode_socks5_request(Command.CONNECT, "h", 21))
    server.next_event()
    assert server.send_reply(code, "::1", 80) == bytes((5, code, 0, 4)) + b"\0" * 15 + b"\x01\x00P"


@pytest.mark.parametrize("code", list(Socks4Reply))
def test_every_socks4_reply_code_encodes(code: Socks4Reply) -> None:
    assert encode_socks4_reply(code, "1.2.3.4", 21) == bytes((0, code, 0, 21, 1, 2, 3, 4))


def test_socks4_failure_maps_any_rep_to_rejected() -> None:
    server = SocksServer()
    server.receive_data(encode_socks4_request(Command.CONNECT, "10.0.0.1", 21))
    server.next_event()
    assert server.send_reply(Reply.CONNECTION_REFUSED)[1] == Socks4Reply.REJECTED


def test_encoders_round_trip_through_the_decoder() -> None:
    for host in ("10.1.2.3", "fd00::5", "ftp.example.com"):
        server = SocksServer()
        server.receive_data(NO_AUTH + encode_socks5_request(Command.CONNECT, host, 2121))
        event = server.next_event()
        assert isinstance(event, Request) and (event.host, event.port) == (host, 2121)
    assert encode_socks5_reply(Reply.SUCCEEDED, "ftp", 1) == b"\x05\x00\x00\x03\x03ftp\x00\x01"


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=600), st.integers(min_value=1, max_value=64))
def test_fuzz_any_bytes_give_an_event_need_data_or_a_protocol_error(data: bytes,
                                                                     chunk: int) -> None:
    server = SocksServer([AuthMethod.USERNAME_PASSWORD, AuthMethod.NO_AUTH])
    try:
        events, _ = feed(server, data, chunk)
    except RemoteProtocolError as exc:
        assert exc.reply is None or 2 <= len(exc.reply) <= 22
        return
    assert len(events) <= 2


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(list(Command)), st.one_of(st.ip_addresses().map(str),
       st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,60}[a-z0-9])?", fullmatch=True)),
       st.integers(min_value=0, max_value=65535))
def test_property_socks5_request_round_trip(command: Command, host: str, port: int) -> None:
    server = SocksServer()
    server.receive_data(NO_AUTH + encode_socks5_request(command, host, port))
    event = server.next_event()
    assert isinstance(event, Request)
    assert (event.command, event.host, event.port) == (command, host, port)


def test_bind_gets_two_replies_in_each_version() -> None:
    for data, first, second in [
        (NO_AUTH + encode_socks5_request(Command.BIND, "10.0.0.9", 0),
         encode_socks5_reply(Reply.SUCCEEDED, "127.0.0.1", 40001),
         encode_socks5_reply(Reply.SUCCEEDED, "10.0.0.9", 20)),
        (encode_socks4_request(Command.BIND, "10.0.0.9", 0),
         encode_socks4_reply(Socks4Reply.GRANTED, "127.0.0.1", 40001),
         encode_socks4_reply(Socks4Reply.GRANTED, "10.0.0.9", 20)),
    ]:
        server = SocksServer()
        server.receive_data(data)
        while not isinstance(event := server.next_event(), Request):
            assert event is not NEED_DATA
        assert event.command is Command.BIND
        assert server.send_reply(Reply.SUCCEEDED, "127.0.0.1", 40001) == first
        assert server.send_reply(Reply.SUCCEEDED, "10.0.0.9", 20) == second
        with pytest.raises(RuntimeError):
            server.send_reply(Reply.SUCCEEDED)


def test_connect_gets_one_reply() -> None:
    server = SocksServer()
    server.receive_data(NO_AUTH + encode_socks5_request(Command.CONNECT, "h", 21))
    server.next_event()
    server.send_reply(Reply.SUCCEEDED)
    with pytest.raises(RuntimeError):
        server.send_reply(Reply.SUCCEEDED)
