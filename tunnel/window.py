"""asyncssh's channel flow control, corrected for a paused reader.

RFC 4254 §5.2: the window is what the peer may still send. asyncssh decrements it as data
arrives and, when it hands data to the application and finds the window below half, opens it
back to its full size. When the application has paused reading (the relay does while its
client is slow), arrived data waits in the channel's buffer; on resume asyncssh hands the
first piece over and opens the window to full at once, though most of a window's worth still
waits undelivered. The peer then sends a whole window more, and the next pause and resume do
the same: measured with one client reading a download at 1 MB/s, the proxy grew 29-50 MiB with
an 8 MiB window (5 MiB with 2 MiB), where the window should be the bound.

`install()` replaces `SSHChannel._deliver_data` with the same method, whose adjustment leaves
out what the channel still holds: the peer may never have more than a window in flight and in
our buffer together. It checks the attributes it relies on and leaves asyncssh as it is (and
says so) where they differ.
"""

from __future__ import annotations

import logging
from typing import Any

from asyncssh import channel as asyncssh_channel
from asyncssh.constants import MSG_CHANNEL_WINDOW_ADJUST
from asyncssh.misc import ProtocolError
from asyncssh.packet import UInt32

log = logging.getLogger("tunnel.ssh")

_REQUIRED = ("_recv_window", "_init_recv_window", "_recv_buf", "_encoding", "_session",
             "send_packet")


def held(channel: Any) -> int:
    """Bytes the channel has received and not yet handed to the application."""
    return sum(len(data) for data, _ in channel._recv_buf)


def adjustment(window: int, initial: int, waiting: int) -> int:
    """How far to open the window so that window + waiting comes back to `initial`; 0 while
    the two together are still at half of it or more (one adjustment per half window, as
    asyncssh does)."""
    if window + waiting >= initial / 2:
        return 0
    return initial - window - waiting


def _deliver_data(self: Any, data: bytes, datatype: Any) -> None:
    """asyncssh's `SSHChannel._deliver_data`, with the window adjustment above."""
    adjust = adjustment(self._recv_window, self._init_recv_window, held(self))
    if adjust:
        self.send_packet(MSG_CHANNEL_WINDOW_ADJUST, UInt32(adjust))
        self._recv_window += adjust
    decoded: Any = data
    if self._encoding:
        try:
            decoded = self._decoder.decode(data)
        except UnicodeDecodeError as exc:
            raise ProtocolError(str(exc)) from None
    if self._session is not None:
        self._session.data_received(decoded, datatype)


def install() -> bool:
    """Patch asyncssh once; False (with a warning) where its channel is not as expected."""
    cls = asyncssh_channel.SSHChannel
    if getattr(cls, "_tunnel_window_patched", False):
        return True
    probe = cls.__init__.__code__.co_names + cls._deliver_data.__code__.co_names
    missing = [name.lstrip("_") for name in _REQUIRED if name.lstrip("_") not in
               {n.lstrip("_") for n in probe}]
    if missing:
        log.warning("asyncssh's channel has changed (%s): its window is left as it is, and a "
                    "slow client may make the proxy hold more than a window per download",
                    ", ".join(missing))
        return False
    cls._deliver_data = _deliver_data  # type: ignore[method-assign]
    cls._tunnel_window_patched = True  # type: ignore[attr-defined]
    return True


def resize(channel: Any, window: int) -> None:
    """Make `window` the channel's window from now on. A larger one is granted at once (a
    window adjustment); a smaller one takes effect as the peer uses up what it was given,
    since SSH has no way to take a window back (RFC 4254 §5.2)."""
    grows = window > channel._init_recv_window
    channel._init_recv_window = window
    grant = window - channel._recv_window - held(channel)
    if grows and grant > 0:
        channel._recv_window += grant
        channel.send_packet(MSG_CHANNEL_WINDOW_ADJUST, UInt32(grant))


def sftp_channel(sftp: Any) -> Any:
    """The SSH channel under an asyncssh SFTPClient (private attributes; None where they
    are not as expected)."""
    reader = getattr(getattr(sftp, "_handler", None), "_reader", None)
    return getattr(reader, "channel", None)
