"""Expected passive data connections: matched once, by client, port and host; they expire."""

from __future__ import annotations

from tunnel.datachannels import DataExpectations


def test_match_by_announced_or_control_host_once() -> None:
    table = DataExpectations(ttl=60)
    owner = object()
    table.add(owner, "127.0.0.1", {"ftp.example", "10.1.2.3"}, 5001, "10.1.2.3", now=0)
    assert table.take("127.0.0.1", "10.9.9.9", 5001, now=1) is None  # another host
    assert table.take("127.0.0.2", "10.1.2.3", 5001, now=1) is None  # another client
    assert table.take("127.0.0.1", "10.1.2.3", 5002, now=1) is None  # another port
    got = table.take("127.0.0.1", "FTP.example", 5001, now=1)
    assert got is not None and got.owner is owner and got.target_host == "10.1.2.3"
    assert table.take("127.0.0.1", "ftp.example", 5001, now=1) is None  # used once


def test_expiry_and_owner_drop() -> None:
    table = DataExpectations(ttl=10)
    a, b = object(), object()
    table.add(a, "c", {"h"}, 1, "h", now=0)
    table.add(b, "c", {"h"}, 2, "h", now=0)
    assert table.take("c", "h", 1, now=11) is None
    table.add(b, "c", {"h"}, 3, "h", now=20)
    table.drop_owner(b)
    assert len(table) == 0


def test_reannouncing_a_port_replaces_the_old_entry() -> None:
    table = DataExpectations()
    owner = object()
    table.add(owner, "c", {"old"}, 7, "old", now=0)
    table.add(owner, "c", {"new"}, 7, "new", now=0)
    assert len(table) == 1
    got = table.take("c", "new", 7, now=0)
    assert got is not None and got.target_host == "new"
