"""The daemon's side of transparent capture: it tells the kernel which passive data
connections to redirect, as each 227/229 reply passes.

A passive data port is known only from the server's reply, so the ruleset (`tunnel nft`)
redirects members of a named set, `client . server . port`, and the daemon adds one element
per announced port, for the life of the control session. Only that client's
connection to that port is captured: the FTP host's web server or an admin's own `ssh` keep
working, and no data connection of a captured session leaves in clear.

The elements go in through libnftables, the library `nft` itself is built on, loaded with
ctypes: about 80 µs per element in-process against some 3 ms for running `nft`, and no
Python dependency. Adding needs CAP_NET_ADMIN in the daemon's network namespace.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import ipaddress
import logging
from collections.abc import Iterable

from tunnel.addresses import plain_ip
from tunnel.nft import ACTIVE_MAPS, DATA_SETS, TABLE

log = logging.getLogger("tunnel.nftset")


class NftError(Exception):
    pass


class _Nftables:
    """The three calls of libnftables' API this needs: a context, run a command, the
    error text."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("nftables") or "libnftables.so.1"
        try:
            lib = ctypes.CDLL(name)
        except OSError as exc:
            raise NftError(f"cannot load libnftables ({exc}); install it (Debian: "
                           "libnftables1, with nftables)") from None
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        self._lib = lib
        self._ctx = lib.nft_ctx_new(0)
        # Output and errors into buffers, not onto the daemon's stdout and stderr.
        lib.nft_ctx_buffer_output(self._ctx)
        lib.nft_ctx_buffer_error(self._ctx)

    def run(self, command: str) -> None:
        if self._lib.nft_run_cmd_from_buffer(self._ctx, command.encode()) != 0:
            error = (self._lib.nft_ctx_get_error_buffer(self._ctx) or b"").decode(
                errors="replace").strip().splitlines()
            raise NftError(error[0] if error else f"nft command failed: {command}")


def elements(client: str, hosts: Iterable[str], port: int) -> dict[str, list[str]]:
    """The set elements for one expected data connection, by set name: one per host the
    client may connect to that is an address of the client's family. Pure."""
    source = plain_ip(client)
    if source is None:
        return {}
    out: dict[str, list[str]] = {}
    for host in sorted(set(hosts)):
        try:
            target = ipaddress.ip_address(host)
        except ValueError:
            continue  # a name: the client resolved it; a redirected connection has an address
        if target.version == source.version and not target.is_loopback:
            out.setdefault(DATA_SETS[target.version], []).append(
                f"{source} . {target} . {port}")
    return out


# What one `expect` or `masquerade` added, to remove at the session's end: (set or map
# name, element keys).
Added = list[tuple[str, list[str]]]


def active_element(client: str, port: int, server: str) -> tuple[str, str, str] | None:
    """(map name, key, value) that makes our connection to client:port come from `server`,
    or None where the two are not addresses of one family. Pure."""
    try:
        target = ipaddress.ip_address(server)
    except ValueError:
        return None
    source = plain_ip(client)
    if source is None or source.version != target.version:
        return None
    return ACTIVE_MAPS[source.version], f"{source} . {port}", str(target)


class DataCapture:
    """Fills the ruleset's data-connection sets. One per daemon.

    An element lives as long as the control session that announced it, not as long as the
    proxy waits for the data connection: a client that connects late must still be
    redirected (and then refused, its expectation gone), never let out in clear. The
    session removes its elements when it ends; the daemon empties the sets when it starts,
    of what a daemon that died left there."""

    def __init__(self) -> None:
        self._nft = _Nftables()

    def prepare(self) -> str:
        """Empty the sets. '' if the table `tunnel nft` prints is loaded, else what is
        wrong."""
        try:
            for name in DATA_SETS.values():
                self._nft.run(f"flush set {TABLE} {name}")
            for name in ACTIVE_MAPS.values():
                self._nft.run(f"flush map {TABLE} {name}")
        except NftError as exc:
            return str(exc)
        return ""

    def expect(self, client: str, hosts: Iterable[str], port: int) -> Added:
        """Redirect this client's connections to these hosts at this port, until `forget`.
        Raises NftError (then the data connection would leave in clear: the caller must not
        announce the port)."""
        added: Added = []
        for set_name, items in elements(client, hosts, port).items():
            self._nft.run(f"add element {TABLE} {set_name} {{ {', '.join(items)} }}")
            added.append((set_name, items))
        return added

    def masquerade(self, client: str, port: int, server: str) -> Added:
        """Our next connection to client:port leaves with `server` as its source address,
        until `forget`. Raises NftError."""
        element = active_element(client, port, server)
        if element is None:
            return []
        map_name, key, value = element
        self._nft.run(f"add element {TABLE} {map_name} {{ {key} : {value} }}")
        return [(map_name, [key])]

    def forget(self, added: Added) -> None:
        """Remove what `expect` added; an element already gone (a reloaded table, a flush)
        is no error."""
        for set_name, items in added:
            for item in items:
                try:
                    self._nft.run(f"delete element {TABLE} {set_name} {{ {item} }}")
                except NftError as exc:
                    log.debug("data capture: %s %s already gone: %s", set_name, item, exc)
