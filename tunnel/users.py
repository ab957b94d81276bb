"""Local users in rules and profiles (`users = ["alice", "@ftpbatch", "*"]`). Pure.

On a multi-user host every local user can reach the proxy's loopback listener. A rule or
profile that names users is for those users only: the session's local user (the owner of
the client's socket, localuser.py) must be named, or be in a named group. "*" means anyone,
on purpose, including a client whose user cannot be known (one relayed from another host,
allow_relay); a name or a group never matches such a client.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class LocalUser:
    """A client's local user: uid, and where known its name and group names."""

    uid: int
    name: str = ""
    groups: frozenset[str] = frozenset()

    def __str__(self) -> str:
        return self.name or f"uid {self.uid}"


class UserSet:
    """One `users` list, checked on construction (ValueError with the reason)."""

    def __init__(self, items: Sequence[str]) -> None:
        if not items:
            raise ValueError('an empty list matches nobody; name users, "@group"s or "*"')
        for item in items:
            if not item or item == "@" or any(ch.isspace() or ch == ":" for ch in item):
                raise ValueError(f"{item!r} is not a user name, \"@group\" or \"*\"")
        self.items = tuple(items)
        self.anyone = "*" in self.items
        self.names = frozenset(i for i in self.items if not i.startswith("@") and i != "*")
        self.groups = frozenset(i[1:] for i in self.items if i.startswith("@"))

    def matches(self, user: LocalUser | None) -> bool:
        if self.anyone:
            return True
        if user is None:  # unknown: relayed from another host, or not found
            return False
        return (user.name in self.names or str(user.uid) in self.names
                or bool(user.groups & self.groups))

    def __str__(self) -> str:
        return ", ".join(self.items)
