"""How a cluster's namespaces are wired, from the shared primitives: the node network, each node's routes and
``cni0``, each pod's veth (the ptp or bridge CNI plugin), MTU changes.

The node network is a segment without a bridge (``_net.lan``: macvlans over a veth in a namespace of its own; a
bridge's teardown would hold the RTNL lock for ~20 ms); each node routes for a bridge with an address
(``_net.bridge.router_bridge``: ``cni0``) that its pods are plugged into (``_net.bridge.plug``) in bridge mode, or
for a routed veth per pod in ptp mode; sysctls are settled with ``_net.sysctl``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Literal

from ..._kernel import rtnl as _rtnl
from ..._kernel import validate as _validate
from ..._kernel.handle import handle_of
from ..._kernel.validate import IPInterface
from ..._net import sysctl
from ..._net.bridge import Plug, plug, plugged_ends, router_bridge
from ..._net.lan import Lan, join
from ..._net.veth import veth, wait_ready
from ...namespace import Namespace
from .network import (
    BRIDGE_NF_CALL_IPTABLES,
    NODE_NETWORK,
    NODE_SYSCTLS,
    NODE_UPLINK,
    POD_BRIDGE,
    POD_IFNAME,
    PORT_PREFIX,
    PTP_NODE_SYSCTLS,
    SERVICE_CIDR,
    WITHOUT_BR_NETFILTER,
    interface,
)
from .objects import Node, Pod, _Member

DEFAULT_ROUTE = ipaddress.IPv4Network("0.0.0.0/0")

Cni = Literal["ptp", "bridge"]


class Pending:
    """Links made and brought up whose readiness is not waited for yet.

    The kernel brings a new veth's carrier up from a workqueue: a node or pod
    does the rest of its setup meanwhile and calls ``wait()`` last, before
    ``Cluster.node``/``pod`` returns (packets sent earlier could be dropped).
    """

    def __init__(self, ends: list[tuple[Namespace, int, Sequence[IPInterface]]], what: str) -> None:
        self.ends = ends
        self.what = what

    def wait(self) -> None:
        """Return once every end is ready for its first packet (``_net.veth.wait_ready``)."""
        ends, self.ends = self.ends, []
        if ends:
            wait_ready(ends, self.what)


def attach(fabric: Lan, member: _Member, mtu: int, *, then: Sequence[_rtnl.Request] = ()) -> None:
    """Put a node or external host on the node network as ``eth0``, ready (``then``: its requests to send with it)."""
    address = [interface(member.ip, NODE_NETWORK)]
    member._uplink_index = join(fabric, member, NODE_UPLINK, address, mtu=mtu, index=member._uplink_index, then=then)


def wire_node(node: Node, others: Sequence[Node], *, fabric: Lan, cni: Cni, mtu: int) -> None:
    """A new node's sysctls, ``eth0`` on the node network, ``cni0`` (bridge mode) and routes both ways."""
    if cni == "bridge":
        sysctl.settle(node, NODE_SYSCTLS, required={BRIDGE_NF_CALL_IPTABLES}, needed_for=WITHOUT_BR_NETFILTER)
    else:
        sysctl.settle(node, PTP_NODE_SYSCTLS)
    name = node.name
    node._uplink_index = handle_of(node).allocate_index()
    routes = [
        # The node's own connections to a ClusterIP need a route before the nat
        # output hook sees them (a real node has its default route for that).
        _rtnl.new_route(SERVICE_CIDR, oif=node._uplink_index, doing=f"routing {SERVICE_CIDR} via {name}:{NODE_UPLINK}"),
        *(
            _rtnl.new_route(other.pod_cidr, via=other.ip, doing=f"routing {other.pod_cidr} via {other.name} on {name}")
            for other in others
        ),
    ]
    attach(fabric, node, mtu, then=routes)
    if cni == "bridge":
        node._bridge = router_bridge(
            node,
            POD_BRIDGE,
            interface(node.gateway, node.pod_cidr),
            mtu=mtu,
            nf_call_iptables=True,
            port_prefix=PORT_PREFIX,
            reserved=(NODE_UPLINK,),
        )
    for other in others:
        handle_of(other).execute(
            [_rtnl.new_route(node.pod_cidr, via=node.ip, doing=f"routing {node.pod_cidr} via {name} on {other.name}")]
        )


def wire_pod(host: Node, pod: Pod, *, cni: Cni, mtu: int) -> Pending:
    """A new pod's ``eth0`` (a port of ``cni0``, or a veth routed by the node) and its default route.

    Returns the link's readiness, to wait for once the pod is set up.
    """
    default = _rtnl.new_route(
        DEFAULT_ROUTE, via=host.gateway, doing=f"adding the default route via {host.gateway} in {pod.name!r}"
    )
    if cni == "bridge":
        item = Plug(pod, POD_IFNAME, [interface(pod.ip, host.pod_cidr)], then=[default])
        made = plug(host._bridge, [item], mtu=mtu, hairpin=True, wait=False)
        pod.node_port = made[0].port
        pod._uplink_index = made[0].member_index
        return Pending(plugged_ends(host._bridge, [item], made), f"{pod.name}:{POD_IFNAME}")
    return _ptp_plug(host, pod, mtu, default)


def _ptp_plug(host: Node, pod: Pod, mtu: int, default: _rtnl.Request) -> Pending:
    """The ptp CNI plugin's veth (as kind's kindnet configures it), with the pod's ``default`` route.

    The node's end holds the gateway as a /32 (the same address on every
    pod's veth) and a /32 route to the pod; the pod keeps its /24 address
    without the prefix route, reaches the gateway through a link-scope
    /32 route and everything else via the gateway, so traffic between two
    pods of one node is routed by the node as well: no bridge, no
    br_netfilter.
    """
    taken = {"lo", NODE_UPLINK, *host._veths}
    port = pod.name if _is_ifname(pod.name) and pod.name not in taken else ""
    number = len(host._veths)
    while not port or port in taken:
        port, number = f"{PORT_PREFIX}{number}", number + 1
    gateway = ipaddress.IPv4Interface((host.gateway, 32))
    port_index = handle_of(host).allocate_index()
    pod_index = handle_of(pod).allocate_index()
    if pod_index == port_index:  # equal indexes on both ends make the link slow to come up
        pod_index = handle_of(pod).allocate_index()
    where, there = f"{host.name}:{port}", f"{pod.name}:{POD_IFNAME}"
    address = interface(pod.ip, host.pod_cidr)
    veth(
        host,
        pod,
        name_a=port,
        name_b=POD_IFNAME,
        mtu=mtu,
        ipv6=False,
        indexes=(port_index, pod_index),
        then_a=[
            _rtnl.new_address(port_index, gateway, f"adding {gateway} to {where}"),
            _rtnl.new_route(ipaddress.IPv4Network(pod.ip), oif=port_index, doing=f"routing {pod.ip}/32 to {where}"),
        ],
        then_b=[
            _rtnl.new_address(pod_index, address, f"adding {address} to {there}", noprefixroute=True),
            _rtnl.new_route(gateway.network, oif=pod_index, doing=f"routing {gateway} to {there} in {pod.name!r}"),
            _rtnl.new_route(
                host.pod_cidr, via=host.gateway, doing=f"routing {host.pod_cidr} via {host.gateway} in {pod.name!r}"
            ),
            default,
        ],
        wait=False,
    )
    host._veths[port] = port_index
    pod.node_port = port
    pod._uplink_index = pod_index
    return Pending([(host, port_index, []), (pod, pod_index, [])], f"{where} <-> {there}")


def set_mtu(fabric: Lan, nodes: Iterable[Node], members: Iterable[_Member], *, cni: Cni, mtu: int) -> None:
    """The MTU of every link: the node network, each node's ``eth0``, pod veths and ``cni0``, the others' ``eth0``."""
    doing = f"setting MTU {mtu}"
    fabric.set_mtu(mtu, "the node network")
    for node in nodes:
        requests = [_rtnl.set_link(node._uplink_index, mtu=mtu, doing=f"{doing} in node {node.name!r}")]
        requests += [
            _rtnl.set_link(index, mtu=mtu, doing=f"{doing} on {node.name}:{port}")
            for port, index in node._veths.items()
        ]
        handle_of(node).execute(requests)
        if cni == "bridge":
            node._bridge.set_mtu(mtu, f"{node.name}:{POD_BRIDGE}")
    for ns in members:
        handle_of(ns).execute([_rtnl.set_link(ns._uplink_index, mtu=mtu, doing=f"{doing} in {ns.name!r}")])


def _is_ifname(name: str) -> bool:
    try:
        _validate.ifname(name)
    except ValueError:
        return False
    return True
