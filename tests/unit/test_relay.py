"""The relay's bookkeeping with recording endpoints (pure: no sockets, no loop)."""

from __future__ import annotations

from tunnel.relay import Relay, Side


class Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.written = b""

    def write(self, data: bytes) -> None:
        self.written += data

    def write_eof(self) -> None:
        self.calls.append("eof")

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")

    def close(self) -> None:
        self.calls.append("close")


def joined() -> tuple[Relay, Recorder, Recorder, list[Relay]]:
    done: list[Relay] = []
    relay = Relay(done.append)
    client, server = Recorder(), Recorder()
    relay.attach(Side.CLIENT, client)
    relay.attach(Side.SERVER, server)
    return relay, client, server, done


def test_server_bytes_before_the_socks_reply_wait_for_start() -> None:
    relay, client, server, _ = joined()
    relay.data(Side.SERVER, b"220 ready\r\n")
    assert client.written == b"" and server.calls == ["pause"]
    relay.start(b"USER a\r\n")
    assert client.written == b"220 ready\r\n" and server.written == b"USER a\r\n"
    assert "resume" in server.calls and relay.bytes_down == 11 and relay.bytes_up == 8


def test_backpressure_crosses_sides() -> None:
    relay, client, server, _ = joined()
    relay.start()
    client.calls.clear()
    server.calls.clear()
    relay.pause_writing(Side.CLIENT)  # the client is slow: stop reading the server
    relay.resume_writing(Side.CLIENT)
    relay.pause_writing(Side.SERVER)
    assert server.calls == ["pause", "resume"] and client.calls == ["pause"]


def test_half_close_then_full_close() -> None:
    relay, client, server, done = joined()
    relay.start()
    relay.eof(Side.CLIENT)
    assert server.calls[-1] == "eof" and not done
    relay.data(Side.SERVER, b"late reply")
    assert client.written == b"late reply"
    relay.eof(Side.SERVER)
    assert client.calls[-1] == "close" and server.calls[-1] == "close"
    assert done == [relay]


def test_loss_of_one_side_closes_the_other_once() -> None:
    relay, client, _server, done = joined()
    relay.start()
    relay.lost(Side.SERVER, ConnectionResetError())
    relay.lost(Side.CLIENT, None)
    assert client.calls.count("close") == 1 and done == [relay]
    assert isinstance(relay.error, ConnectionResetError)


def test_write_refused_by_a_closing_channel_ends_the_relay() -> None:
    relay, client, server, done = joined()

    def refuse(data: bytes) -> None:
        raise BrokenPipeError("channel closing")

    server.write = refuse  # type: ignore[method-assign]
    relay.start()
    relay.data(Side.CLIENT, b"x")
    assert done == [relay] and "close" in client.calls


def test_server_bytes_batched_into_one_client_write_per_pass_and_flushed_before_eof() -> None:
    passes: list[object] = []
    relay = Relay(schedule=passes.append)
    client, server = Recorder(), Recorder()
    writes: list[bytes] = []
    client.write = writes.append  # type: ignore[method-assign]
    relay.attach(Side.CLIENT, client)
    relay.attach(Side.SERVER, server)
    relay.start()
    for packet in (b"a" * 3, b"b" * 2, b"c"):  # three SSH packets from one socket read
        relay.data(Side.SERVER, packet)
    assert writes == [] and len(passes) == 1  # one flush scheduled, nothing written yet
    passes.pop()()  # type: ignore[operator]
    assert writes == [b"aaabbc"] and relay.bytes_down == 6
    relay.data(Side.SERVER, b"tail")
    relay.eof(Side.SERVER)  # the EOF may not overtake the bytes before it
    assert writes == [b"aaabbc", b"tail"] and client.calls[-1] == "eof"
    relay.data(Side.CLIENT, b"up")  # the other way goes out at once
    assert server.written == b"up"


def test_a_client_reset_before_the_server_ended_is_a_cut() -> None:
    """What ftp-tunnel tells the client after it reset a data connection (a cut upload)."""
    relay, _, _, _ = joined()
    relay.data(Side.CLIENT, b"half an upload")
    relay.lost(Side.CLIENT, ConnectionResetError())
    assert relay.cut_by_client and relay.reset_side is Side.CLIENT


def test_a_client_reset_after_the_server_ended_is_no_cut() -> None:
    relay, _, _, _ = joined()
    relay.eof(Side.SERVER)  # the whole download was sent
    relay.lost(Side.CLIENT, ConnectionResetError())
    assert not relay.cut_by_client


def test_a_plain_close_is_no_cut() -> None:
    relay, _, _, _ = joined()
    relay.lost(Side.CLIENT, None)
    assert not relay.cut_by_client and relay.reset_side is None


def test_client_bytes_with_no_server_side_left_are_counted_as_a_cut() -> None:
    relay, _, _, _ = joined()
    relay.start()
    relay.data(Side.CLIENT, b"first")
    relay.lost(Side.SERVER, None)
    relay.data(Side.CLIENT, b"late bytes")
    assert relay.bytes_up == 5 and relay.dropped_up == 10 and relay.cut_short
