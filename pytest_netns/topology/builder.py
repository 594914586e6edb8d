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
and ``b`` the second; ``segment(members)`` gives them out in member order.
Fresh subnets are /24s of 10.0.0.0/8 and /64s of fd00::/48 (the n-th link
or segment gets fd00:0:0:n::/64), skipping any subnet already used in the
topology.  Interfaces are ``eth0``, ``eth1``, ... in each namespace, in the
order it was attached.

Only connected routes exist until ``autoroute()`` (or ``ns.add_route``),
which installs the routes ``routing.route_table`` computes: shortest paths
through routers, both families, merged per next hop.
"""

from __future__ import annotations

import errno
import ipaddress
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from .._kernel import rtnl as _rtnl
from .._kernel import validate as _validate
from .._kernel.handle import handle_of
from .._kernel.validate import IPInterface
from .._net import resolver, sysctl
from .._net.bridge import Plug, plug, switch
from .._net.hosts import HostsFile, release
from .._net.veth import veth
from ..errors import NetnsError
from ..namespace import Namespace
from .links import Link, Segment, _Attachment, _Network, _Node, check_mtu
from .routing import Network, Route, route_table, span

if TYPE_CHECKING:
    from .._net.partition import Partition

__all__ = ["Topology"]

IPV4_POOL = ipaddress.IPv4Network("10.0.0.0/8")
IPV6_PREFIX = ipaddress.IPv6Network("fd00::/48")

ROUTER_SYSCTLS = sysctl.IPV4_FORWARDING + sysctl.IPV6_FORWARDING
#: Every node (the reasons are in _net/sysctl.py): with DAD, the first IPv6 packet a
#: router forwards waited 2 s for its next hop.
NODE_SYSCTLS = sysctl.NO_RP_FILTER + sysctl.NO_DAD


class Topology:
    """A set of namespaces joined by links and bridges, torn down together.

    ``Topology(ipv6=True, kill_grace=1.0)``; use it as a context manager or
    call ``close()``.  ``add`` namespaces (routers forward IPv4 and IPv6),
    join them with ``link`` (a veth) or ``segment`` (a Linux bridge),
    ``autoroute()`` for static routes, ``nat()`` for masquerading.
    ``topology["name"]`` is the namespace of that name.  Processes started
    with ``run``/``popen`` in its namespaces resolve every namespace's name
    to its first addresses through a private hosts file.
    """

    def __init__(
        self,
        *,
        ipv6: bool = True,
        kill_grace: float = 1.0,
        _namespace_created: Callable[[Namespace], None] | None = None,
    ) -> None:
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
        self._next_v4 = 0
        self._next_v6 = 0
        self._auto_routes: dict[str, set[Route]] = {}  # by namespace name
        self._hosts = HostsFile()
        self._closed = False
        #: Called with each namespace the topology makes (the plugin records them for the test).
        self._namespace_created = _namespace_created

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
        sysctl.settle(ns, NODE_SYSCTLS + (ROUTER_SYSCTLS if router else ()))
        node = _Node(ns, router)
        self._nodes[name] = node
        self._by_ns[id(ns)] = node
        return ns

    def link(
        self,
        a: Namespace | str,
        b: Namespace | str,
        *,
        subnet: str | ipaddress.IPv4Network | None = None,
        mtu: int = 1500,
        offloads: bool = False,
    ) -> Link:
        """A veth between ``a`` and ``b``, up and ready for its first packet.

        ``a`` gets the first host address of ``subnet`` (default: a fresh
        /24) and of a fresh IPv6 /64, ``b`` the second.  A subnet that is
        malformed or has fewer than two host addresses raises ``ValueError``.
        Segmentation and receive offloads are off, so every frame fits the
        MTU as on a wire; ``offloads=True`` keeps them (throughput tests).
        """
        self._check_open()
        node_a, node_b = self._node(a), self._node(b)
        if node_a is node_b:
            raise ValueError(f"cannot link namespace {node_a.ns.name!r} to itself")
        mtu = self._check_mtu(mtu)
        _check_offloads(offloads)
        net4 = self._subnet(subnet, 2)
        net6 = self._subnet6()
        v4 = _validate.hosts(net4, 2, "subnet")
        v6 = _validate.hosts(net6, 2) if net6 is not None else []
        what = f"link {node_a.ns.name}-{node_b.ns.name}"
        link = Link(self, net4, net6, what, offloads=offloads)
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
            offloads=offloads,
        )
        self._commit(link, net4, [(node_a, name_a, index_a, addrs_a), (node_b, name_b, index_b, addrs_b)])
        return link

    def segment(
        self,
        members: Sequence[Namespace | str],
        *,
        subnet: str | ipaddress.IPv4Network | None = None,
        mtu: int = 1500,
        offloads: bool = False,
    ) -> Segment:
        """A Linux bridge joining ``members``, who get host addresses in order; ready for the first packet.

        The bridge lives in a namespace of its own with STP off and no
        forwarding delay.  ``subnet`` defaults to a fresh /24; one too small
        for the members, or malformed, raises ``ValueError``.  Offloads are
        off on every interface of the segment unless ``offloads=True``.
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
        _check_offloads(offloads)
        net4 = self._subnet(subnet, len(nodes))
        net6 = self._subnet6()
        v4 = _validate.hosts(net4, len(nodes), "subnet")
        v6 = _validate.hosts(net6, len(nodes)) if net6 is not None else []

        number = 1
        while any(ns.name == f"bridge{number}" for ns in self._owned) or f"bridge{number}" in self._nodes:
            number += 1
        bridge_ns = self._new_namespace(f"bridge{number}")
        bridge = switch(bridge_ns, mtu=mtu, offloads=offloads)
        segment = Segment(self, net4, net6, f"segment bridge{number}", bridge, offloads=offloads)
        plugs = [Plug(node.ns, _next_ifname(node), [v4[i], *v6[i : i + 1]]) for i, node in enumerate(nodes)]
        made = plug(segment._bridge, plugs, mtu=mtu, ipv6=self.ipv6, what=segment._what)
        attached = [
            (n, p.ifname, m.member_index, list(p.addresses)) for n, p, m in zip(nodes, plugs, made, strict=True)
        ]
        self._commit(segment, net4, attached)
        return segment

    def bridge(
        self,
        members: Sequence[Namespace | str],
        *,
        subnet: str | ipaddress.IPv4Network | None = None,
        mtu: int = 1500,
        offloads: bool = False,
    ) -> Segment:
        """Deprecated spelling of ``segment(members, ...)``."""
        warnings.warn(
            "pytest-netns deprecates Topology.bridge(members); use Topology.segment(members)",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.segment(members, subnet=subnet, mtu=mtu, offloads=offloads)

    def autoroute(self) -> None:
        """Install static routes so every namespace reaches every subnet (IPv4 and IPv6).

        Each namespace routes each subnet it is not attached to via the first
        hop of a shortest path (fewest hops, through routers only; ties go to
        the link made first).  Links and segments that are down are avoided.
        Calling it again after changes replaces the routes it installed.
        """
        self._check_open()
        table = route_table(
            [
                Network(net._subnets, [(att.node.ns.name, att.gateways) for att in net._attachments], net.is_up)
                for net in self._networks
            ],
            [name for name, node in self._nodes.items() if node.router],
        )
        for name, node in self._nodes.items():
            wanted = table.get(name, set())
            installed = self._auto_routes.get(name, set())
            stale = installed - wanted
            if stale:
                removals = []
                for net, via in sorted(stale, key=_route_key):
                    body = _rtnl.new_route(net, via=via).body
                    removals.append(_rtnl.Request(_rtnl.RTM_DELROUTE, 0, body, f"deleting route to {net} via {via}"))
                handle_of(node.ns).rtnl.execute(removals, ignore=(errno.ESRCH, errno.ENOENT))
            additions = [
                _rtnl.new_route(
                    net, via=via, replace=True, doing=f"adding route to {net} via {via} in {node.ns.name!r}"
                )
                for net, via in sorted(wanted - installed, key=_route_key)
            ]
            handle_of(node.ns).execute(additions)
            self._auto_routes[name] = wanted

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
        from .._net import rules as _rules

        with handle_of(node.ns).entered():
            _rules.masquerade(oifname=ifname)

    def partition(self, *groups: Namespace | str | Iterable[Namespace | str]) -> Partition:
        """Cut the groups off from each other: ``pytest_netns.partition`` with names or namespaces.

        Each group is a namespace of the topology or its name, or an
        iterable of them.  Packets between groups vanish silently, routed
        ones too; the returned ``Partition`` is a context manager, or call
        ``heal()``.  Names not in the topology raise ``ValueError``.
        """
        self._check_open()
        from .._net.partition import partition

        members: list[list[Namespace]] = []
        for number, group in enumerate(groups, 1):
            if isinstance(group, (str, Namespace)):
                members.append([self._node(group).ns])
            elif isinstance(group, Iterable):
                members.append([self._node(member).ns for member in group])
            else:
                raise ValueError(f"group {number} must be a namespace, a name or an iterable of them, got {group!r}")
        return partition(*members)

    # -- teardown ------------------------------------------------------------------

    def close(self) -> None:
        """Tear everything down: processes stopped, every namespace released (last made, first).

        Raises ``TeardownError`` listing every step that failed.  Calling it
        again does nothing.
        """
        if self._closed:
            return
        self._closed = True
        for ns in self._owned:
            resolver.unregister(handle_of(ns).inode)
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
        ns = Namespace(name, kill_grace=self.kill_grace)
        handle_of(ns).spawner = self._hosts.spawn_via  # run/popen children see the topology's hosts file
        # getaddrinfo in a thread inside (with ns:, ns.call) reads the same names.
        resolver.register(handle_of(ns).inode, self._hosts.lookup_v4)
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
        return check_mtu(mtu, self.ipv6, "use Topology(ipv6=False) for smaller MTUs")

    def _subnet(self, subnet: object, members: int) -> ipaddress.IPv4Network:
        if subnet is None:
            return self._fresh_subnet()
        net = _validate.network(subnet, "subnet")
        if not isinstance(net, ipaddress.IPv4Network):
            raise ValueError(f"subnet {subnet!r} is not an IPv4 network (each link gets an IPv6 /64 of its own)")
        _validate.hosts(net, members, "subnet")
        return net

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
        _, low, high = span(net4)
        self._v4_used.append((low, high))
        for node, ifname, index, addresses in attached:
            att = _Attachment(node, network, ifname, index, list(addresses))
            node.attachments.append(att)
            network._attachments.append(att)
            if len(node.attachments) == 1:  # a name resolves to the addresses of its first interface
                self._hosts.add(node.ns.name, att.gateways)
        self._networks.append(network)


# -- helpers ---------------------------------------------------------------------


def _check_offloads(offloads: object) -> None:
    if not isinstance(offloads, bool):
        raise ValueError(f"offloads must be True or False, got {offloads!r}")


def _next_ifname(node: _Node) -> str:
    return f"eth{len(node.attachments)}"


def _route_key(route: Route) -> tuple[int, int, int]:
    net, _ = route
    return net.version, int(net.network_address), net.prefixlen
