"""Topology spec: hosts, links (point-to-point segments) and addresses. Pure data.

Addresses are planned automatically: link number i (from 1, in file order) is the subnet
10.77.i.0/24, and the hosts on it get .1, .2, ... in the order the link lists them. A host
with `forward = true` routes between its links, and every other host gets a route through
it to the subnets it cannot reach directly (one hop is all our topologies need). Without a
forwarding host, a host reaches only its own links: the client sees only what the topology
says it may see. A host with `gateway = "<neighbour>"` gets a default route through it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


class TopologyError(ValueError):
    """A topology that cannot be built, with the reason."""


@dataclass(frozen=True)
class Host:
    name: str
    forward: bool = False
    # A neighbour to send everything else to (a default route), as a host behind a
    # gateway is configured: with nothing but its default route.
    gateway: str = ""


@dataclass(frozen=True)
class Link:
    name: str
    hosts: tuple[str, str]
    subnet: ipaddress.IPv4Network
    subnet6: ipaddress.IPv6Network | None = None  # `ipv6 = true`: fd77:0:<i>::/64 as well


@dataclass
class Topology:
    hosts: dict[str, Host]
    links: list[Link]
    addresses: dict[tuple[str, str], ipaddress.IPv4Address] = field(default_factory=dict)
    addresses6: dict[tuple[str, str], ipaddress.IPv6Address] = field(default_factory=dict)

    def address(self, host: str, link: str | None = None) -> str:
        """The host's address on `link`, or its first address."""
        for (name, link_name), addr in self.addresses.items():
            if name == host and (link is None or link_name == link):
                return str(addr)
        raise TopologyError(f"host {host!r} has no address" + (f" on {link!r}" if link else ""))

    def address6(self, host: str) -> str:
        """The host's first IPv6 address (links with `ipv6 = true`)."""
        for (name, _), addr in self.addresses6.items():
            if name == host:
                return str(addr)
        raise TopologyError(f"host {host!r} has no IPv6 address (no link with ipv6 = true)")

    def link(self, name: str) -> Link:
        for link in self.links:
            if link.name == name:
                return link
        raise TopologyError(f"no link named {name!r}")

    def links_of(self, host: str) -> list[Link]:
        return [link for link in self.links if host in link.hosts]

    def routes(self, host: str) -> list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network,
                                               str]]:
        """(subnet, via) for each subnet `host` reaches through a forwarding neighbour, IPv4
        and (links with ipv6 = true) IPv6."""
        direct: set[ipaddress.IPv4Network | ipaddress.IPv6Network] = set()
        for link in self.links_of(host):
            direct.add(link.subnet)
            if link.subnet6 is not None:
                direct.add(link.subnet6)
        routes: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]] = []
        for link in self.links_of(host):
            for neighbour in link.hosts:
                if neighbour == host or not self.hosts[neighbour].forward:
                    continue
                for far in self.links_of(neighbour):
                    if far.subnet not in direct:
                        direct.add(far.subnet)
                        routes.append((far.subnet, str(self.addresses[(neighbour, link.name)])))
                    if (far.subnet6 is not None and far.subnet6 not in direct
                            and link.subnet6 is not None):
                        direct.add(far.subnet6)
                        routes.append((far.subnet6,
                                       str(self.addresses6[(neighbour, link.name)])))
        gateway = self.hosts[host].gateway
        if gateway:
            shared = next(link for link in self.links_of(host) if gateway in link.hosts)
            routes.append((ipaddress.IPv4Network("0.0.0.0/0"),
                           str(self.addresses[(gateway, shared.name)])))
        return routes

    def hosts_file(self) -> str:
        lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost"]
        lines += [f"{self.address(name)} {name}" for name in self.hosts]
        # IPv6 under its own name, so an IPv4 scenario never drifts to IPv6 by resolver order.
        lines += [f"{addr} {name}-v6" for (name, _), addr in self.addresses6.items()]
        return "\n".join(lines) + "\n"


def build(hosts: Sequence[Mapping[str, Any]], links: Sequence[Mapping[str, Any]]) -> Topology:
    """From the scenario file's [[topology.host]] and [[topology.link]] tables."""
    host_map: dict[str, Host] = {}
    for spec in hosts:
        name = str(spec.get("name", ""))
        if not name.isidentifier() or len(name) > 20:
            raise TopologyError(f"host name {name!r}: letters, digits, _; at most 20")
        if name in host_map:
            raise TopologyError(f"host {name!r} defined twice")
        host_map[name] = Host(name, bool(spec.get("forward", False)),
                              str(spec.get("gateway", "")))
    topo = Topology(host_map, [])
    for index, spec in enumerate(links, start=1):
        ends = tuple(spec.get("hosts", ()))
        if len(ends) != 2 or any(end not in host_map for end in ends) or ends[0] == ends[1]:
            raise TopologyError(f"link {spec.get('name')!r} must join two different known hosts")
        subnet = ipaddress.IPv4Network(spec.get("subnet", f"10.77.{index}.0/24"))
        subnet6 = ipaddress.IPv6Network(f"fd77:0:{index:x}::/64") if spec.get("ipv6") else None
        link = Link(str(spec.get("name", f"link{index}")), (ends[0], ends[1]), subnet, subnet6)
        topo.links.append(link)
        for position, host in enumerate(link.hosts, start=1):
            topo.addresses[(host, link.name)] = subnet.network_address + position
            if subnet6 is not None:
                topo.addresses6[(host, link.name)] = subnet6.network_address + position
    for name, spec_host in host_map.items():
        if not topo.links_of(name):
            raise TopologyError(f"host {name!r} is on no link")
        gateway = spec_host.gateway
        if gateway and not any(gateway in link.hosts for link in topo.links_of(name)):
            raise TopologyError(f"host {name!r}: gateway {gateway!r} is not a neighbour "
                                "on one of its links")
    return topo
