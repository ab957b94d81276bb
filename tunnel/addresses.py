"""IP address predicates shared by the session (relay policy) and the FTP layer (RFC 2577)."""

from __future__ import annotations

import ipaddress


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
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
    return _ip(host) is not None


def is_loopback(host: str) -> bool:
    addr = _ip(host)
    return addr is not None and addr.is_loopback


def same_host(a: str, b: str) -> bool:
    """The same address, or both loopback (127.0.0.1 and ::1 are one host)."""
    x, y = _ip(a), _ip(b)
    return x is not None and y is not None and (x == y or (x.is_loopback and y.is_loopback))

