"""The FTP-aware control session as a sans-I/O layer (mitmproxy style).

Inputs are method calls (`start`, `client_data`, `server_data`, `upstream_opened`,
`upstream_failed`, `active_ready`, `server_closed`); outputs are lists of commands for the
asyncio glue (`ftp_tunnel.py`) to execute. No sockets, no SSH, no clock: every path (FEAT
before login, a wrong password, active->passive conversion) is a transcript test.

Two ways to start:
- credentials from the application: the layer greets the client itself (220), answers the
  commands clients send before logging in, takes USER and PASS, and asks for the upstream
  (SSH login with those credentials + channel to the FTP server). It then consumes the real
  greeting, replays USER/PASS, and relays the server's answer. The password is dropped then.
- fixed credentials: the upstream is already open; the real greeting is relayed as is.

Once logged in it relays, intercepting only:
- AUTH (FTPS): refused with 534 (RFC 2228 §3): TLS would blind the proxy to PASV/PORT, and
  the tunnel already encrypts. Clients then continue in plain text inside SSH.
- PASV/EPSV replies: the announced data port is registered, so the client's data connection
  (a new SOCKS request) is recognised and carried over the same SSH connection.
- PORT/EPRT: answered 200 by the proxy; the server never sees them. On the next transfer
  command the proxy asks the server for EPSV (or PASV) itself, connects the server's passive
  port through SSH to the client's announced port, then sends the transfer command.

With `last_hop_tls` (lasthop.py) the layer speaks FTPS to the server, never to the client:
after the server's 220 it sends AUTH TLS and has the glue run the handshake (StartTls,
answered by `tls_ready`/`tls_failed`); the login then goes over TLS, and after the server's
230 the layer sets PBSZ 0 / PROT P, so every data connection to the server is TLS too
(ExpectData.tls, ConnectActive.tls). The client's own PBSZ/PROT/CCC are answered by the proxy:
a PROT C or a CCC reaching the server would put the last hop back in clear.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from tunnel.addresses import same_host
from tunnel.ftp import (
    NEED_DATA,
    STREAM_AFTER_LINES,
    Command,
    CommandReader,
    FtpError,
    Reply,
    ReplyPart,
    ReplyReader,
    multiline_reply,
    parse_227,
    parse_229,
    reply_line,
)
from tunnel.ftp_commands import (
    LOGIN_TABLE,
    Answer,
    Credentials,
    LoginDialog,
    Quit,
    active_address,
    refusal,
)
from tunnel.ftp_commands import Note as Note  # re-exported: one of this layer's actions
from tunnel.ftp_commands import ToClient as ToClient
from tunnel.lasthop import TlsMode

TRANSFER_VERBS = frozenset({"RETR", "STOR", "STOU", "APPE", "LIST", "NLST", "MLSD"})
PROXY_FEATURES = ["EPRT", "EPSV", "PASV", "UTF8"]
# Features the server may list that the proxy refuses its client (AUTH: 534, the others
# 503): FEAT must not offer them (RFC 2389 §3.2: a listed feature is one that works).
REFUSED_FEATURES = frozenset({b"AUTH", b"PBSZ", b"PROT", b"CCC"})
CUT_TRANSFER = (b"426 Transfer cut short: the data connection was reset or broken (the "
                b"server saw it end and may keep a partial file).\r\n")


def _is_transfer(command: Command | None) -> bool:
    return command is not None and command.verb in TRANSFER_VERBS


# -- commands to the glue ----------------------------------------------------------------------
@dataclass(frozen=True)
class ToServer:
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class OpenUpstream:
    """Log in to SSH as `user` and open the channel to the FTP server."""

    user: str
    password: str | None = field(repr=False)

    def __repr__(self) -> str:
        return f"OpenUpstream(user={self.user!r}, password={'****' if self.password else None})"


@dataclass(frozen=True)
class ExpectData:
    """A passive data connection to `port` will arrive as a SOCKS request (to `announced`
    or to the control destination); carry it to target_host:port from the SSH server."""

    announced: str | None
    target_host: str
    port: int
    tls: bool = False  # the server side of the data connection is TLS (PROT P)


@dataclass(frozen=True)
class ConnectActive:
    """Active mode, converted: connect the server's passive port (through SSH) to the
    client's announced port (locally), then call `active_ready`."""

    server_host: str
    server_port: int
    client_host: str
    client_port: int
    tls: bool = False


@dataclass(frozen=True)
class Close:
    reason: str


@dataclass(frozen=True)
class StartTls:
    """The server said 234 to AUTH TLS: start the TLS handshake on the control connection,
    then call `tls_ready` (the server is authenticated) or `tls_failed`."""


@dataclass(frozen=True)
class LastHop:
    """What protects the last hop, for the audit: "tls", "tls-control" (PROT P refused
    under `try`: data in clear) or "clear"; `failure` when that ended the session."""

    protection: str
    failure: str = ""


Action = (ToClient | ToServer | OpenUpstream | ExpectData | ConnectActive | Close | Note
          | StartTls | LastHop)


class State(enum.Enum):
    PRE_LOGIN = "pre-login"  # we are the FTP server for now
    CONNECTING = "connecting"  # SSH login and channel open in progress
    REPLAY_GREETING = "replay-greeting"
    TLS_AUTH = "tls-auth"  # AUTH TLS sent to the server
    TLS_HANDSHAKE = "tls-handshake"  # the glue runs the handshake
    REPLAY_USER = "replay-user"
    REPLAY_PASS = "replay-pass"
    RELAY = "relay"
    CLOSED = "closed"


class _Pending(enum.Enum):
    """What to do with the server's final reply to a command we forwarded (FIFO)."""

    RELAY = enum.auto()
    PASSIVE = enum.auto()  # relay, and register the data port
    SWALLOW = enum.auto()  # our own replayed command (OPTS): the client never asked
    ACTIVE_EPSV = enum.auto()  # our EPSV for an active transfer: consume
    ACTIVE_PASV = enum.auto()  # our PASV for an active transfer: consume
    PBSZ = enum.auto()  # our PBSZ 0 after login (last_hop_tls)
    PROT = enum.auto()  # our PROT P after login (last_hop_tls)


class FtpLayer:
    def __init__(self, *, client_host: str, server_host: str, credentials_from_app: bool,
                 send_password: bool = True,
                 is_client_address: Callable[[str], bool] | None = None,
                 last_hop_tls: TlsMode = TlsMode.OFF) -> None:
        """`client_host`: the SOCKS client's address (PORT may only point there, RFC 2577).
        `server_host`: the FTP server as the client named it, seen from the SSH server.
        `send_password`: whether the SSH login uses the FTP password (profile auth).
        `is_client_address`: a wider test of "the client's own address" (the glue knows
        which addresses are this host's); default: the client's address or loopback.
        `last_hop_tls`: FTPS to the server (see the module's text)."""
        self.client_host = client_host
        self._is_client_address = is_client_address or (lambda h: same_host(h, client_host))
        self.server_host = server_host
        self.credentials_from_app = credentials_from_app
        self.send_password = send_password
        self.last_hop_tls = last_hop_tls
        # With fixed credentials the client hears the server's greeting itself; under TLS it
        # waits until the hop is secured, so that the client's USER and PASS go over TLS.
        self.state = (State.PRE_LOGIN if credentials_from_app
                      else State.REPLAY_GREETING if last_hop_tls is not TlsMode.OFF
                      else State.RELAY)
        self._tls_up = False  # the control connection to the server runs TLS
        self.data_tls = False  # PROT P accepted: data connections to the server run TLS
        self.user = ""
        self._password: str | None = None
        self._commands = CommandReader()
        self._replies = ReplyReader(stream_after=STREAM_AFTER_LINES)
        self._pending: deque[tuple[_Pending, Command | None]] = deque()
        # The client reset the data connection of the transfer awaiting its reply.
        self._data_reset = False
        self._held: list[Command] = []  # client commands waiting for an internal step
        self._replay_opts: list[Command] = []
        self._active: tuple[str, int] | None = None  # the client's PORT/EPRT address
        self._active_transfer: Command | None = None  # transfer waiting for its data path
        self._server_lacks_epsv = False
        # The server's last word: a close after 221 (QUIT) or 421 (its own notice) is one
        # the client has already heard about; any other close is a crash or a cut.
        self._last_reply_code = 0
        self._dialog = LoginDialog(
            PROXY_FEATURES,
            "TLS refused: this session already runs inside an encrypted SSH tunnel; "
            "continue in plain FTP.", LOGIN_TABLE)
        self._intercept: dict[str, Callable[[Command], list[Action]]] = {
            "AUTH": self._refuse_ftps, "PORT": self._port, "EPRT": self._port,
            "PASV": self._passive, "EPSV": self._passive,
            "USER": self._relogin, "REIN": self._refuse_rein,
        }
        if last_hop_tls is not TlsMode.OFF:
            for verb in ("PBSZ", "PROT", "CCC"):
                self._intercept[verb] = self._refuse_protection
        self._banner: tuple[str, ...] = ()  # the server's own 220, for the client after login
        self._greeting_raw = b""  # the same, as sent, for a client with fixed credentials

    # -- inputs ------------------------------------------------------------------------------
    def start(self) -> list[Action]:
        if self.state is State.PRE_LOGIN:
            return [ToClient(reply_line(220, "ftp-ssh-tunnel: log in with your user name and "
                                        "password; they open the SSH tunnel."))]
        return []

    def client_data(self, data: bytes) -> list[Action]:
        self._commands.receive_data(data)
        out: list[Action] = []
        while self.state is not State.CLOSED:
            try:
                command = self._commands.next_command()
            except FtpError as exc:
                out += [ToClient(exc.reply or b""), Note(f"bad command from client: {exc}")]
                continue
            if command is NEED_DATA:
                break
            assert isinstance(command, Command)
            out += self._client_command(command)
        return out

    def server_data(self, data: bytes) -> list[Action]:
        self._replies.receive_data(data)
        out: list[Action] = []
        while self.state is not State.CLOSED:
            try:
                reply = self._replies.next_reply()
            except FtpError as exc:
                return [*out, ToClient(exc.reply or b""), *self._close(f"server: {exc}")]
            if reply is NEED_DATA:
                break
            if isinstance(reply, ReplyPart):
                out += self._server_reply_part(reply)
                continue
            assert isinstance(reply, Reply)
            out += self._server_reply(reply)
        return out

    def _server_reply_part(self, part: ReplyPart) -> list[Action]:
        """A long multi-line reply (STAT of a big directory) goes on as it comes, unless
        it answers a command the proxy reads the reply of, which it must hold whole."""
        kind = self._pending[0][0] if self._pending else _Pending.RELAY
        if self.state is State.RELAY and kind is _Pending.RELAY:
            return [ToClient(part.raw)]
        return [ToClient(reply_line(421, "Service not available: the FTP server's reply is "
                                    "too long for the proxy to read.")),
                *self._close(f"server reply {part.code} over {STREAM_AFTER_LINES} lines "
                             f"where the proxy reads it ({self.state.value})")]

    def upstream_opened(self) -> list[Action]:
        if self.state is not State.CLOSED:  # the client may have left while SSH connected
            self.state = State.REPLAY_GREETING
        return []

    def upstream_failed(self, message: str, auth_refused: bool) -> list[Action]:
        """The SSH login or the channel to the FTP server failed."""
        self._password = None
        if self.state is State.CLOSED:
            return []
        if auth_refused:
            user, self.user = self.user, ""
            self._dialog.forget()
            self.state = State.PRE_LOGIN
            return [ToClient(reply_line(530, f"Login incorrect: the SSH server refused user "
                                        f"{user!r}."))]
        return [ToClient(reply_line(421, f"Service not available: {message}")),
                *self._close(message)]

    def tls_ready(self) -> list[Action]:
        """The control connection's TLS handshake is done and the server authenticated."""
        if self.state is not State.TLS_HANDSHAKE:
            return []
        self._tls_up = True
        return [LastHop("tls-control"), *self._after_greeting()]

    def tls_failed(self, message: str) -> list[Action]:
        """The handshake failed or the server is not the one configured. Nothing of the
        login has been sent: the password never reaches an impostor."""
        if self.state is State.CLOSED:
            return []
        return self._hop_refused(f"TLS to the FTP server failed: {message}")

    def data_connection_reset(self) -> list[Action]:
        """The client reset a data connection while its transfer was under way. The server
        saw only an end of file through SSH: a cut upload looks whole to it and it says
        226. The client is told 426 instead, as a direct connection would have told it."""
        if not any(kind is _Pending.RELAY and _is_transfer(command)
                   for kind, command in self._pending):
            return []  # no transfer awaits its reply: nothing to correct
        self._data_reset = True
        return [Note("the client reset its data connection mid-transfer: the transfer's "
                     "completion reply will be 426")]

    def active_ready(self, ok: bool, detail: str = "") -> list[Action]:
        command, self._active_transfer = self._active_transfer, None
        if command is None or self.state is State.CLOSED:  # the session ended meanwhile
            return []
        if not ok:
            self._active = None
            return [ToClient(reply_line(425, f"Can't open data connection: {detail}")),
                    *self._release_held()]
        self._pending.append((_Pending.RELAY, command))
        return [ToServer(command.encode()), *self._release_held()]

    def server_closed(self, lost: bool = False) -> list[Action]:
        """The control connection to the server ended; `lost`: not by the server's choice
        (the SSH connection under it broke), which the client must hear as a 421."""
        if self.state is State.CLOSED:
            return []
        if self.state is State.RELAY and lost:
            return [ToClient(reply_line(421, "Service not available: the SSH connection to "
                                        "the server was lost.")),
                    *self._close("SSH connection lost")]
        if self.state is State.RELAY:
            if self._last_reply_code in (221, 421) and not self._pending:
                return self._close("FTP server closed the control connection")
            # RFC 959 §4.2: 421 "may be a reply to any command if the service knows it
            # must shut down"; here the proxy knows for the server, which went silent.
            return [ToClient(reply_line(421, "Service not available: the FTP server closed "
                                        "the control connection.")),
                    Note("the FTP server closed the control connection unannounced; told "
                         "the client 421"),
                    *self._close("FTP server closed the control connection unannounced")]
        return [ToClient(reply_line(421, "Service not available: the FTP server closed the "
                                    "connection.")), *self._close("server closed during login")]

    # -- client commands ---------------------------------------------------------------------
    def _client_command(self, command: Command) -> list[Action]:
        if self.state is State.PRE_LOGIN:
            return self._pre_login(command)
        if self.state is not State.RELAY or self._active_transfer is not None:
            self._held.append(command)  # order is kept: they go once the step is done
            return []
        intercept = self._intercept.get(command.verb)
        if intercept is not None:
            return intercept(command)
        if command.verb in TRANSFER_VERBS and self._active is not None:
            return self._start_active_transfer(command)
        self._pending.append((_Pending.RELAY, command))
        return [ToServer(command.encode())]

    def _pre_login(self, command: Command) -> list[Action]:
        """We are the FTP server until the login is through (ftp_commands.LoginDialog)."""
        refused = refusal(command, LOGIN_TABLE.get(command.verb), logged_in=False)
        if refused is not None:
            if command.verb not in LOGIN_TABLE:  # the rest is the server's, after login
                refused = reply_line(530, "Please login with USER and PASS.")
            return [ToClient(refused)]
        step = self._dialog.step(command)
        if isinstance(step, Quit):
            return self._quit(command)
        if isinstance(step, Credentials):
            self.user, self._password = step.user, step.password
            self.state = State.CONNECTING
            return [OpenUpstream(step.user, step.password if self.send_password else None),
                    Note(f"login as {step.user!r}: opening SSH")]
        if command.verb == "OPTS" and step.reply.startswith(b"200"):
            self._replay_opts.append(command)  # the real server hears it after login
        return [ToClient(step.reply), *([Note(step.note)] if step.note else [])]

    def _quit(self, command: Command) -> list[Action]:
        return [ToClient(reply_line(221, "Goodbye.")), *self._close("client quit")]

    def _refuse_ftps(self, command: Command) -> list[Action]:
        step = self._dialog.step(command)
        assert isinstance(step, Answer)
        return [ToClient(step.reply), Note(step.note)]

    def _port(self, command: Command) -> list[Action]:
        try:
            self._active = active_address(command, self._is_client_address)
        except FtpError as exc:
            return [ToClient(exc.reply or b""), Note(f"refused {command.verb}: {exc}")]
        return [ToClient(reply_line(200, f"{command.verb} command successful (the proxy "
                                    "carries it through SSH)."))]

    def _relogin(self, command: Command) -> list[Action]:
        """USER after login (RFC 959 allows it). With credentials from the application the
        SSH connection under this session is this user's: another user may not ride it
        (an SSH connection is never shared across credentials), so that is refused; the
        same user name goes to the server."""
        if not self.credentials_from_app or command.arg == self.user:
            self._pending.append((_Pending.RELAY, command))
            return [ToServer(command.encode())]
        return [ToClient(reply_line(530, f"Log in as another user on a new connection: this "
                                    f"one's SSH login is {self.user}'s.")),
                Note(f"refused re-login as {command.arg[:64]!r} on {self.user!r}'s SSH login")]

    def _refuse_rein(self, command: Command) -> list[Action]:
        # REIN would reset the FTP login while the SSH login stays: the same risk as USER.
        return [ToClient(reply_line(502, "REIN is not offered through the tunnel; open a new "
                                    "connection to log in again."))]

    def _passive(self, command: Command) -> list[Action]:
        self._active = None  # PASV after PORT: the client switched to passive
        self._pending.append((_Pending.PASSIVE, command))
        return [ToServer(command.encode())]

    def _start_active_transfer(self, command: Command) -> list[Action]:
        self._active_transfer = command
        if self._server_lacks_epsv:
            self._pending.append((_Pending.ACTIVE_PASV, None))
            return [ToServer(b"PASV\r\n")]
        self._pending.append((_Pending.ACTIVE_EPSV, None))
        return [ToServer(b"EPSV\r\n")]

    def _release_held(self) -> list[Action]:
        held, self._held = self._held, []
        out: list[Action] = []
        for command in held:
            out += self._client_command(command)
        return out

    # -- server replies ----------------------------------------------------------------------
    def _server_reply(self, reply: Reply) -> list[Action]:
        self._last_reply_code = reply.code
        if self.state is State.REPLAY_GREETING:
            return self._replay_greeting(reply)
        if self.state is State.TLS_AUTH:
            return self._auth_reply(reply)
        if self.state is State.TLS_HANDSHAKE:
            return self._close(f"the FTP server said {reply.code} during the TLS handshake")
        if self.state is State.REPLAY_USER:
            return self._replay_user(reply)
        if self.state is State.REPLAY_PASS:
            return self._replay_pass(reply)
        if reply.preliminary:
            kind = self._pending[0][0] if self._pending else _Pending.RELAY
            return [ToClient(reply.raw)] if kind in (_Pending.RELAY, _Pending.PASSIVE) else []
        if not self._pending:
            return [ToClient(reply.raw)]  # unsolicited (a 421 timeout notice)
        kind, command = self._pending.popleft()
        if kind is _Pending.RELAY:
            if reply.code == 230 and command is not None and command.verb in ("USER", "PASS"):
                return [ToClient(reply.raw), *self._protect_data()]
            if reply.code == 211 and command is not None and command.verb == "FEAT":
                return [ToClient(_without_refused_features(reply.raw))]
            if _is_transfer(command):
                reset, self._data_reset = self._data_reset, False
                if reset and reply.code // 100 == 2:
                    return [ToClient(CUT_TRANSFER), Note(
                        f"server said {reply.code} for a transfer whose data connection the "
                        "client reset; the client was told 426")]
            return [ToClient(reply.raw)]
        if kind is _Pending.SWALLOW:
            return []
        if kind in (_Pending.PBSZ, _Pending.PROT):
            return self._protection_reply(kind, reply)
        if kind is _Pending.PASSIVE:
            return [*self._register_passive(reply), ToClient(reply.raw)]
        return self._active_passive_reply(kind, reply)

    def _replay_greeting(self, reply: Reply) -> list[Action]:
        if reply.preliminary:  # 120 "ready in n minutes"
            return []
        if reply.code != 220:
            return [ToClient(reply.raw), *self._close(f"server greeting {reply.code}")]
        self._banner, self._greeting_raw = reply.lines, reply.raw
        if self.last_hop_tls is not TlsMode.OFF:
            self.state = State.TLS_AUTH
            return [ToServer(b"AUTH TLS\r\n")]
        return self._after_greeting()

    def _after_greeting(self) -> list[Action]:
        """The greeting is in and the hop is as secure as it will be: log in (credentials
        from the app) or let the client hear the greeting and log in itself."""
        if self.credentials_from_app:
            self.state = State.REPLAY_USER
            return [ToServer(f"USER {self.user}\r\n".encode())]
        self.state = State.RELAY
        return [ToClient(self._greeting_raw), *self._release_held()]

    def _auth_reply(self, reply: Reply) -> list[Action]:
        if reply.preliminary:
            return []
        if reply.code == 234:
            self.state = State.TLS_HANDSHAKE
            return [StartTls()]
        said = f"{reply.code} {reply.text[:120]}".strip()
        if self.last_hop_tls is TlsMode.REQUIRE:
            return self._hop_refused(f"the FTP server refused AUTH TLS ({said}) and "
                                     "last_hop_tls = require")
        return [LastHop("clear"), Note(f"the FTP server refused AUTH TLS ({said}): the last "
                                       "hop stays in clear (last_hop_tls = try)"),
                *self._after_greeting()]

    def _hop_refused(self, reason: str) -> list[Action]:
        return [ToClient(reply_line(421, f"Service not available: {reason}.")),
                LastHop("clear", failure=reason), *self._close(reason)]

    def _protect_data(self) -> list[Action]:
        """After the login: PBSZ 0 and PROT P (RFC 4217 §9), before anything the client
        sends next, so no data connection can open in clear. Sent after login rather than
        before because every server accepts them there (curl and FileZilla do the same)."""
        if not self._tls_up or self.data_tls:
            return []
        self._pending.append((_Pending.PBSZ, None))
        self._pending.append((_Pending.PROT, None))
        return [ToServer(b"PBSZ 0\r\n"), ToServer(b"PROT P\r\n")]

    def _protection_reply(self, kind: _Pending, reply: Reply) -> list[Action]:
        if kind is _Pending.PBSZ or reply.code // 100 == 2:
            if kind is _Pending.PROT:
                self.data_tls = True
                return [LastHop("tls"), Note("data connections to the FTP server: TLS "
                                             "(PROT P)")]
            return []  # PBSZ: its refusal shows in PROT's
        said = f"{reply.code} {reply.text[:120]}".strip()
        if self.last_hop_tls is TlsMode.REQUIRE:
            return self._hop_refused(f"the FTP server refused PROT P ({said}) and "
                                     "last_hop_tls = require")
        return [LastHop("tls-control"), Note(f"the FTP server refused PROT P ({said}): data "
                                             "connections in clear (last_hop_tls = try)")]

    def _refuse_protection(self, command: Command) -> list[Action]:
        # The client made no AUTH with us (the proxy refuses it), so RFC 4217's answer is
        # 503; relayed, a PROT C or CCC would undo the last hop's TLS.
        return [ToClient(reply_line(503, f"{command.verb}: no security exchange on this "
                                    "connection (the proxy protects the hop to the server "
                                    "itself)."))]

    def _replay_user(self, reply: Reply) -> list[Action]:
        if reply.code == 331 and self._password is not None:
            self.state = State.REPLAY_PASS
            password, self._password = self._password, None  # held only until sent
            return [ToServer(f"PASS {password}\r\n".encode())]
        return self._logged_in(reply)

    def _replay_pass(self, reply: Reply) -> list[Action]:
        return self._logged_in(reply)

    def _logged_in(self, reply: Reply) -> list[Action]:
        self._password = None
        self.state = State.RELAY
        said = reply.raw
        if reply.code == 230 and self._banner:
            # The client never saw the server's greeting (we greeted first): its text, a
            # legal notice on some sites, comes with the login's 230 (RFC 959 §4.2 allows a
            # multi-line reply to any command).
            first, *rest = self._banner
            said = multiline_reply(230, [f"The FTP server's greeting: {first}", *rest,
                                         *reply.lines])
        out: list[Action] = [ToClient(said), Note(f"FTP login as {self.user!r}: "
                                                  f"{reply.code}")]
        if reply.code == 230:
            out += self._protect_data()
            for command in self._replay_opts:
                self._pending.append((_Pending.SWALLOW, command))
                out.append(ToServer(command.encode()))
        return [*out, *self._release_held()]

    def _register_passive(self, reply: Reply) -> list[Action]:
        try:
            if reply.code == 227:
                # The SSH server connects to the control connection's host, whatever address
                # the 227 names: behind NAT a server announces one it cannot be reached at,
                # curl and ftplib ignore it for that reason, and a server must not steer the
                # SSH server's connections elsewhere (the server side of an FTP bounce). The
                # client's data request may still name the announced address.
                host, port = parse_227(reply.text)
                return [ExpectData(host, self.server_host, port, self.data_tls)]
            if reply.code == 229:
                return [ExpectData(None, self.server_host, parse_229(reply.text), self.data_tls)]
        except FtpError as exc:
            return [Note(f"server passive reply unusable: {exc}")]
        return []

    def _active_passive_reply(self, kind: _Pending, reply: Reply) -> list[Action]:
        assert self._active is not None
        client_host, client_port = self._active
        try:
            if kind is _Pending.ACTIVE_EPSV and reply.code == 229:
                server = (self.server_host, parse_229(reply.text))
            elif kind is _Pending.ACTIVE_PASV and reply.code == 227:
                _, port = parse_227(reply.text)  # the control host, as in _register_passive
                server = (self.server_host, port)
            elif kind is _Pending.ACTIVE_EPSV:
                self._server_lacks_epsv = True  # try PASV, and remember for next time
                self._pending.append((_Pending.ACTIVE_PASV, None))
                return [ToServer(b"PASV\r\n"), Note(f"server refused EPSV ({reply.code})")]
            else:
                return self.active_ready(False, f"the server refused passive mode "
                                         f"({reply.code}).")
        except FtpError as exc:
            return self.active_ready(False, str(exc))
        self._active = None  # PORT covers one transfer (RFC 959 §3.2 resets to default)
        return [ConnectActive(server[0], server[1], client_host, client_port, self.data_tls)]

    def _close(self, reason: str) -> list[Action]:
        self.state = State.CLOSED
        self._password = None
        return [Close(reason)]


def _without_refused_features(raw: bytes) -> bytes:
    """The server's FEAT reply less the features the proxy refuses; the first and last
    lines (211-... and 211 End) always stay."""
    lines = raw.split(b"\r\n")
    kept = [line for index, line in enumerate(lines)
            if index == 0 or not line.startswith(b" ")
            or (line.split(None, 1) or [b""])[0].upper() not in REFUSED_FEATURES]
    return b"\r\n".join(kept)

