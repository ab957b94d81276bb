"""FTP control-channel codec, pure (h11 style): commands and replies in, values out.

- Commands (RFC 959 §4.1, §5.3): `VERB [SP argument] CRLF`. A bare LF is accepted too, as
  most servers do. Lines are capped (`MAX_COMMAND_LINE`): a longer one is an error carrying
  `500`, and the rest of it is skipped up to its end of line.
- Replies (RFC 959 §4.2): `ddd SP text` or the multi-line form `ddd-text` ... `ddd SP text`.
  The raw bytes of every command and reply are kept so a relay forwards them unchanged.
- Data-port syntax: PASV/227 and PORT (RFC 959 §4.1.2, §4.2), EPSV/229 and EPRT (RFC 2428 §2,
  §3), IPv4 and IPv6.

Errors carry the reply the session should send: `500` (line too long, not a command),
`501` (bad argument), `522` (EPRT address family we do not speak, RFC 2428 §2), or `421`
(the server broke the protocol: close the control connection).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from tunnel.errors import RemoteProtocolError

MAX_COMMAND_LINE = 2048  # pyftpdlib caps at 2048 as well; real commands are far shorter
MAX_REPLY_LINE = 8192
MAX_REPLY_LINES = 5000  # held whole (a FEAT or HELP reply is tens of lines): a runaway server
STREAM_AFTER_LINES = 1000  # a reader that streams passes longer replies on in parts of this
MAX_STREAMED_REPLY = 64 << 20  # bytes: STAT of a huge directory is long, this never ends
SECRET_VERBS = frozenset({"PASS", "ACCT"})


class FtpError(RemoteProtocolError):
    """Malformed FTP input. `code` is the reply to answer with; `reply` its bytes."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message, reply_line(code, message))
        self.code = code


_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def _printable(text: str) -> str:
    """Reply text may echo what the client sent (a user name): a stray CR or NUL becomes a
    space, and bytes that were not UTF-8 (kept as surrogates) become U+FFFD."""
    return _CONTROL_CHARACTERS.sub(" ", text).encode("utf-8", "replace").decode("utf-8")


def reply_line(code: int, text: str) -> bytes:
    return f"{code} {_printable(text)}\r\n".encode()


def multiline_reply(code: int, lines: list[str]) -> bytes:
    """RFC 959 §4.2 multi-line reply; continuation lines start with a space so none can be
    mistaken for the terminating `ddd ` line."""
    if len(lines) == 1:
        return reply_line(code, lines[0])
    lines = [_printable(line) for line in lines]
    body = "".join(f" {line}\r\n" for line in lines[1:-1])
    return f"{code}-{lines[0]}\r\n{body}{code} {lines[-1]}\r\n".encode()


@dataclass(frozen=True)
class Command:
    verb: str  # upper case
    arg: str = ""
    raw: bytes = field(default=b"", repr=False)

    def __repr__(self) -> str:
        shown = "****" if self.verb in SECRET_VERBS and self.arg else self.arg
        return f"Command({self.verb} {shown})".replace(" )", ")")

    def encode(self) -> bytes:
        return self.raw or (f"{self.verb} {self.arg}" if self.arg else self.verb).encode() + b"\r\n"


@dataclass(frozen=True)
class Reply:
    code: int
    lines: tuple[str, ...]
    raw: bytes = field(default=b"", repr=False)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def preliminary(self) -> bool:
        """1yz: the command goes on; its final reply is still to come (RFC 959 §4.2)."""
        return 100 <= self.code < 200

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()


class _LineBuffer:
    def __init__(self, limit: int) -> None:
        self._buffer = bytearray()
        self._limit = limit
        self._skipping = False

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next_line(self) -> bytes | None:
        """One line without its end of line; None if incomplete. Raises ValueError for an
        over-long line, after arranging to skip the rest of it."""
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > self._limit:
                    self._buffer.clear()
                    if not self._skipping:
                        self._skipping = True
                        raise ValueError("line too long")
                return None
            line = bytes(self._buffer[: end + 1])
            del self._buffer[: end + 1]
            if self._skipping:  # the tail of a line already refused
                self._skipping = False
                continue
            if len(line) > self._limit:
                raise ValueError("line too long")
            return line


_VERB = re.compile(rb"[A-Za-z]{3,4}")


class CommandReader:
    """Client side of the control channel: bytes in, Command out."""

    def __init__(self, limit: int = MAX_COMMAND_LINE) -> None:
        self._lines = _LineBuffer(limit)

    def receive_data(self, data: bytes) -> None:
        self._lines.feed(data)

    def next_command(self) -> Command | _NeedData:
        try:
            line = self._lines.next_line()
        except ValueError:
            raise FtpError(500, "Command line too long.") from None
        if line is None:
            return NEED_DATA
        if b"\xff" in line:
            line = _without_telnet(line)
        body = line.rstrip(b"\r\n")
        verb, _, arg = body.partition(b" ")
        if not _VERB.fullmatch(verb):
            raise FtpError(500, "Syntax error, command unrecognized.")
        return Command(verb.decode("ascii").upper(),
                       arg.decode("utf-8", errors="surrogateescape"), line)


# RFC 959 §4.1.3 (ABOR) and RFC 854: clients put Telnet "Interrupt Process" and "Data Mark"
# (IAC IP, IAC DM) before an urgent ABOR; IAC IAC is a literal 0xFF byte.
_TELNET = re.compile(rb"\xff([\xf0-\xfe]|\xff)")


def _without_telnet(line: bytes) -> bytes:
    return _TELNET.sub(lambda m: b"\xff" if m.group(1) == b"\xff" else b"", line)


_REPLY_START = re.compile(rb"([1-5][0-9][0-9])([ -])")


@dataclass(frozen=True)
class ReplyPart:
    """The next lines of a multi-line reply too long to hold whole (a streaming reader):
    pass them on; the reply's end comes later as a Reply with the lines after them."""

    code: int
    raw: bytes = field(repr=False)


class ReplyReader:
    """Server side of the control channel: bytes in, complete (multi-line) Reply out.

    With `stream_after`, a multi-line reply longer than that many lines comes out in
    ReplyParts as it arrives (memory stays bounded however long a STAT listing is) and ends
    with a Reply of its last lines; only one that passes MAX_STREAMED_REPLY bytes is an
    error. Without, a reply is held whole, up to MAX_REPLY_LINES."""

    def __init__(self, limit: int = MAX_REPLY_LINE, stream_after: int | None = None) -> None:
        self._lines = _LineBuffer(limit)
        self._pending: list[bytes] = []
        self._code: bytes = b""
        self._stream_after = stream_after
        self._streamed = 0  # bytes of the current reply already passed on in parts

    def receive_data(self, data: bytes) -> None:
        self._lines.feed(data)

    def next_reply(self) -> Reply | ReplyPart | _NeedData:
        while True:
            try:
                line = self._lines.next_line()
            except ValueError:
                raise FtpError(421, "Server sent an over-long reply line.") from None
            if line is None:
                return NEED_DATA
            if not self._pending and not self._streamed:
                match = _REPLY_START.match(line)
                if match is None:
                    raise FtpError(421, f"Server sent a line that is not a reply: {line[:40]!r}")
                self._code = match.group(1)
                self._pending.append(line)
                if match.group(2) == b" ":
                    return self._complete()
                continue
            self._pending.append(line)
            # RFC 959 §4.2: the last line starts with the same code followed by a space.
            if line.startswith(self._code + b" "):
                return self._complete()
            if self._stream_after is None:
                if len(self._pending) > MAX_REPLY_LINES:
                    raise FtpError(421, "Server sent a runaway multi-line reply.")
            elif len(self._pending) >= self._stream_after:
                raw = b"".join(self._pending)
                self._streamed += len(raw)
                if self._streamed > MAX_STREAMED_REPLY:
                    raise FtpError(421, "Server sent a runaway multi-line reply "
                                   f"(over {MAX_STREAMED_REPLY >> 20} MiB).")
                self._pending = []
                return ReplyPart(int(self._code), raw)

    def _complete(self) -> Reply:
        raw = b"".join(self._pending)
        lines = tuple(
            (ln[4:] if ln[:3] == self._code and ln[3:4] in b" -" else ln)
            .rstrip(b"\r\n").decode("utf-8", errors="replace")
            for ln in self._pending
        )
        self._pending = []
        self._streamed = 0
        return Reply(int(self._code), lines, raw)


# -- data port syntax ------------------------------------------------------------------------

_SIX_NUMBERS = re.compile(r"(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3})")


def _host_port_from_six(numbers: list[int], code: int) -> tuple[str, int]:
    if any(n > 255 for n in numbers):
        raise FtpError(code, "Address numbers must be 0-255.")
    host = ".".join(str(n) for n in numbers[:4])
    return host, numbers[4] * 256 + numbers[5]


def parse_port(arg: str) -> tuple[str, int]:
    """PORT h1,h2,h3,h4,p1,p2 (RFC 959 §4.1.2)."""
    match = _SIX_NUMBERS.fullmatch(arg.strip())
    if match is None:
        raise FtpError(501, "PORT wants h1,h2,h3,h4,p1,p2.")
    return _host_port_from_six([int(g) for g in match.groups()], 501)


def encode_port(host: str, port: int) -> str:
    return "PORT " + ",".join([*host.split("."), str(port >> 8), str(port & 0xFF)])


def parse_227(text: str) -> tuple[str, int]:
    """The address in a 227 reply. RFC 959 leaves its framing open, so any six numbers count
    (RFC 1123 §4.1.2.6 tells clients to scan for them)."""
    match = _SIX_NUMBERS.search(text)
    if match is None:
        raise FtpError(421, "Server's 227 reply carries no address.")
    return _host_port_from_six([int(g) for g in match.groups()], 421)


def encode_227(host: str, port: int) -> bytes:
    numbers = ",".join([*host.split("."), str(port >> 8), str(port & 0xFF)])
    return reply_line(227, f"Entering Passive Mode ({numbers}).")


def parse_eprt(arg: str) -> tuple[str, int]:
    """EPRT |af|address|port| with any delimiter in 33-126 (RFC 2428 §2)."""
    if len(arg) < 2 or not 33 <= ord(arg[0]) <= 126:
        raise FtpError(501, "EPRT wants |af|address|port|.")
    parts = arg.split(arg[0])
    if len(parts) != 5 or parts[0] or parts[4]:
        raise FtpError(501, "EPRT wants |af|address|port|.")
    family, host, port_text = parts[1:4]
    if family not in ("1", "2"):
        raise FtpError(522, "Network protocol not supported, use (1,2).")
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise FtpError(501, f"EPRT address {host!r} is not an IP address.") from None
    if addr.version != (4 if family == "1" else 6):
        raise FtpError(501, "EPRT address does not match its family.")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise FtpError(501, "EPRT port must be 1-65535.")
    return str(addr), int(port_text)


def encode_eprt(host: str, port: int) -> str:
    family = 2 if ":" in host else 1
    return f"EPRT |{family}|{host}|{port}|"


_EPSV_PORT = re.compile(r"\((.)\1\1(\d{1,5})\1\)")


def parse_229(text: str) -> int:
    """229 Entering Extended Passive Mode (|||port|) (RFC 2428 §3)."""
    match = _EPSV_PORT.search(text)
    if match is None or not 0 < int(match.group(2)) < 65536:
        raise FtpError(421, "Server's 229 reply carries no port.")
    return int(match.group(2))


def encode_229(port: int) -> bytes:
    return reply_line(229, f"Entering Extended Passive Mode (|||{port}|)")
