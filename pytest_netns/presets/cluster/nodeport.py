"""NodePort services: their options and ports, and the part of kube-proxy's table that serves them on a node.

kube-proxy's nftables mode (``pkg/proxy/nftables``) with its default
``--nodeport-addresses primary``:

* ``services`` gains ``ip daddr <node ip> meta l4proto . th dport vmap
  @service-nodeports``: protocol . node port to ``goto
  external-<ns>/<name>/<proto>/<port>`` (one per port of the service, each
  with its own node port);
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
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal

from ..._kernel.nft import Rule, Set
from ..._kernel.nft import expr as _expr
from ..._kernel.nft import objects as _objects
from ..._kernel.nft import statements as _words
from .dns import ServicePort
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
    node_ports: Sequence[tuple[str, object, str]],
    external_traffic_policy: object,
    headless: bool,
    used: Collection[int],
) -> tuple[Literal["ClusterIP", "NodePort"], list[int | None], Literal["Cluster", "Local"]]:
    """``(type, node port of each port, policy)`` checked; a port without one gets the lowest free of 30000-32767.

    ``node_ports`` are ``(prefix for messages, node_port given or None, protocol)`` per port of the service
    (the prefix ``""`` for ``port=``); ``used`` are the node ports other services hold.  Ports given are
    taken first; the same number for two ports of the service only with different protocols, as Kubernetes
    allows.  ``ValueError`` naming the bad value.
    """
    if type not in TYPES:
        raise ValueError(f"service {name!r}: type {type!r} is not one of {', '.join(map(repr, TYPES))}")
    if external_traffic_policy not in POLICIES:
        raise ValueError(
            f"service {name!r}: external_traffic_policy {external_traffic_policy!r} is not 'Cluster' or 'Local'"
        )
    policy: Literal["Cluster", "Local"] = "Local" if external_traffic_policy == "Local" else "Cluster"
    if type == "ClusterIP":
        for where, node_port, _ in node_ports:
            if node_port is not None:
                raise ValueError(f"{where or f'service {name!r}: '}node_port {node_port!r} needs type='NodePort'")
        if policy == "Local":
            raise ValueError(f"service {name!r}: external_traffic_policy 'Local' needs type='NodePort'")
        return "ClusterIP", [None] * len(node_ports), policy
    if headless:
        raise ValueError(f"service {name!r}: a headless service cannot be of type 'NodePort'")
    chosen: list[int | None] = []
    mine: set[tuple[int, str]] = set()
    for where, node_port, proto in node_ports:
        where = where or f"service {name!r}: "
        if node_port is None:
            chosen.append(None)
            continue
        if isinstance(node_port, bool) or not isinstance(node_port, int) or node_port not in NODE_PORT_RANGE:
            raise ValueError(f"{where}node_port {node_port!r} is not in the node port range 30000-32767")
        if node_port in used:
            raise ValueError(f"{where}node_port {node_port} is already taken by another service")
        if (node_port, proto) in mine:
            raise ValueError(f"{where}node_port {node_port}/{proto} is given twice in service {name!r}")
        mine.add((node_port, proto))
        chosen.append(node_port)
    taken = {*used, *(number for number, _ in mine)}
    free = (port for port in NODE_PORT_RANGE if port not in taken)
    for number, given in enumerate(chosen):
        if given is None:
            chosen[number] = next(free, None)
            if chosen[number] is None:
                raise ValueError(f"service {name!r}: no free node port left in 30000-32767")
    return "NodePort", chosen, policy


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


def plan(service: Service, port: ServicePort, node: Node, *, key: str, service_chain: str) -> NodePortRules | None:
    """What ``port`` of ``service`` needs on ``node`` (``key`` names its chains), or None without a node port."""
    if port.node_port is None or service.ip is None:
        return None
    external = f"external-{key}"
    goto_service = _expr.Verdict(_expr.NFT_GOTO, service_chain)
    mark = _expr.Verdict(_expr.NFT_JUMP, MARK_FOR_MASQUERADE)
    nodeport_key = bytes([_words.IPPROTO[port.proto], 0, 0, 0]) + struct.pack("!H", port.node_port) + bytes(2)
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
    endpoints = [(pod.ip, port.target_port) for pod in service.pods if pod.node is node]
    return NodePortRules(nodeport_key, external, rules, local, endpoints)


#: ``fib saddr type local``'s comparand (an RTN_LOCAL in host order).
_LOCAL = struct.pack("=I", _words.RTN_LOCAL)
#: What a node without a local endpoint does with ``Local`` NodePort traffic.
DROP: Rule = [_expr.Verdict(_expr.NF_DROP)]
