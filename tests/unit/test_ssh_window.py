"""How the SSH pool sizes channel windows: a lone stream gets the profile's ceiling, many
streams on one connection share a budget, and none goes below OpenSSH's 2 MiB."""

from __future__ import annotations

from tunnel.ssh import WINDOW_BUDGET, WINDOW_FLOOR, channel_window

MIB = 1 << 20


def test_a_lone_download_gets_the_ceiling() -> None:
    assert channel_window(8 * MIB, 1) == 8 * MIB
    assert channel_window(8 * MIB, 2) == 8 * MIB  # an FTP session: control + data channel


def test_many_channels_share_the_budget_down_to_the_floor() -> None:
    assert channel_window(8 * MIB, 4) == WINDOW_BUDGET // 4
    assert channel_window(8 * MIB, 100) == WINDOW_FLOOR  # 50 FTP sessions at once
    assert channel_window(64 * MIB, 1) == WINDOW_BUDGET


def test_a_small_ceiling_is_obeyed_even_below_the_floor() -> None:
    assert channel_window(1 * MIB, 1) == 1 * MIB
