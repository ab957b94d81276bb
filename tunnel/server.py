"""The daemon: SOCKS listeners, signals (SIGHUP reload, SIGTERM/SIGINT drain), shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from tunnel import config as config_mod
from tunnel import loopguard, notify, outgoing
from tunnel.audit import AuditLog
from tunnel.config import Config, Listen, Profile
from tunnel.context import Context
from tunnel.control import ControlServer
from tunnel.datachannels import DataExpectations
from tunnel.errors import ConfigError
from tunnel.heap import release_free_heap, tune_allocator
from tunnel.session import SocksSession
from tunnel.ssh import SSHPool

log = logging.getLogger("tunnel.server")


class ProxyServer:
    def __init__(self, config: Config) -> None:
        self.ctx = Context(config=config, pool=SSHPool(self._profile, config.proxy.connect_timeout),
                           audit=AuditLog(config.proxy.audit_log),
                           expectations=DataExpectations(config.proxy.data_wait))
        self._servers: list[asyncio.Server] = []
        self._stopping = asyncio.Event()
        self._control: ControlServer | None = None

    def _profile(self, profile_id: str) -> Profile:
        return self.ctx.config.profile(profile_id)

    async def start(self) -> None:
        # SOCKS listeners last: a client or supervisor that sees the port open may at once
        # send SIGHUP (whose default action would kill us) or use the control socket.
        loop = asyncio.get_running_loop()
        for sig, handler in ((signal.SIGTERM, self.stop), (signal.SIGINT, self.stop),
                             (signal.SIGHUP, self.reload)):
            loop.add_signal_handler(sig, handler)
        metrics_at = self.ctx.config.proxy.metrics
        if metrics_at is not None:
            from tunnel.metrics import Metrics  # prometheus_client only where metrics are on
            metrics = Metrics(self.ctx)
            metrics.serve(metrics_at.host, metrics_at.port)
            self.ctx.metrics = metrics
        if self.ctx.config.proxy.control_socket:
            self._control = ControlServer(self.ctx, self.ctx.config.proxy.control_socket,
                                          self.reload)
            await self._control.start()
        proxy = self.ctx.config.proxy
        if proxy.transparent:
            self._prepare_transparent()
        try:
            for listen in proxy.listen:
                await self._listen(listen, lambda: SocksSession(self.ctx), "SOCKS")
            for listen in proxy.transparent:
                from tunnel.transparent import TransparentSession
                await self._listen(listen, lambda: TransparentSession(self.ctx), "transparent")
        except OSError:  # a port in use: leave nothing behind, the socket file included
            await self._stop_listening()
            raise
        notify.ready()  # systemd (Type=notify): listeners and control socket are up

    async def _listen(self, listen: Listen, factory: Callable[[], asyncio.Protocol],
                      kind: str) -> None:
        server = await asyncio.get_running_loop().create_server(
            factory, listen.host, listen.port, reuse_address=True,
            backlog=self.ctx.config.proxy.listen_backlog)
        self._servers.append(server)
        log.info("listening on %s (%s)", listen, kind)

    def _prepare_transparent(self) -> None:
        """Mark the daemon's own connections (outgoing.py) and open the data-connection
        sets (nftset.py). Both need CAP_NET_ADMIN: without it the daemon does not start,
        rather than capture itself or let data connections out in clear."""
        from tunnel.nftset import DataCapture, NftError
        try:
            outgoing.use_mark(self.ctx.config.proxy.socket_mark)
        except PermissionError:
            raise ConfigError(self.ctx.config.path, "proxy.transparent",
                              "transparent listeners need CAP_NET_ADMIN, to mark the "
                              "proxy's own connections (SO_MARK) and fill the nftables "
                              "data-connection sets") from None
        try:
            self.ctx.capture = DataCapture()
        except NftError as exc:
            raise ConfigError(self.ctx.config.path, "proxy.transparent", str(exc)) from None
        problem = self.ctx.capture.prepare()
        if problem:
            log.warning("transparent: the nftables table is not loaded (%s): load it with "
                        "`tunnel nft -c %s | nft -f -`; until then passive transfers of "
                        "transparent sessions are refused (421)", problem,
                        self.ctx.config.path)

    def stop(self) -> None:
        notify.stopping()
        self._stopping.set()

    def reload(self) -> None:
        """New rules and profiles apply to new sessions; running sessions keep theirs.
        A config that does not validate is refused and the old one stays. The audit log is
        reopened first, whatever the config: logrotate renames it and sends SIGHUP (through
        `systemctl reload`), and records go on into the new file, none lost or doubled."""
        notify.reloading()
        try:
            self.ctx.audit.reopen()
            path = self.ctx.config.path
            try:
                self.ctx.config = config_mod.load(path)
            except ConfigError as exc:
                log.error("reload refused, keeping the running config: %s", exc)
                if self.ctx.metrics is not None:
                    self.ctx.metrics.reloaded(False)
                return
            if self.ctx.metrics is not None:
                self.ctx.metrics.reloaded(True)
            log.info("reloaded %s: %d profiles, %d rules", path, len(self.ctx.config.profiles),
                     len(self.ctx.config.rules.rules))
        finally:
            notify.ready()

    async def run(self) -> None:
        loopguard.install(asyncio.get_running_loop())
        if not tune_allocator():
            log.info("the C library's allocator thresholds were left as they are (no glibc "
                     "mallopt): transfers may spend system time faulting buffers in")
        await self.start()
        release_free_heap()  # what the imports and the start freed, before serving
        await self._stopping.wait()
        await self.drain()

    async def _stop_listening(self) -> None:
        """Close the SOCKS listeners and the control socket (its file too)."""
        for server in self._servers:
            server.close()
        if self._control is not None:
            await self._control.close()

    async def drain(self) -> None:
        """Stop accepting, let sessions finish up to drain_timeout, then close the rest."""
        await self._stop_listening()
        timeout = self.ctx.config.proxy.drain_timeout
        log.info("draining %d sessions (up to %.0f s)", len(self.ctx.sessions), timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.ctx.sessions and loop.time() < deadline:
            await asyncio.sleep(0.1)
        for session in list(self.ctx.sessions.values()):
            session.close()
        await self.ctx.pool.close()
        self.ctx.audit.close()
        self.ctx.heap.close()
        log.info("stopped")
