"""SOCKS4, SOCKS4a and SOCKS5 server-side codec, as a pure state machine (h11 style).

Bytes go in with `receive_data`, events come out of `next_event`, and replies are built from
values. Nothing here touches a socket or an event loop, so every path is tested by feeding
byte strings, one byte at a time if need be.

Wire formats:
- SOCKS4 (and 4a's host name extension): VN=4 CD DSTPORT(2) DSTIP(4) USERID NUL [HOST NUL].
- SOCKS5, RFC 1928: greeting VER NMETHODS METHODS, then VER CMD RSV ATYP DST.ADDR DST.PORT.
- Username/password sub-negotiation, RFC 1929: VER=1 ULEN UNAME PLEN PASSWD.

A malformed message raises `RemoteProtocolError` whose `reply` is the failure reply the
protocol allows at that point (None where it allows none); the session sends it and closes.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from tunnel.errors import RemoteProtocolError

# SOCKS4 user ids and 4a host names have no length prefix: cap them so a client cannot make
# us buffer forever while we wait for the NUL.
MAX_SOCKS4_FIELD = 255


class Command(enum.IntEnum):
    CONNECT = 1
    BIND = 2
    UDP_ASSOCIATE = 3


class Reply(enum.IntEnum):
    """RFC 1928 §6 REP codes; SOCKS4 replies are derived from these."""

    SUCCEEDED = 0x00
    GENERAL_FAILURE = 0x01
    NOT_ALLOWED = 0x02
    NETWORK_UNREACHABLE = 0x03
    HOST_UNREACHABLE = 0x04
    CONNECTION_REFUSED = 0x05
    TTL_EXPIRED = 0x06
    COMMAND_NOT_SUPPORTED = 0x07
    ADDRESS_TYPE_NOT_SUPPORTED = 0x08


class Socks4Reply(enum.IntEnum):
    GRANTED = 0x5A
    REJECTED = 0x5B
    NO_IDENTD = 0x5C
    IDENTD_MISMATCH = 0x5D


class AuthMethod(enum.IntEnum):
    NO_AUTH = 0x00
    GSSAPI = 0x01
    USERNAME_PASSWORD = 0x02
    NO_ACCEPTABLE = 0xFF


class AddressType(enum.IntEnum):
    IPV4 = 0x01
    DOMAIN = 0x03
    IPV6 = 0x04


@dataclass(frozen=True)
class Credentials:
    """RFC 1929 credentials. The password never appears in a repr or a log line."""

    username: str
    password: str = field(repr=False)

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password='****')"


@dataclass(frozen=True)
class AuthRequest:
    """The client sent RFC 1929 credentials; answer with `SocksServer.send_auth_result`."""

    credentials: Credentials


@dataclass(frozen=True)
class Request:
    """A complete SOCKS request; answer with `SocksServer.send_reply`."""

    version: int
    command: Command
    host: str
    port: int
    address_type: AddressType
    userid: str = ""

    @property
    def host_is_name(self) -> bool:
        return self.address_type is AddressType.DOMAIN


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()
Event = AuthRequest | Request


class _State(enum.Enum):
    START = enum.auto()
    SOCKS5_METHODS = enum.auto()
    SOCKS5_AUTH = enum.auto()
    SOCKS5_AWAIT_AUTH_RESULT = enum.auto()
    SOCKS5_REQUEST = enum.auto()
    SOCKS4_REQUEST = enum.auto()
    AWAIT_REPLY = enum.auto()
    AWAIT_SECOND_REPLY = enum.auto()  # BIND: the peer's connection has not arrived yet
    DONE = enum.auto()
    FAILED = enum.auto()


def _socks5_failure(code: Reply) -> bytes:
    return encode_socks5_reply(code)


def _socks4_failure() -> bytes:
    return encode_socks4_reply(Socks4Reply.REJECTED)


def _decode_name(raw: bytes, reply: bytes) -> str:
    """A destination host name: printable, no spaces or controls. Anything else is refused
    here rather than handed to a resolver or an SSH server as-is."""
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RemoteProtocolError("host name is not valid UTF-8", reply) from None
    if not name or any(ch.isspace() or not ch.isprintable() or ch == "/" for ch in name):
        raise RemoteProtocolError(f"invalid host name {name!r}", reply)
    return name


class SocksServer:
    """Server side of one SOCKS handshake.

    `methods` is the SOCKS5 authentication methods this proxy accepts, in order of
    preference; the first one the client also offers is chosen (RFC 1928 §3).
    """

    def __init__(self, methods: Sequence[AuthMethod] = (AuthMethod.NO_AUTH,)) -> None:
        self._methods = tuple(methods)
        self._buffer = bytearray()
        self._outbox = bytearray()
        self._state = _State.START
        self.version: int | None = None
        self.method: AuthMethod | None = None
        self.request: Request | None = None

    # -- input -------------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        self._buffer += data

    def next_event(self) -> Event | _NeedData:
        """Parse what has arrived; return an event or NEED_DATA. Raises RemoteProtocolError."""
        try:
            return self._next_event()
        except RemoteProtocolError:
            self._state = _State.FAILED
            raise

    def _next_event(self) -> Event | _NeedData:
        if self._state is _State.START:
            if not self._buffer:
                return NEED_DATA
            version = self._buffer[0]
            if version == 5:
                self._state = _State.SOCKS5_METHODS
            elif version == 4:
                self._state = _State.SOCKS4_REQUEST
            else:
                # No reply format exists for a version we do not know.
                raise RemoteProtocolError(f"unknown SOCKS version byte 0x{version:02x}", None)
            self.version = version
        if self._state is _State.SOCKS5_METHODS and not self._parse_socks5_methods():
            return NEED_DATA
        if self._state is _State.SOCKS5_AUTH:
            return self._parse_socks5_auth()
        if self._state is _State.SOCKS5_REQUEST:
            return self._parse_socks5_request()
        if self._state is _State.SOCKS4_REQUEST:
            return self._parse_socks4_request()
        return NEED_DATA

    def trailing_data(self) -> bytes:
        """Bytes the client sent after its request (optimistic data): hand them to the relay."""
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    # -- output ------------------------------------------------------------------------------
    def data_to_send(self) -> bytes:
        """Bytes the codec itself decided to send (the SOCKS5 method selection)."""
        data = bytes(self._outbox)
        self._outbox.clear()
        return data

    def send_auth_result(self, ok: bool) -> bytes:
        """RFC 1929 §2 status reply. After a failure the connection must close."""
        if self._state is not _State.SOCKS5_AWAIT_AUTH_RESULT:
            raise RuntimeError("no authentication request is pending")
        self._state = _State.SOCKS5_REQUEST if ok else _State.FAILED
        return b"\x01\x00" if ok else b"\x01\x01"

    def send_reply(self, code: Reply, bind_host: str = "0.0.0.0", bind_port: int = 0) -> bytes:
        """The reply to the request, in the client's SOCKS version. A BIND gets two: the
        address to announce, then (on the peer's connection) that peer's address
        (RFC 1928 §4, SOCKS4 BIND)."""
        if self._state not in (_State.AWAIT_REPLY, _State.AWAIT_SECOND_REPLY):
            raise RuntimeError("no request is awaiting a reply")
        first_of_bind = (self._state is _State.AWAIT_REPLY and self.request is not None
                         and self.request.command is Command.BIND)
        if code is not Reply.SUCCEEDED:
            self._state = _State.FAILED
        else:
            self._state = _State.AWAIT_SECOND_REPLY if first_of_bind else _State.DONE
        if self.version == 4:
            code4 = Socks4Reply.GRANTED if code is Reply.SUCCEEDED else Socks4Reply.REJECTED
            return encode_socks4_reply(code4, bind_host, bind_port)
        return encode_socks5_reply(code, bind_host, bind_port)

    def failure_reply(self, code: Reply) -> bytes | None:
        """A failure reply valid at this point of the handshake, or None if none is."""
        if self.version == 4:
            return _socks4_failure()
        if self.version == 5 and self._state in (_State.SOCKS5_REQUEST, _State.AWAIT_REPLY,
                                                 _State.AWAIT_SECOND_REPLY):
            return _socks5_failure(code)
        return None

    # -- parsers -----------------------------------------------------------------------------
    def _parse_socks5_methods(self) -> bool:
        buf = self._buffer
        if len(buf) < 2:
            return False
        count = buf[1]
        if len(buf) < 2 + count:
            return False
        offered = set(buf[2 : 2 + count])
        del buf[: 2 + count]
        chosen = next((m for m in self._methods if m in offered), AuthMethod.NO_ACCEPTABLE)
        if chosen is AuthMethod.NO_ACCEPTABLE:
            raise RemoteProtocolError(
                f"no acceptable SOCKS5 auth method: client offered {sorted(offered)}, "
                f"proxy accepts {[int(m) for m in self._methods]}",
                b"\x05\xff",
            )
        self.method = chosen
        self._outbox += bytes((5, chosen))
        self._state = (
            _State.SOCKS5_AUTH if chosen is AuthMethod.USERNAME_PASSWORD else _State.SOCKS5_REQUEST
        )
        return True

    def _parse_socks5_auth(self) -> Event | _NeedData:
        buf = self._buffer
        if not buf:
            return NEED_DATA
        if buf[0] != 1:
            raise RemoteProtocolError(
                f"RFC 1929 sub-negotiation version 0x{buf[0]:02x}, expected 0x01", b"\x01\x01"
            )
        if len(buf) < 2:
            return NEED_DATA
        ulen = buf[1]
        if len(buf) < 3 + ulen:
            return NEED_DATA
        plen = buf[2 + ulen]
        if len(buf) < 3 + ulen + plen:
            return NEED_DATA
        raw_user = bytes(buf[2 : 2 + ulen])
        raw_pass = bytes(buf[3 + ulen : 3 + ulen + plen])
        del buf[: 3 + ulen + plen]
        if not raw_user:
            raise RemoteProtocolError("RFC 1929 user name is empty", b"\x01\x01")
        try:
            creds = Credentials(raw_user.decode("utf-8"), raw_pass.decode("utf-8"))
        except UnicodeDecodeError:
            raise RemoteProtocolError("RFC 1929 credentials are not UTF-8", b"\x01\x01") from None
        self._state = _State.SOCKS5_AWAIT_AUTH_RESULT
        return AuthRequest(creds)

    def _parse_socks5_request(self) -> Event | _NeedData:
        buf = self._buffer
        # Judge VER, CMD and ATYP as soon as they are here: a bad request is answered at
        # once instead of waiting for bytes that a broken client will never send.
        if len(buf) < 4:
            return NEED_DATA
        if buf[0] != 5:
            raise RemoteProtocolError(
                f"SOCKS5 request version 0x{buf[0]:02x}", _socks5_failure(Reply.GENERAL_FAILURE)
            )
        try:
            command = Command(buf[1])
        except ValueError:
            raise RemoteProtocolError(
                f"unknown SOCKS5 command 0x{buf[1]:02x}",
                _socks5_failure(Reply.COMMAND_NOT_SUPPORTED),
            ) from None
        # RSV (buf[2]) must be 0 per RFC 1928 §4, but rejecting it helps nobody: ignore it.
        atyp = buf[3]
        if atyp == AddressType.IPV4:
            end = 4 + 4
            if len(buf) < end + 2:
                return NEED_DATA
            host = str(ipaddress.IPv4Address(bytes(buf[4:end])))
        elif atyp == AddressType.IPV6:
            end = 4 + 16
            if len(buf) < end + 2:
                return NEED_DATA
            host = str(ipaddress.IPv6Address(bytes(buf[4:end])))
        elif atyp == AddressType.DOMAIN:
            if len(buf) < 5:
                return NEED_DATA
            end = 5 + buf[4]
            if len(buf) < end + 2:
                return NEED_DATA
            host = _decode_name(bytes(buf[5:end]), _socks5_failure(Reply.GENERAL_FAILURE))
        else:
            raise RemoteProtocolError(
                f"unknown SOCKS5 address type 0x{atyp:02x}",
                _socks5_failure(Reply.ADDRESS_TYPE_NOT_SUPPORTED),
            )
        (port,) = struct.unpack("!H", buf[end : end + 2])
        del buf[: end + 2]
        self._state = _State.AWAIT_REPLY
        self.request = Request(5, command, host, port, AddressType(atyp))
        return self.request

    def _parse_socks4_request(self) -> Event | _NeedData:
        buf = self._buffer
        if len(buf) < 8:
            return NEED_DATA
        try:
            command = Command(buf[1])
            if command is Command.UDP_ASSOCIATE:
                raise ValueError
        except ValueError:
            raise RemoteProtocolError(
                f"unknown SOCKS4 command 0x{buf[1]:02x}", _socks4_failure()
            ) from None
        (port,) = struct.unpack("!H", buf[2:4])
        ip = bytes(buf[4:8])
        userid_end = self._find_nul(8, "user id")
        if userid_end < 0:
            return NEED_DATA
        try:
            userid = bytes(buf[8:userid_end]).decode("utf-8")
        except UnicodeDecodeError:
            raise RemoteProtocolError("SOCKS4 user id is not UTF-8", _socks4_failure()) from None
        consumed = userid_end + 1
        # SOCKS4a: DSTIP 0.0.0.x with x != 0 means "a host name follows the user id".
        if ip[:3] == b"\0\0\0" and ip[3] != 0:
            name_end = self._find_nul(consumed, "host name")
            if name_end < 0:
                return NEED_DATA
            host = _decode_name(bytes(buf[consumed:name_end]), _socks4_failure())
            atyp = AddressType.DOMAIN
            consumed = name_end + 1
        else:
            host = str(ipaddress.IPv4Address(ip))
            atyp = AddressType.IPV4
        del buf[:consumed]
        self._state = _State.AWAIT_REPLY
        self.request = Request(4, command, host, port, atyp, userid)
        return self.request

    def _find_nul(self, start: int, what: str) -> int:
        end = self._buffer.find(b"\0", start)
        if end < 0 and len(self._buffer) - start > MAX_SOCKS4_FIELD:
            raise RemoteProtocolError(
                f"SOCKS4 {what} longer than {MAX_SOCKS4_FIELD} bytes", _socks4_failure()
            )
        if end - start > MAX_SOCKS4_FIELD:
            raise RemoteProtocolError(
                f"SOCKS4 {what} longer than {MAX_SOCKS4_FIELD} bytes", _socks4_failure()
            )
        return end


# -- encoders (pure, also used by test clients) ------------------------------------------------


def _encode_address(host: str) -> bytes:
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raw = host.encode("utf-8")
        if not 0 < len(raw) <= 255:
            raise ValueError(f"host name must be 1..255 bytes: {host!r}") from None
        return bytes((AddressType.DOMAIN, len(raw))) + raw
    atyp = AddressType.IPV4 if addr.version == 4 else AddressType.IPV6
    return bytes((atyp,)) + addr.packed


def encode_socks5_reply(code: Reply, bind_host: str = "0.0.0.0", bind_port: int = 0) -> bytes:
    return bytes((5, code, 0)) + _encode_address(bind_host) + struct.pack("!H", bind_port)


def encode_socks4_reply(code: Socks4Reply, bind_host: str = "0.0.0.0", bind_port: int = 0) -> bytes:
    try:
        packed = ipaddress.IPv4Address(bind_host).packed
    except ValueError:
        packed = b"\0\0\0\0"  # SOCKS4 cannot express an IPv6 or named bind address
    return bytes((0, code)) + struct.pack("!H", bind_port) + packed


def encode_socks5_greeting(methods: Sequence[AuthMethod]) -> bytes:
    return bytes((5, len(methods))) + bytes(methods)


def encode_socks5_auth(username: str, password: str) -> bytes:
    user, pw = username.encode(), password.encode()
    return bytes((1, len(user))) + user + bytes((len(pw),)) + pw


def encode_socks5_request(command: Command, host: str, port: int) -> bytes:
    return bytes((5, command, 0)) + _encode_address(host) + struct.pack("!H", port)


def encode_socks4_request(command: Command, host: str, port: int, userid: str = "") -> bytes:
    head = bytes((4, command)) + struct.pack("!H", port)
    try:
        ip = ipaddress.IPv4Address(host).packed
        return head + ip + userid.encode() + b"\0"
    except ValueError:
        return head + b"\0\0\0\x01" + userid.encode() + b"\0" + host.encode() + b"\0"
