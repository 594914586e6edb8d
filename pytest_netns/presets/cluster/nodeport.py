"""NodePort services: their options and ports, and the part of kube-proxy's table that serves them on a node.

kube-proxy's nftables mode (``pkg/proxy/nftables``) with its default
``--nodeport-addresses primary``:

* ``services`` gains ``ip daddr <node ip> meta l4proto . th dport vmap
  @service-nodeports``: protocol . node port to ``goto
  external-<ns>/<name>/<proto>/<port>``;
* ``externalTrafficPolicy: Cluster``: the external chain marks the
  connection for masquerade and goes to the service's chain (any endpoint,
  so the pod sees the address of the node that forwarded it: its
  ``eth0`` IP, or its pod gateway when the pod is on that node);
* ``Local``: traffic from the pod network and from the node itself
  short-circuits to the service's chain (the latter masqueraded); anything
  else goes to ``local-<ns>/<name>/<proto>/<port>``, which spreads over the
  node's own endpoints without NAT of the source, or drops when it has none.

``proxy`` writes these into the same per-node transaction as the service's
ClusterIP rules; this module only says what they are.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

from ..._kernel.nft import Rule, Set
from ..._kernel.nft import expr as _expr
from ..._kernel.nft import objects as _objects
from ..._kernel.nft import statements as _words
from .network import CLUSTER_CIDR, IPv4
from .objects import Node, Service

#: Kubernetes' default ``--service-node-port-range``.
NODE_PORT_RANGE = range(30000, 32768)
TYPES = ("ClusterIP", "NodePort")
POLICIES = ("Cluster", "Local")
NODEPORTS_MAP = "service-nodeports"
#: kube-proxy's ``mark-for-masquerade`` chain (``proxy`` makes it).
MARK_FOR_MASQUERADE = "mark-for-masquerade"

NODEPORTS = Set(
    NODEPORTS_MAP,
    key_type=_objects.concat_type(_objects.TYPE_INET_PROTOCOL, _objects.TYPE_INET_SERVICE),
    key_len=8,
    flags=_objects.SET_MAP,
    data_type=_objects.DATA_VERDICT,
)


def check_options(
    name: str,
    *,
    type: object,
    node_port: object,
    external_traffic_policy: object,
    headless: bool,
    used: Collection[int],
) -> tuple[Literal["ClusterIP", "NodePort"], int | None, Literal["Cluster", "Local"]]:
    """``(type, node port, policy)`` checked; without ``node_port`` the lowest free port of 30000-32767.

    ``ValueError`` naming the bad value; ``used`` are the node ports other services hold.
    """
    if type not in TYPES:
        raise ValueError(f"service {name!r}: type {type!r} is not one of {', '.join(map(repr, TYPES))}")
    if external_traffic_policy not in POLICIES:
        raise ValueError(
            f"service {name!r}: external_traffic_policy {external_traffic_policy!r} is not 'Cluster' or 'Local'"
        )
    policy: Literal["Cluster", "Local"] = "Local" if external_traffic_policy == "Local" else "Cluster"
    if type == "ClusterIP":
        if node_port is not None:
            raise ValueError(f"service {name!r}: node_port {node_port!r} needs type='NodePort'")
        if policy == "Local":
            raise ValueError(f"service {name!r}: external_traffic_policy 'Local' needs type='NodePort'")
        return "ClusterIP", None, policy
    if headless:
        raise ValueError(f"service {name!r}: a headless service cannot be of type 'NodePort'")
    if node_port is None:
        for port in NODE_PORT_RANGE:
            if port not in used:
                return "NodePort", port, policy
        raise ValueError(f"service {name!r}: no free node port left in 30000-32767")
    if isinstance(node_port, bool) or not isinstance(node_port, int) or node_port not in NODE_PORT_RANGE:
        raise ValueError(f"service {name!r}: node_port {node_port!r} is not in the node port range 30000-32767")
    if node_port in used:
        raise ValueError(f"service {name!r}: node_port {node_port} is already taken by another service")
    return "NodePort", node_port, policy


def nodeports_rule(node_ip: IPv4) -> Rule:
    """``ip daddr <node ip> meta l4proto . th dport vmap @service-nodeports``."""
    return [
        *_words.addr(ipaddress.ip_network(node_ip), "daddr"),
        _expr.Meta(_expr.META_L4PROTO, dreg=_expr.REG32_00),
        _expr.Payload(_expr.PAYLOAD_TRANSPORT, 2, 2, dreg=_expr.REG32_00 + 1),
        _expr.Lookup(NODEPORTS_MAP, sreg=_expr.REG32_00, dreg=_expr.REG_VERDICT),
    ]


@dataclass(frozen=True)
class NodePortRules:
    """A NodePort service's rules on one node.

    ``key`` maps to ``goto external`` in ``@service-nodeports``; ``local`` is
    the ``Local`` policy's chain, to fill with a spread over
    ``local_endpoints`` (or a drop when there are none).
    """

    key: bytes
    external: str
    external_rules: list[Rule]
    local: str | None
    local_endpoints: list[tuple[IPv4, int]]


def plan(service: Service, node: Node, *, key: str, service_chain: str) -> NodePortRules | None:
    """What ``service`` needs on ``node`` (``key`` names its chains), or None for a service without a node port."""
    if service.node_port is None or service.ip is None:
        return None
    external = f"external-{key}"
    goto_service = _expr.Verdict(_expr.NFT_GOTO, service_chain)
    mark = _expr.Verdict(_expr.NFT_JUMP, MARK_FOR_MASQUERADE)
    nodeport_key = bytes([_words.IPPROTO[service.proto], 0, 0, 0]) + struct.pack("!H", service.node_port) + bytes(2)
    if service.external_traffic_policy == "Cluster":
        return NodePortRules(nodeport_key, external, [[mark], [goto_service]], None, [])
    local = f"local-{key}"
    from_node = [_expr.Fib(_expr.FIB_RESULT_ADDRTYPE, _expr.FIB_F_SADDR), _expr.Cmp(_expr.CMP_EQ, _LOCAL)]
    rules: list[Rule] = [
        [*_words.addr(CLUSTER_CIDR, "saddr"), goto_service],  # short-circuit pod traffic
        [*from_node, mark],  # masquerade the node's own traffic
        [*from_node, goto_service],
        [_expr.Verdict(_expr.NFT_GOTO, local)],
    ]
    endpoints = [(pod.ip, service.target_port) for pod in service.pods if pod.node is node]
    return NodePortRules(nodeport_key, external, rules, local, endpoints)


#: ``fib saddr type local``'s comparand (an RTN_LOCAL in host order).
_LOCAL = struct.pack("=I", _words.RTN_LOCAL)
#: What a node without a local endpoint does with ``Local`` NodePort traffic.
DROP: Rule = [_expr.Verdict(_expr.NF_DROP)]
