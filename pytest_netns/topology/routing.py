"""Static routes along shortest paths, computed from plain data: no kernel, no namespaces.

``route_table(networks, routers)`` gives every member of every network the
``(prefix, next hop)`` routes it needs to reach each subnet it is not
attached to: the first hop of a shortest path (fewest hops, through routers
only; ties go to the network listed first), avoiding networks that are down.
Subnets that share a next hop are merged into the fewest prefixes that cover
exactly them (as ``ipaddress.collapse_addresses`` does: no address outside
them is covered), which keeps a 100-router chain at a dozen routes per
namespace instead of 200.  A subnet that overlaps one the member is attached
to gets no route (the connected route wins).
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from .._kernel.validate import IPAddress, IPNetwork

#: A route: the destination prefix and the next hop's address (same family).
Route = tuple[IPNetwork, IPAddress]
#: Where a member is reached: (index of the network, position of the member in it).
_Hop = tuple[int, int]


@dataclass(frozen=True)
class Network:
    """A link or segment as routing sees it.

    ``subnets``: its networks (IPv4, and IPv6 if any).  ``members``: each
    member's name and its next-hop addresses on this network (the addresses
    others route through it via: one per family).  ``up``: False while it is
    down (no path crosses it).
    """

    subnets: Sequence[IPNetwork]
    members: Sequence[tuple[str, Sequence[IPAddress]]]
    up: bool = True


def route_table(networks: Sequence[Network], routers: Collection[str]) -> dict[str, set[Route]]:
    """The routes each member of ``networks`` needs (an empty set where it needs none).

    ``routers`` are the members that forward; paths go through them only.
    """
    graph = _Graph(networks, set(routers))
    return {member: graph.routes_from(member) for member in graph.attached}


class _Graph:
    """The networks as lists and integer ranges, built once for every member's search."""

    def __init__(self, networks: Sequence[Network], routers: set[str]) -> None:
        self.networks = networks
        self.routers = routers
        self.names = [[member for member, _ in network.members] for network in networks]
        self.up = [network.up for network in networks]
        # Integer ranges, not ipaddress objects: a 100-router chain asks for 20,000 of them.
        self.spans = [[span(subnet) for subnet in network.subnets] for network in networks]
        self.overlapping = _any_overlap([s for network_spans in self.spans for s in network_spans])
        self.attached: dict[str, list[int]] = {}  # member -> its networks, in the order given
        for index, names in enumerate(self.names):
            for member in names:
                self.attached.setdefault(member, []).append(index)

    def routes_from(self, source: str) -> set[Route]:
        attached, names, up, routers = self.attached, self.names, self.up, self.routers
        own = set(attached[source])
        first_hop: dict[int, _Hop] = {}
        seen = {source}
        # Breadth first: neighbours at distance 1, then what routers at distance d reach at d + 1.
        current: list[tuple[str, _Hop | None]] = [(source, None)]
        while current:
            frontier: list[tuple[str, _Hop | None]] = []
            for node, hop in current:
                for index in attached[node]:
                    if not up[index]:
                        continue
                    if hop is not None and index not in own and index not in first_hop:
                        first_hop[index] = hop
                    for position, other in enumerate(names[index]):
                        if other in seen:
                            continue
                        seen.add(other)
                        if other in routers:
                            frontier.append((other, hop if hop is not None else (index, position)))
            current = frontier
        by_hop: dict[_Hop, list[int]] = {}
        for index, hop in first_hop.items():
            by_hop.setdefault(hop, []).append(index)
        connected = [s for index in own for s in self.spans[index]]
        routes: set[Route] = set()
        for (index, position), reached in by_hop.items():
            for gateway in self.networks[index].members[position][1]:
                version = gateway.version
                ranges = [(low, high) for other in reached for v, low, high in self.spans[other] if v == version]
                if self.overlapping:  # a subnet that overlaps one the source is attached to: the connected route wins
                    ranges = [
                        (low, high)
                        for low, high in ranges
                        if not any(v == version and low < end and begin < high for v, begin, end in connected)
                    ]
                cls = ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network
                for start, prefixlen in collapse(ranges, gateway.max_prefixlen):
                    routes.add((cls((start, prefixlen)), gateway))
        return routes


def span(net: IPNetwork) -> tuple[int, int, int]:
    """(version, first address, last address + 1) of a network, as integers."""
    start = int(net.network_address)
    return net.version, start, start + net.num_addresses


def collapse(spans: list[tuple[int, int]], bits: int) -> list[tuple[int, int]]:
    """The fewest (network, prefix length) blocks covering exactly the union of [start, end) ranges.

    ``ipaddress.collapse_addresses`` does the same on objects, ~50x slower.
    """
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    blocks = []
    for start, end in merged:
        while start < end:
            size = start & -start if start else 1 << bits  # the largest block aligned at start...
            while start + size > end:  # ...that does not run past the end
                size >>= 1
            blocks.append((start, bits - size.bit_length() + 1))
            start += size
    return blocks


def _any_overlap(spans: list[tuple[int, int, int]]) -> bool:
    """Whether two of the (version, start, end) ranges overlap (in sorted order, some neighbours then do)."""
    ordered = sorted(spans)
    return any(a[0] == b[0] and b[1] < a[2] for a, b in itertools.pairwise(ordered))
