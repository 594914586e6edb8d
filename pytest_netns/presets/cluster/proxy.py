"""A node's nftables rules: kube-proxy's ClusterIP DNAT and the CNI plugin's masquerades.

Each function acts on the node through its namespace fd, in the calling
thread only (the node is not entered with ``with node:``, which would mark it
as hosting processes).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from ..._kernel.handle import handle_of
from ..._net import rules as _rules
from ...namespace import Namespace
from .network import CLUSTER_CIDR, NAT_TABLE, NODE_UPLINK, IPv4
from .objects import Service


def install_service(node: Namespace, service: Service) -> None:
    """Write (or atomically replace) the service's table on ``node``."""
    with handle_of(node).entered():
        _install(service)


def set_up_node(node: Namespace, services: Iterable[Service]) -> None:
    """A new node's egress masquerade and the tables of the services that exist already."""
    with handle_of(node).entered():
        _node_nat_table()
        for service in services:
            _install(service)


def masquerade_hairpin(node: Namespace, pod: IPv4) -> None:
    """``ip saddr <pod> ip daddr <pod> masquerade`` on the pod's node.

    A pod whose service connection was DNAT-ed back to itself would answer
    itself over ``lo`` with the wrong source; seen from the gateway's
    address, the reply goes back through the bridge and conntrack.
    """
    network = ipaddress.ip_network(pod)
    with handle_of(node).entered():
        _rules.masquerade(src=network, dst=network, table=NAT_TABLE)


def _install(service: Service) -> None:
    """The service's table in the calling thread's namespace (a node)."""
    _rules.dnat_service(
        service.name,
        service.ip,
        service.port,
        service.endpoints,
        proto=service.proto,
        spread=service.spread,
    )


def _node_nat_table() -> None:
    """A node's egress masquerade, in the calling thread's namespace.

    ``ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 oifname "eth0" masquerade``:
    what leaves a node for anything outside the pod network goes out with the
    node's IP; pod-to-pod traffic between nodes keeps its addresses.
    """
    _rules.masquerade(NODE_UPLINK, src=CLUSTER_CIDR, not_dst=CLUSTER_CIDR, table=NAT_TABLE)
