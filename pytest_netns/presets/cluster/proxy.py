"""A node's nftables rules: kube-proxy in nftables mode, and the CNI plugin's egress masquerade.

kube-proxy's nftables mode (``pkg/proxy/nftables``), in one ``ip`` table per node:

* ``nat-prerouting`` and ``nat-output`` (nat, dstnat) ``jump services``;
  ``services`` holds one rule, ``ip daddr . meta l4proto . th dport vmap
  @service-ips``, a verdict map from ClusterIP . protocol . port to
  ``goto service-<ns>/<name>/<proto>/<port>``, one chain per port of a
  service (each port's endpoints DNAT to that port's target port, with
  their own affinity sets);
* a service's chain picks an endpoint with one ``numgen random mod N vmap
  { 0 : goto endpoint-..., 1 : ... }`` (every endpoint 1/N; ``numgen inc``
  for ``spread="round_robin"``), or refuses new connections when it has no
  endpoint; with ``session_affinity="ClientIP"`` it first sends a client
  seen recently to the same endpoint (``ip saddr @affinity-... goto
  endpoint-...``);
* an endpoint's chain marks a pod's connection to itself for masquerade
  (``ip saddr <pod> jump mark-for-masquerade``), remembers the client for
  affinity (``update @affinity-... { ip saddr }``, a set with
  ``flags dynamic,timeout``) and DNATs to the pod;
* ``nat-postrouting`` (srcnat) ``jump masquerading``: marked connections are
  masqueraded (so a hairpin reply goes back through the node's conntrack).

A change to a service's endpoints is one transaction per node: its chain is
flushed and refilled, new endpoint chains added, gone ones flushed and
deleted.  Everything goes through the node's nf_tables socket
(``nftsockets``), made in its namespace (the node is not entered with
``with node:``, which would mark it as hosting processes); a new node's
egress masquerade comes in the same transaction as its kube-proxy table.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
from collections.abc import Iterable, Sequence
from typing import Final

from ..._kernel import nft as _nft
from ..._kernel.netlink import Request
from ..._kernel.nft import Batch, Chain, Set, Table
from ..._kernel.nft import expr as _expr
from ..._kernel.nft import objects as _objects
from ..._kernel.nft import statements as _words
from ..._net import rules as _rules
from ...errors import FeatureUnavailable
from . import nodeport as _nodeport
from .dns import ServicePort
from .network import CLUSTER_CIDR, K8S_NAMESPACE, NAT_TABLE, NODE_UPLINK, IPv4
from .nftsockets import NodeSockets
from .objects import Node, Service

FAMILY: Final = "ip"
#: kube-proxy's table ``ip kube-proxy``, with this package's prefix.
TABLE = f"{_nft.TABLE_PREFIX}_kube_proxy"
SERVICES_MAP = "service-ips"
#: kube-proxy's masquerade bit (``--masquerade-bit=14``).
MASQUERADE_MARK = 0x4000

_SERVICE_MAP = Set(
    SERVICES_MAP,
    key_type=_objects.concat_type(_objects.TYPE_IPADDR, _objects.TYPE_INET_PROTOCOL, _objects.TYPE_INET_SERVICE),
    key_len=12,
    flags=_objects.SET_MAP,
    data_type=_objects.DATA_VERDICT,
)
_GOTO = _expr.NFT_GOTO


class KubeProxy:
    """kube-proxy on every node: the chain names each node's table has, written through the node's socket.

    The names are kept as committed, so that a change needs no dump first; a
    table changed behind its back (deleted by hand) is read back once and the
    change made again.
    """

    def __init__(self, sockets: NodeSockets) -> None:
        self._sockets = sockets
        self._chains: dict[str, set[str]] = {}  # node name -> kube-proxy's chains there, as committed

    def set_up_node(self, node: Node, services: Iterable[Service]) -> None:
        """A new node's egress masquerade, kube-proxy's table and the services that exist already (one transaction)."""
        services = list(services)
        batch = Batch()
        batch.requests += _node_requests(node.ip)
        chains = set(_BASE_CHAIN_NAMES)
        for service in services:
            chains = _service(batch, service, node, existing=chains)
        doing = f"setting up kube-proxy's rules on node {node.name!r}"
        _commit(batch, self._sockets.of(node), services, doing)
        self._chains[node.name] = chains

    def install_service(self, node: Node, service: Service) -> None:
        """Write the service's chains on ``node`` (its node port's too), or replace its endpoints, atomically."""
        doing = f"installing service {service.name!r} on node {node.name!r}"
        sock = self._sockets.of(node)
        existing = self._chains.get(node.name, set())
        try:
            self._chains[node.name] = _install(sock, node, service, existing, doing)
        except _nft.NftError as exc:
            if exc.errno != errno.ENOENT:
                raise
            try:  # the table changed behind our back: as it is now
                existing = _nft.chain_names(sock, FAMILY, TABLE)
            except _nft.NftError as again:
                raise _nft.NftError(again.errno or errno.EIO, again.request, again.detail, doing) from None
            self._chains[node.name] = _install(sock, node, service, existing, doing)


def _install(sock: _nft.NftSocket, node: Node, service: Service, existing: set[str], doing: str) -> set[str]:
    """One transaction making ``service`` on ``node`` whose table has the chains ``existing``; the chains after it."""
    batch = Batch()
    if "services" not in existing:  # the table is gone (deleted by hand): made again
        batch.requests += _node_requests(node.ip)[_KUBE_PROXY_START:]
        existing = set(_BASE_CHAIN_NAMES)
    after = _service(batch, service, node, existing=existing)
    _commit(batch, sock, [service], doing)
    return after


def service_chain(service: Service, port: ServicePort | None = None) -> str:
    """``service-<ns>/<name>/<proto>/<port>``: kube-proxy's name for a port's chain (without its hash).

    ``port`` is one of ``service.ports`` (default: the first); so for ``endpoint_chain`` and ``affinity_set``.
    """
    return f"service-{_key(service, port)}"


def endpoint_chain(service: Service, address: object, target: int, port: ServicePort | None = None) -> str:
    """``endpoint-<ns>/<name>/<proto>/<port>__<pod ip>/<target port>``."""
    return f"endpoint-{_key(service, port)}__{address}/{target}"


def affinity_set(service: Service, address: object, target: int, port: ServicePort | None = None) -> str:
    """``affinity-<ns>/<name>/<proto>/<port>__<pod ip>/<target port>``: the clients that keep this endpoint."""
    return f"affinity-{_key(service, port)}__{address}/{target}"


def _key(service: Service, port: ServicePort | None) -> str:
    namespace = getattr(service, "namespace", K8S_NAMESPACE)
    port = service.ports[0] if port is None else port
    return f"{namespace}/{service.name}/{port.proto}/{port.port}"


@functools.lru_cache(maxsize=256)
def _node_requests(node_ip: IPv4) -> tuple[Request, ...]:
    """A new node's egress masquerade table, then kube-proxy's table with its base chains and maps (constant)."""
    batch = Batch()
    batch.add_table("inet", NAT_TABLE)
    batch.add_contents(_node_nat_table())
    assert len(batch.requests) == _KUBE_PROXY_START
    batch.add_table(FAMILY, TABLE)
    chains = _base_chains(node_ip)
    for chain in chains:
        batch.requests.append(_objects.new_chain(FAMILY, TABLE, chain))
    batch.add_set(FAMILY, TABLE, _SERVICE_MAP)
    batch.add_set(FAMILY, TABLE, _nodeport.NODEPORTS)
    for chain in chains:
        for rule in chain.rules:
            batch.add_rule(FAMILY, TABLE, chain.name, rule)
    return tuple(batch.requests)


def _base_chains(node_ip: IPv4) -> list[Chain]:
    jump_services = [_expr.Verdict(_expr.NFT_JUMP, "services")]
    return [
        Chain("services", [_words.daddr_proto_dport_vmap(SERVICES_MAP), _nodeport.nodeports_rule(node_ip)]),
        Chain(_nodeport.MARK_FOR_MASQUERADE, [_words.mark_or(MASQUERADE_MARK)]),
        Chain(
            "masquerading",
            [
                [*_words.mark_and_is(MASQUERADE_MARK, 0), _expr.Verdict(_expr.NFT_RETURN)],
                _words.mark_xor(MASQUERADE_MARK),
                [_expr.Masq()],
            ],
        ),
        Chain("nat-prerouting", [jump_services], hook=_nft.HOOK_PREROUTING, priority=_nft.PRIO_DSTNAT, type="nat"),
        Chain("nat-output", [jump_services], hook=_nft.HOOK_OUTPUT, priority=_nft.PRIO_DSTNAT, type="nat"),
        Chain(
            "nat-postrouting",
            [[_expr.Verdict(_expr.NFT_JUMP, "masquerading")]],
            hook=_nft.HOOK_POSTROUTING,
            priority=_nft.PRIO_SRCNAT,
            type="nat",
        ),
    ]


def _service(batch: Batch, service: Service, node: Node, existing: set[str]) -> set[str]:
    """Add to ``batch`` what makes (or remakes) ``service`` on ``node`` in a table whose chains are ``existing``.

    Returns the table's chains once the batch is committed.
    """
    if service.ip is None:  # a headless service: kube-proxy has nothing to do
        return existing
    for port in service.ports:
        existing = _service_port(batch, service, port, node, existing)
    return existing


def _service_port(batch: Batch, service: Service, port: ServicePort, node: Node, existing: set[str]) -> set[str]:
    """``_service`` for one port of the service: its chain, endpoints, node port and ``@service-ips`` element."""
    assert service.ip is not None
    chain = service_chain(service, port)
    affinity = service.session_affinity
    timeout = service.session_affinity_timeout
    endpoints = [(pod.ip, port.target_port) for pod in service.pods]
    node_port = _nodeport.plan(service, port, node, key=_key(service, port), service_chain=chain)
    wanted = {endpoint_chain(service, ip, target, port) for ip, target in endpoints}
    _fresh_chain(batch, chain, existing)
    for ip, target in endpoints:
        name = endpoint_chain(service, ip, target, port)
        _fresh_chain(batch, name, existing)
        rules: list[_nft.Rule] = [
            [*_words.addr(ipaddress.ip_network(ip), "saddr"), _expr.Verdict(_expr.NFT_JUMP, "mark-for-masquerade")]
        ]
        if affinity is not None:
            members = affinity_set(service, ip, target, port)
            flags = _objects.SET_TIMEOUT | _objects.SET_EVAL
            batch.add_set(FAMILY, TABLE, Set(members, _objects.TYPE_IPADDR, 4, flags, timeout_ms=timeout * 1000))
            rules.append(_words.update_saddr(members))
        rules.append([*_words.l4proto(_words.IPPROTO[port.proto]), *_words.dnat_to(ip, target)])
        for rule in rules:
            batch.add_rule(FAMILY, TABLE, name, rule)
    if endpoints:
        _spread(batch, chain, service, port, endpoints)
    else:
        batch.add_rule(FAMILY, TABLE, chain, _words.reject_new(port.proto, FAMILY))
    after = existing | wanted | {chain}
    if node_port is not None:
        _node_port(batch, node_port, service, port, existing)
        after |= {rules for rules in (node_port.external, node_port.local) if rules is not None}
    prefix = endpoint_chain(service, "", 0, port).removesuffix("/0")
    stales = sorted(name for name in existing if name.startswith(prefix) and name not in wanted)
    for stale in stales:
        batch.flush_chain(FAMILY, TABLE, stale)
        batch.delete_chain(FAMILY, TABLE, stale)
        if affinity is not None:
            batch.delete_set(FAMILY, TABLE, "affinity-" + stale.removeprefix("endpoint-"))
    key = _words.daddr_proto_dport_key(service.ip, port.proto, port.port)
    batch.add_elements(FAMILY, TABLE, SERVICES_MAP, [(key, _expr.Verdict(_GOTO, chain))])
    return after - set(stales)


def _spread(
    batch: Batch, chain: str, service: Service, port: ServicePort, endpoints: Sequence[tuple[IPv4, int]]
) -> None:
    """Fill ``chain``: a client seen recently to its endpoint (affinity), then one ``numgen ... vmap`` over all."""
    if service.session_affinity is not None:
        for ip, target in endpoints:
            goto = _expr.Verdict(_GOTO, endpoint_chain(service, ip, target, port))
            batch.add_rule(FAMILY, TABLE, chain, [*_words.saddr_in(affinity_set(service, ip, target, port)), goto])
    set_id = batch.set_id()
    kind = _expr.NG_INCREMENTAL if service.spread == "round_robin" else _expr.NG_RANDOM
    picks = Set(
        "__map%d",
        _objects.TYPE_INTEGER,
        4,
        _objects.SET_ANONYMOUS | _objects.SET_CONSTANT | _objects.SET_MAP,
        data_type=_objects.DATA_VERDICT,
        id=set_id,
        host_endian_key=True,
    )
    batch.add_set(FAMILY, TABLE, picks)
    elements = [
        (_words.numgen_key(number), _expr.Verdict(_GOTO, endpoint_chain(service, ip, target, port)))
        for number, (ip, target) in enumerate(endpoints)
    ]
    batch.add_elements(FAMILY, TABLE, picks.name, elements, set_id=set_id)
    batch.add_rule(FAMILY, TABLE, chain, _words.numgen_vmap(len(endpoints), kind, picks.name, set_id))


def _node_port(
    batch: Batch, rules: _nodeport.NodePortRules, service: Service, port: ServicePort, existing: set[str]
) -> None:
    """A port's node port on this node (``nodeport``): its chains filled, its ``@service-nodeports`` element."""
    _fresh_chain(batch, rules.external, existing)
    if rules.local is not None:
        _fresh_chain(batch, rules.local, existing)
        if rules.local_endpoints:
            _spread(batch, rules.local, service, port, rules.local_endpoints)
        else:
            batch.add_rule(FAMILY, TABLE, rules.local, _nodeport.DROP)
    for rule in rules.external_rules:
        batch.add_rule(FAMILY, TABLE, rules.external, rule)
    batch.add_elements(FAMILY, TABLE, _nodeport.NODEPORTS_MAP, [(rules.key, _expr.Verdict(_GOTO, rules.external))])


def _commit(batch: Batch, sock: _nft.NftSocket, services: Sequence[Service], doing: str) -> None:
    """Commit; a kernel without dynamic sets with timeouts is ``FeatureUnavailable`` for session affinity.

    A refusal is an ``NftError`` naming ``doing``.
    """
    try:
        batch.commit(sock)
    except _nft.NftError as exc:
        affinity = [svc.name for svc in services if svc.session_affinity is not None]
        if affinity and exc.errno == errno.EOPNOTSUPP and exc.request.startswith("add set"):
            raise FeatureUnavailable(
                f"session_affinity of service {affinity[0]!r} needs nftables dynamic sets with timeouts "
                f"(nft_set_hash, nft_dynset), which this kernel refused: {exc}",
                feature=None,  # every kernel doctor accepts has them: no probe of its own
            ) from None
        raise _nft.NftError(exc.errno or errno.EIO, exc.request, exc.detail, doing) from None


def _fresh_chain(batch: Batch, name: str, existing: set[str]) -> None:
    if name in existing:
        batch.flush_chain(FAMILY, TABLE, name)
    else:
        batch.add_chain(FAMILY, TABLE, name)


def _node_nat_table() -> Table:
    """A node's egress masquerade: ``inet pytest_netns_cluster``, as ``_net.rules.masquerade`` makes it.

    ``ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 oifname "eth0" masquerade``:
    what leaves a node for anything outside the pod network goes out with the
    node's IP; pod-to-pod traffic between nodes keeps its addresses.
    """
    rule = _rules.masquerade_rule(oifname=NODE_UPLINK, src=CLUSTER_CIDR, not_dst=CLUSTER_CIDR)
    post = Chain("postrouting", [rule], hook=_nft.HOOK_POSTROUTING, priority=_nft.PRIO_SRCNAT, type="nat")
    return Table("inet", NAT_TABLE, [post])


#: Where kube-proxy's own requests start in ``_node_requests``: after the masquerade table's.
_KUBE_PROXY_START = 1 + 1 + 1
_BASE_CHAIN_NAMES = frozenset(chain.name for chain in _base_chains(ipaddress.IPv4Address("0.0.0.0")))
