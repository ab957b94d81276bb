"""The byte pump between the SOCKS client and its upstream (a TCP socket or an SSH channel).

Built on protocol callbacks, not streams (asyncssh forward.py's shape): each side's protocol
calls into the Relay, which writes to the other side at once. Memory stays bounded because
flow control is passed across: when one side's transport says "pause_writing" (its buffer is
over the high-water mark, or the SSH window is shut), the relay stops reading the other side
until "resume_writing". EOF is passed on as a half-close, so protocols that shut one
direction first (FTP data uploads, `ssh` itself) keep working.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable
from typing import Protocol


class Endpoint(Protocol):
    """What both asyncio transports and asyncssh channels offer."""

    def write(self, data: bytes) -> None: ...
    def write_eof(self) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...


class Side(enum.Enum):
    CLIENT = "client"
    SERVER = "server"


class Sink(Protocol):
    """What an endpoint's protocol feeds: a Relay, or something standing in front of one
    (tls_pipe.TlsServerSide decrypts before the relay sees the bytes)."""

    def attach(self, side: Side, endpoint: Endpoint) -> None: ...
    def data(self, side: Side, data: bytes) -> None: ...
    def eof(self, side: Side) -> None: ...
    def pause_writing(self, side: Side) -> None: ...
    def resume_writing(self, side: Side) -> None: ...
    def lost(self, side: Side, exc: BaseException | None) -> None: ...


# Server bytes batched for one write to the client at most (see `data`): a socket read's
# worth of SSH packets, so batching keeps its gain and backpressure still acts.
BATCH_LIMIT = 256 * 1024


class Relay:
    """Joins two endpoints; counts bytes each way; calls `on_finished` once, when done."""

    def __init__(self, on_finished: Callable[[Relay], None] | None = None, *,
                 schedule: Callable[[Callable[[], None]], object] | None = None) -> None:
        """`schedule` (the event loop's call_soon) batches what the server side delivers
        for the client into one write per loop pass: asyncssh hands over one SSH packet
        (at most 32 KiB) at a time, several per socket read, and one send() per packet cost
        the proxy 17% more CPU per GiB than one per pass (bench/throughput.py, RETR). With
        None, each write goes out at once."""
        self._schedule = schedule
        self._ends: dict[Side, Endpoint | None] = {Side.CLIENT: None, Side.SERVER: None}
        self._eof: set[Side] = set()
        self._lost: set[Side] = set()
        self._started = False
        self._early: list[bytes] = []  # upstream bytes that beat the SOCKS reply
        self._early_eof = False
        self.on_finished = on_finished
        self.finished = False
        self.bytes_up = 0  # client -> server
        self.bytes_down = 0  # server -> client
        self.error: BaseException | None = None
        self.reset_side: Side | None = None  # the side whose connection was reset (RST)
        # Client bytes that arrived when the server side was already gone: never silently.
        self.dropped_up = 0
        self._down: list[bytes] = []  # server bytes for the client, flushed once per loop pass
        self._down_bytes = 0

    def attach(self, side: Side, endpoint: Endpoint) -> None:
        self._ends[side] = endpoint

    def detach(self, side: Side) -> None:
        """`side`'s endpoint is handed to someone else: never touch it again."""
        self._ends[side] = None

    def start(self, client_data: bytes = b"") -> None:
        """The SOCKS reply is out: let bytes flow. `client_data` is what the client sent
        after its request, before the reply (optimistic data)."""
        self._started = True
        client, server = self._ends[Side.CLIENT], self._ends[Side.SERVER]
        assert client is not None and server is not None
        if client_data:
            self.data(Side.CLIENT, client_data)
        for chunk in self._early:
            self.data(Side.SERVER, chunk)
        self._early.clear()
        if self._early_eof:
            self.eof(Side.SERVER)
        if Side.SERVER in self._lost:
            client.close()
            self._finish()
            return
        server.resume_reading()
        client.resume_reading()

    # -- callbacks from the two protocols ----------------------------------------------------
    def data(self, side: Side, data: bytes) -> None:
        if side is Side.SERVER and not self._started:
            # The server spoke first (an FTP 220) before our SOCKS reply went out: hold it and
            # stop reading until start(), so the reply is the first thing the client sees.
            self._early.append(data)
            self._call(Side.SERVER, "pause_reading")
            return
        other = self._ends[_other(side)]
        if other is None or _other(side) in self._lost:
            if side is Side.CLIENT:
                self.dropped_up += len(data)
            return
        if side is Side.CLIENT:
            self.bytes_up += len(data)
        else:
            self.bytes_down += len(data)
            if self._schedule is not None:
                if not self._down:
                    self._schedule(self._flush_down)
                self._down.append(data)
                self._down_bytes += len(data)
                if self._down_bytes >= BATCH_LIMIT:
                    # Out now: the write may tell us the client is full (pause_writing),
                    # which pauses the channel, and asyncssh stops handing over what it
                    # holds. Batched to the end of the pass, a resumed channel's whole
                    # window (8 MiB) went into one write: 29 MiB more RSS per slow reader.
                    self._flush_down()
                return
        try:
            other.write(data)
        except OSError as exc:  # an SSH channel already closing refuses writes
            self.lost(_other(side), exc)

    def eof(self, side: Side) -> None:
        if side is Side.SERVER and not self._started:
            self._early_eof = True
            return
        self._eof.add(side)
        if _other(side) not in self._lost:
            self._call(_other(side), "write_eof")
        if self._eof == {Side.CLIENT, Side.SERVER}:
            self.close()

    def pause_writing(self, side: Side) -> None:
        """`side`'s outgoing buffer is full: stop reading from the other side."""
        self._call(_other(side), "pause_reading")

    def resume_writing(self, side: Side) -> None:
        if self._started:
            self._call(_other(side), "resume_reading")

    def lost(self, side: Side, exc: BaseException | None) -> None:
        """`side` is gone. Close the other side gracefully: its buffered bytes still flush."""
        if side in self._lost:
            return
        self._lost.add(side)
        if exc is not None and self.error is None:
            self.error = exc
        if isinstance(exc, ConnectionResetError) and self.reset_side is None:
            self.reset_side = side
        if side is Side.SERVER and not self._started:
            return  # start() or the session's failure path closes the client
        self._call(_other(side), "close")
        self._finish()

    @property
    def cut_by_client(self) -> bool:
        """The client reset its connection before the server's side had ended: what the
        server is told (an end of file: an SSH channel cannot carry a reset) is not what
        happened."""
        return (self.reset_side is Side.CLIENT and Side.SERVER not in self._eof
                and not self._early_eof)

    @property
    def cut_short(self) -> bool:
        """The server did not get everything the client sent: the transfer is not whole,
        whatever the server says of it."""
        return self.cut_by_client or self.dropped_up > 0

    def close(self) -> None:
        for side in Side:
            if side not in self._lost:
                self._call(side, "close")
        self._finish()

    # -- internals ---------------------------------------------------------------------------
    def _flush_down(self) -> None:
        chunks, self._down, self._down_bytes = self._down, [], 0
        client = self._ends[Side.CLIENT]
        if not chunks or client is None or Side.CLIENT in self._lost:
            return
        try:
            client.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        except OSError as exc:
            self.lost(Side.CLIENT, exc)

    def _call(self, side: Side, method: str) -> None:
        if side is Side.CLIENT and method in ("write_eof", "close"):
            self._flush_down()  # what the server sent goes out before its EOF
        endpoint = self._ends[side]
        if endpoint is not None:
            # An endpoint already closing refuses calls; nothing is left to do to it then.
            with contextlib.suppress(OSError):
                getattr(endpoint, method)()

    def _finish(self) -> None:
        if not self.finished:
            self.finished = True
            if self.on_finished is not None:
                self.on_finished(self)


def _other(side: Side) -> Side:
    return Side.SERVER if side is Side.CLIENT else Side.CLIENT
