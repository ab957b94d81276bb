"""How big a window each SSH channel gets: enough for its connection's round trip, within
the connection's budget.

A stream cannot go faster than window / round trip. OpenSSH grants a fixed 2 MiB, which caps
a download at 21 MB/s at 100 ms. A window is also what the proxy may hold for a client that
reads slowly (tunnel/window.py keeps it to that), so it should be no larger than the path
needs. The window is the round trip times LINE_RATE, a rate above what one channel moves
through this proxy on any link, so that the window is never what limits a stream while the
CPU still could; but never under LAN_WINDOW, because on a short path the proxy's own pauses
(a loop pass, a collection) are the round trip that counts, and a keepalive on an idle
connection does not see them: on loopback, 2 MiB ran RETR at 252-518 MB/s from run to run,
8 MiB and more at 470-575 (bench/ab.py round-trip). It is bounded on both sides:
- never over the profile's ceiling (`channel_window_mib`);
- never under FLOOR (OpenSSH's own default), however many share the budget;
- the channels of one connection share BUDGET. 50 downloads at once with 8 MiB each ran at
  0.54-0.70 of their speed with 2 MiB each (bench/concurrency.py): the connection's one TCP
  stream and the proxy's buffers then held far more than the clients took.

The round trip comes from keepalive requests (`RoundTrip`): the least sample of the last
five minutes, because a sample taken while a window of data is queued ahead of it measures
the queue, not the path.

Pure: no sockets and no clock of its own; callers pass the time.
"""

from __future__ import annotations

from collections import deque

FLOOR = 2 << 20
LAN_WINDOW = 8 << 20
BUDGET = 32 << 20
LINE_RATE = 1_000_000_000  # bytes per second
HORIZON = 300.0  # seconds a round-trip sample counts
STALE = 60.0  # seconds after which a new sample is worth taking


def channel_window(ceiling: int, channels: int, round_trip: float | None) -> int:
    """The window for a channel opened while `channels` (this one included) are open on its
    connection. `ceiling` is the profile's channel_window_mib in bytes; `round_trip` is the
    connection's in seconds, None where it has not been measured (then the round trip is
    not what bounds the window)."""
    share = BUDGET // max(channels, 1)
    if round_trip is not None:
        share = min(share, max(LAN_WINDOW, int(round_trip * LINE_RATE)))
    return min(ceiling, max(FLOOR, share))


class RoundTrip:
    """One SSH connection's round trip, from timed request/reply pairs."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, float]] = deque()  # (when, seconds)

    def add(self, seconds: float, now: float) -> None:
        self._samples.append((now, seconds))
        while self._samples and self._samples[0][0] < now - HORIZON:
            self._samples.popleft()

    def current(self, now: float) -> float | None:
        """The least sample of the last HORIZON seconds; None if there is none."""
        recent = [seconds for when, seconds in self._samples if when >= now - HORIZON]
        return min(recent) if recent else None

    def stale(self, now: float) -> bool:
        """Whether the last sample is older than STALE seconds (or there is none)."""
        return not self._samples or self._samples[-1][0] < now - STALE
