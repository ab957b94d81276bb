"""readsize.set_read_size: asyncio's per-read size set, and set back, on a transport."""

from __future__ import annotations

import asyncio
import socket

from tunnel import readsize


def test_a_size_is_set_and_none_gives_asyncio_its_own_back() -> None:
    async def check() -> None:
        left, right = socket.socketpair()
        transport, _ = await asyncio.get_running_loop().connect_accepted_socket(
            asyncio.Protocol, left)
        own = transport.max_size  # type: ignore[attr-defined]
        readsize.set_read_size(transport, readsize.SSH_READ_SIZE)
        assert transport.max_size == 1 << 20  # type: ignore[attr-defined]
        readsize.set_read_size(transport, None)
        assert transport.max_size == own == 256 * 1024  # type: ignore[attr-defined]
        readsize.set_read_size(transport, None)  # twice: still asyncio's
        assert transport.max_size == own  # type: ignore[attr-defined]
        transport.close()
        right.close()

    asyncio.run(check())


def test_a_transport_without_max_size_is_left_alone() -> None:
    class Other(asyncio.Transport):
        pass

    other = Other()
    readsize.set_read_size(other, 1 << 20)
    assert not hasattr(other, "max_size")
