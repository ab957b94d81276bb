"""One SOCKS client's life: handshake -> rule decision -> action -> relay -> audit record.

The bytes are parsed by `socks.SocksServer` and the decision comes from `rules.RuleSet`; this
module only sequences them and runs the chosen action. Every way out of a session (protocol
error, refusal, upstream failure, normal close) writes exactly one audit record.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from typing import TYPE_CHECKING, Any, cast

from tunnel import readsize
from tunnel.addresses import is_ip
from tunnel.audit import AuditRecord
from tunnel.config import Profile
from tunnel.context import ByteCounts, Context, DataOwner
from tunnel.datachannels import Expected
from tunnel.endpoints import SSHEnd, connect_tcp, is_local_client
from tunnel.errors import RemoteProtocolError, UpstreamError
from tunnel.ftp_tunnel import FtpTunnel
from tunnel.localuser import owner_uid
from tunnel.relay import Relay, Side
from tunnel.rules import Action, Decision, IPAddress
from tunnel.socks import AuthRequest, Command, Credentials, Reply, Request, SocksServer
from tunnel.ssh import Lease, Login
from tunnel.users import LocalUser

if TYPE_CHECKING:  # loaded by the first ftp-sftp session: an idle daemon does without it
    from tunnel.dataconn import DataConnection
    from tunnel.ftp_sftp import FtpSftp

log = logging.getLogger("tunnel.session")


class SocksSession(asyncio.Protocol):
    """The asyncio protocol for one accepted SOCKS client connection."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self.id = ctx.next_id
        ctx.next_id += 1
        self.transport: asyncio.Transport | None = None
        self.codec = SocksServer(self.config.proxy.socks5_auth)
        self.credentials: Credentials | None = None
        self.relay = Relay(self._relay_finished,
                           schedule=asyncio.get_running_loop().call_soon)
        self.record = AuditRecord(self.id, "")
        self.lease: Lease | None = None
        # The FTP control handler, when the action is ftp-tunnel or ftp-sftp.
        self.ftp: FtpTunnel | FtpSftp | None = None
        # An ftp-sftp passive data connection: its transport goes to that session.
        self._data_owner: FtpSftp | None = None
        self._data: DataConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._t0 = time.monotonic()
        self._closed = False
        self.local_user: LocalUser | None = None  # the owner of the client's socket
        # What the client sends while its request is decided, held for the upstream: a
        # transparent client does not wait for a reply, and asyncio (3.11) starts reading
        # after connection_made whatever that asked, so a pause there is not enough.
        self._serving = False
        self._early: list[bytes] = []
        self._early_eof = False

    # -- asyncio callbacks -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        readsize.set_read_size(transport, readsize.CLIENT_READ_SIZE)
        sock = self.client_socket()
        if sock is not None:
            # An urgent byte stays in the stream (RFC 959 §4.1.3: FTP clients send ABOR as
            # TCP urgent data; ftplib's last "\n" of "ABOR\r\n" is the urgent byte, which
            # the kernel would otherwise take out of the stream).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE, 1)
        peer = transport.get_extra_info("peername") or ("?", 0)
        self.record.client = f"{peer[0]}:{peer[1]}"
        self.ctx.sessions[self.id] = self
        if not self.config.proxy.allow_relay and not is_local_client(str(peer[0])):
            log.warning("session %d: refused client %s: not on this host and "
                        "proxy.allow_relay = false", self.id, self.record.client)
            self.end("refused-relay", error="client not on loopback; allow_relay = false")
            return
        self.relay.attach(Side.CLIENT, transport)
        self._timer = asyncio.get_running_loop().call_later(
            self.config.proxy.handshake_timeout, self._handshake_timed_out)

    def data_received(self, data: bytes) -> None:
        if self.relay.finished or self._closed:
            if self._task is not None and self.ftp is None:
                # Bytes for a relay that has ended: lost, so said (never seen in a test,
                # watched for: a cut upload must not look like a whole one).
                log.warning("session %d: %d bytes from %s after its relay ended, dropped",
                            self.id, len(data), self.record.client)
                self.relay.dropped_up += len(data)
            return
        if self._task is None:
            self._handshake(data)
        elif not self._serving:
            self._early.append(data)
            if self.transport is not None:
                self.transport.pause_reading()
        elif self.ftp is not None:
            self.ftp.client_data(data)
        else:
            self.relay.data(Side.CLIENT, data)

    def eof_received(self) -> bool:
        if self._task is None:  # EOF inside the handshake: nothing to carry on
            self.end("client-eof", error="client closed during the SOCKS handshake")
            return False
        if not self._serving:  # after what it sent first, once the upstream is there
            self._early_eof = True
            return True
        if self.ftp is not None:  # a half-closed FTP control connection is a finished one
            self.ftp.close("client closed the control connection")
            return False
        self.relay.eof(Side.CLIENT)
        return True

    def pause_writing(self) -> None:
        self.relay.pause_writing(Side.CLIENT)

    def resume_writing(self) -> None:
        self.relay.resume_writing(Side.CLIENT)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self.relay.finished or self._closed:
            return
        if self._task is None:
            self.end("client-eof", error="client closed during the SOCKS handshake")
        elif self.ftp is not None:
            self.ftp.close("client closed the control connection")
        else:
            self.relay.lost(Side.CLIENT, exc)

    # -- handshake ---------------------------------------------------------------------------
    def _handshake(self, data: bytes) -> None:
        assert self.transport is not None
        self.codec.receive_data(data)
        try:
            while True:
                event = self.codec.next_event()
                self.transport.write(self.codec.data_to_send())
                if isinstance(event, AuthRequest):
                    # RFC 1929 credentials are passed on as the SSH login; the SSH server is
                    # what judges them, so the sub-negotiation itself always succeeds.
                    self.credentials = event.credentials
                    self.transport.write(self.codec.send_auth_result(True))
                elif isinstance(event, Request):
                    self.record.version = event.version
                    self._begin(event)
                    return
                else:
                    return
        except RemoteProtocolError as exc:
            log.warning("session %d: bad SOCKS input from %s: %s",
                        self.id, self.record.client, exc)
            # The method selection may precede the error in the same read: it goes first.
            self.transport.write(self.codec.data_to_send())
            if exc.reply is not None:
                self.transport.write(exc.reply)
                self.record.reply = exc.reply[1] if len(exc.reply) > 1 else None
            self.end("protocol-error", error=str(exc))

    def _begin(self, request: Request) -> None:
        """The request is known: serve it, reading nothing more until it is decided."""
        assert self.transport is not None
        self.transport.pause_reading()
        self._task = asyncio.get_running_loop().create_task(self._serve(request))

    def _answer(self, host: str, port: int) -> None:
        """Tell the client its request succeeded (the SOCKS reply, BND = host:port)."""
        assert self.transport is not None
        self.transport.write(self.codec.send_reply(Reply.SUCCEEDED, host, port))
        self.record.reply = Reply.SUCCEEDED

    def _refuse(self, reply: Reply) -> None:
        """Tell the client its request failed, before the session ends."""
        assert self.transport is not None
        failure = self.codec.failure_reply(reply)
        if failure is not None:
            self.transport.write(failure)
            self.record.reply = reply

    def _handshake_timed_out(self) -> None:
        if self._task is None and not self._closed:
            log.warning("session %d: SOCKS handshake from %s not complete after %.0f s",
                        self.id, self.record.client, self.config.proxy.handshake_timeout)
            self._fail(Reply.TTL_EXPIRED, "handshake-timeout", "SOCKS handshake timed out")

    # -- request -----------------------------------------------------------------------------
    async def _serve(self, request: Request) -> None:
        rec = self.record
        rec.dst, rec.port = request.host, request.port
        # Before any decision, while the client's connection is up: its 4-tuple names it.
        self.local_user = self._find_local_user()
        if self.local_user is not None:
            rec.local_uid, rec.local_user = self.local_user.uid, self.local_user.name
        try:
            if request.command is Command.BIND:
                self._bind(request)
                return
            if request.command is not Command.CONNECT:
                self._fail(Reply.COMMAND_NOT_SUPPORTED, "refused",
                           f"SOCKS {request.command.name} is not supported here")
                return
            expected = self.ctx.expectations.take(self.client_ip, request.host, request.port,
                                                  time.monotonic(), self._uid())
            bind: tuple[str, int] | None
            if expected is not None:
                bind = await self._ftp_data(expected)
            else:
                decision = await self._decide(request)
                rec.rule, rec.matched_by = decision.rule_id, decision.matched_by.value
                rec.action = decision.action.value
                bind = await self._run_action(request, decision)
        except UpstreamError as exc:
            rec.ssh_failure = rec.ssh_failure or exc.ssh_failure
            log.warning("session %d: %s:%d: %s", self.id, request.host, request.port, exc)
            self._fail(Reply(exc.socks_reply), "upstream-failed", str(exc))
            return
        except TimeoutError:
            self._fail(Reply.TTL_EXPIRED, "upstream-failed", "connecting upstream timed out")
            return
        except asyncio.CancelledError:
            self.end("client-eof", error="client left while the proxy was connecting")
            raise
        except Exception as exc:  # a bug of ours must cost this session only
            log.exception("session %d: internal error", self.id)
            self._fail(Reply.GENERAL_FAILURE, "internal-error", f"{type(exc).__name__}: {exc}")
            return
        if bind is None or self._closed:
            if self._closed:  # the client left while we connected: drop the upstream too
                self.relay.close()
            return
        if self._timer is not None:
            self._timer.cancel()
        assert self.transport is not None
        self._answer(*bind)
        trailing = self._now_serving()
        if self.ftp is not None:
            self.ftp.start(trailing)
            if self._early_eof:
                self.ftp.close("client closed the control connection")
            else:
                self.transport.resume_reading()
        elif self._data_owner is not None:
            self._hand_over(self._data_owner, trailing)
        else:
            self._start_relay(trailing)

    def _now_serving(self) -> bytes:
        """From here on the client's bytes go upstream; returns what came before: after the
        SOCKS request in the same read, and while the request was decided."""
        self._serving = True
        trailing = self.codec.trailing_data() + b"".join(self._early)
        self._early.clear()
        return trailing

    def _start_relay(self, trailing: bytes) -> None:
        self.relay.start(trailing)
        if self._early_eof:
            self.relay.eof(Side.CLIENT)

    def _bind(self, request: Request) -> None:
        """SOCKS BIND for an active-mode FTP client (the IBM z/OS client does this): valid
        only inside one of this client's ftp-tunnel sessions. The first reply announces an
        address the client puts in PORT; the control session converts that transfer to
        passive through SSH and hands the server's data connection to `bind_accepted`."""
        control = self._control_for(request.host)
        if control is None:
            self._fail(Reply.NOT_ALLOWED, "refused", "SOCKS BIND outside an ftp-tunnel "
                       "session of this client: only FTP active mode may bind")
            return
        assert self.transport is not None
        rec = self.record
        rec.action, rec.control_session = "ftp-data-bind", control.session.id
        rec.rule, rec.last_hop = control.session.record.rule, control.session.record.last_hop
        rec.ssh_server, rec.ssh_user = control.session.record.ssh_server, control.user
        host, port = control.register_bind(self)
        self.transport.write(self.codec.send_reply(Reply.SUCCEEDED, host, port))
        log.info("session %d: BIND for ftp session %d announced %s:%d", self.id,
                 control.session.id, host, port)

    def _control_for(self, host: str) -> FtpTunnel | None:
        """This client's ftp-tunnel session whose FTP server the BIND names (SOCKS BIND's
        DST.ADDR, RFC 1928 §4); failing that, its only one."""
        mine = [s.ftp for s in self.ctx.sessions.values()
                if isinstance(s, SocksSession) and isinstance(s.ftp, FtpTunnel)
                and s.client_ip == self.client_ip and s is not self]
        named = [ftp for ftp in mine if ftp.request.host == host]
        if named:
            return named[-1]
        return mine[0] if len(mine) == 1 else None

    def bind_accepted(self, peer: tuple[str, int], lease: Lease | None) -> None:
        """The server's data connection is through: the second BIND reply, then relay."""
        if self._closed or self.transport is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self.lease = lease
        # The connecting host as an address: a name (the SSH server resolved it, we did not)
        # becomes 0.0.0.0, since BIND clients such as z/OS read IPv4 replies only.
        host = peer[0] if is_ip(peer[0]) else "0.0.0.0"
        self.transport.write(self.codec.send_reply(Reply.SUCCEEDED, host, peer[1]))
        self.record.reply = Reply.SUCCEEDED
        self._start_relay(self._now_serving())

    async def _decide(self, request: Request) -> Decision:
        rules = self.config.rules
        addresses: list[IPAddress] = []
        if rules.wants_resolution(request.host):
            addresses = await self._resolve(request.host)
        return rules.decide(request.host, request.port, addresses, self.local_user)

    async def _resolve(self, host: str) -> list[IPAddress]:
        """Local resolution, only to match IP rules. A name that does not resolve here may
        still resolve at the SSH server, so failure just leaves the name rules."""
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(loop.getaddrinfo(host, None), 5.0)
        except (OSError, TimeoutError):
            return []
        return list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))

    async def _run_action(self, request: Request, decision: Decision) -> tuple[str, int] | None:
        """Connect upstream per the decision. Returns the bind address for the SOCKS reply,
        or None after answering a refusal itself."""
        action = decision.action
        if action is Action.REJECT:
            self._fail(Reply.NOT_ALLOWED, "rejected", decision.describe())
            return None
        if decision.profile is not None:
            refused = self._profile_refuses(decision.profile)
            if refused:
                log.warning("session %d: %s", self.id, refused)
                self._fail(Reply.NOT_ALLOWED, "refused", refused)
                return None
        if action is Action.FTP_TUNNEL:
            assert decision.profile is not None
            self.ftp = FtpTunnel(self, self.config.profile(decision.profile), request,
                                 decision.fallback_to_plain, decision.last_hop)
            return await self.ftp.prepare()
        if action is Action.FTP_SFTP:
            assert decision.profile is not None
            from tunnel.ftp_sftp import FtpSftp
            self.ftp = FtpSftp(self, self.config.profile(decision.profile), request)
            return await self.ftp.prepare()
        if action is Action.DIRECT:
            return await self._direct(request)
        assert decision.profile is not None
        try:
            return await self._tunnel(request, decision.profile)
        except UpstreamError as exc:
            if not decision.fallback_to_plain:
                raise
            log.warning("session %d: SSH failed (%s); fallback_to_plain: connecting directly",
                        self.id, exc)
            self.record.action = "direct-fallback"
            return await self._direct(request)

    async def _ftp_data(self, expected: Expected[DataOwner]) -> tuple[str, int]:
        """A passive data connection its control session announced: it rides that session's
        SSH connection (or its direct fallback), whatever the rules say about the port."""
        owner = expected.owner
        if not isinstance(owner, FtpTunnel):
            return await self._sftp_data(cast("FtpSftp", owner), expected)
        rec = self.record
        rec.action, rec.rule = "ftp-data", owner.session.record.rule
        rec.control_session = owner.session.id
        rec.ssh_server, rec.ssh_user = owner.session.record.ssh_server, owner.user
        rec.last_hop = owner.session.record.last_hop
        self.lease, relay = await owner.claim_data(expected.target_host, expected.port)
        # The server side was opened ahead, on the 227/229 reply: adopt that relay.
        assert self.transport is not None

        def finished(ended: Relay) -> None:
            owner.data_ended(ended)
            self._relay_finished(ended)
        relay.on_finished = finished
        relay.attach(Side.CLIENT, self.transport)
        self.relay = relay
        return "0.0.0.0", 0

    async def _sftp_data(self, owner: FtpSftp, expected: Expected[DataOwner]
                         ) -> tuple[str, int]:
        """A passive data connection of an ftp-sftp session ends at that session: after
        the SOCKS reply, this connection's transport is handed to it (`_hand_over`)."""
        rec = self.record
        rec.action, rec.rule = "ftp-sftp-data", owner.session.record.rule
        rec.control_session, rec.last_hop = owner.session.id, "local"
        self._data_owner = owner
        return "127.0.0.1", expected.port

    def _hand_over(self, owner: FtpSftp, trailing: bytes) -> None:
        """The client's transport itself goes to the ftp-sftp session, so the client's FIN
        or RST reaches the transfer as it happened (no relay in between to turn a reset
        into an end of file). This session writes its audit record when it closes."""
        from tunnel.dataconn import DataConnection
        assert self.transport is not None
        self.relay.detach(Side.CLIENT)  # the relay is unused: it must not close it
        conn = self._data = DataConnection(on_closed=lambda _: self.end("closed"))
        self.transport.set_protocol(conn)
        conn.connection_made(self.transport)
        if trailing:
            conn.data_received(trailing)
        if self._early_eof:
            conn.eof_received()
        owner.data_arrived(conn)

    async def _direct(self, request: Request) -> tuple[str, int]:
        self.record.last_hop = "direct"
        return _bound(await connect_tcp(self.relay, Side.SERVER, request.host, request.port,
                                        self.config.proxy.connect_timeout,
                                        "direct connection"))

    async def _tunnel(self, request: Request, profile_id: str) -> tuple[str, int]:
        profile = self.config.profile(profile_id)
        ssh_host = profile.host or request.host
        if profile.user:
            login, self.record.user_source = Login(profile.user), "profile"
        elif self.credentials is not None:
            login = Login(self.credentials.username, self.credentials.password)
            self.record.user_source = "socks"
        else:
            raise UpstreamError(
                f"profile {profile.id!r} takes the SSH user from the application (user = \"\"), "
                "but this client sent none (a transparent one never can): use SOCKS5 with "
                "username/password "
                "(proxy.socks5_auth = [\"username\", ...]) or set the profile's user",
                Reply.NOT_ALLOWED)
        self.credentials = None  # the password is not kept past the login
        rec = self.record
        rec.ssh_server, rec.ssh_user = f"{ssh_host}:{profile.port}", login.user
        # With host = "" the SSH server *is* the destination and the last hop stays inside
        # it; otherwise the SSH server connects on in clear.
        rec.last_hop = "local" if ssh_host == request.host else "clear"
        _, _, self.lease = await asyncio.wait_for(
            self.ctx.pool.open_channel(profile, ssh_host, login, request.host, request.port,
                                       lambda: SSHEnd(self.relay)),
            self.config.proxy.connect_timeout * 2)
        return "0.0.0.0", 0

    # -- local users -------------------------------------------------------------------------
    def _find_local_user(self) -> LocalUser | None:
        """The owner of the client's socket, for a client on this host; None otherwise (a
        relayed client's user is not ours to know)."""
        if self.transport is None or not is_local_client(self.client_ip):
            return None
        port = int(self.record.client.rsplit(":", 1)[1])
        uid = owner_uid((self.client_ip, port), self._client_dialled())
        return self.ctx.local_users.describe(uid) if uid is not None else None

    def _client_dialled(self) -> tuple[str, int]:
        """The address and port the client's socket is connected to: our listener."""
        assert self.transport is not None
        sockname = self.transport.get_extra_info("sockname")
        return str(sockname[0]), int(sockname[1])

    def _uid(self) -> int | None:
        return self.local_user.uid if self.local_user is not None else None

    def _profile_refuses(self, profile_id: str) -> str:
        """Why this client's local user may not use the profile (or its jump hosts); ''
        if it may."""
        profile: Profile | None = self.config.profile(profile_id)
        while profile is not None:
            if profile.users is not None and not profile.users.matches(self.local_user):
                who = str(self.local_user) if self.local_user else "an unknown local user"
                return (f"refused: local user {who} may not use profile {profile.id!r} "
                        f"(users = {profile.users})")
            profile = self.config.profile(profile.gateway) if profile.gateway else None
        return ""

    # -- endings -----------------------------------------------------------------------------
    def _fail(self, reply: Reply, result: str, error: str) -> None:
        self._refuse(reply)
        log.info("session %d: %s %s:%d -> %s (%s)", self.id, self.record.client,
                 self.record.dst, self.record.port, result, error)
        self.end(result, error=error)

    def _relay_finished(self, relay: Relay) -> None:
        if relay.error is not None and not isinstance(relay.error, ConnectionResetError):
            self.end("error", error=str(relay.error))
        else:
            self.end("closed")

    def end(self, result: str, error: str = "") -> None:
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self.lease is not None:
            self.lease.release()
        if self.ftp is not None:
            self.ftp.close(result)
        self.relay.close()
        if self.transport is not None:
            self.transport.close()
        rec = self.record
        rec.result, rec.error = result, error
        rec.bytes_up, rec.bytes_down = self.counts.bytes_up, self.counts.bytes_down
        rec.duration_ms = round((time.monotonic() - self._t0) * 1000, 1)
        self.ctx.sessions.pop(self.id, None)
        self.ctx.heap.session_ended(self.config.proxy.heap_trim_after)
        self.ctx.bytes_up += rec.bytes_up
        self.ctx.bytes_down += rec.bytes_down
        self.ctx.audit.write(rec)
        if self.ctx.metrics is not None:
            self.ctx.metrics.session_ended(rec)

    def close(self) -> None:
        """Ask the session to end now (drain timeout, `ctl close`)."""
        self.end("closed-by-proxy")

    @property
    def client_ip(self) -> str:
        return self.record.client.rsplit(":", 1)[0]

    # -- the faces a handler sees (context.HandlerSession, BindSession) ------------------------
    @property
    def counts(self) -> ByteCounts:
        """Where this session's bytes are counted: its FTP handler, its handed-over data
        connection, or its relay."""
        return self.ftp or self._data or self.relay

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self._closed:
            self.transport.write(data)

    def pause_reading(self) -> None:
        if self.transport is not None and not self._closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self._closed:
            self.transport.resume_reading()

    def expect_data(self, owner: DataOwner, hosts: set[str], port: int,
                    target_host: str) -> bool:
        self.ctx.expectations.add(owner, self.client_ip, hosts, port, target_host,
                                  time.monotonic(), self._uid())
        return True

    def arrange_active(self, host: str, port: int) -> None:
        """Nothing to arrange: a SOCKS client knows its data connections come from us."""

    def client_socket(self) -> socket.socket | None:
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        return cast("socket.socket | None", sock)

    def local_host(self) -> str:
        assert self.transport is not None
        return str(self.transport.get_extra_info("sockname")[0])


def _bound(transport: asyncio.BaseTransport) -> tuple[str, int]:
    """The local address of an upstream connection we made: the SOCKS reply's BND."""
    sockname: Any = transport.get_extra_info("sockname") or ("0.0.0.0", 0)
    return str(sockname[0]), int(sockname[1])
