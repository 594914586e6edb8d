"""Linux bridges in a namespace, and namespaces plugged into them with veths: one implementation for every model.

Two kinds of bridge, made by ``bridge_request`` with the one bridge encoder (``_kernel.rtnl.new_bridge``):

* ``switch(ns)``: a plain switch in a namespace of its own (a ``Topology``
  segment, the cluster's node network).  The namespace has no IPv6 at all
  and passes no bridged frame to netfilter; the bridge is promiscuous, so a
  capture on it sees the frames between its members.
* ``router_bridge(ns, name, address)``: a bridge with an IPv4 address in a
  namespace that routes for its members (a cluster node's ``cni0``, Docker's
  ``docker0``), no IPv6 address on it or its ports.  ``nf_call_iptables``
  sets the bridge's own switch for passing bridged IPv4 frames to netfilter
  (the namespace-wide sysctl is ``_net.sysctl.BRIDGED_IPV4_PASSES_NETFILTER``).

Both forward at once (STP off, no forwarding delay) and do no multicast
snooping (IPv6 neighbour solicitations reach every member whether or not a
querier exists).

``plug(bridge, [Plug(member, ifname, addresses)])`` makes one veth per member,
created with one end already a port of the bridge (``IFLA_MASTER`` in the same
``RTM_NEWLINK``) and the other inside the member, and returns once every end
is ready for the first packet (``_net.veth.wait_ready``).  Offloads are off on
the bridge, its ports and the members' ends unless the bridge was made with
``offloads=True`` (``_net.veth.offloads_off``).  A port is named
after its member where that is a valid interface name not yet used in the
bridge's namespace, else ``<prefix><n>`` (``Bridge.port_name``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .._kernel import rtnl as _rtnl
from .._kernel import validate as _validate
from .._kernel.handle import handle_of
from .._kernel.validate import IPInterface
from ..namespace import Namespace
from . import sysctl
from .veth import offloads_off, wait_ready

__all__ = ["Bridge", "Plug", "Plugged", "bridge_request", "plug", "plugged_ends", "router_bridge", "switch"]


#: The namespace of a switch: no IPv6 on the ports (no link-local addresses, no solicitations
#: of its own on the segment), and bridged traffic passes no netfilter hook.
SWITCH_SYSCTLS = sysctl.NO_IPV6 + sysctl.BRIDGED_TRAFFIC_SKIPS_NETFILTER
SWITCH_DEVICE = "br0"


@dataclass(eq=False)
class Bridge:
    """A bridge device ``name`` (ifindex ``index``) in ``ns`` and its ports (name -> ifindex, in plug order)."""

    ns: Namespace
    name: str
    index: int
    #: Where a member's name cannot name its port: ``<port_prefix><n>``.
    port_prefix: str
    #: Whether the namespace has IPv6 switched off (new ports then need no link-local suppression).
    ipv6_off: bool
    #: Interface names in ``ns`` that ports must not take (``lo``, the bridge, other interfaces).
    reserved: set[str] = field(default_factory=set)
    ports: dict[str, int] = field(default_factory=dict)
    #: Whether the bridge and the veths plugged into it keep their offloads (off: frames fit the MTU).
    offloads: bool = False

    @property
    def label(self) -> str:
        return f"{self.ns.name}:{self.name}"

    def port_name(self, member: str, pending: Sequence[str] = ()) -> str:
        """The member's own name if it is a valid, unused interface name here, else the first free ``<prefix><n>``.

        ``pending`` are names given to ports about to be made.
        """
        taken = self.reserved | self.ports.keys() | set(pending)
        if _is_ifname(member) and member not in taken:
            return member
        number = len(self.ports) + len(pending)
        while f"{self.port_prefix}{number}" in taken:
            number += 1
        return f"{self.port_prefix}{number}"

    def set_mtu(self, mtu: int, what: str) -> None:
        """The MTU of every port, then of the bridge (a bridge whose MTU was set explicitly keeps it)."""
        doing = f"setting MTU {mtu} on the ports of {what}"
        requests = [_rtnl.set_link(index, mtu=mtu, doing=doing) for index in self.ports.values()]
        requests.append(_rtnl.set_link(self.index, mtu=mtu, doing=f"setting MTU {mtu} on {what}"))
        handle_of(self.ns).execute(requests)


@dataclass
class Plug:
    """A member to plug into a bridge: its interface ``ifname`` and ``addresses``; the bridge names ``port`` if None."""

    member: Namespace
    ifname: str
    addresses: Sequence[IPInterface] = ()
    port: str | None = None
    #: The member's interface index, taken with ``allocate_index`` so that ``then`` can name it (0: chosen here).
    member_index: int = 0
    #: Requests for the member sent with its own (routes, say), after its interface is up and addressed.
    then: Sequence[_rtnl.Request] = ()


@dataclass(frozen=True)
class Plugged:
    """What ``plug`` made for one member: the port's name and ifindex, the member's interface ifindex."""

    port: str
    port_index: int
    member_index: int


def bridge_request(
    name: str, index: int, mtu: int, *, up: bool, promisc: bool, nf_call_iptables: bool
) -> _rtnl.Request:
    """Create a bridge that forwards at once: STP off, no forwarding delay, no multicast snooping.

    ``nf_call_iptables`` is the bridge's own switch for bridged IPv4 frames;
    bridged IPv6 and ARP never pass netfilter.
    """
    return _rtnl.new_bridge(
        name,
        index=index,
        mtu=mtu,
        up=up,
        promisc=promisc,
        mcast_snooping=False,
        nf_call_iptables=nf_call_iptables,
        nf_call_ip6tables=False,
        nf_call_arptables=False,
    )


def switch(ns: Namespace, *, mtu: int, port_prefix: str = "p", offloads: bool = False) -> Bridge:
    """A promiscuous bridge ``br0`` in ``ns``, a namespace of its own: no IPv6, no netfilter on bridged frames."""
    sysctl.settle(ns, SWITCH_SYSCTLS)
    handle = handle_of(ns)
    index = handle.allocate_index()
    handle.execute([bridge_request(SWITCH_DEVICE, index, mtu, up=True, promisc=True, nf_call_iptables=False)])
    if not offloads:
        offloads_off(ns, SWITCH_DEVICE)
    reserved = {"lo", SWITCH_DEVICE}
    return Bridge(ns, SWITCH_DEVICE, index, port_prefix, ipv6_off=True, reserved=reserved, offloads=offloads)


def router_bridge(
    ns: Namespace,
    name: str,
    address: IPInterface,
    *,
    mtu: int,
    nf_call_iptables: bool,
    port_prefix: str = "veth",
    reserved: Sequence[str] = (),
    offloads: bool = False,
) -> Bridge:
    """A bridge ``name`` in ``ns`` with ``address`` (the members' gateway) and no IPv6 address."""
    where = f"{ns.name}:{name}"
    handle = handle_of(ns)
    index = handle.allocate_index()
    handle.execute(
        [
            bridge_request(name, index, mtu, up=False, promisc=False, nf_call_iptables=nf_call_iptables),
            _rtnl.no_ipv6_link_local(index, f"switching IPv6 off on {where}"),
            _rtnl.set_link(index, up=True, doing=f"bringing {where} up"),
            _rtnl.new_address(index, address, f"adding {address} to {where}"),
        ]
    )
    if not offloads:  # what the namespace itself sends through the bridge
        offloads_off(ns, name)
    names = {"lo", name, *reserved}
    return Bridge(ns, name, index, port_prefix, ipv6_off=False, reserved=names, offloads=offloads)


def plug(
    bridge: Bridge,
    plugs: Sequence[Plug],
    *,
    mtu: int,
    ipv6: bool = False,
    hairpin: bool = False,
    what: str = "",
    wait: bool = True,
) -> list[Plugged]:
    """Plug every member into ``bridge`` with a veth; return once every end is ready for its first packet.

    ``ipv6=False`` keeps the members' interfaces free of any IPv6 address
    (no link-local one either).  ``hairpin`` lets the bridge send a frame
    back out of the port it came in on (``bridge link set ... hairpin on``).
    ``what`` names the bridge in error messages.  ``wait=False``: return at
    once; the caller waits (``plugged_ends`` and ``_net.veth.wait_ready``)
    before the first packet.
    """
    what = what or bridge.label
    ns = bridge.ns
    here = handle_of(ns)
    made: list[Plugged] = []
    bridge_requests: list[_rtnl.Request] = []
    for item in plugs:
        port = item.port or bridge.port_name(item.member.name, [p.port for p in made])
        member = handle_of(item.member)
        port_index = here.allocate_index()
        member_index = item.member_index or member.allocate_index()
        if member_index == port_index:  # equal indexes on both ends make the link slow to come up
            if item.member_index:
                port_index = here.allocate_index()
            else:
                member_index = member.allocate_index()
        create = _rtnl.new_veth(
            port,
            item.ifname,
            member.fd,
            index=port_index,
            peer_index=member_index,
            mtu=mtu,
            up=bridge.ipv6_off,
        )
        create.body += _rtnl.attr_u32(_rtnl.IFLA_MASTER, bridge.index)
        create.doing = f"plugging {item.member.name}:{item.ifname} into {what} (port {port})"
        bridge_requests.append(create)
        if not bridge.ipv6_off:  # up in the same message: the member's end is still down
            doing = f"bringing port {port} of {what} up without IPv6"
            bridge_requests.append(_rtnl.no_ipv6_link_local(port_index, doing, up=True))
        if hairpin:
            bridge_requests.append(_hairpin(port_index, f"turning hairpin mode on for port {port} of {what}"))
        made.append(Plugged(port, port_index, member_index))
    here.execute(bridge_requests)
    bridge.ports.update((p.port, p.port_index) for p in made)
    if not bridge.offloads:
        for item, done in zip(plugs, made, strict=True):
            offloads_off(ns, done.port)
            offloads_off(item.member, item.ifname)
    for item, done in zip(plugs, made, strict=True):
        where = f"{item.member.name}:{item.ifname}"
        index = done.member_index
        requests = [] if ipv6 else [_rtnl.no_ipv6_link_local(index, f"switching IPv6 off on {where}")]
        requests.append(_rtnl.set_link(index, up=True, doing=f"bringing {where} up"))
        requests += [_rtnl.new_address(index, x, f"adding {x} to {where}") for x in item.addresses]
        handle_of(item.member).execute([*requests, *item.then])
    if wait:
        wait_ready(plugged_ends(bridge, plugs, made), what)
    return made


def plugged_ends(
    bridge: Bridge, plugs: Sequence[Plug], made: Sequence[Plugged]
) -> list[tuple[Namespace, int, Sequence[IPInterface]]]:
    """Both ends of every veth ``plug`` made, as ``wait_ready`` takes them."""
    ends: list[tuple[Namespace, int, Sequence[IPInterface]]] = [(bridge.ns, p.port_index, []) for p in made]
    ends += [(item.member, p.member_index, item.addresses) for item, p in zip(plugs, made, strict=True)]
    return ends


def _hairpin(index: int, doing: str) -> _rtnl.Request:
    return _rtnl.set_bridge_port(index, hairpin=True, doing=doing)


def _is_ifname(name: str) -> bool:
    try:
        _validate.ifname(name)
    except ValueError:
        return False
    return True
