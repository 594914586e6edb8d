"""The pair, bridge and NAT networks behind ``netns_pair``, ``netns_bridge`` and ``netns_nat``, usable without pytest.

``pair()``, ``bridge()`` and ``nat()`` check their arguments when called (``ValueError`` naming the bad value, before
the kernel is touched) and return a context manager: the network is built on entry and torn down on exit, also when
the block raises.  The fixtures call the ``*_network`` functions below with the ``netns`` marker's values (one
implementation): each returns a ``Built``, which says what to yield, which namespaces were made and how to tear
them down.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, NamedTuple, TypeVar

from .._kernel import validate as _validate
from ..namespace import Namespace, close_all

if TYPE_CHECKING:
    from ..topology import Link, Segment, Topology

__all__ = ["BridgeMembers", "NamespacePair", "NatNetwork", "bridge", "nat", "pair"]

T = TypeVar("T")

DEFAULT_SUBNET = ipaddress.IPv4Network("10.0.0.0/24")
#: Where the IPv6 addresses of the pair and the bridge come from.
IPV6_SUBNET = ipaddress.IPv6Network("fd00::/64")
#: The networks of ``nat()``: the client's side of the router, and the outside (the server's).
NAT_INSIDE = "192.168.0.0/24"
NAT_OUTSIDE = "203.0.113.0/24"


@dataclass(frozen=True)
class NetworkSettings:
    """The shape of a pair or bridge network, validated (the ``netns`` marker's arguments are its fields)."""

    mtu: int = 1500
    subnet: ipaddress.IPv4Network = DEFAULT_SUBNET
    ipv6: bool = True
    size: int = 3
    #: Whether segmentation and receive offloads stay on (off: every frame fits the MTU, as on a wire).
    offloads: bool = False

    @classmethod
    def checked(
        cls,
        *,
        mtu: object = 1500,
        subnet: object = "10.0.0.0/24",
        ipv6: object = True,
        size: object = 3,
        offloads: object = False,
        members: int | None = None,
    ) -> NetworkSettings:
        """Validated settings; ``ValueError`` names the bad value.

        ``members`` is how many hosts ``subnet`` must hold (default: ``size``).
        """
        checked_mtu = _validate.mtu(mtu, "mtu")
        if not isinstance(ipv6, bool):
            raise ValueError(f"ipv6 must be True or False, got {ipv6!r}")
        if ipv6 and checked_mtu < _validate.IPV6_MIN_MTU:
            raise ValueError(
                f"mtu={checked_mtu} is below {_validate.IPV6_MIN_MTU}, the minimum for IPv6; pass ipv6=False to use it"
            )
        network = _validate.network(subnet, "subnet")
        if not isinstance(network, ipaddress.IPv4Network):
            raise ValueError(f"subnet {subnet!r} is not an IPv4 network (IPv6 addresses come from {IPV6_SUBNET})")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive integer, got {size!r}")
        if not isinstance(offloads, bool):
            raise ValueError(f"offloads must be True or False, got {offloads!r}")
        settings = cls(mtu=checked_mtu, subnet=network, ipv6=ipv6, size=size, offloads=offloads)
        settings.ipv4_hosts(size if members is None else members)
        return settings

    def ipv4_hosts(self, count: int) -> list[ipaddress.IPv4Interface]:
        """The first ``count`` host addresses of ``subnet``; ``ValueError`` if it is too small."""
        return [x for x in _validate.hosts(self.subnet, count, "subnet") if isinstance(x, ipaddress.IPv4Interface)]

    def ipv6_hosts(self, count: int) -> list[ipaddress.IPv6Interface]:
        """The first ``count`` addresses of fd00::/64, or none with ``ipv6=False``."""
        if not self.ipv6:
            return []
        return [x for x in _validate.hosts(IPV6_SUBNET, count) if isinstance(x, ipaddress.IPv6Interface)]


class _PairTuple(NamedTuple):
    a: Namespace
    b: Namespace


class NamespacePair(_PairTuple):
    """The two ends of ``netns_pair`` / ``presets.pair()``: ``a`` (first address) and ``b`` (second).

    A named tuple of two (``a, b = pair``, ``pair.a``, ``pair[1]``); ``link`` is the ``Link`` between them, the
    type ``Topology.link`` returns: ``impair``, ``down``/``up``, ``mtu``/``set_mtu``.
    """

    #: The veth between ``a`` and ``b`` (``eth0`` on both).
    link: Link


class BridgeMembers(list[Namespace]):
    """The namespaces of ``netns_bridge`` / ``presets.bridge()`` in address order.

    ``segment`` is their ``Segment``, ``topology`` the ``Topology`` that holds them.
    """

    segment: Segment
    topology: Topology


class NatNetwork(NamedTuple):
    """``netns_nat`` / ``presets.nat()``: a client behind a masquerading router, and a server outside."""

    client: Namespace
    router: Namespace
    server: Namespace


@dataclass(frozen=True)
class Built(Generic[T]):
    """A network a preset built: what it yields, every namespace it made (creation order), its teardown."""

    value: T
    namespaces: list[Namespace]
    close: Callable[[], None]


# -- building (the fixtures call these) -----------------------------------------------------


def build_pair(settings: NetworkSettings, *, kill_grace: float = 1.0) -> NamespacePair:
    """Two namespaces ``a``/``b`` joined by a veth ``eth0``, addressed per ``settings``, ready.

    The caller tears them down (``close_all(list(pair))``); ``pair_network`` says so in its ``Built``.
    """
    from .._net.veth import veth
    from ..topology.links import link_between

    v4 = settings.ipv4_hosts(2)
    v6 = settings.ipv6_hosts(2)
    a = Namespace("a", kill_grace=kill_grace, _defer_setup=True)
    try:
        b = Namespace("b", kill_grace=kill_grace, _defer_setup=True)
    except BaseException:
        close_all([a])
        raise
    addresses_a: list[_validate.IPInterface] = [v4[0], *v6[:1]]
    addresses_b: list[_validate.IPInterface] = [v4[1], *v6[1:2]]
    try:
        index_a, index_b = veth(
            a,
            b,
            name_a="eth0",
            name_b="eth0",
            mtu=settings.mtu,
            addresses_a=addresses_a,
            addresses_b=addresses_b,
            ipv6=settings.ipv6,
            offloads=settings.offloads,
        )
    except BaseException:
        close_all([a, b])
        raise
    pair = NamespacePair(a, b)
    pair.link = link_between(
        [(a, "eth0", index_a, addresses_a), (b, "eth0", index_b, addresses_b)],
        subnet=settings.subnet,
        subnet6=IPV6_SUBNET if settings.ipv6 else None,
        ipv6=settings.ipv6,
        offloads=settings.offloads,
    )
    return pair


def pair_network(settings: NetworkSettings, *, kill_grace: float = 1.0) -> Built[NamespacePair]:
    """``build_pair``, with its namespaces and teardown."""
    pair = build_pair(settings, kill_grace=kill_grace)
    return Built(pair, list(pair), lambda: close_all(list(pair)))


def bridge_network(settings: NetworkSettings, *, kill_grace: float = 1.0) -> Built[BridgeMembers]:
    """``settings.size`` namespaces ``h1``..``hN`` with ``eth0`` on one bridge, addressed in order, ready."""
    from ..topology import Topology

    topology = Topology(ipv6=settings.ipv6, kill_grace=kill_grace)
    try:
        members = BridgeMembers(topology.add(f"h{i}") for i in range(1, settings.size + 1))
        members.segment = topology.segment(
            members, subnet=settings.subnet, mtu=settings.mtu, offloads=settings.offloads
        )
        members.topology = topology
    except BaseException:
        topology.close()
        raise
    return Built(members, _made_by(topology), topology.close)


def nat_network(*, kill_grace: float = 1.0) -> Built[NatNetwork]:
    """A client behind a router that masquerades what leaves its outside link, and a server outside (IPv4)."""
    from ..topology import Topology

    topology = Topology(ipv6=False, kill_grace=kill_grace)
    try:
        client, router, server = topology.add("client"), topology.add("router", router=True), topology.add("server")
        topology.link(router, client, subnet=NAT_INSIDE)
        outside = topology.link(router, server, subnet=NAT_OUTSIDE)
        client.add_route("default", via="192.168.0.1")
        topology.nat(router, outside=outside)
    except BaseException:
        topology.close()
        raise
    return Built(NatNetwork(client, router, server), _made_by(topology), topology.close)


def _made_by(topology: Topology) -> list[Namespace]:
    """Every namespace of ``topology``: the added ones, then each segment's bridge namespace."""
    return [*topology.namespaces, *(segment.namespace for segment in topology.segments)]


# -- the public context managers ------------------------------------------------------------


def pair(
    mtu: int = 1500,
    subnet: str | ipaddress.IPv4Network = "10.0.0.0/24",
    ipv6: bool = True,
    *,
    offloads: bool = False,
    kill_grace: float = 1.0,
) -> AbstractContextManager[NamespacePair]:
    """Two namespaces ``(a, b)`` joined by one veth ``eth0``, as ``netns_pair`` yields them; a context manager.

    a gets the first host address of ``subnet`` (10.0.0.1/24) and fd00::1/64, b the second; the link is ready
    for its first packet.  ``ipv6=False`` leaves no IPv6 address at all.  Offloads are off (every frame fits
    the MTU) unless ``offloads=True``.  Both are torn down when the block ends.
    """
    settings = NetworkSettings.checked(mtu=mtu, subnet=subnet, ipv6=ipv6, offloads=offloads, members=2)
    grace = _validate.duration(kill_grace, "kill_grace")
    return _running(lambda: pair_network(settings, kill_grace=grace))


def bridge(
    size: int = 3,
    mtu: int = 1500,
    subnet: str | ipaddress.IPv4Network = "10.0.0.0/24",
    ipv6: bool = True,
    *,
    offloads: bool = False,
    kill_grace: float = 1.0,
) -> AbstractContextManager[BridgeMembers]:
    """``size`` namespaces with ``eth0`` on one Linux bridge, as ``netns_bridge`` yields them; a context manager.

    A list in address order (10.0.0.1..N/24, fd00::1..N/64), ``.segment`` their ``Segment``; the bridge has STP
    off and no forwarding delay.  Offloads are off unless ``offloads=True``.  Everything is torn down when the
    block ends.
    """
    settings = NetworkSettings.checked(mtu=mtu, subnet=subnet, ipv6=ipv6, size=size, offloads=offloads)
    grace = _validate.duration(kill_grace, "kill_grace")
    return _running(lambda: bridge_network(settings, kill_grace=grace))


def nat(*, kill_grace: float = 1.0) -> AbstractContextManager[NatNetwork]:
    """``(client, router, server)`` as ``netns_nat`` yields them; a context manager.

    client 192.168.0.2/24 with a default route via the router's 192.168.0.1; router 203.0.113.1/24 outside,
    forwarding on, masquerading what leaves outside; server 203.0.113.2/24 with no route back, so only NAT makes
    replies work.  IPv4 only.  Everything is torn down when the block ends.
    """
    grace = _validate.duration(kill_grace, "kill_grace")
    return _running(lambda: nat_network(kill_grace=grace))


@contextmanager
def _running(build: Callable[[], Built[T]]) -> Iterator[T]:
    built = build()
    try:
        yield built.value
    finally:
        built.close()
