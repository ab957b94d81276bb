"""The `ftp-sftp` action's asyncio glue: the proxy *is* the FTP server the client talks to,
and carries out each command over SFTP (asyncssh's client) on the profile's SSH server,
logged in with the user name and password the FTP client sends. An unchanged FTP job can
then move files with a host that runs only sshd.

Every decision is the pure `sftp_layer`'s; this module executes its operations:
- SFTP calls, with every exception classified in one place (`_execute`): an SFTP status is
  `Refused` (the layer maps it to its FTP reply), anything else from asyncssh or the SSH
  socket is `Lost` (421, and the session closes);
- data connections, which end here on the client host (`dataconn.DataConnection`): passive
  ones arrive as SOCKS requests that `SocksSession` hands over by their transport; active
  ones (PORT/EPRT) the proxy connects itself;
- transfers that stream with bounded memory: SFTP reads and writes of the server's largest
  request size, pipelined (sftp_pipeline.py) with a channel window's worth in flight.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any, cast

import asyncssh

from tunnel import outgoing
from tunnel import sftp_ops as ops
from tunnel.coalesce import cork_this_pass
from tunnel.config import LineEnding, Profile
from tunnel.context import HandlerSession
from tunnel.dataconn import DataConnection, DataCut
from tunnel.endpoints import is_own_address_of
from tunnel.errors import UpstreamError
from tunnel.sftp_layer import MAX_QUEUED_COMMANDS, SftpLayer
from tunnel.sftp_map import (
    FX_CONNECTION_LOST,
    FX_NO_CONNECTION,
    AsciiFromNetwork,
    AsciiToNetwork,
    Entry,
)
from tunnel.sftp_pipeline import PipelinedReader, PipelinedWriter, ReadAt, WriteAt, depth_for
from tunnel.socks import Request
from tunnel.ssh import Lease, Login
from tunnel.window import resize, sftp_channel
from tunnel.windowsize import FLOOR

log = logging.getLogger("tunnel.sftp")

DATA_TIMEOUT = 30.0  # for the client's data connection to arrive or to accept ours
LOST_STATUS = frozenset({FX_NO_CONNECTION, FX_CONNECTION_LOST})


def _quiet_orphaned_reads(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """asyncssh runs one SFTP read or write as parallel requests, each a task; when the
    connection is lost, the first failure is raised to us and the others are never
    retrieved, so asyncio logs each as an error with a traceback. Those are the same lost
    connection, already told (421) and logged once: a debug line each, not a traceback.
    Everything else goes to asyncio's own handler."""
    future = context.get("future")
    coroutine = future.get_coro() if isinstance(future, asyncio.Task) else None
    if (getattr(coroutine, "__qualname__", "") == "_SFTPParallelIO._start_task"
            and isinstance(context.get("exception"), asyncssh.Error | OSError | EOFError)):
        log.debug("a parallel SFTP request also failed: %s", context.get("exception"))
        return
    loop.default_exception_handler(context)


class _PassiveSlot:
    """A passive data port: reserved on loopback (so no other service gets the number while
    the expectation lives), announced, and waiting for the client's data connection."""

    def __init__(self) -> None:
        self.reservation = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.reservation.bind(("127.0.0.1", 0))
        self.port = int(self.reservation.getsockname()[1])
        # None: ABOR, or a newer PASV, came first.
        self.arrival: asyncio.Future[DataConnection | None] = (
            asyncio.get_running_loop().create_future())

    def close(self) -> None:
        self.reservation.close()
        if not self.arrival.done():
            self.arrival.set_result(None)
        elif self.arrival.result() is not None:
            cast(DataConnection, self.arrival.result()).abort(on_purpose=True)


class FtpSftp:
    """One FTP control connection served over SFTP. Same face to `SocksSession` as
    `FtpTunnel`: prepare, start, client_data, close, and byte counters."""

    def __init__(self, session: HandlerSession, profile: Profile, request: Request) -> None:
        self.session = session
        self.profile = profile
        self.request = request
        self.ssh_host = profile.host or request.host
        self.layer = SftpLayer(
            control_host=request.host,
            fixed_user="" if profile.user_from_app else profile.user,
            is_client_address=lambda host: is_own_address_of(session.client_ip, host),
            lf_files=profile.line_ending is LineEnding.LF)
        self.sftp: asyncssh.SFTPClient | None = None
        self.lease: Lease | None = None
        loop = asyncio.get_running_loop()
        if loop.get_exception_handler() is None:
            loop.set_exception_handler(_quiet_orphaned_reads)
        self._file: asyncssh.SFTPClientFile | None = None
        self._passive: _PassiveSlot | None = None
        self._data: DataConnection | None = None
        self._aborting = False
        self._task: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._closed = False
        rec = session.record
        rec.ssh_server = f"{self.ssh_host}:{profile.port}"
        rec.last_hop = "sftp"
        rec.user_source = "ftp" if profile.user_from_app else "profile"

    @property
    def bytes_up(self) -> int:
        return self.layer.bytes_up

    @property
    def bytes_down(self) -> int:
        return self.layer.bytes_down

    # -- the SocksSession face ---------------------------------------------------------------
    async def prepare(self) -> tuple[str, int]:
        return "0.0.0.0", 0  # nothing to open before the client's login

    def start(self, client_data: bytes) -> None:
        self._apply(self.layer.start())
        if client_data:
            self.client_data(client_data)

    def client_data(self, data: bytes) -> None:
        if not self._closed:
            self._apply(self.layer.client_data(data))

    def data_arrived(self, conn: DataConnection) -> None:
        """A passive data connection, handed over by its SOCKS session."""
        slot = self._passive
        if self._closed or slot is None or slot.arrival.done():
            conn.abort(on_purpose=True)  # one data connection per PASV
            return
        slot.arrival.set_result(conn)

    def close(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self.session.ctx.expectations.drop_owner(self)
        # The running operation is not cancelled: cancelling asyncssh's parallel reads
        # orphans their inner tasks. It ends by itself, quickly: its data connection is
        # aborted below and its SFTP calls fail on the closed client; its result is dropped.
        if self._watch is not None and self._watch is not asyncio.current_task():
            self._watch.cancel()
        abandoned = self.layer.abandon()  # an upload the client walked away from
        self._drop_data()
        self.session.record.data_channels = self.layer.data_channels
        sftp, lease, self.sftp, self.lease = self.sftp, self.lease, None, None
        if abandoned is not None and sftp is not None:
            # Its temporary file goes now, over the same SFTP session, once the upload's
            # own task has let go of the file (its data connection was just aborted).
            asyncio.get_running_loop().create_task(
                self._remove_abandoned(sftp, lease, abandoned, self._task))
        else:
            if abandoned is not None:
                self._remember_leftover(abandoned)
            if sftp is not None:
                sftp.exit()
            if lease is not None:
                lease.release()
        log.debug("sftp session %d closed: %s", self.session.id, reason)
        self.session.end("closed", error="" if reason in ("client quit", "closed") else reason)

    # -- executing the layer's actions -------------------------------------------------------
    def _apply(self, actions: list[ops.Action]) -> None:
        for action in actions:
            if self._closed:
                return
            if isinstance(action, ops.ToClient):
                self.session.write(action.data)
            elif isinstance(action, ops.Note):
                log.info("sftp session %d: %s", self.session.id, action.message)
            elif isinstance(action, ops.AbortData):
                self._abort_data()
            elif isinstance(action, ops.Leftover):
                self._remember_leftover(action.path)
            elif isinstance(action, ops.Close):
                if action.ssh_failure:
                    self.session.record.ssh_failure = self.session.record.ssh_failure or "ssh"
                self.close(action.reason)
            else:
                self._task = asyncio.get_running_loop().create_task(self._run(action))
        self._flow_control()

    def _flow_control(self) -> None:
        """Stop reading a client that queues commands faster than they run."""
        if self._closed:
            return
        if self.layer.backlog > MAX_QUEUED_COMMANDS:
            self.session.pause_reading()
        elif self.layer.backlog <= MAX_QUEUED_COMMANDS // 2:
            self.session.resume_reading()

    async def _run(self, operation: ops.Operation) -> None:
        outcome = await self._execute(operation)
        if not self._closed:
            self._apply(self.layer.result(outcome))

    async def _execute(self, operation: ops.Operation) -> ops.Result:
        """The one place where asyncssh's and the SSH socket's exceptions are classified.
        Data connections never raise here: their endings are values (`Transferred`)."""
        try:
            return ops.Ok(await self._perform(operation))
        except asyncssh.SFTPError as exc:
            if exc.code in LOST_STATUS:
                return ops.Lost(f"SFTP: {exc.reason}")
            return ops.Refused(exc.code, exc.reason)
        except (asyncssh.Error, OSError, EOFError) as exc:
            # ConnectionLost (a FIN under a pending read), DisconnectError, a reset SSH
            # socket (ConnectionResetError), a channel closed under us (BrokenPipeError).
            return ops.Lost(f"{type(exc).__name__}: {exc}")
        except _LoginError as exc:
            return exc.failure

    async def _perform(self, op: ops.Operation) -> object:
        if isinstance(op, ops.Login):
            return await self._login(op)
        if isinstance(op, ops.Passive):
            return self._listen()
        if isinstance(op, ops.OpenData):
            return await self._open_data(op.active)
        if isinstance(op, ops.Download):
            return await self._download(op)
        if isinstance(op, ops.Upload):
            return await self._upload(op)
        if isinstance(op, ops.SendListing):
            return await self._send_listing(op.body)
        sftp = self.sftp
        assert sftp is not None, "the layer asks for SFTP only after login"
        if isinstance(op, ops.Stat):
            attrs = await (sftp.stat(op.path) if op.follow else sftp.lstat(op.path))
            return _entry(op.path.rsplit("/", 1)[-1], attrs)
        if isinstance(op, ops.ReadDir):
            return [_entry(str(n.filename), n.attrs, str(n.longname or ""))
                    for n in await sftp.readdir(op.path)]
        if isinstance(op, ops.RealPath):
            return await sftp.realpath(op.path)
        await self._change(sftp, op)
        return None

    async def _change(self, sftp: asyncssh.SFTPClient, op: ops.Operation) -> None:
        """The operations that change something and return nothing."""
        if isinstance(op, ops.MakeDir):
            await sftp.mkdir(op.path)
        elif isinstance(op, ops.RemoveDir):
            await sftp.rmdir(op.path)
        elif isinstance(op, ops.RemoveFile):
            await sftp.remove(op.path)
        elif isinstance(op, ops.Rename):
            await self._rename(sftp, op.source, op.target)
        elif isinstance(op, ops.SetMode):
            await sftp.chmod(op.path, op.mode)
        elif isinstance(op, ops.SetTimes):
            await sftp.utime(op.path, (op.mtime, op.mtime))
        elif isinstance(op, ops.SetOwner):
            await sftp.chown(op.path, op.uid, op.gid)
        elif isinstance(op, ops.OpenFile):
            self._file = await sftp.open(op.path, op.mode.value, encoding=None)
        elif isinstance(op, ops.CloseFile):
            file, self._file = self._file, None
            if file is not None:
                await file.close()
        else:
            raise AssertionError(f"no executor for {op!r}")

    # -- login -------------------------------------------------------------------------------
    async def _login(self, op: ops.Login) -> str:
        login = Login(op.user, op.password) if op.password is not None else Login(op.user)
        rec = self.session.record
        rec.ssh_user = rec.ftp_user = op.user
        pool, timeout = self.session.ctx.pool, self.session.config.proxy.connect_timeout * 2
        try:
            sftp, lease = await asyncio.wait_for(
                pool.open_sftp(self.profile, self.ssh_host, login), timeout)
        except (UpstreamError, TimeoutError) as exc:
            failure = exc if isinstance(exc, UpstreamError) else UpstreamError(
                "SSH login timed out", 6)
            rec.ssh_failure = failure.ssh_failure
            log.warning("sftp session %d: %s", self.session.id, failure)
            raise _LoginError(ops.LoginFailed(str(failure), failure.auth_refused)) from None
        if self._closed:  # the client left while we logged in
            sftp.exit()
            lease.release()
            raise _LoginError(ops.LoginFailed("the client left", auth_refused=False))
        self.sftp, self.lease = sftp, lease
        self._watch = asyncio.get_running_loop().create_task(self._watch_connection(sftp))
        home = await sftp.realpath(".")
        await self._sweep_leftovers(sftp, op.user)
        return home

    async def _watch_connection(self, sftp: asyncssh.SFTPClient) -> None:
        """A lost SSH connection is told at once (421), not when the next SFTP call fails:
        a download paced by a slow client may not ask for the next block for a while."""
        await sftp.wait_closed()
        if not self._closed:
            self._apply(self.layer.ssh_lost("the SFTP session closed under us"))

    def _leftover_key(self, user: str) -> tuple[str, str]:
        return self.session.record.ssh_server, user

    def _remember_leftover(self, path: str) -> None:
        user = self.layer.user
        self.session.ctx.sftp_leftovers.setdefault(self._leftover_key(user), set()).add(path)
        log.warning("sftp session %d: %s stays on %s until %s logs in again (the SSH "
                    "connection was lost, or the removal failed)", self.session.id, path,
                    self.session.record.ssh_server, user)

    async def _remove_abandoned(self, sftp: asyncssh.SFTPClient, lease: Lease | None,
                                path: str, running: asyncio.Task[None] | None) -> None:
        try:
            if running is not None:
                await asyncio.wait({running}, timeout=DATA_TIMEOUT)
            file, self._file = self._file, None
            if file is not None:
                await file.close()
            await sftp.remove(path)
            log.info("sftp session %d: removed %s: the client left during its upload",
                     self.session.id, path)
        except (asyncssh.Error, OSError, EOFError) as exc:
            log.warning("sftp session %d: could not remove %s now: %s", self.session.id,
                        path, exc)
            self._remember_leftover(path)
        finally:
            sftp.exit()
            if lease is not None:
                lease.release()

    async def _sweep_leftovers(self, sftp: asyncssh.SFTPClient, user: str) -> None:
        """Temporary upload files that an earlier session of this user lost with its SSH
        connection: removed now, before this session can list them."""
        for path in sorted(self.session.ctx.sftp_leftovers.pop(self._leftover_key(user), ())):
            try:
                await sftp.remove(path)
                log.info("sftp session %d: removed %s, left by a lost connection",
                         self.session.id, path)
            except asyncssh.SFTPNoSuchFile:
                pass
            except asyncssh.SFTPError as exc:
                log.warning("sftp session %d: could not remove leftover %s: %s",
                            self.session.id, path, exc.reason)

    @staticmethod
    async def _rename(sftp: asyncssh.SFTPClient, source: str, target: str) -> None:
        """Over an existing target, as FTP servers do: OpenSSH's posix-rename where the
        server has it, plain SFTP rename (which refuses an existing target) otherwise."""
        try:
            await sftp.posix_rename(source, target)
        except asyncssh.SFTPOpUnsupported:
            await sftp.rename(source, target)

    # -- data connections --------------------------------------------------------------------
    def _listen(self) -> int:
        self._drop_passive()
        slot = self._passive = _PassiveSlot()
        announced = self.request.host
        hosts = {self.request.host, announced, "127.0.0.1"}
        if not self.session.expect_data(self, hosts, slot.port, "127.0.0.1"):
            # Lost: 421, the session ends, and the port is never announced in clear.
            raise ConnectionAbortedError("the data connection could not be captured")
        return slot.port

    def _drop_passive(self) -> None:
        if self._passive is not None:
            self.session.ctx.expectations.drop_owner(self)
            self._passive.close()
            self._passive = None

    def _drop_data(self) -> None:
        self._drop_passive()
        if self._data is not None:
            self._data.abort(on_purpose=True)
            self._data = None

    def _abort_data(self) -> None:
        """ABOR: whatever data connection this transfer has or waits for ends now."""
        self._aborting = True
        if self._passive is not None and not self._passive.arrival.done():
            self._passive.arrival.set_result(None)
        if self._data is not None:
            self._data.abort(on_purpose=True)

    async def _open_data(self, active: tuple[str, int] | None) -> ops.Transferred:
        self._aborting = False
        if active is not None:
            self._drop_passive()
            self.session.arrange_active(*active)
            try:
                _, conn = await asyncio.wait_for(
                    outgoing.create_connection(DataConnection, *active), DATA_TIMEOUT)
            except (OSError, TimeoutError) as exc:
                return ops.Transferred(ops.Ending.UNAVAILABLE,
                                         detail=str(exc) or "timed out")
        else:
            slot = self._passive
            if slot is None:
                return ops.Transferred(ops.Ending.UNAVAILABLE, detail="no passive port")
            try:
                arrived = await asyncio.wait_for(asyncio.shield(slot.arrival), DATA_TIMEOUT)
            except TimeoutError:
                self._drop_passive()
                return ops.Transferred(ops.Ending.TIMEOUT)
            self._passive = None
            slot.reservation.close()
            self.session.ctx.expectations.drop_owner(self)
            if arrived is None:
                return ops.Transferred(ops.Ending.ABORTED)
            conn = arrived
        if self._aborting:
            conn.abort(on_purpose=True)
            return ops.Transferred(ops.Ending.ABORTED)
        self._data = conn
        return ops.Transferred(ops.Ending.COMPLETE)

    def _control_gone(self) -> bool:
        """The client's control connection has ended (its FIN is queued, perhaps not yet
        read by us): a peek on a duplicate of its descriptor, which consumes nothing."""
        sock = self.session.client_socket()
        if self._closed or sock is None:
            return self._closed
        try:
            with socket.socket(sock.family, sock.type, fileno=os.dup(sock.fileno())) as probe:
                probe.setblocking(False)
                return probe.recv(1, socket.MSG_PEEK) == b""
        except BlockingIOError:
            return False  # open, and nothing to read
        except OSError:
            return True  # reset

    def _take_data(self) -> DataConnection:
        conn = self._data
        assert conn is not None, "the layer opens the data connection before using it"
        return conn

    async def _send_listing(self, body: bytes) -> ops.Transferred:
        conn = self._take_data()
        try:
            await conn.write(body)
            return ops.Transferred(await conn.finish(), len(body))
        except DataCut as cut:
            return ops.Transferred(cut.ending, 0, cut.detail)
        finally:
            self._data = None

    def _in_flight(self) -> int:
        """The bytes of SFTP requests a transfer keeps in flight: what a channel opened now
        on this connection would get as its window (windowsize.py: the round trip within
        the connection's budget). The SFTP channel's window becomes that too, so a download
        does not wait on a round trip that the window allows, and a slow client holds no
        more replies than that."""
        entry = self.lease.entry if self.lease is not None else None
        if entry is None:
            return FLOOR
        window = entry.window()
        channel = sftp_channel(self.sftp)
        if channel is not None:
            resize(channel, window)
        return window

    async def _download(self, op: ops.Download) -> ops.Transferred:
        conn, file = self._take_data(), self._file
        assert file is not None
        to_network = AsciiToNetwork(op.to_network)
        block = file.read_len or 32768
        reads = PipelinedReader(_reader_of(file), op.offset, block,
                                depth_for(self._in_flight(), block))
        sent = 0
        try:
            while True:
                try:
                    data = await reads.next()
                except BaseException:
                    conn.abort()  # a reset, so the client cannot take it for the file's end
                    raise
                if not data:
                    break
                data = to_network.feed(data)
                await conn.write(data)
                sent += len(data)
            return ops.Transferred(await conn.finish(), sent)
        except DataCut as cut:
            return ops.Transferred(cut.ending, sent, cut.detail)
        finally:
            reads.close()
            self._data = None

    async def _upload(self, op: ops.Upload) -> ops.Transferred:
        conn, file = self._take_data(), self._file
        assert file is not None
        from_network = AsciiFromNetwork(op.from_network)
        block = file.write_len or 32768
        # APPE (no offset): the server appends, so its writes go one at a time, in order.
        writes = PipelinedWriter(_writer_of(file), op.offset or 0,
                                 depth_for(self._in_flight(), block)
                                 if op.offset is not None else 1)
        written = 0
        try:
            while True:
                try:
                    # One SFTP write's worth at a time: no slicing of a bigger read.
                    got = await conn.read_block(block)
                except DataCut as cut:
                    await writes.flush()  # what arrived before the cut (an APPE keeps it)
                    return ops.Transferred(cut.ending, written, cut.detail)
                data = from_network.feed(got) if got else from_network.flush()
                for start in range(0, len(data), block):  # TYPE A may have grown it
                    await writes.write(data[start:start + block] if len(data) > block
                                       else data)
                if data and self.lease is not None and self.lease.entry is not None:
                    cork_this_pass(self.lease.entry.conn)  # the writes just issued: one send
                written += len(data)
                if not got:
                    break
            await writes.flush()
            conn.close()
            if self._control_gone():
                # A client that dies mid-upload closes both connections, and its data
                # connection's FIN looks like the end of the file (RFC 959 §3.4, stream mode).
                # Its control connection, closed too (curl and ftplib opened it first, so its
                # FIN goes first), says otherwise.
                return ops.Transferred(ops.Ending.RESET, written, "the client closed its "
                                       "control connection too: not known to be whole")
            return ops.Transferred(ops.Ending.COMPLETE, written)
        finally:
            writes.close()
            if self._data is conn and conn.ending is not ops.Ending.COMPLETE:
                conn.abort()  # we stopped reading before its end: the client must know
            self._data = None


def _reader_of(file: asyncssh.SFTPClientFile) -> ReadAt:
    """One SFTP read request at an offset, b"" past the end. asyncssh's public read() runs
    a whole call's parallel requests and joins them; the pipeline needs them one by one,
    which its handler's read (stable since asyncssh 2.0) gives."""
    handler, handle = file._handler, file._handle  # private: see above
    assert handle is not None

    async def read_at(offset: int, size: int) -> bytes:
        try:
            data, _ = await handler.read(handle, offset, size)
        except asyncssh.SFTPEOFError:
            return b""
        return data

    return read_at


def _writer_of(file: asyncssh.SFTPClientFile) -> WriteAt:
    handler, handle = file._handler, file._handle  # private: as in _reader_of
    assert handle is not None

    async def write_at(offset: int, data: bytes) -> object:
        return await handler.write(handle, offset, data)

    return write_at


class _LoginError(Exception):
    def __init__(self, failure: ops.LoginFailed) -> None:
        super().__init__(failure.message)
        self.failure = failure


def _entry(name: str, attrs: asyncssh.SFTPAttrs, longname: str = "") -> Entry:
    return Entry(name, attrs.size, attrs.permissions, attrs.mtime, attrs.uid, attrs.gid,
                 attrs.nlink, longname)
