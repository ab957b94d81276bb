"""The `ftp-sftp` action's FTP server as a sans-I/O layer (mitmproxy style, like `ftp_layer`).

Inputs are method calls: `start`, `client_data` (bytes from the FTP client), `result` (the
outcome of the operation asked for last) and `ssh_lost`. Outputs are lists of actions for
the asyncio glue (`ftp_sftp.py`): replies (`ToClient`), one `Operation` at a time (an SFTP
call, a data-connection step or a transfer, whose outcome comes back through `result`),
`AbortData`, `Leftover`, `Note` and `Close`. No sockets, no asyncssh, no clock: every
command and every way a transfer can end is a transcript test, and a property test drives
the layer against an in-memory file system.

Each command's handler is a generator that yields operations and receives their values,
so it reads top to bottom like the async code it replaces. An SFTP refusal is thrown into
the handler as `SftpRefused`; one it does not catch becomes its reply through the one table
in `sftp_map`. A lost SSH connection ends the session in one place (`_lost`): 421, close.

Data safety, the rules this layer owns:
- every command runs through one table (`COMMANDS`): a command missing its argument is 501
  and touches nothing;
- a fresh STOR writes to a hidden temporary name beside the target and renames it over the
  target only when the client's data connection ended cleanly (FIN after the last byte).
  A reset, an ABOR, a timeout, an SFTP failure or a lost SSH connection leaves the old file
  exactly as it was. Overwriting keeps the old file's mode, and its owner and group where
  the SFTP server lets us;
- APPE and REST+STOR write into the real file, as every FTP server does: resuming is their
  purpose, so what arrived before a cut stays for the next REST; no byte below the starting
  offset is ever written.
"""

from __future__ import annotations

import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Generator

from tunnel import sftp_map
from tunnel.addresses import is_ip
from tunnel.ftp import (
    NEED_DATA,
    Command,
    CommandReader,
    FtpError,
    encode_227,
    encode_229,
    multiline_reply,
    reply_line,
)
from tunnel.ftp_commands import (
    LOGIN_TABLE,
    Arg,
    Credentials,
    LoginDialog,
    Note,
    Quit,
    Spec,
    ToClient,
    active_address,
    refusal,
)
from tunnel.sftp_map import Entry
from tunnel.sftp_ops import (
    DATA_OPERATIONS,
    AbortData,
    Action,
    Close,
    CloseFile,
    Download,
    Ending,
    FileMode,
    Leftover,
    Login,
    LoginFailed,
    Lost,
    MakeDir,
    OpenData,
    OpenFile,
    Operation,
    Passive,
    ReadDir,
    RealPath,
    Refused,
    RemoveDir,
    RemoveFile,
    Rename,
    Result,
    SendListing,
    SetMode,
    SetOwner,
    SetTimes,
    Stat,
    Transferred,
    Upload,
)

FEATURES = ["EPRT", "EPSV", "MDTM", "MFMT", "MLST type*;size*;modify*;perm*;unix.mode*;",
            "PASV", "REST STREAM", "SIZE", "TVFS", "UTF8"]
MAX_QUEUED_COMMANDS = 32  # while one runs; the glue stops reading the client beyond this


class SftpRefused(Exception):
    """Thrown into a handler: its operation was refused with this SFTP status."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class _LoginFailed(Exception):
    def __init__(self, failure: LoginFailed) -> None:
        super().__init__(failure.message)
        self.failure = failure


class _Reply(Exception):
    """A handler ends with this reply (a refusal decided by the layer itself)."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code, self.text = code, text


Steps = Generator[Operation, object, None]

# -- the command table (pyftpdlib's proto_cmds): enforced in one place, `refusal` ----------------
COMMANDS: dict[str, Spec] = {
    **LOGIN_TABLE,
    "TYPE": Spec(Arg.REQUIRED, help="A | I"),
    "MODE": Spec(Arg.REQUIRED, help="S"),
    "STRU": Spec(Arg.REQUIRED, help="F"),
    "REST": Spec(Arg.REQUIRED, help="<byte offset>"),
    "PWD": Spec(), "XPWD": Spec(),
    "CWD": Spec(Arg.REQUIRED, help="<directory>"),
    "XCWD": Spec(Arg.REQUIRED, help="<directory>"),
    "CDUP": Spec(), "XCUP": Spec(),
    "MKD": Spec(Arg.REQUIRED, help="<directory>"),
    "XMKD": Spec(Arg.REQUIRED, help="<directory>"),
    "RMD": Spec(Arg.REQUIRED, help="<directory>"),
    "XRMD": Spec(Arg.REQUIRED, help="<directory>"),
    "DELE": Spec(Arg.REQUIRED, help="<file>"),
    "RNFR": Spec(Arg.REQUIRED, help="<old name>"),
    "RNTO": Spec(Arg.REQUIRED, help="<new name>"),
    "SIZE": Spec(Arg.REQUIRED, help="<file>"),
    "MDTM": Spec(Arg.REQUIRED, help="<file>"),
    "MLST": Spec(Arg.OPTIONAL, help="[<path>]"),
    "PASV": Spec(), "EPSV": Spec(Arg.OPTIONAL, help="[ALL]"),
    "PORT": Spec(Arg.REQUIRED, help="h1,h2,h3,h4,p1,p2"),
    "EPRT": Spec(Arg.REQUIRED, help="|af|address|port|"),
    "LIST": Spec(Arg.OPTIONAL, help="[<path>]"),
    "NLST": Spec(Arg.OPTIONAL, help="[<path>]"),
    "MLSD": Spec(Arg.OPTIONAL, help="[<directory>]"),
    "RETR": Spec(Arg.REQUIRED, help="<file>"),
    "STOR": Spec(Arg.REQUIRED, help="<file>"),
    "APPE": Spec(Arg.REQUIRED, help="<file>"),
    "ABOR": Spec(login=False),
    "MFMT": Spec(Arg.REQUIRED, help="<YYYYMMDDHHMMSS> <path>"),
    "SITE": Spec(Arg.REQUIRED, help="CHMOD <mode> <path>"),
}
TRANSFER_VERBS = frozenset({"LIST", "NLST", "MLSD", "RETR", "STOR", "APPE"})


PART_MARK = ".part-"  # .<name>.part-<8 hex>: an upload's temporary file
_TEMPORARY = re.compile(r"\..+\.part-[0-9a-f]{8}")


def is_temporary(name: str) -> bool:
    return _TEMPORARY.fullmatch(name) is not None


class SftpLayer:
    def __init__(self, *, control_host: str, fixed_user: str = "",
                 is_client_address: Callable[[str], bool],
                 temporary_token: Callable[[], str] = lambda: secrets.token_hex(4),
                 lf_files: bool = True, clock: Callable[[], float] = time.time) -> None:
        """`control_host`: the destination the client's SOCKS request named (the 227 reply
        announces it when it is an IPv4 address). `fixed_user`: the profile's own SSH user
        (keys), which the FTP user must then be; "" = log in with the client's USER/PASS.
        `is_client_address`: RFC 2577's test for PORT/EPRT. `lf_files`: the server's text
        files end lines with LF, so TYPE A converts (profile line_ending)."""
        self.control_host = control_host
        self.fixed_user = fixed_user
        self._is_client_address = is_client_address
        self._token = temporary_token
        self.lf_files = lf_files
        self._clock = clock  # LIST shows the year for files older than six months
        self.dialog = LoginDialog(FEATURES, "TLS is not offered: the FTP-SFTP gateway runs on "
                                  "your own host, and SSH protects the rest.", COMMANDS)
        self.user = ""
        self.logged_in = False
        self.closed = False
        self.cwd = "/"
        self.binary = False  # TYPE A until the client says TYPE I (RFC 959 §3.1.1.1)
        self.bytes_up = 0  # file bytes the client sent and the server accepted
        self.bytes_down = 0
        self.data_channels = 0
        self._restart_at = 0
        self._rename_from: str | None = None
        self._active: tuple[str, int] | None = None
        self._passive = False
        self._commands = CommandReader()
        self._queue: deque[Command] = deque()
        self._running: Steps | None = None
        self._running_verb = ""
        self._after_150 = False  # the running transfer has said 150: failures are 451
        self._aborted = False
        self._part: str | None = None  # the temporary upload file being written
        self._waiting: Operation | None = None  # what the running handler waits on
        self._out: list[Action] = []

    # -- inputs ------------------------------------------------------------------------------
    def start(self) -> list[Action]:
        self._say(220, "ftp-ssh-tunnel FTP-SFTP gateway ready")
        return self._flush()

    def client_data(self, data: bytes) -> list[Action]:
        self._commands.receive_data(data)
        while not self.closed:
            try:
                command = self._commands.next_command()
            except FtpError as exc:  # a malformed line: its reply, and the session goes on
                self._out += [ToClient(exc.reply or b""), Note(f"bad FTP input: {exc}")]
                continue
            if command is NEED_DATA:
                break
            assert isinstance(command, Command)
            if command.verb == "ABOR":  # out of band: it must not wait behind a transfer
                self._abort()
            else:
                self._queue.append(command)
        self._next()
        return self._flush()

    def result(self, outcome: Result) -> list[Action]:
        """The outcome of the operation asked for last."""
        if self.closed or self._running is None:
            return []
        if isinstance(outcome, Lost):
            self._lost(outcome.detail)
        elif isinstance(outcome, Refused):
            self._step(error=SftpRefused(outcome.status, outcome.reason))
        elif isinstance(outcome, LoginFailed):
            self._step(error=_LoginFailed(outcome))
        else:
            self._step(value=outcome.value)
        self._next()
        return self._flush()

    def ssh_lost(self, detail: str) -> list[Action]:
        """The SSH connection went away while no operation was waiting on it."""
        if not self.closed and self.logged_in:
            self._lost(detail)
        return self._flush()

    def abandon(self) -> str | None:
        """The client is gone (its control connection closed): nothing more is said. Returns
        the temporary file of an upload under way, for the glue to remove, or None."""
        part, self._part = self._part, None
        if self._running is not None:
            self._running.close()
            self._aborted = False
            self._finish()
        self.closed = True
        self._queue.clear()
        return part

    @property
    def backlog(self) -> int:
        return len(self._queue)

    # -- the command loop --------------------------------------------------------------------
    def _next(self) -> None:
        while self._running is None and self._queue and not self.closed:
            command = self._queue.popleft()
            refused = refusal(command, COMMANDS.get(command.verb), self.logged_in)
            if refused is not None:
                self._out.append(ToClient(refused))
                continue
            if command.verb != "RNTO":  # RNTO must follow RNFR at once (RFC 959 §4.1.3)
                self._rename_from = None
            rest, self._restart_at = self._restart_at, 0  # REST applies to the next command only
            self._running, self._running_verb = self._handler(command, rest), command.verb
            self._step()

    def _step(self, value: object = None, error: BaseException | None = None) -> None:
        running = self._running
        assert running is not None
        try:
            operation = running.throw(error) if error is not None else running.send(value)
        except StopIteration:
            self._finish()
        except _Reply as reply:
            self._say(reply.code, reply.text)
            self._finish()
        except SftpRefused as exc:
            code, text = sftp_map.ftp_reply_for(exc.status, self._running_verb,
                                                mid_transfer=self._after_150)
            self._out.append(Note(f"{self._running_verb} refused by the SFTP server: "
                                  f"{text} (status {exc.status} {exc})"))
            self._say(code, text)
            self._finish()
            if code == 421:
                self._close("SFTP connection lost", ssh_failure=True)
        else:
            self._waiting = operation
            self._out.append(operation)

    def _finish(self) -> None:
        if self._aborted:  # ABOR came, but the transfer was done or had not begun
            self._say(226, "ABOR successful.")
        self._running, self._running_verb, self._waiting = None, "", None
        self._after_150 = self._aborted = False

    def _lost(self, detail: str) -> None:
        """RFC 959 §4.2: 421 when the service must close; the data connection goes too."""
        if self._running is not None:
            self._running.close()
            self._aborted = False
            self._finish()
        if self._part is not None:  # it cannot be removed over a dead connection
            self._out.append(Leftover(self._part))
            self._part = None
        self._out.append(Note(f"SSH connection lost: {detail}"))
        self._say(421, "SSH connection to the server lost; closing control connection.")
        self._close(f"SSH connection lost: {detail}", ssh_failure=True)

    def _close(self, reason: str, ssh_failure: bool = False) -> None:
        self.closed = True
        self._queue.clear()
        self._out.append(Close(reason, ssh_failure))

    def _say(self, code: int, text: str) -> None:
        self._out.append(ToClient(reply_line(code, text)))

    def _flush(self) -> list[Action]:
        out, self._out = self._out, []
        return out

    def _path(self, arg: str) -> str:
        return sftp_map.resolve(self.cwd, arg)

    def _handler(self, command: Command, rest: int) -> Steps:
        verb = command.verb
        if verb in LOGIN_TABLE:
            return self._dialog_step(command)
        if verb in TRANSFER_VERBS:
            return self._transfer(command, rest)
        return getattr(self, "_" + verb.lower())(command)  # type: ignore[no-any-return]

    # -- login and the commands answered without SFTP ----------------------------------------
    def _dialog_step(self, command: Command) -> Steps:
        if command.verb in ("USER", "PASS") and self.logged_in:
            raise _Reply(503, "Already logged in.")
        step = self.dialog.step(command)
        if isinstance(step, Quit):
            self._say(221, "Goodbye.")
            self._close("client quit")
        elif isinstance(step, Credentials):
            yield from self._login(step)
        else:
            if step.note:
                self._out.append(Note(step.note))
            self._out.append(ToClient(step.reply))

    def _login(self, credentials: Credentials) -> Steps:
        if self.fixed_user and credentials.user != self.fixed_user:
            # A fixed-user profile logs in with its keys; the FTP user must be that user,
            # so nobody borrows the key under another name.
            self.dialog.forget()
            raise _Reply(530, f"This gateway logs in as {self.fixed_user} only.")
        try:
            home = yield Login(credentials.user,
                               None if self.fixed_user else credentials.password)
        except _LoginFailed as exc:
            self.dialog.forget()
            if exc.failure.auth_refused:
                raise _Reply(530, "Login incorrect (the SSH server refused it).") from None
            self._say(421, f"SSH server unavailable: {exc.failure.message}")
            self._close(exc.failure.message, ssh_failure=True)
            return
        self.user, self.logged_in, self.cwd = credentials.user, True, str(home)
        self._out.append(Note(f"{self.user} logged in over SFTP, home {self.cwd}"))
        self._say(230, "Login successful.")

    def _type(self, command: Command) -> Steps:
        kind = command.arg.upper().split()
        if kind[:1] == ["I"] or kind[:2] == ["L", "8"]:
            self.binary = True
        elif kind[:1] == ["A"] and kind[1:] in ([], ["N"]):
            self.binary = False
        else:
            raise _Reply(504, "Only TYPE A and TYPE I.")
        self._say(200, f"Type set to {'I' if self.binary else 'A'}.")
        yield from ()

    def _mode(self, command: Command) -> Steps:
        if command.arg.upper() != "S":
            raise _Reply(504, "Only MODE S.")
        self._say(200, "Mode set to S.")
        yield from ()

    def _stru(self, command: Command) -> Steps:
        if command.arg.upper() != "F":
            raise _Reply(504, "Only STRU F.")
        self._say(200, "Structure set to F.")
        yield from ()

    def _rest(self, command: Command) -> Steps:
        if not command.arg.strip().isdigit():
            raise _Reply(501, "REST needs a byte offset.")
        self._restart_at = int(command.arg)
        self._say(350, f"Restarting at {self._restart_at}.")
        yield from ()

    def _abor(self, command: Command) -> Steps:
        raise AssertionError("ABOR is handled out of band")  # client_data never queues it
        yield from ()

    # -- directories and files ---------------------------------------------------------------
    def _pwd(self, command: Command) -> Steps:
        self._say(257, f"{sftp_map.quote_path(self.cwd)} is the current directory.")
        yield from ()

    _xpwd = _pwd

    def _cwd(self, command: Command) -> Steps:
        path = self._path(command.arg)
        try:
            entry = yield Stat(path)
        except SftpRefused:
            entry = None
        if not isinstance(entry, Entry) or not entry.is_dir:
            raise _Reply(550, f"{command.arg}: No such directory.")
        self.cwd = path
        self._say(250, f"Directory changed to {path}.")

    _xcwd = _cwd

    def _cdup(self, command: Command) -> Steps:
        yield from self._cwd(Command("CWD", ".."))

    _xcup = _cdup

    def _mkd(self, command: Command) -> Steps:
        path = self._path(command.arg)
        yield MakeDir(path)
        self._say(257, f"{sftp_map.quote_path(path)} created.")

    _xmkd = _mkd

    def _rmd(self, command: Command) -> Steps:
        path = self._path(command.arg)
        if path == self.cwd or self.cwd.startswith(path.rstrip("/") + "/"):
            # rmdir(".") is EINVAL on the server's own file system; by path it would work.
            raise _Reply(550, f"{command.arg}: is the current directory or holds it.")
        yield RemoveDir(path)
        self._say(250, "Directory removed.")

    _xrmd = _rmd

    def _dele(self, command: Command) -> Steps:
        yield RemoveFile(self._path(command.arg))
        self._say(250, "File removed.")

    def _rnfr(self, command: Command) -> Steps:
        path = self._path(command.arg)
        yield Stat(path, follow=False)  # 550 now if it does not exist
        self._rename_from = path
        self._say(350, "Ready for RNTO.")

    def _rnto(self, command: Command) -> Steps:
        source, self._rename_from = self._rename_from, None
        if source is None:
            raise _Reply(503, "RNFR first.")
        yield Rename(source, self._path(command.arg))
        self._say(250, "Renamed.")

    def _mfmt(self, command: Command) -> Steps:
        """draft-somers-ftp-mfxx §3: set a file's modification time (lftp `mirror -R`)."""
        stamp, _, name = command.arg.strip().partition(" ")
        mtime = sftp_map.parse_mdtm(stamp)
        if mtime is None or not name:
            raise _Reply(501, "MFMT needs YYYYMMDDHHMMSS and a path.")
        path = self._path(name)
        yield SetTimes(path, mtime)
        self._say(213, f"Modify={stamp}; {name}")

    def _site(self, command: Command) -> Steps:
        """SITE CHMOD <octal mode> <path>, as vsftpd and proftpd offer it."""
        words = command.arg.split(" ", 2)
        if words[0].upper() != "CHMOD":
            raise _Reply(502, f"SITE {words[0].upper()} not implemented; SITE CHMOD is.")
        if len(words) < 3 or not re.fullmatch(r"[0-7]{1,4}", words[1]):
            raise _Reply(501, "SITE CHMOD needs an octal mode and a path.")
        yield SetMode(self._path(words[2]), int(words[1], 8))
        self._say(200, "SITE CHMOD command successful.")

    def _size(self, command: Command) -> Steps:
        entry = yield Stat(self._path(command.arg))
        assert isinstance(entry, Entry)
        if entry.is_dir:
            raise _Reply(550, f"{command.arg}: not a plain file.")
        self._say(213, str(entry.size or 0))

    def _mdtm(self, command: Command) -> Steps:
        entry = yield Stat(self._path(command.arg))
        assert isinstance(entry, Entry)
        self._say(213, sftp_map.mdtm(entry.mtime or 0))

    def _mlst(self, command: Command) -> Steps:
        path = self._path(command.arg)
        entry = yield Stat(path)
        assert isinstance(entry, Entry)
        # RFC 3659 §7.2: MLST names the object by its full path.
        named = Entry(path, entry.size, entry.permissions, entry.mtime)
        self._out.append(ToClient(multiline_reply(250, ["Listing " + (command.arg or path),
                                                        sftp_map.mlsx_facts(named), "End"])))

    # -- data connections --------------------------------------------------------------------
    def _pasv(self, command: Command) -> Steps:
        port = yield Passive()
        self._active, self._passive = None, True
        # The control connection's address when it is IPv4, else our own loopback: the
        # client's SOCKS request may name either, and curl ignores it anyway.
        host = (self.control_host if is_ip(self.control_host) and ":" not in self.control_host
                else "127.0.0.1")
        self._out.append(ToClient(encode_227(host, int(str(port)))))

    def _epsv(self, command: Command) -> Steps:
        if command.arg.strip().upper() == "ALL":  # RFC 2428 §4: only EPSV from now on
            self._say(200, "EPSV ALL ok.")
            return
        port = yield Passive()
        self._active, self._passive = None, True
        self._out.append(ToClient(encode_229(int(str(port)))))

    def _port(self, command: Command) -> Steps:
        try:
            self._active = active_address(command, self._is_client_address)
        except FtpError as exc:
            self._out.append(Note(f"refused {command.verb}: {exc}"))
            raise _Reply(exc.code, str(exc)) from None
        self._passive = False
        self._say(200, f"{command.verb} command successful.")
        yield from ()

    _eprt = _port

    def _data_connection(self) -> Steps:
        """The transfer's data connection (425 if there is none), then 150."""
        if not self._passive and self._active is None:
            raise _Reply(425, "Use PORT, EPRT, PASV or EPSV first.")
        # One data connection per PASV or PORT (RFC 959 §3.2: the next transfer needs new).
        active, self._active, self._passive = self._active, None, False
        if self._aborted:
            self._end_of_data(Transferred(Ending.ABORTED))
        opened = yield OpenData(active)
        assert isinstance(opened, Transferred)
        if opened.ending is not Ending.COMPLETE:
            self._end_of_data(opened)  # ABOR while waiting, or no connection

    def _end_of_data(self, done: Transferred) -> None:
        """Raise the reply for a data connection that did not end cleanly."""
        if done.ending is Ending.ABORTED:  # RFC 959 §4.1.3: 426 for the transfer, then 226
            self._say(426, "Transfer aborted.")
            self._aborted = False
            raise _Reply(226, "ABOR successful.")
        if done.ending is Ending.UNAVAILABLE:
            raise _Reply(425, f"Cannot open data connection: {done.detail or 'refused'}.")
        if done.ending is Ending.TIMEOUT and not self._after_150:
            raise _Reply(425, "Cannot open data connection: timed out.")
        raise _Reply(426, f"Connection closed; transfer aborted ({done.ending.value}"
                     + (f": {done.detail}" if done.detail else "") + ").")

    def _transfer(self, command: Command, rest: int) -> Steps:
        if command.verb in ("LIST", "NLST", "MLSD"):
            yield from self._list(command)
        elif command.verb == "RETR":
            yield from self._retr(command, rest)
        elif command.verb == "STOR" and not rest:
            yield from self._store_whole(command)
        else:
            yield from self._store_in_place(command, rest)

    def _preliminary(self, text: str) -> None:
        self._say(150, text)
        self._after_150 = True

    def _list(self, command: Command) -> Steps:
        target = self._path(sftp_map.list_target(command.arg))
        entry = yield Stat(target)
        assert isinstance(entry, Entry)
        if entry.is_dir:
            listed = yield ReadDir(target)
            assert isinstance(listed, list)
            # Uploads under way (and leftovers of lost connections) are not files yet: a
            # mirroring client must not fetch them.
            entries = sorted((e for e in listed if not is_temporary(e.name)),
                             key=lambda e: e.name)
        elif command.verb == "MLSD":
            raise _Reply(501, "MLSD needs a directory.")
        else:
            entries = [Entry(target.rsplit("/", 1)[-1], entry.size, entry.permissions,
                             entry.mtime, entry.uid, entry.gid, entry.nlink)]
        if command.verb == "NLST":
            lines = [e.name for e in entries if e.name not in (".", "..")]
        elif command.verb == "MLSD":
            lines = [sftp_map.mlsx_facts(e, cdir=e.name == ".") for e in entries
                     if e.name != ".."]
        else:
            now = self._clock()
            lines = [sftp_map.list_line(e, now) for e in entries if e.name not in (".", "..")]
        body = "".join(line + "\r\n" for line in lines).encode("utf-8", "surrogateescape")
        yield from self._data_connection()
        self._preliminary(f"Here comes the listing ({len(lines)} entries).")
        done = yield SendListing(body)
        assert isinstance(done, Transferred)
        if done.ending is not Ending.COMPLETE:
            self._end_of_data(done)
        self._say(226, "Listing sent.")

    def _retr(self, command: Command, rest: int) -> Steps:
        path = self._path(command.arg)
        entry = yield Stat(path)
        assert isinstance(entry, Entry)
        if entry.is_dir:
            raise _Reply(550, f"{command.arg}: not a plain file.")
        yield OpenFile(path, FileMode.READ)
        try:
            yield from self._data_connection()
            self._preliminary(f"Opening {'BINARY' if self.binary else 'ASCII'} mode data "
                              f"connection for {command.arg} ({entry.size or 0} bytes).")
            done = yield Download(rest, not self.binary and self.lf_files)
        except SftpRefused:
            yield from self._close_file(quietly=True)
            raise
        except _Reply:
            yield from self._close_file(quietly=True)
            raise
        assert isinstance(done, Transferred)
        self.bytes_down += done.count
        yield from self._close_file(quietly=True)
        if done.ending is not Ending.COMPLETE:
            self._end_of_data(done)
        self.data_channels += 1
        self._say(226, f"Transfer complete ({done.count} bytes).")

    def _close_file(self, quietly: bool) -> Steps:
        try:
            yield CloseFile()
        except SftpRefused as exc:
            if not quietly:
                raise
            self._out.append(Note(f"closing the file failed: status {exc.status}"))

    def _store_whole(self, command: Command) -> Steps:
        """A fresh STOR: all or nothing (see the module's docstring)."""
        target = self._path(command.arg)
        existing = yield from self._existing(target)
        if existing is not None and existing.is_link:  # write where the link points
            target = str((yield RealPath(target)))
            existing = yield from self._existing(target)
        if existing is not None and existing.is_dir:
            raise _Reply(550, f"{command.arg}: is a directory.")
        directory, _, name = target.rpartition("/")
        temporary = f"{directory}/.{name}{PART_MARK}{self._token()}"
        yield OpenFile(temporary, FileMode.CREATE)
        self._part = temporary
        try:
            yield from self._data_connection()
            self._preliminary(f"Ok to send data for {command.arg}.")
            done = yield Upload(0, not self.binary and self.lf_files)
            assert isinstance(done, Transferred)
            self.bytes_up += done.count
            if done.ending is Ending.COMPLETE:
                yield from self._close_file(quietly=False)
                if existing is not None:
                    yield from self._keep_attributes(temporary, existing)
                yield Rename(temporary, target)
                self._part = None
        except (SftpRefused, _Reply):
            yield from self._discard(temporary)
            raise
        if self._part is not None:
            yield from self._discard(temporary)
            self._end_of_data(done)
        self.data_channels += 1
        self._say(226, f"Transfer complete ({done.count} bytes).")

    def _existing(self, path: str) -> Generator[Operation, object, Entry | None]:
        try:
            entry = yield Stat(path, follow=False)
        except SftpRefused as exc:
            if exc.status in (sftp_map.FX_NO_SUCH_FILE, sftp_map.FX_NO_SUCH_PATH):
                return None
            raise
        assert isinstance(entry, Entry)
        return entry

    def _keep_attributes(self, path: str, old: Entry) -> Steps:
        """What an in-place overwrite would have kept: the mode, and owner and group where
        the server lets us (a non-root SFTP user may give a file away to no one)."""
        if old.permissions is not None:
            yield SetMode(path, old.permissions & 0o7777)
        if old.uid is None or old.gid is None:
            return
        new = yield Stat(path)
        assert isinstance(new, Entry)
        if (new.uid, new.gid) != (old.uid, old.gid):
            try:
                yield SetOwner(path, old.uid, old.gid)
            except SftpRefused as exc:
                self._out.append(Note(f"owner {old.uid}:{old.gid} not kept for {path}: "
                                      f"status {exc.status}"))
            if old.permissions is not None and old.permissions & 0o6000:
                yield SetMode(path, old.permissions & 0o7777)  # chown clears setuid/setgid

    def _discard(self, temporary: str) -> Steps:
        yield from self._close_file(quietly=True)
        try:
            yield RemoveFile(temporary)
        except SftpRefused as exc:
            self._out.append(Note(f"could not remove {temporary}: status {exc.status}"))
        self._part = None

    def _store_in_place(self, command: Command, rest: int) -> Steps:
        """APPE, or STOR after REST: into the real file, from its offset on."""
        target = self._path(command.arg)
        appending = command.verb == "APPE"
        if not appending:
            existing = yield from self._existing(target)
            if existing is None or (existing.size or 0) < rest:
                # No byte below the offset may be invented (RFC 3659 §5.1: REST is a
                # point in the file as it stands).
                raise _Reply(554, f"REST {rest} is past the end of {command.arg}.")
        yield OpenFile(target, FileMode.APPEND if appending else FileMode.UPDATE)
        try:
            yield from self._data_connection()
            self._preliminary(f"Ok to send data for {command.arg}.")
            done = yield Upload(None if appending else rest, not self.binary and self.lf_files)
        except (SftpRefused, _Reply):
            yield from self._close_file(quietly=True)
            raise
        assert isinstance(done, Transferred)
        self.bytes_up += done.count
        if done.ending is not Ending.COMPLETE:
            yield from self._close_file(quietly=True)
            self._end_of_data(done)
        yield from self._close_file(quietly=False)
        self.data_channels += 1
        self._say(226, f"Transfer complete ({done.count} bytes).")

    def _abort(self) -> None:
        """ABOR (RFC 959 §4.1.3): a transfer in progress ends with 426 and then 226 from
        its own handler; one that completed meanwhile gets its 226 and ABOR another; with
        none, 226 at once."""
        if self._running_verb not in TRANSFER_VERBS:
            self._say(226, "ABOR: no transfer to abort.")
            return
        self._aborted = True
        if isinstance(self._waiting, DATA_OPERATIONS):
            self._out.append(AbortData())
