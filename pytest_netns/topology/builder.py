"""``Topology``: namespaces joined by veth links and bridges, with routes, NAT and names.

A ``Topology`` owns every namespace it makes and tears all of them down
together (``close()``, or the end of its ``with`` block).  It works without
pytest; the ``netns_topology`` fixture is the function-scoped one, and
``netns_bridge``/``netns_nat`` are recipes on top of it.

    with Topology() as net:
        client, r1, server = net.add("client"), net.add("r1", router=True), net.add("server")
        net.link(client, r1)                  # 10.0.0.0/24 + fd00::/64, eth0 on both
        uplink = net.link(r1, server, mtu=1400)   # 10.0.1.0/24 + fd00:0:0:1::/64
        net.autoroute()                       # static routes along shortest paths
        client.run(["curl", "http://server:8080/"])   # names resolve in run/popen

Addresses: ``link(a, b)`` gives ``a`` the first host address of the subnet
and ``b`` the second; ``bridge(members)`` gives them out in member order.
Fresh subnets are /24s of 10.0.0.0/8 and /64s of fd00::/48 (the n-th link
or segment gets fd00:0:0:n::/64), skipping any subnet already used in the
topology.  Interfaces are ``eth0``, ``eth1``, ... in each namespace, in the
order it was attached.

Only connected routes exist until ``autoroute()`` (or ``ns.add_route``).
``autoroute()`` computes, for every namespace, the first hop of a shortest
path (in hops, through routers only) to every subnet and installs static
routes for both families; subnets that share a first hop are merged into
the fewest prefixes that cover exactly them (as ``ipaddress.collapse_addresses``
does: no address outside those subnets is covered), which keeps a 100-router
chain at a dozen routes per namespace instead of 200.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._kernel import netns as _kernel
from .._kernel import rtnl as _rtnl
from .._kernel import validate as _validate
from .._kernel.validate import IPInterface, IPNetwork
from .._net.hosts import HostedNamespace, HostsFile, release
from .._net.impair import ALL_ROLES, RATE_ONLY, Impairment, Point, Shaper
from .._net.veth import veth, wait_ready
from ..errors import KernelError, NetnsError
from ..namespace import Namespace

__all__ = ["Link", "Segment", "Topology"]

IPV4_POOL = ipaddress.IPv4Network("10.0.0.0/8")
IPV6_PREFIX = ipaddress.IPv6Network("fd00::/48")

#: Requests per netlink write: one write of thousands of requests exceeds the
#: socket's send buffer (EMSGSIZE), and its acks would overflow the receive buffer.
CHUNK = 128

ROUTER_SYSCTLS = (
    ("/proc/sys/net/ipv4/ip_forward", "1"),
    ("/proc/sys/net/ipv6/conf/all/forwarding", "1"),
    ("/proc/sys/net/ipv6/conf/default/forwarding", "1"),
)
#: Every node: no reverse-path filter, whatever the host has (a new namespace copies
#: the host's IPv4 conf/all; with strict filtering, equal-cost paths chosen
#: differently in each direction would drop packets).  No duplicate address
#: detection for link-local addresses either: a router sends the neighbour
#: solicitation for a packet it forwards from its link-local address, and until
#: DAD has finished (1-2 s) it has none, so the first forwarded IPv6 packet
#: waited 2 s for its next hop (global addresses are added without DAD anyway).
NODE_SYSCTLS = (
    ("/proc/sys/net/ipv4/conf/all/rp_filter", "0"),
    ("/proc/sys/net/ipv4/conf/default/rp_filter", "0"),
    ("/proc/sys/net/ipv6/conf/all/accept_dad", "0"),
    ("/proc/sys/net/ipv6/conf/default/accept_dad", "0"),
)
#: The bridge's namespace: no IPv6 on the ports (no link-local addresses, no
#: router or neighbour solicitations of its own on the segment), and bridged
#: traffic does not pass the IP/ARP netfilter hooks there (this kernel has
#: br_netfilter built in and on by default in every namespace; others do not;
#: it is set explicitly so a segment behaves the same everywhere).
BRIDGE_SYSCTLS = (
    ("/proc/sys/net/ipv6/conf/all/disable_ipv6", "1"),
    ("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1"),
    ("/proc/sys/net/bridge/bridge-nf-call-iptables", "0"),
    ("/proc/sys/net/bridge/bridge-nf-call-ip6tables", "0"),
    ("/proc/sys/net/bridge/bridge-nf-call-arptables", "0"),
)

IFF_PROMISC = 0x100
IFLA_BR_MCAST_SNOOPING = 23
IFLA_BR_NF_CALL_IPTABLES, IFLA_BR_NF_CALL_IP6TABLES, IFLA_BR_NF_CALL_ARPTABLES = 36, 37, 38
RTPROT_KERNEL, RTPROT_RA = 2, 9
RTA_PRIORITY, RTA_TABLE, RTA_PREF = 6, 15, 20
BRIDGE_DEVICE = "br0"

# -- the pieces ------------------------------------------------------------------


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


class _Network:
    """What links and segments share: subnets, addresses, impairments."""

    def __init__(
        self, topology: Topology, subnet: ipaddress.IPv4Network, subnet6: ipaddress.IPv6Network | None, what: str
    ) -> None:
        self._topology = topology
        #: The IPv4 subnet.
        self.subnet = subnet
        #: The IPv6 /64 (None in a topology made with ``ipv6=False``).
        self.subnet6 = subnet6
        self._attachments: list[_Attachment] = []
        self._spans = [_span(n) for n in (subnet, subnet6) if n is not None]
        self._is_up = True
        self._saved_routes: list[tuple[_Attachment, list[_SavedRoute]]] = []  # while a link is down
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

    def impair(
        self,
        *,
        rate: str | int | None = None,
        delay: str | float | None = None,
        jitter: str | float | None = None,
        loss: float | None = None,
    ) -> Impairment:
        """Shape the traffic in both directions; a context manager, or reverted at teardown.

        ``rate`` like "8mbit" or "512kbit" (tc units; frames counted whole),
        ``delay``/``jitter`` like "40ms" (one way, per direction), ``loss`` a
        fraction 0..1 of packets dropped silently.  Rate uses tbf, loss an
        nftables ingress rule, delay and jitter netem: on a kernel without
        ``sch_netem`` they raise ``FeatureUnavailable`` (a skip under pytest).
        Invalid values raise ``ValueError`` before anything changes.  A new
        impairment replaces the current one until it is reverted.
        """
        self._topology._check_open()
        return self._shaper.impair(rate=rate, delay=delay, jitter=jitter, loss=loss)

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
            att.node.ns.execute([_rtnl.set_link(att.index, mtu=mtu, doing=f"setting MTU {mtu} on {_where(att)}")])
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
        self._saved_routes = [(att, _routes_through(att.node.ns, att.index)) for att in self._attachments]
        for att in self._attachments:
            att.node.ns.execute([_rtnl.set_link(att.index, up=False, doing=f"taking {_where(att)} down")])
        self._is_up = False

    def up(self) -> None:
        """Plug the cable back: both ends up, ready for their first packet, routes restored."""
        self._topology._check_open()
        for att in self._attachments:
            att.node.ns.execute([_rtnl.set_link(att.index, up=True, doing=f"bringing {_where(att)} up")])
        wait_ready([(att.node.ns, att.index, att.addresses) for att in self._attachments], self._what)
        for att, routes in self._saved_routes:
            _execute(att.node.ns, [_restore_route(route, att) for route in routes])
        self._saved_routes = []
        self._is_up = True

    def _impair_points(self) -> Sequence[Point]:
        return [(att.node.ns, att.ifname, ALL_ROLES) for att in self._attachments]


class Segment(_Network):
    """A Linux bridge joining several namespaces (made by ``Topology.bridge``).

    The bridge lives in a namespace of its own (``namespace``, device
    ``bridge`` = "br0"), STP off and no forwarding delay.  ``members`` are
    the attached namespaces in address order.
    """

    def __init__(
        self,
        topology: Topology,
        subnet: ipaddress.IPv4Network,
        subnet6: ipaddress.IPv6Network | None,
        what: str,
        namespace: Namespace,
    ) -> None:
        super().__init__(topology, subnet, subnet6, what)
        #: The namespace that holds the bridge and its ports.
        self.namespace = namespace
        #: The bridge device's name inside ``namespace``.
        self.bridge = BRIDGE_DEVICE
        self._bridge_index = 0
        self._ports: list[tuple[str, int]] = []

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
        doing = f"setting MTU {mtu} on the ports of {self._what}"
        requests = [_rtnl.set_link(index, mtu=mtu, doing=doing) for _, index in self._ports]
        requests.append(_rtnl.set_link(self._bridge_index, mtu=mtu, doing=f"setting MTU {mtu} on {self._what}"))
        _execute(self.namespace, requests)
        for att in self._attachments:
            att.node.ns.execute([_rtnl.set_link(att.index, mtu=mtu, doing=f"setting MTU {mtu} on {_where(att)}")])
        self._shaper.refresh()  # a rate limit's burst must hold a full frame of the new size

    def down(self, member: Namespace | str | None = None) -> None:
        """Unplug every member (or only ``member``) from the bridge.

        The bridge ports go down, so the members' interfaces lose carrier
        and stay up with their routes, as with a pulled cable.
        """
        self._topology._check_open()
        ports = self._ports if member is None else [self._ports[self._attachments.index(self._attachment(member))]]
        _execute(
            self.namespace,
            [_rtnl.set_link(i, up=False, doing=f"unplugging {name} from {self._what}") for name, i in ports],
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
        _execute(
            self.namespace,
            [_rtnl.set_link(i, up=True, doing=f"plugging {name} into {self._what}") for (name, i), _ in pairs],
        )
        ends: list[tuple[Namespace, int, Sequence[IPInterface]]] = [(self.namespace, i, []) for (_, i), _ in pairs]
        ends += [(att.node.ns, att.index, att.addresses) for _, att in pairs]
        wait_ready(ends, self._what)
        if member is None:
            self._is_up = True

    def capture(self, **kwargs: Any) -> Any:
        """``Namespace.capture`` on the bridge: every frame that crosses the segment, once.

        The bridge device is promiscuous, so it sees frames between members too.
        """
        return self.namespace.capture(self.bridge, **kwargs)

    def sniff(self, **kwargs: Any) -> Any:
        """``Namespace.sniff`` on the bridge (blocking)."""
        return self.namespace.sniff(self.bridge, **kwargs)

    def _impair_points(self) -> Sequence[Point]:
        # Every frame enters the bridge through one port and leaves through another:
        # loss on port ingress and delay on port egress act once per direction.  The
        # rate also shapes what each member sends, on its own interface, where TCP
        # gets the back-pressure of a real NIC instead of drops at the bridge.
        ports: list[Point] = [(self.namespace, name, ALL_ROLES) for name, _ in self._ports]
        return ports + [(att.node.ns, att.ifname, RATE_ONLY) for att in self._attachments]


# -- the builder -----------------------------------------------------------------


class Topology:
    """A set of namespaces joined by links and bridges, torn down together.

    ``Topology(ipv6=True, kill_grace=1.0)``; use it as a context manager or
    call ``close()``.  ``add`` namespaces (routers forward IPv4 and IPv6),
    join them with ``link`` (a veth) or ``bridge`` (a Linux bridge),
    ``autoroute()`` for static routes, ``nat()`` for masquerading.
    ``topology["name"]`` is the namespace of that name.  Processes started
    with ``run``/``popen`` in its namespaces resolve every namespace's name
    to its first addresses through a private hosts file.
    """

    def __init__(self, *, ipv6: bool = True, kill_grace: float = 1.0) -> None:
        if not isinstance(ipv6, bool):
            raise ValueError(f"ipv6 must be True or False, got {ipv6!r}")
        #: Whether links and segments get IPv6 addresses.
        self.ipv6 = ipv6
        self.kill_grace = _validate.duration(kill_grace, "kill_grace")
        self._nodes: dict[str, _Node] = {}
        self._by_ns: dict[int, _Node] = {}
        self._owned: list[Namespace] = []  # every namespace, bridges included, in creation order
        self._networks: list[_Network] = []
        self._v4_used: list[tuple[int, int]] = []  # [first, last + 1] of every IPv4 subnet in use
        self._overlapping = False  # whether two subnets overlap (only explicit ones can)
        self._next_v4 = 0
        self._next_v6 = 0
        self._auto_routes: dict[int, set[tuple[IPNetwork, Any]]] = {}
        self._hosts = HostsFile()
        self._closed = False
        #: Called with each namespace the topology makes (the plugin records them for the test).
        self._namespace_created: Callable[[Namespace], None] | None = None

    # -- container protocol -----------------------------------------------------

    def __getitem__(self, name: str) -> Namespace:
        try:
            return self._nodes[name].ns
        except KeyError:
            raise KeyError(f"no namespace {name!r} in this topology (it has {self._names()})") from None

    def __contains__(self, item: object) -> bool:
        if isinstance(item, Namespace):
            return id(item) in self._by_ns
        return item in self._nodes

    def __iter__(self) -> Iterator[Namespace]:
        return (node.ns for node in self._nodes.values())

    def __len__(self) -> int:
        return len(self._nodes)

    @property
    def namespaces(self) -> list[Namespace]:
        """The namespaces made with ``add``, in order (bridges' namespaces are not among them)."""
        return [node.ns for node in self._nodes.values()]

    @property
    def links(self) -> list[Link]:
        return [n for n in self._networks if isinstance(n, Link)]

    @property
    def segments(self) -> list[Segment]:
        return [n for n in self._networks if isinstance(n, Segment)]

    @property
    def closed(self) -> bool:
        return self._closed

    def hosts(self) -> dict[str, list[ipaddress.IPv4Address | ipaddress.IPv6Address]]:
        """What the names resolve to: each namespace's first IPv4 and first IPv6 address."""
        entries = {}
        for name, node in self._nodes.items():
            if node.attachments:
                first = node.attachments[0]
                entries[name] = [a.ip for a in (first.address(4), first.address(6)) if a is not None]
        return entries

    def __repr__(self) -> str:
        state = (
            "closed"
            if self._closed
            else (f"{len(self._nodes)} namespaces, {len(self.links)} links, {len(self.segments)} segments")
        )
        return f"<Topology {state}>"

    def describe(self) -> str:
        """The topology as text: namespaces, their interfaces, addresses, MTUs and links."""
        lines = []
        for name, node in self._nodes.items():
            role = " (router)" if node.router else ""
            lines.append(f"{name}{role}")
            for att in node.attachments:
                addrs = " ".join(map(str, att.addresses))
                lines.append(f"  {att.ifname}: {addrs}  [{att.network._what}]")
        for net in self._networks:
            ends = ", ".join(f"{a.node.ns.name}:{a.ifname}" for a in net._attachments)
            lines.append(
                f"{net._what}: {net.subnet}{f' {net.subnet6}' if net.subnet6 else ''} -- {ends}"
                + ("" if net.is_up else " (down)")
            )
        return "\n".join(lines)

    # -- building ------------------------------------------------------------------

    def add(self, name: str, *, router: bool = False) -> Namespace:
        """A new namespace called ``name`` (a host name: letters, digits, '-', '_', '.').

        ``router=True`` turns IPv4 and IPv6 forwarding on.  Duplicate names
        raise ``ValueError``.
        """
        self._check_open()
        _validate.check_name(name, what="namespace name", rule=_validate.HOST, hosts_file=True)
        if name in self._nodes or any(ns.name == name for ns in self._owned):
            raise ValueError(f"namespace name {name!r} is already used in this topology")
        if not isinstance(router, bool):
            raise ValueError(f"router must be True or False, got {router!r}")
        ns = self._new_namespace(name)
        _settle_sysctls(ns, NODE_SYSCTLS + (ROUTER_SYSCTLS if router else ()))
        node = _Node(ns, router)
        self._nodes[name] = node
        self._by_ns[id(ns)] = node
        return ns

    def link(self, a: Namespace | str, b: Namespace | str, *, subnet: str | None = None, mtu: int = 1500) -> Link:
        """A veth between ``a`` and ``b``, up and ready for its first packet.

        ``a`` gets the first host address of ``subnet`` (default: a fresh
        /24) and of a fresh IPv6 /64, ``b`` the second.  A subnet that is
        malformed or has fewer than two host addresses raises ``ValueError``.
        """
        self._check_open()
        node_a, node_b = self._node(a), self._node(b)
        if node_a is node_b:
            raise ValueError(f"cannot link namespace {node_a.ns.name!r} to itself")
        mtu = self._check_mtu(mtu)
        net4 = self._subnet(subnet, 2)
        net6 = self._subnet6()
        v4 = _validate.hosts(net4, 2, "subnet")
        v6 = _validate.hosts(net6, 2) if net6 is not None else []
        what = f"link {node_a.ns.name}-{node_b.ns.name}"
        link = Link(self, net4, net6, what)
        name_a, name_b = _next_ifname(node_a), _next_ifname(node_b)
        addrs_a, addrs_b = [v4[0], *v6[:1]], [v4[1], *v6[1:2]]
        index_a, index_b = veth(
            node_a.ns,
            node_b.ns,
            name_a=name_a,
            name_b=name_b,
            mtu=mtu,
            addresses_a=addrs_a,
            addresses_b=addrs_b,
            ipv6=self.ipv6,
        )
        self._commit(link, net4, [(node_a, name_a, index_a, addrs_a), (node_b, name_b, index_b, addrs_b)])
        return link

    def bridge(self, members: Sequence[Namespace | str], *, subnet: str | None = None, mtu: int = 1500) -> Segment:
        """A Linux bridge joining ``members``, who get host addresses in order; ready for the first packet.

        The bridge lives in a namespace of its own with STP off and no
        forwarding delay.  ``subnet`` defaults to a fresh /24; one too small
        for the members, or malformed, raises ``ValueError``.
        """
        self._check_open()
        if isinstance(members, (str, Namespace)) or not isinstance(members, Sequence) or not members:
            raise ValueError(f"members must be a non-empty list of namespaces of the topology, got {members!r}")
        nodes = [self._node(m) for m in members]
        seen: set[int] = set()
        for node in nodes:
            if id(node) in seen:
                raise ValueError(f"namespace {node.ns.name!r} is given twice in members")
            seen.add(id(node))
        mtu = self._check_mtu(mtu)
        net4 = self._subnet(subnet, len(nodes))
        net6 = self._subnet6()
        v4 = _validate.hosts(net4, len(nodes), "subnet")
        v6 = _validate.hosts(net6, len(nodes)) if net6 is not None else []

        number = 1
        while any(ns.name == f"bridge{number}" for ns in self._owned) or f"bridge{number}" in self._nodes:
            number += 1
        bridge_ns = self._new_namespace(f"bridge{number}")
        _settle_sysctls(bridge_ns, BRIDGE_SYSCTLS)
        segment = Segment(self, net4, net6, f"segment bridge{number}", bridge_ns)

        bridge_index = bridge_ns.allocate_index()
        requests = [_new_bridge(bridge_index, mtu)]
        ports: list[tuple[str, int]] = []
        plan = []
        for position, node in enumerate(nodes):
            port_name = _port_name(node.ns.name, position, {p for p, _ in ports})
            port_index = bridge_ns.allocate_index()
            member_index = node.ns.allocate_index()
            if member_index == port_index:  # equal indexes on both ends make the link slow to come up
                member_index = node.ns.allocate_index()
            ifname = _next_ifname(node)
            create = _rtnl.new_veth(
                port_name, ifname, node.ns._nsfd, index=port_index, peer_index=member_index, mtu=mtu, up=True
            )
            create.body += _rtnl.attr_u32(_rtnl.IFLA_MASTER, bridge_index)
            create.doing = f"plugging {node.ns.name}:{ifname} into {segment._what} (port {port_name})"
            requests.append(create)
            ports.append((port_name, port_index))
            addresses = [v4[position], *v6[position : position + 1]]
            plan.append((node, ifname, member_index, addresses))
        _execute(bridge_ns, requests)
        segment._bridge_index = bridge_index
        segment._ports = ports
        for node, ifname, index, addresses in plan:
            where = f"{node.ns.name}:{ifname}"
            member_requests = [] if self.ipv6 else [_rtnl.no_ipv6_link_local(index)]
            member_requests.append(_rtnl.set_link(index, up=True, doing=f"bringing {where} up"))
            member_requests += [_rtnl.new_address(index, x, f"adding {x} to {where}") for x in addresses]
            node.ns.execute(member_requests)
        ends: list[tuple[Namespace, int, Sequence[IPInterface]]] = [(bridge_ns, i, []) for _, i in ports]
        ends += [(node.ns, index, addresses) for node, _, index, addresses in plan]
        wait_ready(ends, segment._what)
        self._commit(segment, net4, plan)
        return segment

    def autoroute(self) -> None:
        """Install static routes so every namespace reaches every subnet (IPv4 and IPv6).

        Each namespace routes each subnet it is not attached to via the first
        hop of a shortest path (fewest hops, through routers only; ties go to
        the link made first).  Links and segments that are down are avoided.
        Calling it again after changes replaces the routes it installed.
        """
        self._check_open()
        for node in self._nodes.values():
            wanted = self._routes_for(node)
            installed = self._auto_routes.get(id(node), set())
            stale = installed - wanted
            if stale:
                removals = []
                for net, via in sorted(stale, key=_route_key):
                    body = _rtnl.new_route(net, via=via).body
                    removals.append(_rtnl.Request(_rtnl.RTM_DELROUTE, 0, body, f"deleting route to {net} via {via}"))
                for start in range(0, len(removals), CHUNK):
                    node.ns.rtnl.execute(removals[start : start + CHUNK], ignore=(errno.ESRCH, errno.ENOENT))
            additions = [
                _rtnl.new_route(
                    net, via=via, replace=True, doing=f"adding route to {net} via {via} in {node.ns.name!r}"
                )
                for net, via in sorted(wanted - installed, key=_route_key)
            ]
            _execute(node.ns, additions)
            self._auto_routes[id(node)] = wanted

    def nat(self, router: Namespace | str, *, outside: Link | Segment) -> None:
        """MASQUERADE everything that leaves ``router`` through ``outside`` (IPv4 and IPv6).

        Connections from behind the router then reach the outside with the
        router's address on ``outside`` as their source.  Through nftables
        over netlink; no binary needed.
        """
        self._check_open()
        node = self._node(router)
        if not isinstance(outside, _Network) or outside._topology is not self:
            raise ValueError(f"outside must be a Link or Segment of this topology, got {outside!r}")
        ifname = outside.interface(node.ns)
        from .._kernel import nft as _nft

        with _kernel.entered(node.ns._nsfd):
            _nft.masquerade(oifname=ifname)

    # -- teardown ------------------------------------------------------------------

    def close(self) -> None:
        """Tear everything down: processes stopped, every namespace released (last made, first).

        Raises ``TeardownError`` listing every step that failed.  Calling it
        again does nothing.
        """
        if self._closed:
            return
        self._closed = True
        release(self._owned, self._hosts, "topology")

    def __enter__(self) -> Topology:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise NetnsError("this topology is already torn down")

    def _new_namespace(self, name: str) -> Namespace:
        ns = HostedNamespace(name, kill_grace=self.kill_grace)
        ns._hosts = self._hosts  # processes started with run/popen see the topology's hosts file
        self._owned.append(ns)
        if self._namespace_created is not None:
            self._namespace_created(ns)
        return ns

    def _node(self, member: object) -> _Node:
        if isinstance(member, Namespace):
            node = self._by_ns.get(id(member))
            if node is None:
                raise ValueError(f"namespace {member.name!r} is not part of this topology (make it with add())")
            return node
        if isinstance(member, str):
            if member not in self._nodes:
                raise ValueError(f"no namespace {member!r} in this topology (it has {self._names()})")
            return self._nodes[member]
        raise ValueError(f"expected a namespace of this topology or its name, got {member!r}")

    def _names(self) -> str:
        return ", ".join(self._nodes) or "none"

    def _check_mtu(self, mtu: object) -> int:
        value = _validate.mtu(mtu, "mtu")
        if self.ipv6 and value < _validate.IPV6_MIN_MTU:
            raise ValueError(
                f"mtu {value} is below {_validate.IPV6_MIN_MTU}, the minimum for IPv6 (the kernel would remove "
                "IPv6 from the interfaces); use Topology(ipv6=False) for smaller MTUs"
            )
        return value

    def _subnet(self, subnet: object, members: int) -> ipaddress.IPv4Network:
        if subnet is None:
            return self._fresh_subnet()
        net = _validate.network(subnet, "subnet")
        if net.version != 4:
            raise ValueError(f"subnet {subnet!r} is not an IPv4 network (each link gets an IPv6 /64 of its own)")
        _validate.hosts(net, members, "subnet")
        return net  # type: ignore[return-value]

    def _fresh_subnet(self) -> ipaddress.IPv4Network:
        base = int(IPV4_POOL.network_address)
        while self._next_v4 < IPV4_POOL.num_addresses // 256:
            low = base + self._next_v4 * 256
            self._next_v4 += 1
            if not any(low < high and used_low < low + 256 for used_low, high in self._v4_used):
                return ipaddress.IPv4Network((low, 24))
        raise ValueError(f"no free /24 left in {IPV4_POOL}: pass subnet= explicitly")

    def _subnet6(self) -> ipaddress.IPv6Network | None:
        if not self.ipv6:
            return None
        if self._next_v6 >= 1 << 16:
            raise ValueError(f"no free /64 left in {IPV6_PREFIX}")
        net = ipaddress.IPv6Network((int(IPV6_PREFIX.network_address) + (self._next_v6 << 64), 64))
        self._next_v6 += 1
        return net

    def _commit(
        self,
        network: _Network,
        net4: ipaddress.IPv4Network,
        attached: Sequence[tuple[_Node, str, int, list[IPInterface]]],
    ) -> None:
        """Record a network that now exists in the kernel, and publish the names."""
        _, low, high = _span(net4)
        self._overlapping = self._overlapping or any(low < end and begin < high for begin, end in self._v4_used)
        self._v4_used.append((low, high))
        for node, ifname, index, addresses in attached:
            att = _Attachment(node, network, ifname, index, list(addresses))
            node.attachments.append(att)
            network._attachments.append(att)
            if len(node.attachments) == 1:  # a name resolves to the addresses of its first interface
                self._hosts.add(node.ns.name, att.gateways)
        self._networks.append(network)

    def _routes_for(self, source: _Node) -> set[tuple[IPNetwork, Any]]:
        """The (prefix, gateway) routes ``source`` needs, merged per gateway."""
        attached = {id(att.network) for att in source.attachments}
        first_hop: dict[int, tuple[_Network, _Attachment]] = {}
        seen = {id(source)}
        # Breadth first: neighbours at distance 1, then what routers at distance d reach at d + 1.
        current: list[tuple[_Node, _Attachment | None]] = [(source, None)]
        while current:
            frontier: list[tuple[_Node, _Attachment | None]] = []
            for node, hop in current:
                for att in node.attachments:
                    net = att.network
                    if not net.is_up:
                        continue
                    if hop is not None and id(net) not in attached and id(net) not in first_hop:
                        first_hop[id(net)] = (net, hop)
                    for other in net._attachments:
                        if id(other.node) in seen:
                            continue
                        seen.add(id(other.node))
                        if other.node.router:
                            frontier.append((other.node, hop if hop is not None else other))
            current = frontier
        # Integer ranges, not ipaddress objects: a 100-router chain asks for 20,000 of them.
        connected = [span for att in source.attachments for span in att.network._spans]
        by_hop: dict[int, tuple[_Attachment, list[_Network]]] = {}
        for net, hop in first_hop.values():
            by_hop.setdefault(id(hop), (hop, []))[1].append(net)
        routes = set()
        for hop, nets in by_hop.values():
            for gateway in hop.gateways:
                cls = ipaddress.IPv4Network if gateway.version == 4 else ipaddress.IPv6Network
                spans = []
                for net in nets:
                    for version, low, high in net._spans:
                        # A subnet that overlaps one source is attached to: the connected route wins.
                        if version == gateway.version and not (
                            self._overlapping
                            and any(v == version and low < end and begin < high for v, begin, end in connected)
                        ):
                            spans.append((low, high))
                for start, prefixlen in _collapse(spans, gateway.max_prefixlen):
                    routes.add((cls((start, prefixlen)), gateway))
        return routes


# -- helpers ---------------------------------------------------------------------


def _span(net: IPNetwork) -> tuple[int, int, int]:
    """(version, first address, last address + 1) of a network, as integers."""
    start = int(net.network_address)
    return net.version, start, start + net.num_addresses


def _collapse(spans: list[tuple[int, int]], bits: int) -> list[tuple[int, int]]:
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


def _next_ifname(node: _Node) -> str:
    return f"eth{len(node.attachments)}"


def _where(att: _Attachment) -> str:
    return f"{att.node.ns.name}:{att.ifname}"


def _port_name(member: str, position: int, taken: set[str]) -> str:
    """The bridge port for a member: named after it where that is a valid, unused interface name."""
    if len(member) < _validate.IFNAMSIZ and member not in taken and member not in ("lo", BRIDGE_DEVICE, ".", ".."):
        return member
    return f"p{position}"


def _new_bridge(index: int, mtu: int) -> _rtnl.Request:
    """A bridge that forwards at once: STP off, no forwarding delay, no multicast snooping.

    Without snooping, IPv6 neighbour solicitations (multicast) reach every
    member whether or not a querier exists.  Bridged traffic skips the IP
    and ARP netfilter hooks (also set per namespace); the bridge is
    promiscuous so that a capture on it sees frames between members.
    """
    data = (
        _rtnl.attr_u32(_rtnl.IFLA_BR_STP_STATE, 0)
        + _rtnl.attr_u32(_rtnl.IFLA_BR_FORWARD_DELAY, 0)
        + _rtnl.attr(IFLA_BR_MCAST_SNOOPING, b"\0")
        + _rtnl.attr(IFLA_BR_NF_CALL_IPTABLES, b"\0")
        + _rtnl.attr(IFLA_BR_NF_CALL_IP6TABLES, b"\0")
        + _rtnl.attr(IFLA_BR_NF_CALL_ARPTABLES, b"\0")
    )
    linkinfo = _rtnl.attr(_rtnl.IFLA_INFO_KIND, b"bridge\0") + _rtnl.attr(_rtnl.IFLA_INFO_DATA, data)
    flags = _rtnl.IFF_UP | IFF_PROMISC
    body = (
        _rtnl.ifinfo(index, flags, flags)
        + _rtnl.attr_str(_rtnl.IFLA_IFNAME, BRIDGE_DEVICE)
        + _rtnl.attr_u32(_rtnl.IFLA_MTU, mtu)
        + _rtnl.attr(_rtnl.IFLA_LINKINFO, linkinfo)
    )
    flags = _rtnl.NLM_F_CREATE | _rtnl.NLM_F_EXCL
    return _rtnl.Request(_rtnl.RTM_NEWLINK, flags, body, f"creating bridge {BRIDGE_DEVICE}")


def _execute(ns: Namespace, requests: list[_rtnl.Request]) -> None:
    for start in range(0, len(requests), CHUNK):
        ns.execute(requests[start : start + CHUNK])


def _settle_sysctls(ns: Namespace, settings: Sequence[tuple[str, str]]) -> None:
    """Write the settings that differ (one namespace switch for all; missing ones are skipped)."""
    with _kernel.entered(ns._nsfd):
        for path, value in settings:
            try:
                with open(path) as handle:
                    if handle.read().strip() == value:
                        continue
            except FileNotFoundError:
                continue  # e.g. no /proc/sys/net/bridge where br_netfilter is not loaded
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
                try:
                    os.write(fd, value.encode())
                finally:
                    os.close(fd)
            except OSError as exc:
                raise KernelError(exc.errno or errno.EIO, f"writing {value} to {path} in {ns.name!r}") from None


def _route_key(route: tuple[IPNetwork, Any]) -> tuple[int, int, int]:
    net, _ = route
    return net.version, int(net.network_address), net.prefixlen


@dataclass(frozen=True)
class _SavedRoute:
    family: int
    dst_len: int
    dst: bytes | None
    gateway: bytes | None
    table: int
    proto: int
    scope: int
    kind: int
    priority: int | None
    pref: int | None


def _routes_through(ns: Namespace, index: int) -> list[_SavedRoute]:
    """The static unicast routes of ``ns`` whose output interface is ``index`` (what going down removes)."""
    saved = []
    body = _rtnl._RTMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0, 0, 0, 0, 0)
    for msg in ns.rtnl.dump(_rtnl.RTM_GETROUTE, body, f"listing routes in {ns.name!r}"):
        if msg.get_attr("RTA_OIF") != index or msg["proto"] in (RTPROT_KERNEL, RTPROT_RA):
            continue
        if msg["type"] != _rtnl.RTN_UNICAST or msg.get_attr("RTA_MULTIPATH") or msg.get_attr("RTA_NH_ID"):
            continue
        family = msg["family"]
        dst, gateway = msg.get_attr("RTA_DST"), msg.get_attr("RTA_GATEWAY")
        saved.append(
            _SavedRoute(
                family,
                msg["dst_len"],
                socket.inet_pton(family, dst) if dst else None,
                socket.inet_pton(family, gateway) if gateway else None,
                msg.get_attr("RTA_TABLE") or msg["table"],
                msg["proto"],
                msg["scope"],
                msg["type"],
                msg.get_attr("RTA_PRIORITY"),
                msg.get_attr("RTA_PREF"),
            )
        )
    return saved


def _restore_route(route: _SavedRoute, att: _Attachment) -> _rtnl.Request:
    table = route.table if route.table < 256 else 252  # RT_TABLE_COMPAT: the real one is in RTA_TABLE
    body = _rtnl._RTMSG.pack(route.family, route.dst_len, 0, 0, table, route.proto, route.scope, route.kind, 0)
    if route.dst is not None:
        body += _rtnl.attr(_rtnl.RTA_DST, route.dst)
    if route.gateway is not None:
        body += _rtnl.attr(_rtnl.RTA_GATEWAY, route.gateway)
    body += _rtnl.attr_u32(_rtnl.RTA_OIF, att.index)
    if route.priority is not None:
        body += _rtnl.attr_u32(RTA_PRIORITY, route.priority)
    body += _rtnl.attr_u32(RTA_TABLE, route.table)
    if route.pref is not None:
        body += _rtnl.attr(RTA_PREF, struct.pack("B", route.pref))
    dst = socket.inet_ntop(route.family, route.dst) if route.dst else "default"
    return _rtnl.Request(
        _rtnl.RTM_NEWROUTE,
        _rtnl.NLM_F_CREATE | _rtnl.NLM_F_REPLACE,
        body,
        f"restoring the route to {dst}/{route.dst_len} on {_where(att)}",
    )
