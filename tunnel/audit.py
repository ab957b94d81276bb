"""One structured audit record per session (JSON lines). Built from named fields only, so no
secret can slip in: there is no field for a password and no free-form dump of a request."""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO


@dataclass
class AuditRecord:
    session: int
    client: str
    started: float = field(default_factory=time.time)
    version: int | str | None = None  # SOCKS version (4 or 5), or "transparent"
    dst: str = ""
    port: int = 0
    rule: str | None = None
    matched_by: str = ""
    action: str = ""
    ssh_server: str = ""
    ssh_user: str = ""
    user_source: str = ""  # "profile" or "socks" (RFC 1929) - where the SSH user came from
    # "local" (the SSH host is the destination), "clear", "direct", or with last_hop_tls
    # "tls" (control and data), "tls-control" (the server refused PROT P under `try`)
    last_hop: str = ""
    last_hop_failure: str = ""  # why the last hop's TLS ended the session
    bytes_up: int = 0
    bytes_down: int = 0
    duration_ms: float = 0.0
    result: str = "open"
    reply: int | None = None  # the SOCKS REP code sent
    control_session: int | None = None  # for an FTP data connection: its control session
    ftp_user: str = ""
    # The local user whose socket the client's connection is (a client on this host).
    local_uid: int | None = None
    local_user: str = ""
    data_channels: int = 0  # active-mode data connections the proxy made for this session
    # Why SSH failed, if it did: host-key | auth | kex | ssh | connect. With `session` and
    # `ssh_user` this is the audit event for a refused host key, login or key exchange.
    ssh_failure: str = ""
    error: str = ""

    def to_json(self) -> str:
        # Every field is a scalar: a shallow copy is the record (dataclasses.asdict copies
        # deeply, and was half of this method's time in a session-setup profile).
        record = dict(vars(self))
        record["started"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started))
        return json.dumps(record, separators=(",", ":"))


class AuditLog:
    def __init__(self, path: str = "") -> None:
        self._path = path
        self._lock = threading.Lock()
        # Held open for the daemon's life (closed in close()), one flushed line per record.
        self._stream: IO[str] = (
            open(path, "a", encoding="utf-8") if path else sys.stderr  # noqa: SIM115
        )
        self.records = 0

    def write(self, record: AuditRecord) -> None:
        line = record.to_json()
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()
            self.records += 1

    def reopen(self) -> None:
        """Open the file by its name again (logrotate has renamed the old one). Records
        written meanwhile went to the old file, whole: the lock makes each line atomic."""
        if not self._path:
            return
        fresh = open(self._path, "a", encoding="utf-8")  # noqa: SIM115 - held for the daemon's life
        with self._lock:
            old, self._stream = self._stream, fresh
        old.close()

    def close(self) -> None:
        if self._path:
            self._stream.close()
