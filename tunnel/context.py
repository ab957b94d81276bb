"""What every session shares (`Context`), and the narrow faces the FTP handlers see of the
SOCKS sessions they serve (`HandlerSession`, `BindSession`, `DataOwner`).

A module of its own so that the handlers (`ftp_tunnel`, `ftp_sftp`) depend on these faces,
not on `session`, which creates and runs them: no import circle, and a handler can touch
only what its face offers (write to its client, end with a result, the audit record, the
client's address), never a session's internals.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from tunnel.audit import AuditLog, AuditRecord
from tunnel.config import Config
from tunnel.datachannels import DataExpectations
from tunnel.heap import QuietTrim
from tunnel.localuser import LocalUsers
from tunnel.openings import Openings
from tunnel.relay import Relay
from tunnel.ssh import Lease, SSHPool

if TYPE_CHECKING:  # loaded only where transparent listeners exist
    from tunnel.nftset import DataCapture


class ByteCounts(Protocol):
    @property
    def bytes_up(self) -> int: ...
    @property
    def bytes_down(self) -> int: ...


class MetricsSink(Protocol):
    """What sessions and reloads report to (`metrics.Metrics`, where metrics are on): a
    face of its own, so that `metrics`, which reads the Context, is not imported here."""

    def session_ended(self, record: AuditRecord) -> None: ...
    def reloaded(self, ok: bool) -> None: ...


class ClientSession(Protocol):
    """A live SOCKS client's session, as `tunnel ctl` and the drain see it."""

    id: int
    record: AuditRecord

    @property
    def counts(self) -> ByteCounts: ...
    def close(self) -> None: ...


class HandlerSession(Protocol):
    """What an FTP handler may use of the session it serves."""

    id: int
    record: AuditRecord  # the handler fills in its part (SSH server, user, failures)
    ctx: Context
    config: Config  # as the session read it when it started (a reload does not change it)

    @property
    def client_ip(self) -> str: ...
    def write(self, data: bytes) -> None:
        """To the client; nothing once the session has ended."""
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def client_socket(self) -> socket.socket | None:
        """The client's socket, to look at (a peek), never to read or write."""
    def end(self, result: str, error: str = "") -> None:
        """End the session with its one audit record."""
    def expect_data(self, owner: DataOwner, hosts: set[str], port: int,
                    target_host: str) -> bool:
        """Expect the passive data connection a 227/229 announces (datachannels). False
        if it could not be arranged: the port must then not be announced."""
    def arrange_active(self, host: str, port: int) -> None:
        """An active-mode (PORT/EPRT) connection to the client at host:port is next."""


class BindSession(Protocol):
    """A SOCKS BIND waiting for an active-mode transfer of an ftp-tunnel session."""

    relay: Relay

    def local_host(self) -> str:
        """Our address the client reached: the one the first BIND reply announces."""
    def bind_accepted(self, peer: tuple[str, int], lease: Lease | None) -> None: ...
    def close(self) -> None: ...


class DataOwner(Protocol):
    """The control session a passive data connection belongs to (datachannels)."""

    @property
    def session(self) -> HandlerSession: ...


@dataclass
class Context:
    """What sessions share. `config` is replaced on reload; a session reads it once."""

    config: Config
    pool: SSHPool
    audit: AuditLog
    sessions: dict[int, ClientSession] = field(default_factory=dict)
    expectations: DataExpectations[DataOwner] = field(default_factory=DataExpectations)
    openings: Openings = field(default_factory=Openings)
    # ftp-sftp temporary upload files that a lost SSH connection left behind, by
    # (SSH server, user): removed at that user's next login (ftp_sftp._sweep_leftovers).
    sftp_leftovers: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    metrics: MetricsSink | None = None  # `[proxy] metrics`
    local_users: LocalUsers = field(default_factory=LocalUsers)
    capture: DataCapture | None = None  # with `[proxy] transparent` listeners
    next_id: int = 1
    started: float = field(default_factory=time.monotonic)
    bytes_up: int = 0  # of sessions that have ended (live ones are counted where they run)
    bytes_down: int = 0
    heap: QuietTrim = field(default_factory=QuietTrim)  # freed heap back after sessions end

