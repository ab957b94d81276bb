"""The `ftp-sftp` action: the proxy *is* the FTP server the client talks to, and carries
out each command over SFTP (asyncssh's client) on the profile's SSH server, logged in with
the user name and password the FTP client sends. An unchanged FTP job can then move files
with a host that runs only sshd.

Data connections end here, on the client host, since no FTP server exists on the far side:
- passive (PASV/EPSV): a listener on 127.0.0.1 with an ephemeral port. The client's data
  connection arrives as a SOCKS request for the announced port, which the session matches
  (`datachannels`) and connects to that listener;
- active (PORT/EPRT): the proxy connects to the client's port itself (RFC 2577 applies: the
  client's own address, a port of 1024 or more).

Transfers stream with bounded memory: SFTP reads and writes of `CHUNK` bytes, which asyncssh
splits into parallel requests, and the data socket's flow control on our side. An upload
goes to a temporary name and is renamed over the target only once complete, so a failed
STOR never leaves a cut file under the real name. The mapping from SFTP failures to FTP
replies, paths, listings and TYPE A conversion live in the pure `sftp_map`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, cast

import asyncssh

from tunnel import sftp_map
from tunnel.addresses import is_ip
from tunnel.config import LineEnding, Profile
from tunnel.endpoints import is_own_address_of
from tunnel.errors import UpstreamError
from tunnel.ftp import (
    NEED_DATA,
    Command,
    CommandReader,
    FtpError,
    encode_227,
    encode_229,
    multiline_reply,
    parse_eprt,
    parse_port,
    reply_line,
)
from tunnel.socks import Request
from tunnel.ssh import Lease, Login

if TYPE_CHECKING:
    from tunnel.session import SocksSession

log = logging.getLogger("tunnel.sftp")

CHUNK = 1 << 20  # per SFTP read/write call; asyncssh runs it as parallel requests
DATA_TIMEOUT = 30.0  # for the client's data connection to arrive or to accept ours
MAX_PENDING_COMMANDS = 32  # queued while a transfer runs; more means a runaway client
FEATURES = ["EPSV", "MDTM", "MLST type*;size*;modify*;perm*;unix.mode*;", "REST STREAM",
            "SIZE", "TVFS", "UTF8"]
PRE_LOGIN = frozenset({"USER", "PASS", "FEAT", "SYST", "OPTS", "NOOP", "QUIT", "HELP", "AUTH",
                       "PBSZ", "PROT"})

Handler = Callable[["FtpSftp", Command], Awaitable[None]]


class _Failed(Exception):
    """A command fails with this FTP reply; the session goes on."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code, self.text = code, text


class FtpSftp:
    """One FTP control connection served over SFTP. Same face to `SocksSession` as
    `FtpTunnel`: prepare, start, client_data, close, and byte counters."""

    def __init__(self, session: SocksSession, profile: Profile, request: Request) -> None:
        self.session = session
        self.profile = profile
        self.request = request
        self.ssh_host = profile.host or request.host
        self.reader = CommandReader()
        self.commands: asyncio.Queue[Command | None] = asyncio.Queue()
        self.sftp: asyncssh.SFTPClient | None = None
        self.lease: Lease | None = None
        self.user = ""
        self.cwd = "/"
        self.binary = False  # TYPE A until the client says TYPE I (RFC 959 default)
        self.rest = 0
        self.rename_from: str | None = None
        self.passive: asyncio.Server | None = None
        self.accepted: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] | None
        self.accepted = None
        self.active: tuple[str, int] | None = None
        self.transferring: asyncio.StreamWriter | None = None  # for ABOR
        self.aborted = False
        self.bytes_up = 0  # control replies are not counted; file bytes are
        self.bytes_down = 0
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        rec = session.record
        rec.ssh_server = f"{self.ssh_host}:{profile.port}"
        rec.last_hop = "sftp"
        rec.user_source = "ftp"

    # -- the SocksSession face ---------------------------------------------------------------
    async def prepare(self) -> tuple[str, int]:
        return "0.0.0.0", 0  # nothing to open before the client's login

    def start(self, client_data: bytes) -> None:
        self._reply(220, "ftp-ssh-tunnel FTP-SFTP gateway ready")
        self._worker = asyncio.get_running_loop().create_task(self._serve())
        if client_data:
            self.client_data(client_data)

    def client_data(self, data: bytes) -> None:
        self.reader.receive_data(data)
        while not self._closed:
            try:
                command = self.reader.next_command()
            except FtpError as exc:  # a malformed line: its reply, and the session goes on
                log.warning("sftp session %d: bad FTP input: %s", self.session.id, exc)
                self._write(exc.reply or reply_line(500, str(exc)))
                continue
            if command is NEED_DATA:
                break
            assert isinstance(command, Command)
            if command.verb == "ABOR":  # out of band: it must not wait behind a transfer
                self._abort()
                continue
            self.commands.put_nowait(command)
        if self.commands.qsize() > MAX_PENDING_COMMANDS and self.session.transport:
            self.session.transport.pause_reading()

    def close(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self.session.ctx.expectations.drop_owner(self)
        self._close_data_listener()
        if self._worker is not None:
            self._worker.cancel()
        if self.sftp is not None:
            self.sftp.exit()
            self.sftp = None
        if self.lease is not None:
            self.lease.release()
            self.lease = None
        log.debug("sftp session %d closed: %s", self.session.id, reason)
        self.session._end("closed", error="" if reason in ("client quit", "closed") else reason)

    # -- command loop ------------------------------------------------------------------------
    async def _serve(self) -> None:
        while not self._closed:
            command = await self.commands.get()
            transport = self.session.transport
            if transport is not None and self.commands.qsize() <= MAX_PENDING_COMMANDS // 2:
                transport.resume_reading()
            if command is None:
                return
            await self._dispatch(command)

    async def _dispatch(self, command: Command) -> None:
        verb = command.verb
        handler, transfer = _COMMANDS.get(verb), _TRANSFERS.get(verb)
        if self.sftp is None and verb not in PRE_LOGIN:
            self._reply(530, "Please login with USER and PASS.")
            return
        if handler is None and transfer is None:
            self._reply(502, f"Command {verb} not implemented.")
            return
        rest = 0
        if verb != "REST":  # REST applies to the next command only
            rest, self.rest = self.rest, 0
        try:
            if transfer is not None:
                await transfer(self, command, rest)
            elif handler is not None:
                await handler(self, command)
        except _Failed as exc:
            self._reply(exc.code, exc.text)
            if exc.code == 421:
                self.close(exc.text)
        except asyncssh.SFTPError as exc:
            code, text = sftp_map.ftp_reply_for(exc.code, command.verb)
            log.info("sftp session %d: %s failed: %s (SFTP %d %s)", self.session.id,
                     command.verb, text, exc.code, exc.reason)
            self._reply(code, text)
            if code == 421:
                self.close("SFTP connection lost")
        except (asyncssh.Error, OSError) as exc:
            log.warning("sftp session %d: %s: SSH failed: %s", self.session.id, command.verb, exc)
            self._reply(421, "SSH connection lost; closing control connection.")
            self.close(f"SSH connection lost: {exc}")
        except FtpError as exc:
            self._reply(exc.code, str(exc))
        except Exception as exc:  # a bug of ours costs this command, not the daemon
            log.exception("sftp session %d: internal error in %s", self.session.id, verb)
            self._reply(451, f"Local error in processing: {type(exc).__name__}.")

    # -- replies -----------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        if self.session.transport is not None and not self._closed:
            self.session.transport.write(data)

    def _reply(self, code: int, text: str) -> None:
        self._write(reply_line(code, text))

    def _path(self, arg: str) -> str:
        return sftp_map.resolve(self.cwd, arg)

    def _converts_text(self) -> bool:
        """TYPE A converts line endings unless the server's are the network's already."""
        return not self.binary and self.profile.line_ending is LineEnding.LF

    def _need_sftp(self) -> asyncssh.SFTPClient:
        if self.sftp is None:
            raise _Failed(530, "Please login with USER and PASS.")
        return self.sftp

    # -- login -------------------------------------------------------------------------------
    async def _user(self, command: Command) -> None:
        if self.sftp is not None:
            raise _Failed(503, "Already logged in.")
        if not command.arg:
            raise _Failed(501, "USER needs a user name.")
        if not self.profile.user_from_app and command.arg != self.profile.user:
            # A fixed-user profile logs in with its keys; the FTP user must be that user,
            # so nobody borrows the key under another name.
            raise _Failed(530, f"This gateway logs in as {self.profile.user} only.")
        self.user = command.arg
        self._reply(331, f"Password required for {self.user}.")

    async def _pass(self, command: Command) -> None:
        if not self.user:
            raise _Failed(503, "Login with USER first.")
        if self.sftp is not None:
            raise _Failed(503, "Already logged in.")
        login = (Login(self.user, command.arg) if self.profile.user_from_app
                 else Login(self.profile.user))
        rec = self.session.record
        rec.ssh_user = rec.ftp_user = self.user
        pool, timeout = self.session.ctx.pool, self.session.config.proxy.connect_timeout * 2
        try:
            sftp, self.lease = await asyncio.wait_for(
                pool.open_sftp(self.profile, self.ssh_host, login), timeout)
        except (UpstreamError, TimeoutError) as exc:
            failure = exc if isinstance(exc, UpstreamError) else UpstreamError(
                "SSH login timed out", 6)
            rec.ssh_failure = failure.ssh_failure
            log.warning("sftp session %d: %s", self.session.id, failure)
            self.user = ""
            if failure.auth_refused:
                raise _Failed(530, "Login incorrect (the SSH server refused it).") from None
            raise _Failed(421, f"SSH server unavailable: {failure}") from None
        self.sftp = sftp
        self.cwd = await sftp.realpath(".")
        log.info("sftp session %d: %s logged in over SFTP at %s, home %s", self.session.id,
                 self.user, rec.ssh_server, self.cwd)
        self._reply(230, "Login successful.")

    # -- informational -----------------------------------------------------------------------
    async def _feat(self, command: Command) -> None:
        self._write(multiline_reply(211, ["Features:", *FEATURES, "End"]))

    async def _syst(self, command: Command) -> None:
        self._reply(215, "UNIX Type: L8")

    async def _opts(self, command: Command) -> None:
        if command.arg.upper().startswith("UTF8"):
            self._reply(200, "UTF8 is always on.")
        else:
            raise _Failed(501, "Option not understood.")

    async def _noop(self, command: Command) -> None:
        self._reply(200, "NOOP ok.")

    async def _help(self, command: Command) -> None:
        self._write(multiline_reply(214, ["Commands understood:",
                                          " ".join(sorted({*_COMMANDS, *_TRANSFERS})),
                                          "Help OK."]))

    async def _quit(self, command: Command) -> None:
        self._reply(221, "Goodbye.")
        self.close("client quit")

    async def _auth(self, command: Command) -> None:
        # The control channel never leaves this host in clear; SSH protects the rest.
        self._reply(534, "TLS is not offered: the FTP-SFTP gateway runs on your own host.")

    async def _type(self, command: Command) -> None:
        kind = command.arg.upper().split()
        if kind[:1] == ["I"] or kind[:2] == ["L", "8"]:
            self.binary = True
        elif kind[:1] == ["A"] and kind[1:] in ([], ["N"]):
            self.binary = False
        else:
            raise _Failed(504, "Only TYPE A and TYPE I.")
        self._reply(200, f"Type set to {'I' if self.binary else 'A'}.")

    async def _mode(self, command: Command) -> None:
        if command.arg.upper() != "S":
            raise _Failed(504, "Only MODE S.")
        self._reply(200, "Mode set to S.")

    async def _stru(self, command: Command) -> None:
        if command.arg.upper() != "F":
            raise _Failed(504, "Only STRU F.")
        self._reply(200, "Structure set to F.")

    async def _rest(self, command: Command) -> None:
        if not command.arg.isdigit():
            raise _Failed(501, "REST needs a byte offset.")
        self.rest = int(command.arg)
        self._reply(350, f"Restarting at {self.rest}.")

    # -- directories and files ---------------------------------------------------------------
    async def _pwd(self, command: Command) -> None:
        self._reply(257, f"{sftp_map.quote_path(self.cwd)} is the current directory.")

    async def _cwd(self, command: Command) -> None:
        path = self._path(command.arg)
        if not await self._need_sftp().isdir(path):
            raise _Failed(550, f"{command.arg}: No such directory.")
        self.cwd = path
        self._reply(250, f"Directory changed to {path}.")

    async def _cdup(self, command: Command) -> None:
        await self._cwd(Command("CWD", ".."))

    async def _mkd(self, command: Command) -> None:
        path = self._path(command.arg)
        await self._need_sftp().mkdir(path)
        self._reply(257, f"{sftp_map.quote_path(path)} created.")

    async def _rmd(self, command: Command) -> None:
        await self._need_sftp().rmdir(self._path(command.arg))
        self._reply(250, "Directory removed.")

    async def _dele(self, command: Command) -> None:
        await self._need_sftp().remove(self._path(command.arg))
        self._reply(250, "File removed.")

    async def _rnfr(self, command: Command) -> None:
        path = self._path(command.arg)
        await self._need_sftp().stat(path)  # 550 now if it does not exist
        self.rename_from = path
        self._reply(350, "Ready for RNTO.")

    async def _rnto(self, command: Command) -> None:
        source, self.rename_from = self.rename_from, None
        if source is None:
            raise _Failed(503, "RNFR first.")
        await self._rename(source, self._path(command.arg))
        self._reply(250, "Renamed.")

    async def _rename(self, source: str, target: str) -> None:
        """Over an existing target, as FTP servers do: OpenSSH's posix-rename where the
        server has it, plain SFTP rename (which refuses an existing target) otherwise."""
        sftp = self._need_sftp()
        try:
            await sftp.posix_rename(source, target)
        except asyncssh.SFTPOpUnsupported:
            await sftp.rename(source, target)

    async def _size(self, command: Command) -> None:
        entry = _entry(command.arg, await self._need_sftp().stat(self._path(command.arg)))
        if entry.is_dir:
            raise _Failed(550, f"{command.arg}: not a plain file.")
        self._reply(213, str(entry.size or 0))

    async def _mdtm(self, command: Command) -> None:
        attrs = await self._need_sftp().stat(self._path(command.arg))
        self._reply(213, sftp_map.mdtm(attrs.mtime or 0))

    async def _mlst(self, command: Command) -> None:
        path = self._path(command.arg)
        # RFC 3659 §7.2: MLST names the object by its full path.
        entry = _entry(path, await self._need_sftp().stat(path))
        self._write(multiline_reply(250, ["Listing " + (command.arg or path),
                                          sftp_map.mlsx_facts(entry), "End"]))

    # -- data connections --------------------------------------------------------------------
    async def _pasv(self, command: Command) -> None:
        port = await self._listen()
        # The address is the control connection's when it is IPv4, or our own loopback:
        # both are in the expectation, and curl ignores it anyway.
        host = (self.request.host if is_ip(self.request.host) and ":" not in self.request.host
                else "127.0.0.1")
        self._expect(port, host)
        self._write(encode_227(host, port))

    async def _epsv(self, command: Command) -> None:
        if command.arg.upper() == "ALL":
            self._reply(200, "EPSV ALL ok.")
            return
        port = await self._listen()
        self._expect(port, self.request.host)
        self._write(encode_229(port))

    async def _port(self, command: Command) -> None:
        host, port = (parse_port if command.verb == "PORT" else parse_eprt)(command.arg)
        # RFC 2577 §3: no bounce to a foreign host, no privileged port.
        if not is_own_address_of(self.session.client_ip, host) or port < 1024:
            raise _Failed(504 if command.verb == "PORT" else 522,
                          "Refused: the data address must be your own, port 1024 or above.")
        self._close_data_listener()
        self.active = (host, port)
        self._reply(200, f"{command.verb} command successful.")

    async def _listen(self) -> int:
        self._close_data_listener()
        self.active = None
        loop = asyncio.get_running_loop()
        accepted = loop.create_future()
        self.accepted = accepted

        def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if accepted.done():  # one data connection per PASV
                writer.close()
            else:
                accepted.set_result((reader, writer))

        self.passive = await asyncio.start_server(on_connect, "127.0.0.1", 0,
                                                  limit=CHUNK)
        return int(self.passive.sockets[0].getsockname()[1])

    def _expect(self, port: int, announced: str) -> None:
        hosts = {self.request.host, announced, "127.0.0.1"}
        self.session.ctx.expectations.add(self, self.session.client_ip, hosts, port,
                                          "127.0.0.1", time.monotonic())

    def _close_data_listener(self) -> None:
        if self.passive is not None:
            self.passive.close()
            self.passive = None
        if self.accepted is not None and self.accepted.done() and \
                not self.accepted.cancelled():
            self.accepted.result()[1].close()
        self.accepted = None

    async def _open_data(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The data connection for this transfer, passive or active; 425 if there is none."""
        try:
            if self.accepted is not None:
                accepted, self.accepted = self.accepted, None
                try:
                    return await asyncio.wait_for(accepted, DATA_TIMEOUT)
                finally:
                    if self.passive is not None:
                        self.passive.close()
                        self.passive = None
            if self.active is not None:
                host, port = self.active
                self.active = None
                return await asyncio.wait_for(
                    asyncio.open_connection(host, port, limit=CHUNK), DATA_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise _Failed(425, f"Cannot open data connection: {exc or 'timed out'}.") from None
        raise _Failed(425, "Use PORT, EPRT, PASV or EPSV first.")

    def _abort(self) -> None:
        """ABOR (RFC 959 §4.1.3): a transfer in progress ends with 426 from its own handler,
        then 226 here; with none, 226 at once."""
        self._close_data_listener()
        if self.transferring is not None:
            self.aborted = True
            self.transferring.close()
        else:
            self._reply(226, "ABOR: no transfer to abort.")

    def _transfer_failed(self, text: str) -> _Failed:
        """426 for a data connection cut (by the client, or by ABOR)."""
        if self.aborted:
            self.aborted = False
            self._reply(426, "Transfer aborted.")
            return _Failed(226, "ABOR successful.")
        return _Failed(426, f"Connection closed; transfer aborted ({text}).")

    # -- listings ----------------------------------------------------------------------------
    async def _list(self, command: Command, rest: int) -> None:
        sftp = self._need_sftp()
        target = self._path(sftp_map.list_target(command.arg))
        now = time.time()
        if command.verb == "MLSD" and not await sftp.isdir(target):
            raise _Failed(501, "MLSD needs a directory.")
        if await sftp.isdir(target):
            names = sorted(await sftp.readdir(target), key=lambda n: str(n.filename))
            entries = [_entry(str(n.filename), n.attrs, str(n.longname or ""))
                       for n in names if command.verb == "MLSD" or
                       str(n.filename) not in (".", "..")]
        else:
            entries = [_entry(target.rsplit("/", 1)[-1], await sftp.stat(target))]
        if command.verb == "NLST":
            lines = [e.name for e in entries if e.name not in (".", "..")]
        elif command.verb == "MLSD":
            lines = [sftp_map.mlsx_facts(e, cdir=e.name == ".") for e in entries
                     if e.name != ".."]
        else:
            lines = [sftp_map.list_line(e, now) for e in entries]
        body = "".join(line + "\r\n" for line in lines).encode("utf-8", "surrogateescape")
        self._reply(150, f"Here comes the listing ({len(lines)} entries).")
        _reader, writer = await self._open_data()
        self.transferring = writer
        try:
            writer.write(body)
            await writer.drain()
            writer.close()
            await writer.wait_closed()
        except OSError as exc:
            raise self._transfer_failed(str(exc)) from None
        finally:
            self.transferring = None
        self._reply(226, "Listing sent.")

    # -- transfers ---------------------------------------------------------------------------
    async def _retr(self, command: Command, rest: int) -> None:
        sftp = self._need_sftp()
        path = self._path(command.arg)
        # Block size and parallel requests: asyncssh's defaults, from the server's own
        # limits (OpenSSH closes the channel on a message over 256 KiB).
        source = await sftp.open(path, "rb", encoding=None)
        try:
            size = (await source.stat()).size
            self._reply(150, f"Opening {'BINARY' if self.binary else 'ASCII'} mode data "
                        f"connection for {command.arg}" + (f" ({size} bytes)." if size
                                                           is not None else "."))
            _reader, writer = await self._open_data()
            self.transferring = writer
            to_network = sftp_map.AsciiToNetwork(self._converts_text())
            offset, sent = rest, 0
            loop = asyncio.get_running_loop()
            # One read ahead: the next block comes over SFTP while this one goes to the
            # client, so neither side waits for the other. Memory: two blocks at most.
            ahead = loop.create_task(source.read(CHUNK, offset))
            try:
                while True:
                    try:
                        block = cast(bytes, await ahead)  # encoding=None: bytes
                    except asyncssh.SFTPError as exc:
                        code, text = sftp_map.ftp_reply_for(exc.code, "RETR", mid_transfer=True)
                        writer.close()
                        raise _Failed(code, text) from None
                    if not block:
                        break
                    offset += len(block)
                    ahead = loop.create_task(source.read(CHUNK, offset))
                    data = to_network.feed(block)
                    writer.write(data)
                    sent += len(data)
                    await writer.drain()
                writer.close()
                await writer.wait_closed()
            except OSError as exc:
                writer.close()
                raise self._transfer_failed(str(exc)) from None
            finally:
                if not ahead.done():
                    ahead.cancel()
                self.bytes_down += sent
                self.transferring = None
        finally:
            await source.close()
        self.session.record.data_channels += 1
        self._reply(226, f"Transfer complete ({sent} bytes).")

    async def _stor(self, command: Command, rest: int) -> None:
        sftp = self._need_sftp()
        target = self._path(command.arg)
        appending = command.verb == "APPE" or rest > 0
        # A fresh upload goes to a hidden temporary name beside the target, renamed over it
        # once complete; an append or a resume must write into the real file.
        directory, _, name = target.rpartition("/")
        temporary = target if appending else \
            f"{directory}/.{name}.part-{secrets.token_hex(4)}"
        mode = "ab" if command.verb == "APPE" else ("r+b" if rest else "wb")
        destination = await sftp.open(temporary, mode, encoding=None)
        complete = closed = False
        try:
            self._reply(150, f"Ok to send data for {command.arg}.")
            reader, writer = await self._open_data()
            self.transferring = writer
            from_network = sftp_map.AsciiFromNetwork(self._converts_text())
            offset = rest
            # One write in flight while the next block is read from the client: the SFTP
            # side (parallel requests inside asyncssh) and the socket side overlap.
            writing: asyncio.Task[int] | None = None
            try:
                while True:
                    block = await _read_block(reader)
                    data = from_network.feed(block) if block else from_network.flush()
                    if writing is not None:
                        await writing
                        writing = None
                    if data:
                        writing = asyncio.get_running_loop().create_task(destination.write(
                            data, None if command.verb == "APPE" else offset))
                        offset += len(data)
                        self.bytes_up += len(data)
                    if not block:
                        break
                if writing is not None:
                    await writing
                    writing = None
            except OSError as exc:
                raise self._transfer_failed(str(exc)) from None
            except asyncssh.SFTPError as exc:
                log.warning("sftp session %d: %s %s failed mid-transfer: SFTP %d %s",
                            self.session.id, command.verb, target, exc.code, exc.reason)
                raise _Failed(*sftp_map.ftp_reply_for(exc.code, command.verb,
                                                      mid_transfer=True)) from None
            finally:
                if writing is not None and not writing.done():
                    writing.cancel()
                writer.close()
                self.transferring = None
            if self.aborted:  # ABOR while the last block was in flight: not a whole file
                raise self._transfer_failed("aborted")
            await destination.close()
            closed = True
            if temporary != target:
                await self._rename(temporary, target)
            complete = True
        finally:
            if not closed:
                await destination.close()
            if not complete and temporary != target:
                try:
                    await sftp.remove(temporary)
                except (asyncssh.Error, OSError):
                    log.warning("sftp session %d: could not remove %s", self.session.id,
                                temporary)
        self.session.record.data_channels += 1
        self._reply(226, f"Transfer complete ({offset - rest} bytes).")


async def _read_block(reader: asyncio.StreamReader) -> bytes:
    """Up to CHUNK bytes, fewer only at the end: a socket read returns what has arrived
    (often 64 KiB), and an SFTP write that small would be a round trip of its own."""
    block = bytearray()
    while len(block) < CHUNK:
        part = await reader.read(CHUNK - len(block))
        if not part:
            break
        block += part
    return bytes(block)


def _entry(name: str, attrs: asyncssh.SFTPAttrs, longname: str = "") -> sftp_map.Entry:
    return sftp_map.Entry(name, attrs.size, attrs.permissions, attrs.mtime, attrs.uid,
                          attrs.gid, attrs.nlink, longname)


_COMMANDS: dict[str, Handler] = {
    "USER": FtpSftp._user, "PASS": FtpSftp._pass, "FEAT": FtpSftp._feat,
    "SYST": FtpSftp._syst, "OPTS": FtpSftp._opts, "NOOP": FtpSftp._noop,
    "HELP": FtpSftp._help, "QUIT": FtpSftp._quit, "AUTH": FtpSftp._auth,
    "TYPE": FtpSftp._type, "MODE": FtpSftp._mode, "STRU": FtpSftp._stru,
    "REST": FtpSftp._rest, "PWD": FtpSftp._pwd, "XPWD": FtpSftp._pwd, "CWD": FtpSftp._cwd,
    "XCWD": FtpSftp._cwd, "CDUP": FtpSftp._cdup, "XCUP": FtpSftp._cdup, "MKD": FtpSftp._mkd,
    "XMKD": FtpSftp._mkd, "RMD": FtpSftp._rmd, "XRMD": FtpSftp._rmd, "DELE": FtpSftp._dele,
    "RNFR": FtpSftp._rnfr, "RNTO": FtpSftp._rnto, "SIZE": FtpSftp._size,
    "MDTM": FtpSftp._mdtm, "MLST": FtpSftp._mlst, "PASV": FtpSftp._pasv,
    "EPSV": FtpSftp._epsv, "PORT": FtpSftp._port, "EPRT": FtpSftp._port,
}
# Commands that use a data connection; they also take the REST offset.
_TRANSFERS: dict[str, Callable[[FtpSftp, Command, int], Awaitable[None]]] = {
    "LIST": FtpSftp._list, "NLST": FtpSftp._list, "MLSD": FtpSftp._list,
    "RETR": FtpSftp._retr, "STOR": FtpSftp._stor, "APPE": FtpSftp._stor,
}
