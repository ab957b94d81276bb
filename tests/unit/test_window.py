"""The window asyncssh reopens for a paused channel (tunnel/window.py), as arithmetic."""

from __future__ import annotations

from types import SimpleNamespace

import asyncssh

from tunnel import window

MIB = 1 << 20


def test_a_paused_channel_reopens_only_what_it_no_longer_holds() -> None:
    # 8 MiB window, all of it arrived while the reader was paused: 6 MiB still wait.
    assert window.adjustment(window=0, initial=8 * MIB, waiting=6 * MIB) == 0
    # 3.5 MiB wait and 0 may come: reopen to 8 in all (4.5 MiB), not by 8 (asyncssh).
    assert window.adjustment(window=0, initial=8 * MIB, waiting=7 * MIB // 2) == 9 * MIB // 2
    # A reader that keeps up: nothing waits, so it is asyncssh's own rule.
    assert window.adjustment(window=3 * MIB, initial=8 * MIB, waiting=0) == 5 * MIB
    assert window.adjustment(window=5 * MIB, initial=8 * MIB, waiting=0) == 0


def test_held_counts_what_waits_undelivered() -> None:
    channel = SimpleNamespace(_recv_buf=[(b"a" * 10, None), (b"b" * 5, 1)])
    assert window.held(channel) == 15


def test_the_fix_is_installed_on_asyncssh_channels() -> None:
    assert window.install()  # ssh.py installs it; a second call is a no-op
    assert asyncssh.channel.SSHChannel._deliver_data is window._deliver_data


class _Channel(SimpleNamespace):
    def send_packet(self, pkttype: int, payload: bytes) -> None:
        self.sent.append(int.from_bytes(payload, "big"))


def test_resize_grants_a_larger_window_at_once() -> None:
    channel = _Channel(_init_recv_window=2 * MIB, _recv_window=MIB, _recv_buf=[(b"x" * 1000, None)],
                       sent=[])
    window.resize(channel, 16 * MIB)
    assert channel.sent == [16 * MIB - MIB - 1000]  # what was given plus what waits: 16
    assert channel._recv_window + 1000 == 16 * MIB and channel._init_recv_window == 16 * MIB


def test_resize_to_smaller_takes_nothing_back_and_later_adjustments_follow_it() -> None:
    channel = _Channel(_init_recv_window=16 * MIB, _recv_window=16 * MIB, _recv_buf=[], sent=[])
    window.resize(channel, 2 * MIB)
    assert channel.sent == [] and channel._recv_window == 16 * MIB
    assert channel._init_recv_window == 2 * MIB
    assert window.adjustment(window=0, initial=channel._init_recv_window, waiting=0) == 2 * MIB
