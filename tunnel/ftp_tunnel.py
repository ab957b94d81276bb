"""The `ftp-tunnel` action: the asyncio glue that executes `FtpLayer`'s commands.

It owns the control channel to the FTP server (an SSH direct-tcpip channel, or a direct TCP
connection under `fallback_to_plain`), opens SSH with the credentials the FTP client typed,
registers expected passive data connections, and makes active-mode data connections itself.
Protocol decisions are all in `ftp_layer.py`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from typing import cast

import asyncssh

from tunnel import outgoing
from tunnel.config import Profile
from tunnel.context import BindSession, HandlerSession
from tunnel.endpoints import SSHEnd, connect_tcp, is_own_address_of
from tunnel.errors import UpstreamError
from tunnel.failures import reply_for_os_error
from tunnel.ftp_layer import (
    Action,
    Close,
    ConnectActive,
    ExpectData,
    FtpLayer,
    LastHop,
    Note,
    OpenUpstream,
    StartTls,
    ToClient,
    ToServer,
)
from tunnel.lasthop import PLAIN, LastHopTls, check_peer, client_context
from tunnel.relay import Relay, Side, Sink
from tunnel.socks import Request
from tunnel.ssh import Lease, Login
from tunnel.tls_pipe import TlsPipe, TlsServerSide

log = logging.getLogger("tunnel.ftp")

_NORMAL_ENDS = frozenset({"client quit", "closed", "client closed the control connection",
                          "FTP server closed the control connection"})


class _ControlToServer(asyncio.Protocol):
    """Server side of the control connection when it is plain TCP (fallback)."""

    def __init__(self, tunnel: FtpTunnel) -> None:
        self.tunnel = tunnel

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        transport = cast(asyncio.Transport, transport)
        self.tunnel.server_connected(transport)

    def data_received(self, data: bytes) -> None:
        self.tunnel.server_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.tunnel.server_closed()


class _ControlChannel(asyncssh.SSHTCPSession[bytes]):
    """Server side of the control connection through SSH."""

    def __init__(self, tunnel: FtpTunnel) -> None:
        self.tunnel = tunnel

    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        self.tunnel.server_connected(chan)

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.tunnel.server_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.tunnel.server_closed(lost=exc is not None)


class FtpTunnel:
    def __init__(self, session: HandlerSession, profile: Profile, request: Request,
                 fallback_to_plain: bool, last_hop: LastHopTls = PLAIN) -> None:
        self.session = session
        self.profile = profile
        self.request = request
        self.fallback_to_plain = fallback_to_plain
        self.ssh_host = profile.host or request.host
        self.last_hop = last_hop
        self.layer = FtpLayer(client_host=session.client_ip, server_host=request.host,
                              credentials_from_app=profile.user_from_app,
                              send_password="password" in profile.auth,
                              is_client_address=self._is_client_address,
                              last_hop_tls=last_hop.mode)
        # The control connection's TLS to the FTP server, once the server said 234.
        self._tls: TlsPipe | None = None
        self._said_no_reuse = False
        self.user = profile.user
        self.lease: Lease | None = None  # None with a direct (fallback) control connection
        self._server: asyncio.Transport | asyncssh.SSHTCPChannel[bytes] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._started = False
        self.bytes_up = 0  # control-channel bytes we sent to the server / to the client
        self.bytes_down = 0
        self._early: list[bytes] = []  # the server's greeting, if it beat our SOCKS reply
        # This connection's turn among those opening to the same FTP server (openings.py),
        # ended by the server's first byte.
        self._turn = session.ctx.openings.turn((self.ssh_host, profile.port, request.host,
                                                request.port))
        self._prepared: tuple[str, int, Relay, asyncio.Task[Lease | None]] | None = None
        # SOCKS BIND sessions waiting for their transfer, by the address they announced.
        self._binds: dict[tuple[str, int], tuple[BindSession, socket.socket]] = {}
        rec = session.record
        rec.ssh_server = f"{self.ssh_host}:{profile.port}"
        rec.last_hop = "local" if self.ssh_host == request.host else "clear"
        if last_hop.insecure:
            log.warning("ftp session %d: the FTP server's TLS certificate is not checked "
                        "(last_hop_insecure = true): anyone between the SSH server and %s "
                        "can read and change this session", session.id, request.host)
        rec.user_source = "ftp" if profile.user_from_app else "profile"

    def _is_client_address(self, host: str) -> bool:
        return is_own_address_of(self.session.client_ip, host)

    # -- life --------------------------------------------------------------------------------
    async def prepare(self) -> tuple[str, int]:
        """Before the SOCKS reply. With a fixed user the control channel opens now, so a
        failure is a SOCKS failure; with credentials from the app it waits for PASS."""
        if not self.profile.user_from_app:
            await self._open_control(Login(self.profile.user))
        return "0.0.0.0", 0

    def start(self, client_data: bytes) -> None:
        self._started = True
        self._run(self.layer.start())
        for data in self._early:
            self.server_data(data)
        self._early.clear()
        if client_data:
            self.client_data(client_data)

    def client_data(self, data: bytes) -> None:
        self._run(self.layer.client_data(data))

    def close(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self.session.ctx.expectations.drop_owner(self)
        self._drop_prepared()
        self._turn.end()
        for bind_session, reserved in self._binds.values():
            reserved.close()
            bind_session.close()
        self._binds.clear()
        for task in self._tasks:
            task.cancel()
        if self._server is not None:
            self._server.close()
        if self.lease is not None:
            self.lease.release()
            self.lease = None
        log.debug("ftp session %d closed: %s", self.session.id, reason)
        self.session.end("closed", error="" if reason in _NORMAL_ENDS else reason)

    # -- server side callbacks ---------------------------------------------------------------
    def server_connected(self, endpoint: asyncio.Transport | asyncssh.SSHTCPChannel[bytes]) -> None:
        self._server = endpoint
        if self.profile.user_from_app:
            self._run(self.layer.upstream_opened())

    def server_data(self, data: bytes) -> None:
        self._turn.end()  # the server has accepted us: the next connection may open
        if not self._started:  # fixed-user mode: the SOCKS reply must go out first
            self._early.append(data)
            return
        if self._tls is not None:
            data = self._decrypt(self._tls, data)
            if not data:
                return
        self._run(self.layer.server_data(data))

    # -- TLS to the FTP server (last_hop_tls) -------------------------------------------------
    def _start_tls(self) -> None:
        try:
            self._tls = TlsPipe(client_context(self.last_hop), self.request.host)
        except (OSError, ssl.SSLError, ValueError) as exc:
            self._run(self.layer.tls_failed(f"cannot set up TLS: {exc}"))
            return
        self._write_server(self._tls.start())

    def _decrypt(self, pipe: TlsPipe, data: bytes) -> bytes:
        """The server's TLS bytes in, the plaintext for the layer out; the end of the
        handshake checks the server and tells the layer."""
        try:
            got = pipe.receive(data)
        except ssl.SSLError as exc:
            self._run(self.layer.tls_failed(_tls_reason(exc)))
            return b""
        if got.to_send:
            self._write_server(got.to_send)
        if got.handshake_done:
            refused = check_peer(self.last_hop, pipe.peer_certificate)
            if refused is not None:
                self._run(self.layer.tls_failed(refused))
                return b""
            log.info("ftp session %d: %s to the FTP server %s (%s)", self.session.id,
                     pipe.version, self.request.host, self.last_hop.authentication())
            self._run(self.layer.tls_ready())
        return got.plaintext

    def _write_server(self, data: bytes) -> None:
        if self._server is not None and data:
            self._server.write(data)
            self.bytes_up += len(data)

    def _data_tls(self, relay: Relay) -> Sink:
        """The server side of a data connection in TLS, resuming the control connection's
        session (servers refuse a data connection from a client that does not)."""
        assert self._tls is not None
        # The control connection's own context: Python resumes a session only within it.
        pipe = TlsPipe(self._tls.tls.context, self.request.host, session=self._tls.tls.session)

        def check(done: TlsPipe) -> str | None:
            refused = check_peer(self.last_hop, done.peer_certificate)
            if refused is None and not done.tls.session_reused and not self._said_no_reuse:
                # Once per session: pure-ftpd never resumes, and says so on every transfer.
                self._said_no_reuse = True
                log.info("ftp session %d: the FTP server does not resume the TLS session on "
                         "data connections (a full handshake each)", self.session.id)
            return refused

        return TlsServerSide(relay, pipe, check)

    def server_closed(self, lost: bool = False) -> None:
        self._turn.end()
        if not self._closed:
            if lost:
                log.warning("ftp session %d: the SSH connection under the control channel "
                            "was lost", self.session.id)
            self._run(self.layer.server_closed(lost))

    # -- data connections --------------------------------------------------------------------
    def _prepare_data(self, host: str, port: int, tls: bool) -> None:
        """Open the server side of a passive data connection as soon as the 227/229 reply
        passes, while the client is still reading it: the client's SOCKS request then finds
        the channel open, which saves a round trip through SSH per transfer. Only the latest
        announcement is kept; an older one was abandoned by the client."""
        self._drop_prepared()
        relay = Relay(schedule=asyncio.get_running_loop().call_soon)
        task = asyncio.get_running_loop().create_task(
            self.connect_data(host, port, relay, tls))
        self._prepared = (host, port, relay, task)

    async def claim_data(self, host: str, port: int) -> tuple[Lease | None, Relay]:
        """The server side for a passive data connection the client has just asked for."""
        prepared, self._prepared = self._prepared, None
        if prepared is not None and prepared[:2] == (host, port):
            _, _, relay, task = prepared
            return await task, relay
        if prepared is not None:
            self._prepared = prepared
        relay = Relay(schedule=asyncio.get_running_loop().call_soon)
        return await self.connect_data(host, port, relay, self.layer.data_tls), relay

    def _drop_prepared(self) -> None:
        prepared, self._prepared = self._prepared, None
        if prepared is None:
            return
        _, _, relay, task = prepared
        if task.done() and not task.cancelled() and task.exception() is None:
            lease = task.result()
            if lease is not None:
                lease.release()
        else:
            task.cancel()
        relay.close()

    async def connect_data(self, host: str, port: int, relay: Relay,
                           tls: bool = False) -> Lease | None:
        """Open the server side of a data connection the way the control connection went:
        a channel on the same SSH connection, or direct under fallback; in TLS after the
        server accepted PROT P."""
        feeds: Sink = self._data_tls(relay) if tls else relay
        if self.lease is None:
            await connect_tcp(feeds, Side.SERVER, host, port,
                              self.session.config.proxy.connect_timeout, "direct data connection")
            return None
        _, _, lease = await self.session.ctx.pool.open_channel_on(
            self.lease, host, port, lambda: SSHEnd(feeds))
        return lease

    def register_bind(self, bind_session: BindSession) -> tuple[str, int]:
        """A BIND for this session: announce an address of ours. A listening socket reserves
        the port so no two BINDs share one; nothing ever connects to it, because the data
        connection comes from the FTP server through SSH, not to this host."""
        host = bind_session.local_host()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        reserved = socket.socket(family, socket.SOCK_STREAM)
        reserved.bind((host, 0))
        reserved.listen(0)
        port = int(reserved.getsockname()[1])
        self._binds[(host, port)] = (bind_session, reserved)
        return host, port

    def data_ended(self, relay: Relay) -> None:
        """A data connection of this session is over; a reset the server never saw is
        reported in the transfer's reply (FtpLayer.data_connection_reset)."""
        if relay.dropped_up:
            log.warning("ftp session %d: %d bytes of the client's data connection could not "
                        "be passed on (the server's side had ended): the transfer is cut",
                        self.session.id, relay.dropped_up)
        if relay.cut_short and not self._closed:
            self._run(self.layer.data_connection_reset())

    async def _active(self, order: ConnectActive) -> None:
        leases: list[Lease] = []

        def finished(relay: Relay) -> None:
            self.data_ended(relay)
            for lease in leases:
                lease.release()

        bound = self._binds.pop((order.client_host, order.client_port), None)
        if bound is not None:
            await self._deliver_to_bind(order, *bound)
            return
        relay = Relay(finished, schedule=asyncio.get_running_loop().call_soon)
        try:
            lease = await self.connect_data(order.server_host, order.server_port, relay,
                                            order.tls)
            if lease is not None:
                leases.append(lease)
            self.session.arrange_active(order.client_host, order.client_port)
            await connect_tcp(relay, Side.CLIENT, order.client_host, order.client_port, 15,
                              "active-mode connection to the client")
        except UpstreamError as exc:
            relay.close()
            self._run(self.layer.active_ready(False, str(exc)))
            return
        relay.start()
        self.session.record.data_channels += 1
        self._run(self.layer.active_ready(True))

    async def _deliver_to_bind(self, order: ConnectActive, bind_session: BindSession,
                               reserved: socket.socket) -> None:
        """Active mode over SOCKS BIND: the server's passive port, through SSH, becomes the
        BIND's incoming connection (its second reply)."""
        reserved.close()
        try:
            lease = await self.connect_data(order.server_host, order.server_port,
                                            bind_session.relay, order.tls)
        except UpstreamError as exc:
            bind_session.close()
            self._run(self.layer.active_ready(False, str(exc)))
            return
        bind_session.bind_accepted((order.server_host, order.server_port), lease)
        self.session.record.data_channels += 1
        self._run(self.layer.active_ready(True))

    # -- executing the layer's commands ------------------------------------------------------
    def _run(self, actions: list[Action]) -> None:
        for action in actions:
            if self._closed:
                return
            if isinstance(action, ToClient):
                self.session.write(action.data)
                self.bytes_down += len(action.data)
            elif isinstance(action, ToServer):
                self._write_server(self._tls.send(action.data) if self._tls is not None
                                   else action.data)
            elif isinstance(action, ExpectData):
                hosts = {self.request.host, action.target_host}
                if action.announced:
                    hosts.add(action.announced)
                if not self.session.expect_data(self, hosts, action.port, action.target_host):
                    # The 227/229 is not passed on: the client would connect in clear.
                    self.session.write(b"421 The proxy could not arrange this data "
                                       b"connection; closing.\r\n")
                    self.close("data connection capture failed")
                    return
                self._prepare_data(action.target_host, action.port, action.tls)
            elif isinstance(action, OpenUpstream):
                self.user = action.user
                self.session.record.ftp_user = action.user
                self._spawn(self._login(Login(action.user, action.password)))
            elif isinstance(action, ConnectActive):
                self._spawn(self._active(action))
            elif isinstance(action, Note):
                log.info("ftp session %d: %s", self.session.id, action.message)
            elif isinstance(action, StartTls):
                self._start_tls()
            elif isinstance(action, LastHop):
                self.session.record.last_hop = action.protection
                if action.failure:
                    self.session.record.last_hop_failure = action.failure
                    log.warning("ftp session %d: %s", self.session.id, action.failure)
            elif isinstance(action, Close):
                self.close(action.reason)

    def _spawn(self, coro: object) -> None:
        assert asyncio.iscoroutine(coro)
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _login(self, login: Login) -> None:
        try:
            await self._open_control(login)
        except UpstreamError as exc:
            log.warning("ftp session %d: %s", self.session.id, exc)
            self.session.record.ssh_failure = exc.ssh_failure
            self._run(self.layer.upstream_failed(str(exc), exc.auth_refused))

    async def _open_control(self, login: Login) -> None:
        rec = self.session.record
        rec.ssh_user = login.user
        proxy = self.session.config.proxy
        target = f"{self.request.host}:{self.request.port}"
        stage = "SSH login"  # what was under way, should the deadline pass

        async def take_turn() -> None:
            nonlocal stage
            stage = f"waiting for a turn to open {target}"
            waited = await self._turn.take(proxy.max_openings_per_server, proxy.connect_timeout)
            if waited >= 1.0:  # worth an operator's notice: the server accepts slowly
                log.info("ftp session %d waited %.1f s for its turn to open %s "
                         "(max_openings_per_server = %d)", self.session.id, waited, target,
                         proxy.max_openings_per_server)
            stage = f"opening {target} through SSH"

        try:
            _, _, self.lease = await asyncio.wait_for(
                self.session.ctx.pool.open_channel(
                    self.profile, self.ssh_host, login, self.request.host, self.request.port,
                    lambda: _ControlChannel(self), before_open=take_turn),
                proxy.connect_timeout * 2)
            return
        except TimeoutError:
            self._turn.end()
            failure = UpstreamError(f"{stage} timed out", 6)
        except UpstreamError as exc:
            self._turn.end()
            if exc.auth_refused or not self.fallback_to_plain:
                raise
            failure = exc
        rec.ssh_failure = failure.ssh_failure
        if not self.fallback_to_plain:
            raise failure
        log.warning("ftp session %d: SSH failed (%s); fallback_to_plain: connecting directly",
                    self.session.id, failure)
        rec.action, rec.last_hop, rec.ssh_server = "direct-fallback", "direct", ""
        try:
            await outgoing.create_connection(lambda: _ControlToServer(self), self.request.host,
                                             self.request.port)
        except OSError as exc:
            raise UpstreamError(f"direct connect failed: {exc}", reply_for_os_error(exc)) from None


def _tls_reason(exc: ssl.SSLError) -> str:
    """What the operator needs from an SSL error: OpenSSL's verification message when there
    is one ("certificate verify failed: unable to get local issuer certificate")."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message}"
    return str(exc.reason or exc)
