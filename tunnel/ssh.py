"""SSH connections over asyncssh: a pool, host key policy, auth, jump hosts, channel opens.

A pooled connection is keyed by (SSH host, port, user, credential identity, gateway chain):
two sessions share a connection only when they would have logged in identically, and never
across different credentials. The password itself is not kept: the key holds an HMAC of it
under a random per-process key, which lets equal passwords meet without storing any.

Failures become `UpstreamError` carrying the SOCKS reply code (tables in failures.py);
asyncssh's own `forward_socks` answers "granted" before the channel opens, which hides
exactly these failures from the client, so we do not use it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncssh

from tunnel.coalesce import DirectConnector
from tunnel.config import HostKeyPolicy, Profile, loose_write_permissions
from tunnel.errors import UpstreamError
from tunnel.failures import reply_for_channel_open, reply_for_os_error
from tunnel.ignore import install as install_ignore_fix
from tunnel.inbuffer import install as install_inbuffer
from tunnel.socks import Reply
from tunnel.window import install as install_window_fix
from tunnel.window import resize, sftp_channel
from tunnel.windowsize import FLOOR, RoundTrip, channel_window

install_window_fix()  # asyncssh opens a paused channel's window too wide (tunnel/window.py)
install_ignore_fix()  # asyncssh sends an SSH_MSG_IGNORE before every packet (tunnel/ignore.py)
install_inbuffer()  # asyncssh copies what waits behind every packet it parses (inbuffer.py)

T = TypeVar("T")
log = logging.getLogger("tunnel.ssh")

# AES-GCM is the fastest cipher asyncssh has where the CPU has AES-NI (measured here:
# 527 MB/s against 356 MB/s for chacha20-poly1305); without AES-NI chacha20 wins.
_GCM_FIRST = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com",
              "aes128-ctr", "aes256-ctr")
_CHACHA_FIRST = ("chacha20-poly1305@openssh.com", "aes128-gcm@openssh.com",
                 "aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr")


def cpu_has_aes() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            return any(line.startswith("flags") and " aes" in line for line in fh)
    except OSError:
        return False


def cipher_preference(configured: tuple[str, ...] = ()) -> list[str]:
    supported = {alg.decode() for alg in asyncssh.encryption.get_encryption_algs()}
    wanted = configured or (_GCM_FIRST if cpu_has_aes() else _CHACHA_FIRST)
    return [alg for alg in wanted if alg in supported]


@dataclass(frozen=True)
class Login:
    """Who logs in to the SSH server. The password lives only as long as this object."""

    user: str
    password: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return f"Login(user={self.user!r}, password={'****' if self.password else None})"


PoolKey = tuple[str, int, str, str, tuple[Any, ...]]


class _ConnectionDead(UpstreamError):
    """The SSH connection itself failed (not the channel open): drop it from the pool."""


@dataclass
class _Entry:
    key: PoolKey
    conn: asyncssh.SSHClientConnection
    label: str
    channels: int = 0
    idle_timer: asyncio.TimerHandle | None = None
    idle_timeout: float = 300.0
    gateway: _Entry | None = None
    closed: bool = False
    channel_window: int = 16 << 20  # bytes, the ceiling: the profile's channel_window_mib
    round_trip: RoundTrip = field(default_factory=RoundTrip)
    probing: bool = False

    def window(self) -> int:
        """The window for a channel opened on this connection now (windowsize.py)."""
        now = asyncio.get_running_loop().time()
        return channel_window(self.channel_window, self.channels, self.round_trip.current(now))



class Lease:
    """One channel's hold on a pooled connection; release() when the channel is closed."""

    def __init__(self, pool: SSHPool, entry: _Entry) -> None:
        self._pool = pool
        self._entry: _Entry | None = entry
        entry.channels += 1
        if entry.idle_timer is not None:
            entry.idle_timer.cancel()
            entry.idle_timer = None

    @property
    def entry(self) -> _Entry | None:
        return self._entry

    def release(self) -> None:
        if self._entry is not None:
            entry, self._entry = self._entry, None
            self._pool._release(entry)


class _PoolClient(asyncssh.SSHClient):
    def __init__(self, on_lost: Callable[[Exception | None], None]) -> None:
        self._on_lost = on_lost

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_lost(exc)


class SSHPool:
    def __init__(self, profiles: Callable[[str], Profile], connect_timeout: float = 15.0) -> None:
        """`profiles` looks a profile up by id (for gateways); it follows config reloads."""
        self._profiles = profiles
        self._connect_timeout = connect_timeout
        self._entries: dict[PoolKey, _Entry] = {}
        self._connecting: dict[PoolKey, asyncio.Future[_Entry]] = {}
        self._secret = os.urandom(32)
        self.connections_made = 0

    # -- public ------------------------------------------------------------------------------
    async def open_channel(
        self,
        profile: Profile,
        ssh_host: str,
        login: Login,
        target_host: str,
        target_port: int,
        session_factory: Callable[[], asyncssh.SSHTCPSession[bytes]],
        before_open: Callable[[], Awaitable[None]] | None = None,
    ) -> tuple[asyncssh.SSHTCPChannel[bytes], asyncssh.SSHTCPSession[bytes], Lease]:
        """Open a direct-tcpip channel to target through `profile`'s SSH server.
        `before_open` is awaited once the SSH connection is up, just before the channel
        opens (an FTP control connection waits there for its turn, openings.py): an SSH
        login in progress then holds no turn."""
        async def use(entry: _Entry) -> tuple[asyncssh.SSHTCPChannel[bytes],
                                              asyncssh.SSHTCPSession[bytes], Lease]:
            if before_open is not None:
                await before_open()
            return await self._channel(entry, target_host, target_port, session_factory)

        return await self._on_live_connection(profile, ssh_host, login, use)

    async def open_sftp(self, profile: Profile, ssh_host: str,
                        login: Login) -> tuple[asyncssh.SFTPClient, Lease]:
        """An SFTP client on a pooled connection (the `ftp-sftp` action): one SFTP channel
        per FTP session, on the connection of these credentials."""
        return await self._on_live_connection(profile, ssh_host, login, self._sftp)

    async def _on_live_connection(self, profile: Profile, ssh_host: str, login: Login,
                                  use: Callable[[_Entry], Awaitable[T]]) -> T:
        """`use` a pooled connection for these credentials. One that turns out dead (the
        server restarted) is dropped and `use` is tried once more on a fresh connection."""
        for attempt in (1, 2):
            entry = await self._connection(profile, ssh_host, login)
            try:
                return await use(entry)
            except _ConnectionDead as exc:
                self._drop(entry)
                if attempt == 2:
                    raise
                log.info("pooled SSH connection %s is dead (%s); reconnecting", entry.label, exc)
        raise AssertionError("unreachable")

    async def open_channel_on(
        self,
        lease: Lease,
        target_host: str,
        target_port: int,
        session_factory: Callable[[], asyncssh.SSHTCPSession[bytes]],
    ) -> tuple[asyncssh.SSHTCPChannel[bytes], asyncssh.SSHTCPSession[bytes], Lease]:
        """Another channel on the connection `lease` holds: an FTP data connection rides
        its control session's SSH connection, whatever the rules say about its port."""
        entry = lease.entry
        if entry is None or entry.closed:
            raise UpstreamError("the control session's SSH connection is gone",
                                Reply.GENERAL_FAILURE)
        return await self._channel(entry, target_host, target_port, session_factory)

    async def _sftp(self, entry: _Entry) -> tuple[asyncssh.SFTPClient, Lease]:
        lease = Lease(self, entry)
        _sample_round_trip_if_stale(entry)
        try:
            sftp = await entry.conn.start_sftp_client()
            channel = sftp_channel(sftp)
            if channel is not None:  # opened with FLOOR, asyncssh's session window option
                resize(channel, entry.window())
            return sftp, lease
        except asyncssh.ChannelOpenError as exc:
            lease.release()
            raise UpstreamError(f"SSH server {entry.label} refused the SFTP subsystem: "
                                f"{exc.reason}", Reply.GENERAL_FAILURE) from None
        except (asyncssh.Error, OSError) as exc:
            lease.release()
            raise _ConnectionDead(f"SFTP on {entry.label} failed: {exc}",
                                  Reply.GENERAL_FAILURE) from None

    async def _channel(
        self,
        entry: _Entry,
        target_host: str,
        target_port: int,
        session_factory: Callable[[], asyncssh.SSHTCPSession[bytes]],
    ) -> tuple[asyncssh.SSHTCPChannel[bytes], asyncssh.SSHTCPSession[bytes], Lease]:
        lease = Lease(self, entry)
        _sample_round_trip_if_stale(entry)
        try:
            chan, session = await entry.conn.create_connection(
                session_factory, target_host, target_port, encoding=None,
                window=entry.window())
        except asyncssh.ChannelOpenError as exc:
            lease.release()
            raise UpstreamError(
                f"SSH server {entry.label} could not open {target_host}:{target_port}: "
                f"{exc.reason} (channel open code {exc.code})",
                reply_for_channel_open(exc.code, exc.reason)) from None
        except (asyncssh.Error, OSError) as exc:
            lease.release()
            raise _ConnectionDead(f"SSH connection {entry.label} failed: {exc}",
                                  Reply.GENERAL_FAILURE) from None
        return chan, session, lease

    def stats(self) -> dict[str, int]:
        return {
            "ssh_connections": len(self._entries),
            "ssh_channels": sum(e.channels for e in self._entries.values()),
            "ssh_connections_made": self.connections_made,
        }

    async def close(self) -> None:
        entries = list(self._entries.values())
        for entry in entries:
            self._drop(entry)
        for entry in entries:
            await entry.conn.wait_closed()

    # -- pool --------------------------------------------------------------------------------
    def _key(self, profile: Profile, host: str, login: Login, gateway: PoolKey | None) -> PoolKey:
        secret = ""
        if login.password is not None and "password" in profile.auth:
            secret = hmac.new(self._secret, login.password.encode(), hashlib.sha256).hexdigest()
        keys = profile.identity_files if "publickey" in profile.auth else ()
        credential = f"pw:{secret}|keys:{','.join(keys)}|kh:{profile.host_key_policy.value}"
        return (host, profile.port, login.user, credential, gateway or ())

    async def _connection(self, profile: Profile, ssh_host: str, login: Login) -> _Entry:
        gateway: _Entry | None = None
        if profile.gateway:
            gw_profile = self._profiles(profile.gateway)
            gw_login = Login(gw_profile.user, None) if gw_profile.user else login
            gateway = await self._connection(gw_profile, gw_profile.host, gw_login)
        key = self._key(profile, ssh_host, login, gateway.key if gateway else None)
        entry = self._entries.get(key)
        if entry is not None and not entry.closed:
            return entry
        pending = self._connecting.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[_Entry] = asyncio.get_running_loop().create_future()
        self._connecting[key] = future
        try:
            entry = await self._connect(key, profile, ssh_host, login, gateway)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters (if any) re-raise it themselves
            raise
        finally:
            del self._connecting[key]
        future.set_result(entry)
        self._entries[key] = entry
        return entry

    async def _connect(self, key: PoolKey, profile: Profile, host: str, login: Login,
                       gateway: _Entry | None) -> _Entry:
        label = f"{login.user}@{host}:{profile.port}" + (f" via {gateway.label}" if gateway else "")
        holder: list[_Entry] = []

        def on_lost(exc: Exception | None) -> None:
            if holder:
                if exc is not None and not holder[0].closed:  # not our own close: say why
                    log.warning("SSH connection %s lost: %s", label, exc)
                self._drop(holder[0])

        options = self._options(profile, host, login)
        try:
            conn = await asyncio.wait_for(
                asyncssh.connect(
                    host,
                    profile.port,
                    # through a jump host, or over TCP with a corkable socket (coalesce.py)
                    tunnel=gateway.conn if gateway else DirectConnector(),
                    client_factory=lambda: _PoolClient(on_lost),
                    options=options,
                ),
                self._connect_timeout,
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            raise UpstreamError(
                f"host key of {host}:{profile.port} refused ({exc.reason}); nothing was sent. "
                f"Check known_hosts {profile.known_hosts}", Reply.NOT_ALLOWED,
                ssh_failure="host-key") from None
        except asyncssh.PermissionDenied:
            raise UpstreamError(f"SSH login refused for {label}", Reply.NOT_ALLOWED,
                                auth_refused=True) from None
        except asyncssh.KeyExchangeFailed as exc:
            raise UpstreamError(f"SSH key exchange with {label} failed: {exc.reason}",
                                Reply.GENERAL_FAILURE, ssh_failure="kex") from None
        except asyncssh.Error as exc:
            raise UpstreamError(f"SSH to {label} failed: {exc.reason}",
                                Reply.GENERAL_FAILURE, ssh_failure="ssh") from None
        except (OSError, TimeoutError) as exc:
            raise UpstreamError(f"cannot reach SSH server {host}:{profile.port}: "
                                f"{exc.strerror if isinstance(exc, OSError) else 'timed out'}",
                                reply_for_os_error(exc), ssh_failure="connect") from None
        if profile.host_key_policy is HostKeyPolicy.ACCEPT_NEW and options.known_hosts is None:
            _pin_host_key(profile, host, conn)
        entry = _Entry(key, conn, label, idle_timeout=profile.idle_timeout, gateway=gateway,
                       channel_window=profile.channel_window_mib << 20)
        if profile.nodelay_command:
            await _ask_server_for_nodelay(conn, label, profile.nodelay_command)
        # After it, not beside it: sshd's reply would wait on Nagle behind the session's
        # packets still unacknowledged (45 ms on loopback, measured), and the first
        # channel's window goes by this sample.
        await _sample_round_trip(entry)
        if gateway is not None:
            Lease(self, gateway)  # the gateway lives as long as this connection does
        holder.append(entry)
        self.connections_made += 1
        round_trip = entry.round_trip.current(asyncio.get_running_loop().time())
        log.info("SSH connected %s (round trip %s)", label,
                 "not measured" if round_trip is None else f"{round_trip * 1000:.2f} ms")
        return entry

    def _options(
        self, profile: Profile, host: str, login: Login
    ) -> asyncssh.SSHClientConnectionOptions:
        use_keys = "publickey" in profile.auth
        use_password = "password" in profile.auth and login.password is not None
        preferred = [m for m in profile.auth if m != "password" or use_password]
        if use_password:
            # sshd with PAM often offers only keyboard-interactive; asyncssh answers its
            # password prompt with the same password.
            preferred.append("keyboard-interactive")
        return asyncssh.SSHClientConnectionOptions(
            username=login.user,
            password=login.password if use_password else None,
            client_keys=(list(profile.identity_files) or ()) if use_keys else None,
            agent_path=() if use_keys and not profile.identity_files else None,
            preferred_auth=preferred,
            known_hosts=_known_hosts(profile, host),
            encryption_algs=cipher_preference(profile.ciphers),
            keepalive_interval=profile.keepalive_interval,
            keepalive_count_max=profile.keepalive_count_max,
            # The window session channels open with; _sftp then sizes the SFTP channel's
            # (TCP channels get theirs in _channel). asyncssh's default is 2 MiB.
            window=FLOOR,
            config=None,  # ~/.ssh/config must not change what this file says
        )

    def _release(self, entry: _Entry) -> None:
        entry.channels -= 1
        if entry.channels <= 0 and not entry.closed:
            entry.idle_timer = asyncio.get_running_loop().call_later(
                entry.idle_timeout, self._close_idle, entry)

    def _close_idle(self, entry: _Entry) -> None:
        if entry.channels <= 0:
            log.info("SSH connection %s idle; closing", entry.label)
            self._drop(entry)

    def _drop(self, entry: _Entry) -> None:
        if entry.closed:
            return
        entry.closed = True
        if self._entries.get(entry.key) is entry:
            del self._entries[entry.key]
        if entry.idle_timer is not None:
            entry.idle_timer.cancel()
        entry.conn.close()
        if entry.gateway is not None:
            self._release(entry.gateway)


async def _sample_round_trip(entry: _Entry) -> None:
    """Time one keepalive request (sshd answers it at once, success or failure) and add
    the sample to the connection's round trip. Nothing is lost if it cannot be timed: the
    windows then go by the budget alone."""
    loop = asyncio.get_running_loop()
    request = getattr(entry.conn, "_make_global_request", None)  # asyncssh's keepalive
    if request is None or entry.probing:
        return
    entry.probing = True
    try:
        start = loop.time()
        await asyncio.wait_for(request(b"keepalive@openssh.com"), 30)
        entry.round_trip.add(loop.time() - start, loop.time())
    except (asyncssh.Error, OSError, TimeoutError) as exc:
        log.debug("SSH %s: no round-trip sample (%s)", entry.label, exc)
    finally:
        entry.probing = False


def _sample_round_trip_if_stale(entry: _Entry) -> None:
    """A fresh sample, in the background, when the last is over a minute old."""
    if not entry.probing and entry.round_trip.stale(asyncio.get_running_loop().time()):
        task = asyncio.create_task(_sample_round_trip(entry))
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)


_BACKGROUND: set[asyncio.Task[None]] = set()  # tasks kept referenced until they finish


async def _ask_server_for_nodelay(conn: asyncssh.SSHClientConnection, label: str,
                                  command: str) -> None:
    """Make sshd set TCP_NODELAY on this connection.

    OpenSSH sets it in ssh_packet_set_interactive(), which runs once, when the first session
    channel executes a command (session.c do_exec). A connection that carries only
    direct-tcpip channels never gets it, so each small reply from the server (an FTP 220,
    a 150 then a 226) waits on Nagle and our delayed ACK: ~90 ms per FTP session, measured.
    Executing `true` once flips the socket option for the connection's lifetime; it works
    for shell-less accounts too (their nologin or ForceCommand still goes through do_exec).
    Opening the sftp subsystem instead was measured and does not help. Where the server
    refuses session channels, nothing is lost but speed.
    """
    try:
        chan, _ = await asyncio.wait_for(
            conn.create_session(asyncssh.SSHClientSession, command=command, encoding=None), 5)
        chan.close()
    except (asyncssh.Error, OSError, TimeoutError) as exc:
        log.info("SSH %s refused a session channel (%s): TCP_NODELAY stays off at the server "
                 "and FTP sessions start slower", label, exc)


def _known_hosts(profile: Profile, host: str) -> asyncssh.SSHKnownHosts | None:
    """The trust anchor for this connection, per policy. None means 'accept any key'."""
    if profile.host_key_policy is HostKeyPolicy.INSECURE:
        log.warning("host_key_policy = insecure for profile %r: the SSH server's identity is "
                    "NOT checked. Use this in test beds only.", profile.id)
        return None
    try:
        writable = loose_write_permissions(os.stat(profile.known_hosts).st_mode)
        if writable:
            # Anyone who can write it can make us trust their server (OpenSSH refuses too).
            raise UpstreamError(f"known_hosts {profile.known_hosts} {writable}: refused; "
                                "tighten it with chmod go-w", Reply.NOT_ALLOWED)
        known = asyncssh.read_known_hosts(profile.known_hosts)
    except FileNotFoundError:
        if profile.host_key_policy is HostKeyPolicy.ACCEPT_NEW:
            return None
        raise UpstreamError(
            f"known_hosts file {profile.known_hosts} does not exist and host_key_policy is "
            "strict: add the server's key (ssh-keyscan) or use accept-new", Reply.NOT_ALLOWED
        ) from None
    except (OSError, ValueError) as exc:
        raise UpstreamError(f"cannot read known_hosts {profile.known_hosts}: {exc}",
                            Reply.GENERAL_FAILURE) from None
    if profile.host_key_policy is HostKeyPolicy.ACCEPT_NEW:
        host_keys, ca_keys, *_ = known.match(host, "", profile.port)
        if not host_keys and not ca_keys:
            # First contact: accept, then pin (OpenSSH's StrictHostKeyChecking=accept-new).
            return None
    return known


def _pin_host_key(profile: Profile, host: str, conn: asyncssh.SSHClientConnection) -> None:
    key = conn.get_server_host_key()
    if key is None:
        return
    pattern = host if profile.port == 22 else f"[{host}]:{profile.port}"
    line = f"{pattern} {key.export_public_key('openssh').decode().strip()}\n"
    os.makedirs(os.path.dirname(profile.known_hosts) or ".", exist_ok=True)
    with open(profile.known_hosts, "a", encoding="utf-8") as fh:
        fh.write(line)
    log.warning("accept-new: pinned the host key of %s in %s", pattern, profile.known_hosts)
