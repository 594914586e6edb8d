"""``Link`` and ``Segment``: the networks of a ``Topology``, and what they share (``_Network``).

A link is a veth between two namespaces; a segment is a Linux bridge, in a
namespace of its own, joining several.  Both hand out addresses, report
their members' interfaces, shape traffic (``impair``) and can be taken down
and up; they are made by ``Topology.link`` and ``Topology.segment``, and
``link_between`` gives a veth made outside a topology (``netns_pair``'s) its
``Link``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .._kernel import rtnl as _rtnl
from .._kernel import validate as _validate
from .._kernel.handle import handle_of
from .._kernel.validate import IPInterface
from .._net.bridge import Bridge
from .._net.impair import ALL_ROLES, MEMBER_ROLES, PORT_ROLES, Impairment, Point, Shaper
from .._net.veth import wait_ready
from ..namespace import Namespace
from . import routes

if TYPE_CHECKING:
    from scapy.plist import PacketList

    from ..packets import Capture

__all__ = ["Link", "Segment"]


@dataclass(eq=False)
class _Attachment:
    """One namespace's interface on a link or segment."""

    node: _Node
    network: _Network
    ifname: str
    index: int
    addresses: list[IPInterface]

    def __post_init__(self) -> None:
        #: The first address of each family, as routes elsewhere use it for a next hop.
        self.gateways = [a.ip for a in (self.address(4), self.address(6)) if a is not None]

    def address(self, version: int) -> IPInterface | None:
        return next((a for a in self.addresses if a.version == version), None)


@dataclass(eq=False)
class _Node:
    ns: Namespace
    router: bool
    attachments: list[_Attachment] = field(default_factory=list)


class _Owner(Protocol):
    """What a link or segment asks of whatever made it (a ``Topology``, or ``_Ends`` for a lone link)."""

    def _check_open(self) -> None: ...

    def _check_mtu(self, mtu: object) -> int: ...

    def _node(self, member: object) -> _Node: ...


def check_mtu(mtu: object, ipv6: bool, hint: str) -> int:
    """A valid MTU for interfaces that carry IPv6 (``ipv6``) or not; ``hint`` says how to get a smaller one."""
    value = _validate.mtu(mtu, "mtu")
    if ipv6 and value < _validate.IPV6_MIN_MTU:
        raise ValueError(
            f"mtu {value} is below {_validate.IPV6_MIN_MTU}, the minimum for IPv6 (the kernel would remove "
            f"IPv6 from the interfaces); {hint}"
        )
    return value


class _Network:
    """What links and segments share: subnets, addresses, impairments."""

    def __init__(
        self,
        topology: _Owner,
        subnet: ipaddress.IPv4Network,
        subnet6: ipaddress.IPv6Network | None,
        what: str,
        *,
        offloads: bool = False,
    ) -> None:
        self._topology = topology
        #: The IPv4 subnet.
        self.subnet = subnet
        #: The IPv6 /64 (None in a topology made with ``ipv6=False``).
        self.subnet6 = subnet6
        #: Whether segmentation and receive offloads were left on (off: every frame fits the MTU).
        self.offloads = offloads
        self._subnets = [n for n in (subnet, subnet6) if n is not None]
        self._attachments: list[_Attachment] = []
        self._is_up = True
        self._saved_routes: list[tuple[_Attachment, list[routes.SavedRoute]]] = []  # while a link is down
        self._shaper = Shaper(self._impair_points, what)
        self._what = what

    @property
    def addresses(self) -> dict[Namespace, list[IPInterface]]:
        """Each member's addresses on this network (IPv4 first), by namespace."""
        return {att.node.ns: list(att.addresses) for att in self._attachments}

    def interface(self, member: Namespace | str) -> str:
        """The name of ``member``'s interface on this network (``eth0``, ``eth1``, ...)."""
        return self._attachment(member).ifname

    @property
    def is_up(self) -> bool:
        """False between ``down()`` and ``up()``."""
        return self._is_up

    @property
    def impairments(self) -> list[Impairment]:
        """The impairments not yet reverted, oldest first: the last one is in force."""
        return self._shaper.impairments

    def impair(
        self,
        *,
        rate: str | int | None = None,
        delay: str | float | None = None,
        jitter: str | float | None = None,
        loss: float | None = None,
        duplicate: float | None = None,
        corrupt: float | None = None,
        reorder: float | None = None,
    ) -> Impairment:
        """Shape the traffic in both directions; a context manager, or reverted at teardown.

        ``rate`` like "8mbit" or "512kbit" (bit units or bits per second;
        frames counted whole), ``delay``/``jitter`` like "40ms" (one way, per
        direction), and fractions 0..1 of packets: ``loss`` dropped
        silently, ``duplicate`` delivered twice, ``corrupt`` with one bit
        flipped, ``reorder`` sent without the delay (so they overtake; it
        needs ``delay``).  Rate uses tbf, loss and duplicate nftables rules,
        delay, jitter, corrupt and reorder netem: on a kernel without
        ``sch_netem`` those raise ``FeatureUnavailable`` (a skip under
        pytest).  Invalid values raise ``ValueError`` before anything
        changes.  A new impairment replaces the current one until it is
        reverted.
        """
        self._topology._check_open()
        return self._shaper.impair(
            rate=rate, delay=delay, jitter=jitter, loss=loss, duplicate=duplicate, corrupt=corrupt, reorder=reorder
        )

    def _attachment(self, member: Namespace | str) -> _Attachment:
        node = self._topology._node(member)
        for att in self._attachments:
            if att.node is node:
                return att
        raise ValueError(f"namespace {node.ns.name!r} is not attached to {self._what}")

    def _impair_points(self) -> Sequence[Point]:
        raise NotImplementedError

    def __repr__(self) -> str:
        state = "" if self._is_up else ", down"
        return f"<{self._what} {self.subnet}{f' {self.subnet6}' if self.subnet6 else ''}{state}>"


class Link(_Network):
    """A veth between two namespaces of a topology (made by ``Topology.link``).

    ``ends`` are the two ``(namespace, interface)`` pairs, ``subnet`` and
    ``subnet6`` its networks, ``addresses`` each end's addresses.
    """

    @property
    def ends(self) -> tuple[tuple[Namespace, str], tuple[Namespace, str]]:
        """``((a, "ethN"), (b, "ethM"))`` in the order given to ``link``."""
        a, b = self._attachments
        return (a.node.ns, a.ifname), (b.node.ns, b.ifname)

    @property
    def members(self) -> list[Namespace]:
        return [att.node.ns for att in self._attachments]

    @property
    def mtu(self) -> int:
        """The MTU of the link (read from its first end)."""
        att = self._attachments[0]
        return att.node.ns.mtu(att.ifname)

    def set_mtu(self, mtu: int) -> None:
        """Change the MTU of both ends (68..65535; at least 1280 where the link carries IPv6)."""
        self._topology._check_mtu(mtu)
        for att in self._attachments:
            handle_of(att.node.ns).execute(
                [_rtnl.set_link(att.index, mtu=mtu, doing=f"setting MTU {mtu} on {_where(att)}")]
            )
        self._shaper.refresh()  # a rate limit's burst must hold a full frame of the new size

    def down(self) -> None:
        """Pull the cable: both ends go administratively down, traffic stops.

        The kernel drops the routes through an interface that goes down;
        ``up()`` puts back the static routes this removed (``autoroute``'s
        and ``add_route``'s; multipath routes are not restored).
        """
        self._topology._check_open()
        if not self._is_up:
            return
        self._saved_routes = [(att, routes.through(att.node.ns, att.index)) for att in self._attachments]
        for att in self._attachments:
            handle_of(att.node.ns).execute([_rtnl.set_link(att.index, up=False, doing=f"taking {_where(att)} down")])
        self._is_up = False

    def up(self) -> None:
        """Plug the cable back: both ends up, ready for their first packet, routes restored."""
        self._topology._check_open()
        for att in self._attachments:
            handle_of(att.node.ns).execute([_rtnl.set_link(att.index, up=True, doing=f"bringing {_where(att)} up")])
        wait_ready([(att.node.ns, att.index, att.addresses) for att in self._attachments], self._what)
        for att, saved in self._saved_routes:
            handle_of(att.node.ns).execute([routes.restore(route, att.index, _where(att)) for route in saved])
        self._saved_routes = []
        self._is_up = True

    def _impair_points(self) -> Sequence[Point]:
        return [(att.node.ns, att.ifname, ALL_ROLES) for att in self._attachments]


class _Ends:
    """The owner of a link made outside a topology: its two namespaces, open while both are."""

    def __init__(self, nodes: list[_Node], ipv6: bool) -> None:
        self._nodes = nodes
        self._ipv6 = ipv6

    def _check_open(self) -> None:
        for node in self._nodes:
            handle_of(node.ns).check_open()

    def _check_mtu(self, mtu: object) -> int:
        return check_mtu(mtu, self._ipv6, "this link was made with IPv6 (ipv6=False allows smaller MTUs)")

    def _node(self, member: object) -> _Node:
        for node in self._nodes:
            if member is node.ns or (isinstance(member, str) and member == node.ns.name):
                return node
        names = " and ".join(repr(node.ns.name) for node in self._nodes)
        raise ValueError(f"{member!r} is not an end of this link (its ends are {names})")


def link_between(
    ends: Sequence[tuple[Namespace, str, int, list[IPInterface]]],
    *,
    subnet: ipaddress.IPv4Network,
    subnet6: ipaddress.IPv6Network | None,
    ipv6: bool,
    offloads: bool,
) -> Link:
    """The ``Link`` of a veth made outside a topology: ``(namespace, interface, ifindex, addresses)`` per end."""
    owner = _Ends([_Node(ns, router=False) for ns, _, _, _ in ends], ipv6)
    (a, _, _, _), (b, _, _, _) = ends
    link = Link(owner, subnet, subnet6, f"link {a.name}-{b.name}", offloads=offloads)
    for node, (_, ifname, index, addresses) in zip(owner._nodes, ends, strict=True):
        att = _Attachment(node, link, ifname, index, list(addresses))
        node.attachments.append(att)
        link._attachments.append(att)
    return link


class Segment(_Network):
    """A Linux bridge joining several namespaces (made by ``Topology.segment``).

    The bridge lives in a namespace of its own (``namespace``, device
    ``bridge`` = "br0"), STP off and no forwarding delay.  ``members`` are
    the attached namespaces in address order.
    """

    def __init__(
        self,
        topology: _Owner,
        subnet: ipaddress.IPv4Network,
        subnet6: ipaddress.IPv6Network | None,
        what: str,
        bridge: Bridge,
        *,
        offloads: bool = False,
    ) -> None:
        super().__init__(topology, subnet, subnet6, what, offloads=offloads)
        #: The namespace that holds the bridge and its ports.
        self.namespace = bridge.ns
        #: The bridge device's name inside ``namespace``.
        self.bridge = bridge.name
        self._bridge = bridge

    @property
    def _ports(self) -> list[tuple[str, int]]:
        """(name, ifindex) of the bridge's ports, in member order."""
        return list(self._bridge.ports.items())

    @property
    def members(self) -> list[Namespace]:
        """The attached namespaces, in the order they got addresses."""
        return [att.node.ns for att in self._attachments]

    def port(self, member: Namespace | str) -> str:
        """The name of the bridge port (in ``namespace``) that ``member`` is plugged into."""
        att = self._attachment(member)
        return self._ports[self._attachments.index(att)][0]

    @property
    def mtu(self) -> int:
        """The MTU of the segment (read from its bridge)."""
        return self.namespace.mtu(self.bridge)

    def set_mtu(self, mtu: int) -> None:
        """Change the MTU of the bridge, its ports and every member's interface."""
        self._topology._check_mtu(mtu)
        self._bridge.set_mtu(mtu, self._what)
        for att in self._attachments:
            handle_of(att.node.ns).execute(
                [_rtnl.set_link(att.index, mtu=mtu, doing=f"setting MTU {mtu} on {_where(att)}")]
            )
        self._shaper.refresh()  # a rate limit's burst must hold a full frame of the new size

    def down(self, member: Namespace | str | None = None) -> None:
        """Unplug every member (or only ``member``) from the bridge.

        The bridge ports go down, so the members' interfaces lose carrier
        and stay up with their routes, as with a pulled cable.
        """
        self._topology._check_open()
        ports = self._ports if member is None else [self._ports[self._attachments.index(self._attachment(member))]]
        handle_of(self.namespace).execute(
            [_rtnl.set_link(i, up=False, doing=f"unplugging {name} from {self._what}") for name, i in ports]
        )
        if member is None:
            self._is_up = False

    def up(self, member: Namespace | str | None = None) -> None:
        """Plug every member (or only ``member``) back in; returns when the first packet gets through."""
        self._topology._check_open()
        pairs = list(zip(self._ports, self._attachments, strict=True))
        if member is not None:
            att = self._attachment(member)
            pairs = [p for p in pairs if p[1] is att]
        handle_of(self.namespace).execute(
            [_rtnl.set_link(i, up=True, doing=f"plugging {name} into {self._what}") for (name, i), _ in pairs]
        )
        ends: list[tuple[Namespace, int, Sequence[IPInterface]]] = [(self.namespace, i, []) for (_, i), _ in pairs]
        ends += [(att.node.ns, att.index, att.addresses) for _, att in pairs]
        wait_ready(ends, self._what)
        if member is None:
            self._is_up = True

    def capture(self, **kwargs: Any) -> Capture:
        """``Namespace.capture`` on the bridge: every frame that crosses the segment, once.

        The bridge device is promiscuous, so it sees frames between members too.
        """
        return self.namespace.capture(self.bridge, **kwargs)

    def sniff(self, **kwargs: Any) -> PacketList:
        """``Namespace.sniff`` on the bridge (blocking)."""
        return self.namespace.sniff(self.bridge, **kwargs)

    def _impair_points(self) -> Sequence[Point]:
        # Every frame enters the bridge through one port and leaves through another:
        # loss on port ingress and delay on port egress act once per direction.  The
        # rate also shapes what each member sends, on its own interface, where TCP
        # gets the back-pressure of a real NIC instead of drops at the bridge; and
        # copies are made there, by the sender's IP stack (a port has none).
        ports: list[Point] = [(self.namespace, name, PORT_ROLES) for name, _ in self._ports]
        return ports + [(att.node.ns, att.ifname, MEMBER_ROLES) for att in self._attachments]


def _where(att: _Attachment) -> str:
    return f"{att.node.ns.name}:{att.ifname}"
