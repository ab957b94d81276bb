"""The kernel's TCP trouble counters per host, so that a slow or failed step says whether
the network stack dropped anything: a full listen queue drops SYNs silently, and the client's
retransmits (1 s, 3 s, 7 s, ...) then look like a slow proxy."""

from __future__ import annotations

from collections.abc import Mapping

from testbed.backends.base import Backend

# /proc/net/netstat's TcpExt names, and what the step report calls them.
WATCHED = {
    "ListenOverflows": "listen-queue overflows",
    "ListenDrops": "SYNs dropped at a listener",
    "TCPSynRetrans": "SYN retransmits",
    "TCPTimeouts": "retransmit timeouts",
}


def parse_netstat(text: str) -> dict[str, int]:
    """The TcpExt counters of a /proc/net/netstat text: header lines and value lines come in
    pairs that share their first word."""
    counters: dict[str, int] = {}
    lines = text.splitlines()
    for header, values in zip(lines[::2], lines[1::2], strict=False):
        names, numbers = header.split(), values.split()
        if names and names[0] == "TcpExt:" and numbers and numbers[0] == "TcpExt:":
            counters.update((n, int(v)) for n, v in zip(names[1:], numbers[1:], strict=False))
    return counters


def snapshot(backend: Backend, hosts: list[str]) -> dict[str, dict[str, int]]:
    """Each host's watched counters now ({} for a host whose counters cannot be read)."""
    taken: dict[str, dict[str, int]] = {}
    for host in hosts:
        done = backend.run(host, ["cat", "/proc/net/netstat"])
        counters = parse_netstat(done.stdout) if done.returncode == 0 else {}
        taken[host] = {name: counters[name] for name in WATCHED if name in counters}
    return taken


def growth(before: Mapping[str, Mapping[str, int]],
           after: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    """{host: {counter: how much it grew}} for the counters that grew."""
    grown: dict[str, dict[str, int]] = {}
    for host, counters in after.items():
        for name in WATCHED:
            delta = counters.get(name, 0) - before.get(host, {}).get(name, 0)
            if delta > 0:
                grown.setdefault(host, {})[name] = delta
    return grown


def add_growth(total: dict[str, dict[str, int]], more: Mapping[str, Mapping[str, int]]) -> None:
    """Sum one step's growth into the run's."""
    for host, counters in more.items():
        sums = total.setdefault(host, {})
        for name, delta in counters.items():
            sums[name] = sums.get(name, 0) + delta


def describe(grown: Mapping[str, Mapping[str, int]]) -> str:
    """'client: 12 listen-queue overflows, 30 SYN retransmits; ...', or '' for no growth."""
    return "; ".join(f"{host}: " + ", ".join(f"{counters[name]} {label}"
                                             for name, label in WATCHED.items() if name in counters)
                     for host, counters in grown.items() if counters)

