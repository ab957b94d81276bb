"""What both FTP-facing layers of the proxy (`ftp_layer` for ftp-tunnel, `sftp_layer` for
ftp-sftp) answer in the same way, pure:

- the command table's metadata (pyftpdlib's `proto_cmds`): whether a command needs a login
  and an argument, and its help text; `refusal` enforces it in one place, so a command
  missing its argument is `501` and touches nothing;
- the login dialog: USER and PASS, and the commands clients send before logging in (FEAT,
  OPTS, SYST, NOOP, HELP, CLNT, and AUTH/PBSZ/PROT, which are refused);
- PORT/EPRT: parsed and checked against RFC 2577 §3 (no bounce to a foreign host, no
  privileged port), with `501` for a refusal.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from tunnel.ftp import Command, FtpError, multiline_reply, parse_eprt, parse_port, reply_line


class Arg(enum.Enum):
    NONE = "none"  # any argument is ignored
    OPTIONAL = "optional"
    REQUIRED = "required"


@dataclass(frozen=True)
class Spec:
    """One command's row in a table. `login`: refused with 530 before login."""

    arg: Arg = Arg.NONE
    login: bool = True
    help: str = ""


def refusal(command: Command, spec: Spec | None, logged_in: bool) -> bytes | None:
    """The reply that refuses `command` before its handler runs, or None to run it.
    RFC 959 §4.2: 502 for a command not implemented, 530 before login, 501 for a syntax
    error in the arguments (a missing one)."""
    if spec is None:
        return reply_line(502, f"Command {command.verb} not implemented.")
    if spec.login and not logged_in:
        return reply_line(530, "Please login with USER and PASS.")
    if spec.arg is Arg.REQUIRED and not command.arg.strip():
        return reply_line(501, f"{command.verb} needs an argument: {spec.help}")
    return None


def help_reply(table: dict[str, Spec], arg: str) -> bytes:
    """HELP (RFC 959 §4.1.3): the commands understood, or one command's syntax."""
    spec = table.get(arg.strip().upper())
    if arg.strip() and spec is not None:
        return reply_line(214, f"Syntax: {arg.strip().upper()} {spec.help}".rstrip())
    return multiline_reply(214, ["Commands understood:", " ".join(sorted(table)), "Help OK."])


def _is_utf8(text: str) -> bool:
    """Arguments are decoded with surrogateescape: a surrogate marks a byte that was not UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# -- actions both layers give their glue ---------------------------------------------------------
@dataclass(frozen=True)
class ToClient:
    data: bytes


@dataclass(frozen=True)
class Note:
    """A log line for the operator. Never carries a secret."""

    message: str


# -- the login dialog --------------------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    """Reply to the client; `note` is a log line (never a secret)."""

    reply: bytes
    note: str = ""


@dataclass(frozen=True)
class Credentials:
    """USER then PASS arrived: log in with them."""

    user: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class Quit:
    pass


DialogStep = Answer | Credentials | Quit

# What a client may send before it is logged in, to either layer.
LOGIN_TABLE: dict[str, Spec] = {
    "USER": Spec(Arg.REQUIRED, login=False, help="<user name>"),
    "PASS": Spec(Arg.OPTIONAL, login=False, help="<password>"),
    "FEAT": Spec(login=False),
    "OPTS": Spec(Arg.REQUIRED, login=False, help="UTF8 ON"),
    "SYST": Spec(login=False),
    "NOOP": Spec(login=False),
    "HELP": Spec(Arg.OPTIONAL, login=False, help="[<command>]"),
    "QUIT": Spec(login=False),
    "CLNT": Spec(Arg.OPTIONAL, login=False, help="<client name>"),
    "AUTH": Spec(Arg.REQUIRED, login=False, help="TLS"),
    "PBSZ": Spec(Arg.REQUIRED, login=False, help="0"),
    "PROT": Spec(Arg.REQUIRED, login=False, help="P"),
}


class LoginDialog:
    """USER and PASS (RFC 959 §4.1.1), and the other commands of `LOGIN_TABLE`, answered by
    the proxy itself. The caller checks `refusal` first, then calls `step`."""

    def __init__(self, features: list[str], tls_refusal: str, help_table: dict[str, Spec]
                 ) -> None:
        self.features = features
        self.tls_refusal = tls_refusal
        self.help_table = help_table
        self.user = ""
        self.tls_attempted = False

    def step(self, command: Command) -> DialogStep:
        verb = command.verb
        if verb == "USER":
            if not _is_utf8(command.arg):  # it becomes the SSH user name, which is UTF-8
                return Answer(reply_line(501, "User name is not valid UTF-8."),
                              "USER refused: not valid UTF-8")
            self.user = command.arg
            return Answer(reply_line(331, f"Password required for {command.arg}."))
        if verb == "PASS":
            if not self.user:
                return Answer(reply_line(503, "Login with USER first."))
            if not _is_utf8(command.arg):  # the SSH password is UTF-8 too (RFC 4252 §8)
                return Answer(reply_line(501, "Password is not valid UTF-8."),
                              "PASS refused: not valid UTF-8")
            return Credentials(self.user, command.arg)
        if verb == "QUIT":
            return Quit()
        if verb == "FEAT":
            return Answer(multiline_reply(211, ["Features:", *self.features, "End"]))
        if verb == "OPTS":
            if command.arg.upper().startswith("UTF8"):
                return Answer(reply_line(200, "UTF8 mode on."))
            if command.arg.upper().startswith("MLST"):  # RFC 3659 §7.9: the facts chosen
                facts = command.arg[4:].strip()
                return Answer(reply_line(200, f"MLST OPTS {facts}"))
            return Answer(reply_line(501, "Option not understood."))
        if verb == "SYST":
            return Answer(reply_line(215, "UNIX Type: L8"))
        if verb in ("NOOP", "CLNT"):
            return Answer(reply_line(200, "OK."))
        if verb == "HELP":
            return Answer(help_reply(self.help_table, command.arg))
        if verb == "AUTH":
            # RFC 2228 §3: 534 "Request denied for policy reasons".
            self.tls_attempted = True
            return Answer(reply_line(534, self.tls_refusal),
                          f"refused {verb} {command.arg[:16]!r} (ftps = refuse)")
        if verb in ("PBSZ", "PROT"):
            return Answer(reply_line(503, "No security exchange: TLS is refused here."))
        raise ValueError(f"{verb} is not a login dialog command")  # a table/caller mismatch

    def forget(self) -> None:
        """A refused login: the client starts again with USER."""
        self.user = ""


# -- active mode -------------------------------------------------------------------------------
def active_address(command: Command, is_client_address: Callable[[str], bool]
                   ) -> tuple[str, int]:
    """The checked address of a PORT or EPRT. Raises FtpError with the reply: the parser's
    (501, or 522 for an EPRT family we do not speak, RFC 2428 §2), or 501 for an address
    that is not the client's own or a privileged port (RFC 2577 §3: no FTP bounce)."""
    host, port = (parse_port if command.verb == "PORT" else parse_eprt)(command.arg)
    if not is_client_address(host):
        raise FtpError(501, f"{command.verb} refused: {host} is not your address.")
    if port < 1024:
        raise FtpError(501, f"{command.verb} refused: privileged port.")
    return host, port
