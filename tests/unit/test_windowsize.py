"""How channel windows are sized: the round trip times the line rate, within the profile's
ceiling and the connection's budget, never below OpenSSH's 2 MiB; and how the round trip
is estimated from samples."""

from __future__ import annotations

import pytest

from tunnel.windowsize import (
    BUDGET,
    FLOOR,
    HORIZON,
    LAN_WINDOW,
    LINE_RATE,
    RoundTrip,
    channel_window,
)

MIB = 1 << 20


@pytest.mark.parametrize(("round_trip", "expected"), [
    (0.0001, LAN_WINDOW),       # loopback: what the proxy's own pauses need
    (0.005, LAN_WINDOW),
    (0.012, 12_000_000),        # 12 ms: 12 MB at the line rate
    (0.020, 16 * MIB),          # 20 ms wants 20 MB: the profile's ceiling
    (0.100, 16 * MIB),
])
def test_a_lone_channel_gets_what_its_round_trip_needs(round_trip: float, expected: int) -> None:
    assert channel_window(16 * MIB, 2, round_trip) == expected


def test_an_unmeasured_round_trip_leaves_the_budget_and_ceiling() -> None:
    assert channel_window(16 * MIB, 1, None) == 16 * MIB
    assert channel_window(64 * MIB, 1, None) == BUDGET


def test_many_channels_share_the_budget_down_to_the_floor() -> None:
    assert channel_window(64 * MIB, 4, 0.100) == BUDGET // 4
    assert channel_window(64 * MIB, 100, 0.100) == FLOOR  # 50 FTP sessions at once
    assert channel_window(64 * MIB, 100, 0.0001) == FLOOR


def test_a_small_ceiling_is_obeyed_even_below_the_floor() -> None:
    assert channel_window(1 * MIB, 1, 0.100) == 1 * MIB
    assert channel_window(1 * MIB, 1, None) == 1 * MIB


def test_the_window_covers_the_line_rate_where_the_budget_allows() -> None:
    for ms in (1, 3, 7, 12, 25):
        assert channel_window(BUDGET, 1, ms / 1000) / (ms / 1000) >= LINE_RATE * 0.999


def test_the_round_trip_is_the_least_recent_sample() -> None:
    rtt = RoundTrip()
    assert rtt.current(0.0) is None and rtt.stale(0.0)
    rtt.add(0.050, now=10.0)
    rtt.add(0.080, now=20.0)  # queued behind a window of data: not the path's
    assert rtt.current(20.0) == 0.050
    assert not rtt.stale(30.0)
    assert rtt.stale(90.0)


def test_old_samples_stop_counting() -> None:
    rtt = RoundTrip()
    rtt.add(0.010, now=0.0)
    rtt.add(0.100, now=HORIZON)  # the route changed
    assert rtt.current(HORIZON + 1) == 0.100
    assert rtt.current(3 * HORIZON) is None
