"""The control socket behind `tunnel ctl`: a Unix socket, owner-only, one JSON request per
line, one JSON answer per line. Commands: status, list, close ID, reload.

What it reports is built from named fields (the audit record's), so a password cannot leak
through it any more than through the audit log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from tunnel.context import ClientSession, Context

log = logging.getLogger("tunnel.control")


def session_row(session: ClientSession) -> dict[str, Any]:
    rec = session.record
    counted = session.counts
    return {
        "id": session.id, "client": rec.client, "user": rec.ftp_user or rec.ssh_user,
        "local_user": rec.local_user or ("" if rec.local_uid is None else str(rec.local_uid)),
        "dst": f"{rec.dst}:{rec.port}" if rec.dst else "", "action": rec.action,
        "ssh_server": rec.ssh_server, "rule": rec.rule,
        "age_s": round(time.time() - rec.started, 1),
        "bytes_up": counted.bytes_up, "bytes_down": counted.bytes_down,
    }


class ControlServer:
    def __init__(self, ctx: Context, path: str, reload: Callable[[], None]) -> None:
        self.ctx = ctx
        self.path = path
        self._reload = reload
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
        if os.path.exists(self.path):
            os.unlink(self.path)  # a stale socket from a daemon that died
        old_umask = os.umask(0o177)  # created owner-only: no window with looser modes
        try:
            self._server = await asyncio.start_unix_server(self._client, self.path)
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        log.info("control socket %s", self.path)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if os.path.exists(self.path):
            os.unlink(self.path)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            try:
                request = json.loads(line)
                answer = self.handle(str(request.get("cmd", "")), request.get("arg"))
            except (ValueError, AttributeError):
                answer = {"ok": False, "error": "send one JSON object per line"}
            writer.write((json.dumps(answer) + "\n").encode())
            await writer.drain()
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()

    def handle(self, cmd: str, arg: Any) -> dict[str, Any]:
        sessions = self.ctx.sessions
        if cmd == "status":
            live = [session_row(s) for s in sessions.values()]
            return {"ok": True, "uptime_s": round(time.monotonic() - self.ctx.started, 1),
                    "sessions": len(live), **self.ctx.pool.stats(), **self.ctx.openings.stats(),
                    "bytes_up": self.ctx.bytes_up + sum(r["bytes_up"] for r in live),
                    "bytes_down": self.ctx.bytes_down + sum(r["bytes_down"] for r in live)}
        if cmd == "list":
            return {"ok": True, "sessions": [session_row(s) for s in sessions.values()]}
        if cmd == "close":
            try:
                session = sessions[int(arg)]
            except (KeyError, TypeError, ValueError):
                return {"ok": False, "error": f"no session {arg!r}"}
            session.close()
            return {"ok": True, "closed": int(arg)}
        if cmd == "reload":
            self._reload()
            return {"ok": True, "reloaded": self.ctx.config.path}
        return {"ok": False, "error": f"unknown command {cmd!r}: status, list, close ID, reload"}
