"""IP address predicates shared by the session (relay policy), the FTP layer (RFC 2577) and
the transparent capture."""

from __future__ import annotations

import ipaddress


def plain_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address `host` names, None for a name; "[...]" and the IPv4-mapped form taken
    off."""
    try:
        addr = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    # An IPv4 client seen on an IPv6 socket (::ffff:127.0.0.1) is still that IPv4 client.
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def is_ip(host: str) -> bool:
    """An address literal, not a name."""
    return plain_ip(host) is not None


def is_loopback(host: str) -> bool:
    addr = plain_ip(host)
    return addr is not None and addr.is_loopback


def same_host(a: str, b: str) -> bool:
    """The same address, or both loopback (127.0.0.1 and ::1 are one host)."""
    x, y = plain_ip(a), plain_ip(b)
    return x is not None and y is not None and (x == y or (x.is_loopback and y.is_loopback))

