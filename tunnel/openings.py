"""Turns for opening FTP control connections to one server, so a burst arrives paced.

When 200 clients start at once, sshd opens 200 connections to the FTP server in one burst.
vsftpd listens with a backlog of 32, fixed at build time (VSFTP_LISTEN_BACKLOG), and accepts
one connection per fork: on a loaded host its queue overflows, the kernel drops the SYN, and
sshd's connect retries after 1, 3, 7, 15 ... s. One CI run of load-200-sessions dropped 207
SYNs there and its p99 session time went from 20 s to 122 s, with 4 sessions lost.

So at most `limit` control connections to one server (as one SSH server reaches it) are
*opening* at once: from the channel open request until the server's first byte, its 220
greeting, which proves the server has accepted the connection. The others wait their turn in
arrival order. A server that accepts without greeting holds a turn only until `hold_limit`
seconds have passed, so one bad server slows only itself, never forever.

Only FTP control connections take turns: there the server speaks first, so its first byte
is a sure sign of acceptance. A passive data connection goes to a port the server opened for
that one session, with no queue to share.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

ServerKey = tuple[str, int, str, int]  # SSH host, SSH port, FTP host as it sees it, FTP port


@dataclass
class _Server:
    limit: int
    opening: int = 0
    waiting: deque[asyncio.Future[None]] = field(default_factory=deque)


class Turn:
    """One connection's turn to open. end() when the server greets, or the attempt fails."""

    def __init__(self, openings: Openings, key: ServerKey) -> None:
        self._openings = openings
        self._key = key
        self._held = False
        self._timer: asyncio.TimerHandle | None = None

    @property
    def held(self) -> bool:
        return self._held

    async def take(self, limit: int, hold_limit: float) -> float:
        """Wait until fewer than `limit` connections to this server are opening, and return
        the seconds waited. Idempotent: a retry on a fresh SSH connection keeps its turn."""
        if self._held:
            return 0.0
        loop = asyncio.get_running_loop()
        asked = loop.time()
        await self._openings._enter(self._key, limit)
        self._held = True
        self._timer = loop.call_later(hold_limit, self.end)
        return loop.time() - asked

    def end(self) -> None:
        if self._held:
            self._held = False
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._openings._leave(self._key)


class Openings:
    def __init__(self) -> None:
        self._servers: dict[ServerKey, _Server] = {}

    def turn(self, key: ServerKey) -> Turn:
        return Turn(self, key)

    def opening(self, key: ServerKey) -> int:
        server = self._servers.get(key)
        return server.opening if server else 0

    def waiting(self, key: ServerKey) -> int:
        server = self._servers.get(key)
        return len(server.waiting) if server else 0

    def stats(self) -> dict[str, int]:
        """For `tunnel ctl status`: control connections opening now, and waiting their turn."""
        return {"ftp_openings": sum(s.opening for s in self._servers.values()),
                "ftp_openings_waiting": sum(len(s.waiting) for s in self._servers.values())}

    async def _enter(self, key: ServerKey, limit: int) -> None:
        server = self._servers.setdefault(key, _Server(limit))
        server.limit = limit  # the latest config's, after a reload
        if server.opening < limit and not server.waiting:
            server.opening += 1
            return
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        server.waiting.append(ready)
        self._hand_on(server)  # a reload may have raised the limit
        try:
            await ready  # _leave hands a turn on and counts it in `opening`
        except asyncio.CancelledError:
            if ready.done() and not ready.cancelled():
                self._leave(key)  # handed a turn in the same instant it gave up: pass it on
            else:
                server.waiting.remove(ready)
                self._forget_if_idle(key, server)
            raise

    def _leave(self, key: ServerKey) -> None:
        server = self._servers[key]
        server.opening -= 1
        self._hand_on(server)
        self._forget_if_idle(key, server)

    @staticmethod
    def _hand_on(server: _Server) -> None:
        """Give free turns to the longest waiting, counting them in `opening`."""
        while server.waiting and server.opening < server.limit:
            ready = server.waiting.popleft()
            if not ready.done():
                ready.set_result(None)
                server.opening += 1

    def _forget_if_idle(self, key: ServerKey, server: _Server) -> None:
        if server.opening == 0 and not server.waiting:
            del self._servers[key]
