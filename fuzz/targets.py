"""The fuzz targets: bytes in, AssertionError out when an invariant breaks.

Invariants, per target:
- socks_handshake: the codec yields events, asks for more data, or raises
  RemoteProtocolError carrying the reply its protocol prescribes for that point (none for an
  unknown version byte, the 8-byte SOCKS4 rejection, `05 FF` for no acceptable method,
  `01 01` for a bad RFC 1929 sub-negotiation, or a 10-byte SOCKS5 failure). A parsed request
  encodes and parses back to itself.
- ftp_readers: commands come out with a 3-4 letter upper-case verb and their raw line; a bad
  line is a 500 (client) or 421 (server) FtpError with one well-formed reply line, and the
  command reader goes on after it.
- ftp_session: the FTP layer, driven as the glue drives it (callbacks only in the order the
  glue can make them), never raises; everything it says to the client parses as complete
  FTP replies; the password never appears in a log note or an action's repr.
- sftp_session: the ftp-sftp layer, with random client bytes and random outcomes for each
  operation it asks for (values, SFTP refusals, a lost connection, every data ending,
  ABOR at any time), never raises; asks for one operation at a time; says nothing after
  Close; everything the client hears parses as complete FTP replies; the password appears
  in no note and no action's repr.
- config: `tunnel.config.parse` returns a Config or raises ConfigError naming the file and,
  past TOML syntax, the key.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable, Sequence
from typing import TypeVar

from tunnel import config as config_module
from tunnel import sftp_ops as sftp
from tunnel.errors import ConfigError, RemoteProtocolError
from tunnel.ftp import (
    MAX_COMMAND_LINE,
    Command,
    CommandReader,
    FtpError,
    Reply,
    ReplyReader,
)
from tunnel.ftp import NEED_DATA as FTP_NEED_DATA
from tunnel.ftp_layer import (
    Close,
    ConnectActive,
    FtpLayer,
    Note,
    OpenUpstream,
    ToClient,
)
from tunnel.sftp_layer import SftpLayer
from tunnel.sftp_map import Entry
from tunnel.socks import NEED_DATA as SOCKS_NEED_DATA
from tunnel.socks import (
    AuthMethod,
    AuthRequest,
    Request,
    SocksServer,
    encode_socks4_request,
    encode_socks5_request,
)
from tunnel.socks import Reply as SocksReply

T = TypeVar("T")


class Draw:
    """Structure drawn from fuzz bytes: the same bytes always give the same choices, and
    running out gives zeros, so every input is a valid (if short) program."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def byte(self) -> int:
        if self._at >= len(self._data):
            return 0
        self._at += 1
        return self._data[self._at - 1]

    def bytes(self, limit: int = 255) -> bytes:
        size = min(self.byte(), limit)
        chunk = self._data[self._at : self._at + size]
        self._at += len(chunk)
        return chunk

    def rest(self) -> bytes:
        chunk, self._at = self._data[self._at :], len(self._data)
        return chunk

    def choice(self, options: Sequence[T]) -> T:
        return options[self.byte() % len(options)]

    @property
    def exhausted(self) -> bool:
        return self._at >= len(self._data)


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


# -- SOCKS ---------------------------------------------------------------------------------------
_SOCKS5_FAILURES = {bytes((5, code, 0, 1, 0, 0, 0, 0, 0, 0)) for code in SocksReply
                    if code is not SocksReply.SUCCEEDED}
_SOCKS4_REJECTED = bytes((0, 0x5B, 0, 0, 0, 0, 0, 0))


def socks_handshake(data: bytes) -> None:
    draw = Draw(data)
    chunk = draw.byte() % 64 + 1
    accept_auth = draw.byte() % 2 == 0
    payload = draw.rest()
    server = SocksServer([AuthMethod.USERNAME_PASSWORD, AuthMethod.NO_AUTH])
    try:
        for piece in _chunks(payload, chunk):
            server.receive_data(piece)
            while (event := server.next_event()) is not SOCKS_NEED_DATA:
                if isinstance(event, AuthRequest):
                    server.send_auth_result(accept_auth)
                    if not accept_auth:
                        return
                else:
                    assert isinstance(event, Request)
                    _round_trip(event)
                    return
    except RemoteProtocolError as exc:
        version = payload[0] if payload else None
        if version not in (4, 5):
            assert exc.reply is None, (payload, exc.reply)
        elif version == 4:
            assert exc.reply == _SOCKS4_REJECTED, (payload, exc.reply)
        else:
            assert exc.reply in (b"\x05\xff", b"\x01\x01") or exc.reply in _SOCKS5_FAILURES, (
                payload, exc.reply)
        assert str(exc), "every refusal says why, for the log"


def _round_trip(request: Request) -> None:
    encode = encode_socks5_request if request.version == 5 else encode_socks4_request
    again = SocksServer()
    greeting = b"\x05\x01\x00" if request.version == 5 else b""
    again.receive_data(greeting + encode(request.command, request.host, request.port))
    parsed = again.next_event()
    assert isinstance(parsed, Request), (request, parsed)
    assert (parsed.command, parsed.host, parsed.port) == (request.command, request.host,
                                                          request.port)


# -- FTP codecs ----------------------------------------------------------------------------------
_REPLY_LINE = re.compile(rb"[1-5][0-9][0-9] [^\r\n]*\r\n")
_VERB = re.compile(r"[A-Z]{3,4}")


def ftp_readers(data: bytes) -> None:
    draw = Draw(data)
    chunk = draw.byte() * 4 + 1
    limit = draw.choice((MAX_COMMAND_LINE, 16, 64))  # small limits reach the long-line paths
    payload = draw.rest()
    commands = CommandReader(limit)
    for piece in _chunks(payload, chunk):
        commands.receive_data(piece)
        while True:
            try:
                command = commands.next_command()
            except FtpError as exc:
                assert exc.code == 500 and _REPLY_LINE.fullmatch(exc.reply or b""), exc.reply
                continue  # the layer answers and reads on
            if command is FTP_NEED_DATA:
                break
            assert isinstance(command, Command)
            assert _VERB.fullmatch(command.verb) and command.raw.endswith(b"\n")
            assert len(command.raw) <= limit
    replies = ReplyReader(limit)
    try:
        for piece in _chunks(payload, chunk):
            replies.receive_data(piece)
            while (reply := replies.next_reply()) is not FTP_NEED_DATA:
                assert isinstance(reply, Reply) and 100 <= reply.code <= 599
                assert reply.raw.endswith(b"\n") and reply.raw[:3] == str(reply.code).encode()
    except FtpError as exc:
        assert exc.code == 421 and _REPLY_LINE.fullmatch(exc.reply or b""), exc.reply


# -- the FTP session layer ----------------------------------------------------------------------
SECRET = "Zq7-fuzz-secret-Zq7"
_CLIENT_LINES = (f"PASS {SECRET}\r\n".encode(), b"USER alice\r\n", b"PASV\r\n", b"EPSV\r\n",
                 b"PORT 127,0,0,1,4,1\r\n", b"EPRT |1|127.0.0.1|1025|\r\n", b"RETR f\r\n",
                 b"STOR f\r\n", b"LIST\r\n", b"FEAT\r\n", b"AUTH TLS\r\n", b"OPTS UTF8 ON\r\n",
                 b"QUIT\r\n", b"NOOP\r\n", b"TYPE I\r\n", b"PORT 10,9,9,9,4,1\r\n")
_SERVER_LINES = (b"220 hi\r\n", b"331 pass?\r\n", b"230 in\r\n", b"530 no\r\n",
                 b"227 Entering Passive Mode (10,0,0,5,4,1)\r\n", b"229 EPSV (|||2121|)\r\n",
                 b"150 here\r\n", b"226 done\r\n", b"500 what\r\n", b"421 bye\r\n",
                 b"211-Features:\r\n EPSV\r\n211 End\r\n", b"200 ok\r\n", b"221 bye\r\n")


def ftp_session(data: bytes) -> None:
    draw = Draw(data)
    layer = FtpLayer(client_host="127.0.0.1", server_host="ftp.example",
                     credentials_from_app=draw.byte() % 4 != 0)
    said = bytearray()
    closed = False
    upstream = "open" if not layer.credentials_from_app else "none"  # none|asked|open
    active_pending = False

    def check(actions: list[object]) -> None:
        nonlocal upstream, active_pending, closed
        for action in actions:
            assert not closed or isinstance(action, Note), f"{action} after Close"
            if isinstance(action, Close):
                closed = True
            elif isinstance(action, ToClient):
                said.extend(action.data)
            elif isinstance(action, Note):
                assert SECRET not in action.message, action
            elif isinstance(action, OpenUpstream):
                upstream = "asked"
            elif isinstance(action, ConnectActive):
                active_pending = True
            assert SECRET not in repr(action) or action.__class__.__name__ == "ToServer", action

    check(layer.start())
    while not draw.exhausted:
        op = draw.byte() % 9
        if op == 0:
            check(layer.client_data(draw.bytes()))
        elif op == 1:
            # A fresh line: the secret must stay a PASS argument, not the tail of junk the
            # client itself left unterminated (which the proxy logs as a bad command).
            check(layer.client_data(b"\r\n" + draw.choice(_CLIENT_LINES)))
        elif op == 2 and upstream == "open":
            check(layer.server_data(draw.bytes()))
        elif op == 3 and upstream == "open":
            check(layer.server_data(draw.choice(_SERVER_LINES)))
        elif op == 4 and upstream == "asked":
            upstream = "open"
            check(layer.upstream_opened())
        elif op == 5 and upstream == "asked":
            upstream = "none"
            check(layer.upstream_failed("the SSH server is down", draw.byte() % 2 == 0))
        elif op == 6 and active_pending:
            active_pending = False
            check(layer.active_ready(draw.byte() % 2 == 0, "refused"))
        elif op == 7 and upstream == "open":
            check(layer.server_closed(lost=draw.byte() % 2 == 0))
            break
        elif op == 8:  # a line left unterminated: what follows joins it (never a PASS line,
            # or the secret would become part of, say, a user name the client chose to send)
            check(layer.client_data(draw.choice(_CLIENT_LINES[2:])[:-2] + draw.bytes(8)))
    _complete_replies(bytes(said))


_SFTP_LINES = (*_CLIENT_LINES, b"ABOR\r\n", b"APPE f\r\n", b"REST 5\r\n", b"RMD\r\n",
               b"RNFR f\r\n", b"RNTO g\r\n", b"CWD d\r\n", b"MLSD\r\n", b"SIZE f\r\n",
               b"DELE\r\n", b"MKD\r\n", b"HELP STOR\r\n", b"TYPE A\r\n")
_ENTRIES = (Entry("f", 10, 0o100644, 0, 1, 1), Entry("d", 0, 0o040755, 0, 1, 1),
            Entry("l", 1, 0o120777, 0, 1, 1), Entry("g", 3, 0o104755, 0, 2, 2))


def _sftp_outcome(draw: Draw, operation: sftp.Operation) -> sftp.Result:
    kind = draw.byte() % 8
    if kind == 0:
        return sftp.Refused(draw.choice((2, 3, 4, 5, 8, 11, 14, 15, 99)), "refused")
    if kind == 1:
        return sftp.Lost("gone")
    if isinstance(operation, sftp.Login):
        return (sftp.LoginFailed("no", draw.byte() % 2 == 0) if kind == 2
                else sftp.Ok("/home/alice"))
    if isinstance(operation, sftp.Stat):
        return sftp.Ok(draw.choice(_ENTRIES))
    if isinstance(operation, sftp.ReadDir):
        return sftp.Ok(list(_ENTRIES[: draw.byte() % 5]))
    if isinstance(operation, sftp.RealPath):
        return sftp.Ok("/home/alice/real")
    if isinstance(operation, sftp.Passive):
        return sftp.Ok(1024 + draw.byte())
    if isinstance(operation, sftp.DATA_OPERATIONS):
        return sftp.Ok(sftp.Transferred(draw.choice(list(sftp.Ending)), draw.byte()))
    return sftp.Ok(None)


def sftp_session(data: bytes) -> None:
    draw = Draw(data)
    layer = SftpLayer(control_host=draw.choice(("10.0.0.5", "files.example", "::1")),
                           is_client_address=lambda host: host == "127.0.0.1",
                           temporary_token=lambda: "t", clock=lambda: 0.0)
    said = bytearray()
    waiting: list[sftp.Operation] = []

    def check(actions: list[sftp.Action]) -> None:
        for action in actions:
            assert SECRET not in repr(action), action
            if isinstance(action, sftp.ToClient):
                said.extend(action.data)
            elif isinstance(action, sftp.Note):
                assert SECRET not in action.message, action
            elif isinstance(action, sftp.Operation):
                assert not waiting, f"{action} while {waiting[0]} is outstanding"
                waiting.append(action)

    check(layer.start())
    closed_at = -1
    while not draw.exhausted:
        if layer.closed and closed_at < 0:
            closed_at = len(said)
        op = draw.byte() % 4
        if op == 0:
            check(layer.client_data(draw.bytes()))
        elif op in (1, 2):
            check(layer.client_data(b"\r\n" + draw.choice(_SFTP_LINES)))
        elif waiting:
            check(layer.result(_sftp_outcome(draw, waiting.pop())))
    assert closed_at < 0 or len(said) == closed_at, "spoke after Close"
    _complete_replies(bytes(said))


def _complete_replies(said: bytes) -> None:
    """What the client heard is a sequence of whole FTP replies, nothing else."""
    reader = ReplyReader()
    reader.receive_data(said)
    heard = 0
    while (reply := reader.next_reply()) is not FTP_NEED_DATA:
        assert isinstance(reply, Reply)
        heard += len(reply.raw)
    assert heard == len(said), said[heard : heard + 80]


# -- the config loader -------------------------------------------------------------------------
_STRINGS = ("", "*", "127.0.0.1:1080", "[::1]:1080", "0.0.0.0:0", "host:99999", "tunnel",
            "ftp-tunnel", "ftp-sftp", "direct", "reject", "21", "20-21,2121", "1-0", "x-y",
            "10.0.0.0/8", "10.0.0.0/33", "*.example.com", "ftp", "gw", "lo", "password",
            "publickey", "none", "username", "strict", "accept-new", "insecure", "lf", "crlf",
            "refuse", "~/.ssh/known_hosts", "a b", "\u00e9", "::1", "fe80::1%eth0")
_KEYS = {
    "proxy": ("listen", "allow_relay", "unmatched", "socks5_auth", "handshake_timeout",
              "drain_timeout", "heap_trim_after", "connect_timeout", "audit_log", "ftps",
              "control_socket"),
    "profile": ("id", "host", "port", "user", "auth", "identity_files", "known_hosts",
                "host_key_policy", "gateway", "keepalive_interval", "keepalive_count_max",
                "idle_timeout", "ciphers", "nodelay_command", "line_ending",
                "channel_window_mib", "users"),
    "rule": ("id", "dst", "ports", "action", "profile", "fallback_to_plain", "users"),
}


def _value(draw: Draw) -> str:
    kind = draw.byte() % 8
    if kind == 0:
        return json.dumps(draw.choice(_STRINGS), ensure_ascii=False)
    if kind == 1:
        return json.dumps(draw.bytes(24).decode("utf-8", "replace"), ensure_ascii=False)
    if kind == 2:
        return str(draw.choice((0, 1, -1, 22, 1080, 65535, 65536, 2**63 - 1)))
    if kind == 3:
        return draw.choice(("0.0", "0.5", "-1.0", "1e308", "inf", "nan"))
    if kind == 4:
        return draw.choice(("true", "false"))
    if kind == 5:
        items = [json.dumps(draw.choice(_STRINGS)) for _ in range(draw.byte() % 4)]
        return f"[{', '.join(items)}]"
    if kind == 6:
        return "{ a = 1 }"
    return "[1, 2]"


def config_text(data: bytes) -> str:
    """A TOML document built from the bytes: mostly well-formed, with known and unknown keys
    and values of every type; one input in sixteen is the raw bytes instead."""
    draw = Draw(data)
    if draw.byte() % 16 == 0:
        return draw.rest().decode("utf-8", "replace")
    lines: list[str] = []
    for _ in range(draw.byte() % 6):
        table = draw.choice(("proxy", "profile", "rule", "profile", "rule", "bogus"))
        lines.append("[proxy]" if table == "proxy" else f"[[{table}]]")
        for _ in range(draw.byte() % 6):
            keys = _KEYS.get(table, ("x",))
            key = draw.choice((*keys, *keys, "unknown_key"))
            lines.append(f"{key} = {_value(draw)}")
    return "\n".join(lines) + "\n"


def _is_toml(text: str) -> bool:
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return False
    return True


def config(data: bytes) -> None:
    text = config_text(data)
    try:
        loaded = config_module.parse(text, "/etc/fuzz.toml")
    except ConfigError as exc:
        assert exc.file.startswith("/etc/fuzz.toml") and exc.reason, exc  # file[:line]
        if _is_toml(text):
            assert exc.key, f"past TOML syntax an error names its key: {exc}"
        return
    assert loaded.path == "/etc/fuzz.toml" and loaded.proxy.listen


# Seeds that reach the deep paths at once, so every run covers them whatever hypothesis draws.
SEEDS: dict[str, list[bytes]] = {
    "socks": [b"\x00\x00\x05\x01\x02\x01\x05alice\x02pw\x05\x01\x00\x03\x03ftp\x00\x15",
              b"\x00\x00\x04\x01\x00\x15\x00\x00\x00\x01\x00ftp.example\x00",
              b"\x00\x00\x05\x01\x00\x05\x01\x00\x03\x02a b\x00\x15",
              b"\x00\x00\x04\x05\x00\x15\x00\x00\x00\x01\x00"],
    "ftp-readers": [b"\x00\x00USER a\r\nPASS b\r\n\xff\xfe\r\n" + b"A" * 3000 + b"\r\nNOOP\r\n",
                    b"\x00\x01211-x\r\n y\r\n211 end\r\nnot a reply\r\n"],
    # credentials_from_app; USER; PASS; upstream opened; greeting, 331, 230; PASV; 227 ...
    "ftp-session": [bytes([1, 1, 1, 1, 0, 4, 3, 0, 3, 1, 3, 2, 1, 2, 3, 4, 1, 4, 3, 5, 7, 1])],
    # USER, PASS, login ok; PASV (port); STOR f, stat, open, data, upload; ABOR ...
    "sftp-session": [bytes([0, 1, 1, 1, 0, 3, 3, 3, 1, 2, 3, 3, 5, 1, 7, 3, 3, 3, 1, 17,
                            3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 1, 14])],
    "config": [b"\x01\x02\x01\x00\x00" + b"\x05" * 40,
               b"\x00[[profile]]\nid = 1\n"],
}



TARGETS: dict[str, Callable[[bytes], None]] = {
    "socks": socks_handshake,
    "ftp-readers": ftp_readers,
    "ftp-session": ftp_session,
    "sftp-session": sftp_session,
    "config": config,
}
