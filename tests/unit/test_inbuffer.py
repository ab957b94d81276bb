"""InBuffer (tunnel/inbuffer.py) behaves as the bytes asyncssh kept, for every operation
asyncssh's parser uses, in any order: a hypothesis state machine against a plain bytes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tunnel import inbuffer
from tunnel.inbuffer import InBuffer

Op = st.one_of(
    st.tuples(st.just("append"), st.binary(max_size=40)),
    st.tuples(st.just("copy"), st.integers(0, 60), st.integers(0, 60)),
    st.tuples(st.just("drop"), st.integers(0, 60)),
    st.tuples(st.just("find"), st.binary(min_size=1, max_size=2), st.integers(0, 60)),
)


@settings(max_examples=400)
@given(st.lists(Op, max_size=40))
def test_it_is_the_bytes_it_stands_for(ops: list[tuple]) -> None:
    buffer, model = InBuffer(), b""
    for op in ops:
        if op[0] == "append":
            buffer += op[1]
            model += op[1]
        elif op[0] == "copy":
            got = buffer[op[1]:op[2]]
            assert type(got) is bytes and got == model[op[1]:op[2]]
        elif op[0] == "drop":
            buffer = buffer[op[1]:]
            model = model[op[1]:]
        else:
            assert buffer.find(op[1], 0, op[2]) == model.find(op[1], 0, op[2])
        assert len(buffer) == len(model) and bool(buffer) == bool(model)
        assert bytes(buffer) == model


def test_taking_packets_from_the_front_copies_only_the_packets() -> None:
    read = bytes(range(256)) * 1024  # one 256 KiB read
    buffer = InBuffer(read)
    header = buffer[:16]
    buffer = buffer[16:]
    assert header == read[:16] and buffer._chunks[0] is read  # the read itself, not a copy


def test_it_is_installed_on_asyncssh_connections() -> None:
    import asyncssh

    import tunnel.ssh  # noqa: F401  (installs it)
    assert inbuffer.install()
    assert asyncssh.connection.SSHConnection.data_received is inbuffer._data_received
