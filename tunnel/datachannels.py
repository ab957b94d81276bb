"""Passive data connections the proxy expects: announced by a server's 227/229 reply, they
arrive as new SOCKS requests and must ride their control session's SSH connection.

Pure bookkeeping with the clock passed in. A data connection is matched by the SOCKS
client's address, the port, and a host that is either the address the server announced or
the control connection's destination (curl ignores the 227 address and reuses the control
host). Each expectation is used once and expires; a request that matches none goes through
the ordinary rules, so a stray high port is never tunnelled on a guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

EXPECTATION_TTL = 60.0  # seconds: a client connects within moments of the 227/229 reply


Owner = TypeVar("Owner")


@dataclass(frozen=True)
class Expected(Generic[Owner]):
    owner: Owner  # the control session that will carry the data connection
    client_host: str
    hosts: frozenset[str]  # destinations the SOCKS request may name
    port: int
    target_host: str  # where the SSH server connects
    deadline: float
    client_uid: int | None = None  # the control session's local user, where known


class DataExpectations(Generic[Owner]):
    def __init__(self, ttl: float = EXPECTATION_TTL) -> None:
        self.ttl = ttl
        self._items: list[Expected[Owner]] = []

    def add(self, owner: Owner, client_host: str, hosts: set[str], port: int,
            target_host: str, now: float, client_uid: int | None = None) -> Expected[Owner]:
        self._expire(now)
        # A newer announcement of the same port by the same control session replaces the old.
        self._items = [e for e in self._items
                       if not (e.owner is owner and e.port == port)]
        expected = Expected(owner, client_host, frozenset(h.lower() for h in hosts), port,
                            target_host, now + self.ttl, client_uid)
        self._items.append(expected)
        return expected

    def take(self, client_host: str, host: str, port: int, now: float,
             client_uid: int | None = None) -> Expected[Owner] | None:
        """The expectation this data connection fulfils. On a host with several users, the
        connecting socket's owner must be the control session's: another local user cannot
        take someone's data connection by racing to the announced port."""
        self._expire(now)
        for index, expected in enumerate(self._items):
            if (expected.port == port and expected.client_host == client_host
                    and host.lower() in expected.hosts
                    and expected.client_uid == client_uid):
                del self._items[index]
                return expected
        return None

    def drop_owner(self, owner: Owner) -> None:
        self._items = [e for e in self._items if e.owner is not owner]

    def __len__(self) -> int:
        return len(self._items)

    def _expire(self, now: float) -> None:
        self._items = [e for e in self._items if e.deadline > now]
