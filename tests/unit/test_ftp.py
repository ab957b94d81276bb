"""FTP control codec: commands, multi-line replies, data-port syntax, limits."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunnel.ftp import (
    MAX_COMMAND_LINE,
    NEED_DATA,
    Command,
    CommandReader,
    FtpError,
    Reply,
    ReplyReader,
    encode_227,
    encode_229,
    encode_eprt,
    encode_port,
    multiline_reply,
    parse_227,
    parse_229,
    parse_eprt,
    parse_port,
)


def commands(data: bytes, chunk: int = 1000) -> list[Command]:
    reader = CommandReader()
    out: list[Command] = []
    for i in range(0, len(data), chunk):
        reader.receive_data(data[i : i + chunk])
        while (cmd := reader.next_command()) is not NEED_DATA:
            assert isinstance(cmd, Command)
            out.append(cmd)
    return out


def replies(data: bytes, chunk: int = 1000) -> list[Reply]:
    reader = ReplyReader()
    out: list[Reply] = []
    for i in range(0, len(data), chunk):
        reader.receive_data(data[i : i + chunk])
        while (rep := reader.next_reply()) is not NEED_DATA:
            assert isinstance(rep, Reply)
            out.append(rep)
    return out


@pytest.mark.parametrize("chunk", [1, 5, 1000])
def test_commands_whole_and_trickled(chunk: int) -> None:
    got = commands(b"user alice\r\nPASS s3cret\r\nFEAT\nRETR my file.txt\r\n", chunk)
    assert [(c.verb, c.arg) for c in got] == [
        ("USER", "alice"), ("PASS", "s3cret"), ("FEAT", ""), ("RETR", "my file.txt")]
    assert got[0].raw == b"user alice\r\n"  # relayed byte for byte
    assert "s3cret" not in repr(got[1]) and "****" in repr(got[1])


def test_over_long_command_is_500_and_the_rest_of_it_is_skipped() -> None:
    reader = CommandReader()
    reader.receive_data(b"STOR " + b"x" * (MAX_COMMAND_LINE + 10))
    with pytest.raises(FtpError) as info:
        reader.next_command()
    assert info.value.code == 500 and info.value.reply == b"500 Command line too long.\r\n"
    reader.receive_data(b"x" * 5000 + b"\r\nNOOP\r\n")
    assert reader.next_command() == Command("NOOP", "", b"NOOP\r\n")


@pytest.mark.parametrize("line", [b"\r\n", b"12345\r\n", b"A\r\n", b"US3R x\r\n", b"\xff\xfe\r\n"])
def test_not_a_command_is_500(line: bytes) -> None:
    with pytest.raises(FtpError) as info:
        commands(line)
    assert info.value.code == 500


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_multiline_reply_rfc959(chunk: int) -> None:
    data = (b"211-Features:\r\n EPSV\r\n211-still inside\r\n MDTM\r\n211 End\r\n"
            b"220 ready\r\n")
    feat, ready = replies(data, chunk)
    assert feat.code == 211 and feat.lines[0] == "Features:" and feat.lines[-1] == "End"
    assert len(feat.lines) == 5 and feat.raw == data[: data.index(b"220")]
    assert (ready.code, ready.text) == (220, "ready")


def test_preliminary_and_positive() -> None:
    first, final = replies(b"150 opening\r\n226 done\r\n")
    assert first.preliminary and not final.preliminary and final.positive


@pytest.mark.parametrize("data", [b"hello\r\n", b"099 no\r\n", b"2000 x\r\n"])
def test_server_garbage_is_421(data: bytes) -> None:
    with pytest.raises(FtpError) as info:
        replies(data)
    assert info.value.code == 421


def test_runaway_reply_is_421() -> None:
    with pytest.raises(FtpError, match="runaway"):
        replies(b"211-x\r\n" + b" y\r\n" * 6000)


def test_multiline_encoder_round_trips() -> None:
    (reply,) = replies(multiline_reply(211, ["Features:", "EPSV", "211 trap", "End"]))
    assert reply.lines == ("Features:", " EPSV", " 211 trap", "End")


@pytest.mark.parametrize(("arg", "expected"), [
    ("127,0,0,1,4,1", ("127.0.0.1", 1025)),
    (" 10,1,2,3,255,255", ("10.1.2.3", 65535)),
])
def test_port(arg: str, expected: tuple[str, int]) -> None:
    assert parse_port(arg) == expected
    assert parse_port(encode_port(*expected)[5:]) == expected


@pytest.mark.parametrize("arg", ["127,0,0,1,4", "256,0,0,1,4,1", "a,b,c,d,e,f", ""])
def test_bad_port_is_501(arg: str) -> None:
    with pytest.raises(FtpError) as info:
        parse_port(arg)
    assert info.value.code == 501


@pytest.mark.parametrize(("arg", "expected"), [
    ("|1|132.235.1.2|6275|", ("132.235.1.2", 6275)),
    ("|2|1080::8:800:200C:417A|5282|", ("1080::8:800:200c:417a", 5282)),
    ("!1!10.0.0.1!2121!", ("10.0.0.1", 2121)),
])
def test_eprt(arg: str, expected: tuple[str, int]) -> None:
    assert parse_eprt(arg) == expected
    assert parse_eprt(encode_eprt(*expected)[5:]) == expected


@pytest.mark.parametrize(("arg", "code"), [
    ("|3|1.2.3.4|21|", 522), ("|1|::1|21|", 501), ("|1|1.2.3.4|0|", 501),
    ("|1|1.2.3.4|", 501), ("|1|host.example|21|", 501), ("", 501), (" 1 1.2.3.4 21 ", 501),
])
def test_bad_eprt(arg: str, code: int) -> None:
    with pytest.raises(FtpError) as info:
        parse_eprt(arg)
    assert info.value.code == code


def test_passive_replies() -> None:
    assert parse_227("Entering Passive Mode (10,1,2,3,19,137).") == ("10.1.2.3", 5001)
    assert parse_227("=10,1,2,3,19,137") == ("10.1.2.3", 5001)  # RFC 1123: scan for it
    assert parse_227(encode_227("1.2.3.4", 2121).decode()[4:]) == ("1.2.3.4", 2121)
    assert parse_229("Entering Extended Passive Mode (|||6446|)") == 6446
    assert parse_229("ok (!!!6446!)") == 6446
    assert parse_229(encode_229(1025).decode()) == 1025
    for bad in ("Entering Passive Mode", "(1,2,3,4,5)"):
        with pytest.raises(FtpError):
            parse_227(bad)
    for bad in ("(|||0|)", "(||6446|)", "(|||99999|)"):
        with pytest.raises(FtpError):
            parse_229(bad)


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=3000), st.integers(min_value=1, max_value=50))
def test_fuzz_readers_only_raise_ftp_errors(data: bytes, chunk: int) -> None:
    for parse in (commands, replies):
        try:
            parse(data, chunk)
        except FtpError as exc:
            assert exc.code in (421, 500) and exc.reply is not None


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=80))
def test_fuzz_address_parsers(text: str) -> None:
    for parse in (parse_port, parse_eprt, parse_227, parse_229):
        with contextlib.suppress(FtpError):  # any other exception fails the test
            parse(text)  # type: ignore[operator]


def test_telnet_interrupt_and_data_mark_before_an_urgent_abor_are_dropped() -> None:
    """RFC 959 §4.1.3: IAC IP, IAC DM, then ABOR (ncftp, lftp); IAC IAC is a 0xFF byte."""
    reader = CommandReader()
    reader.receive_data(b"\xff\xf4\xff\xf2ABOR\r\nSTOR a\xff\xffb\r\n")
    abort = reader.next_command()
    assert isinstance(abort, Command) and abort.verb == "ABOR" and abort.raw == b"ABOR\r\n"
    stor = reader.next_command()
    assert isinstance(stor, Command) and stor.arg.encode("utf-8", "surrogateescape") == (
        b"a\xffb")
