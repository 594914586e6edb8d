"""NetworkPolicy enforcement: each node's nftables table, rendered from the policies and the node's pods.

Per node one ``ip`` table (``pytest_netns_policy``), enforcing for the pods of that node only:

* base chains ``egress`` and ``ingress`` on the forward hook (filter priority 0 and 1, after
  kube-proxy's DNAT in prerouting, so they see the backend pod and its target port): ``ct state
  established,related accept`` (replies of allowed connections), then ``ip saddr vmap { <isolated pod> :
  goto egress-<pod> }`` (``ip daddr`` for ingress).  A pod isolated for neither direction is not in
  the maps: its traffic is accepted.  An ``accept`` ends only its own base chain, so a packet between
  two pods of one node passes the sender's egress and then the receiver's ingress;
* ``<direction>-<pod>`` jumps to the chain of every policy selecting the pod, then drops (silently);
* ``policy-<namespace>/<name>-<direction>`` accepts what one of the policy's rules allows: peers as
  an anonymous set of pod addresses (``ip saddr { ... }``), or an ip_block (``ip saddr <cidr> ip saddr
  != <except> ...``), times each port (``meta l4proto tcp th dport <port>``, a range with ``>=``/``<=``).

Every pod's traffic is forwarded by its node: in ptp mode even between two pods of one node (routed),
in bridge mode bridged traffic passes the forward hook through br_netfilter (which bridge mode
requires).  The node's own traffic to its pods (output hook) and a pod's to its node (input hook)
never pass the forward hook: they are always allowed, as most CNIs allow the pod's own node (kubelet's
probes).  Other nodes, external hosts and NodePort traffic SNATed to a node's address are peers like
any other (``ip_block``).

A change renders every node's wanted chains, compares them with what the node has, and sends one
transaction per node that changed (none for the others): changed chains are flushed and refilled, new
ones added, gone ones flushed and deleted; the base chains are made once and never deleted (deleting a
base chain waits for an RCU grace period).
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import socket
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..._kernel import nft as _nft
from ..._kernel.nft import Batch, Set
from ..._kernel.nft import expr as _expr
from ..._kernel.nft import objects as _objects
from ..._kernel.nft import statements as _words
from .nftsockets import NodeSockets
from .objects import Node, Pod, Service
from .policy import IPBlock, NetworkPolicy, Port, Rule
from .selectors import Selector

FAMILY = "ip"
TABLE = f"{_nft.TABLE_PREFIX}_policy"
#: nft chain names are at most 256 bytes (NFT_CHAIN_MAXNAMELEN) with their terminating NUL.
MAX_CHAIN_NAME = 255
IPPROTO = {"TCP": socket.IPPROTO_TCP, "UDP": socket.IPPROTO_UDP, "SCTP": socket.IPPROTO_SCTP}
BASE = {"egress": 0, "ingress": 1}  # base chain -> priority on the forward hook
_ADDRESS_FIELD = {"egress": "daddr", "ingress": "saddr"}  # what a peer is, seen from the isolated pod


@dataclass(frozen=True)
class Match:
    """One accept rule of a policy chain: peer addresses (a set of pods, a block, or anyone) and a port."""

    field: str  # "saddr" | "daddr"
    pods: tuple[ipaddress.IPv4Address, ...] | None = None  # None: not a pod set
    block: IPBlock | None = None
    port: Port | None = None
    #: A named port resolved for one destination pod: ``ip daddr <dest>`` too.
    dest: ipaddress.IPv4Address | None = None


@dataclass(frozen=True)
class Jump:
    chain: str


@dataclass(frozen=True)
class Vmap:
    """``ip saddr|daddr vmap { pod ip : goto chain }``."""

    field: str
    targets: tuple[tuple[ipaddress.IPv4Address, str], ...]


@dataclass(frozen=True)
class Drop:
    pass


@dataclass(frozen=True)
class Established:
    pass


Spec = Match | Jump | Vmap | Drop | Established
Chains = dict[str, tuple[Spec, ...]]


@dataclass(frozen=True)
class View:
    """What a policy is rendered against: every pod (with the kube-dns pod) and each namespace's labels."""

    pods: Sequence[Pod]
    namespaces: Mapping[str, Mapping[str, str]]
    services: Sequence[Service] = ()

    def named_ports(self, pod: Pod, port: Port) -> list[int]:
        """The target ports of ``pod``'s services whose port has the name ``port.port`` (and its protocol)."""
        found = {
            service_port.target_port
            for svc in self.services
            for service_port in svc.ports
            if service_port.name == port.port and service_port.proto == port.protocol.lower() and pod in svc.pods
        }
        return sorted(found)

    def peers(
        self, policy: NetworkPolicy, pod_selector: Selector | None, namespace_selector: Selector | None
    ) -> list[Pod]:
        found = []
        for pod in self.pods:
            if namespace_selector is None:
                if pod.namespace != policy.namespace:
                    continue
            elif not namespace_selector.matches(self.namespaces.get(pod.namespace, {})):
                continue
            if pod_selector is not None and not pod_selector.matches(pod.labels):
                continue
            found.append(pod)
        return found


def policy_chain(policy: NetworkPolicy, direction: str) -> str:
    name = f"policy-{policy.namespace}/{policy.name}-{direction}"
    if len(name.encode()) > MAX_CHAIN_NAME:
        name = f"policy-{policy.namespace}/{policy.name[:150]}~{id(policy):x}-{direction}"
    return name


def pod_chain(pod: Pod, direction: str) -> str:
    return f"{direction}-{pod.name}"


def _addresses(rule: Rule, field: str, policy: NetworkPolicy, view: View) -> list[Match]:
    """The rule's peers as address matches (no port yet): anyone, a set of pods, ip blocks."""
    if not rule.peers:
        return [Match(field)]
    addresses: list[Match] = []
    selected: set[ipaddress.IPv4Address] = set()
    for peer in rule.peers:
        if peer.ip_block is not None:
            if peer.ip_block.cidr.version == 4:  # the cluster has no IPv6 traffic
                addresses.append(Match(field, block=peer.ip_block))
        else:
            selected.update(pod.ip for pod in view.peers(policy, peer.pod_selector, peer.namespace_selector))
    if selected:
        addresses.insert(0, Match(field, pods=tuple(sorted(selected))))
    return addresses


def _peer_pods(rule: Rule, policy: NetworkPolicy, view: View) -> list[Pod]:
    """The pods an egress rule's peers cover (ip blocks too), for its named ports."""
    if not rule.peers:
        return list(view.pods)
    found: dict[str, Pod] = {}
    for peer in rule.peers:
        block = peer.ip_block
        if block is None:
            found |= {pod.name: pod for pod in view.peers(policy, peer.pod_selector, peer.namespace_selector)}
        elif block.cidr.version == 4:
            found |= {
                pod.name: pod
                for pod in view.pods
                if pod.ip in block.cidr and not any(pod.ip in excluded for excluded in block.excepts)
            }
    return list(found.values())


def _policy_matches(rules: Iterable[Rule], field: str, policy: NetworkPolicy, view: View) -> tuple[Spec, ...]:
    specs: list[Spec] = []
    for rule in rules:
        addresses = _addresses(rule, field, policy, view)
        numbered: list[Port | None] = [p for p in rule.ports if not isinstance(p.port, str)]
        for address in addresses:
            for port in numbered if rule.ports else [None]:
                specs.append(dataclasses.replace(address, port=port))
        for named in (p for p in rule.ports if isinstance(p.port, str)):
            if field == "saddr":  # ingress: the port of that name of the isolated pod itself
                for pod in (p for p in view.pods if policy.selects(p)):
                    for number in view.named_ports(pod, named):
                        port = Port(named.protocol, number)
                        specs += [dataclasses.replace(a, port=port, dest=pod.ip) for a in addresses]
            else:  # egress: the peer's port of that name
                for pod in _peer_pods(rule, policy, view):
                    for number in view.named_ports(pod, named):
                        specs.append(Match("daddr", port=Port(named.protocol, number), dest=pod.ip))
    return tuple(specs)


def render(node: Node, policies: Sequence[NetworkPolicy], view: View) -> Chains:
    """The chains ``node`` needs (base chains included) for ``policies`` and its pods."""
    chains: Chains = {}
    for direction, kind in (("ingress", "Ingress"), ("egress", "Egress")):
        field = _ADDRESS_FIELD[direction]
        targets: list[tuple[ipaddress.IPv4Address, str]] = []
        for pod in sorted((p for p in view.pods if p.node is node), key=lambda p: p.ip):
            selecting = [p for p in policies if kind in p.policy_types and p.selects(pod)]
            if not selecting:
                continue
            jumps: list[Spec] = []
            for policy in selecting:
                name = policy_chain(policy, direction)
                if name not in chains:
                    rules = policy.ingress if direction == "ingress" else policy.egress
                    chains[name] = _policy_matches(rules, field, policy, view)
                jumps.append(Jump(name))
            chains[pod_chain(pod, direction)] = (*jumps, Drop())
            targets.append((pod.ip, pod_chain(pod, direction)))
        lookup = "daddr" if direction == "ingress" else "saddr"
        chains[direction] = (Established(), Vmap(lookup, tuple(targets))) if targets else ()
    return chains


# -- encoding ----------------------------------------------------------------------------------------


def _addr_field(field: str) -> list[_expr.Expr]:
    return [_expr.Payload(_expr.PAYLOAD_NETWORK, 12 if field == "saddr" else 16, 4)]


def _ct_established() -> list[_expr.Expr]:
    bits = (1 << 1) | (1 << 2)  # NF_CT_STATE_BIT(IP_CT_ESTABLISHED), (IP_CT_RELATED)
    return [_expr.Ct(_expr.CT_STATE), _expr.Bitwise(struct.pack("=I", bits)), _expr.Cmp(_expr.CMP_NEQ, bytes(4))]


def _port_exprs(port: Port) -> list[_expr.Expr]:
    exprs: list[_expr.Expr] = [*_words.l4proto(IPPROTO[port.protocol])]
    if not isinstance(port.port, int):  # None: every port (a named one is resolved by render)
        return exprs
    exprs.append(_expr.Payload(_expr.PAYLOAD_TRANSPORT, 2, 2))
    if port.end_port is None or port.end_port == port.port:
        return [*exprs, _expr.Cmp(_expr.CMP_EQ, struct.pack("!H", port.port))]
    return [
        *exprs,
        _expr.Cmp(_expr.CMP_GTE, struct.pack("!H", port.port)),
        _expr.Cmp(_expr.CMP_LTE, struct.pack("!H", port.end_port)),
    ]


def _encode(batch: Batch, chain: str, spec: Spec) -> None:
    rule: list[_expr.Expr]
    if isinstance(spec, Established):
        rule = [*_ct_established(), _expr.Verdict(_expr.NF_ACCEPT)]
    elif isinstance(spec, Drop):
        rule = [_expr.Verdict(_expr.NF_DROP)]
    elif isinstance(spec, Jump):
        rule = [_expr.Verdict(_expr.NFT_JUMP, spec.chain)]
    elif isinstance(spec, Vmap):
        set_id = batch.set_id()
        flags = _objects.SET_ANONYMOUS | _objects.SET_CONSTANT | _objects.SET_MAP
        batch.add_set(
            FAMILY, TABLE, Set("__map%d", _objects.TYPE_IPADDR, 4, flags, data_type=_objects.DATA_VERDICT, id=set_id)
        )
        elements = [(ip.packed, _expr.Verdict(_expr.NFT_GOTO, target)) for ip, target in spec.targets]
        batch.add_elements(FAMILY, TABLE, "__map%d", elements, set_id=set_id)
        rule = [
            *_addr_field(spec.field),
            _expr.Lookup("__map%d", dreg=_expr.REG_VERDICT, set_id=set_id),
        ]
    else:
        rule = []
        if spec.pods is not None:
            set_id = batch.set_id()
            flags = _objects.SET_ANONYMOUS | _objects.SET_CONSTANT
            batch.add_set(FAMILY, TABLE, Set("__set%d", _objects.TYPE_IPADDR, 4, flags, id=set_id))
            batch.add_elements(FAMILY, TABLE, "__set%d", [(ip.packed, None) for ip in spec.pods], set_id=set_id)
            rule += [*_addr_field(spec.field), _expr.Lookup("__set%d", set_id=set_id)]
        if spec.block is not None:
            field = "saddr" if spec.field == "saddr" else "daddr"
            rule += _words.addr(spec.block.cidr, field)  # type: ignore[arg-type]
            for excluded in spec.block.excepts:
                rule += _words.addr(excluded, field, _expr.CMP_NEQ)  # type: ignore[arg-type]
        if spec.dest is not None:
            rule += _words.addr(ipaddress.IPv4Network(spec.dest), "daddr")
        if spec.port is not None:
            rule += _port_exprs(spec.port)
        rule.append(_expr.Verdict(_expr.NF_ACCEPT))
    batch.add_rule(FAMILY, TABLE, chain, rule)


class Enforcer:
    """The chains each node has, and the transactions that bring every node to what the policies want.

    Each node's transactions go through its socket of ``sockets`` (kept until the node's teardown).
    """

    def __init__(self, sockets: NodeSockets) -> None:
        self._installed: dict[str, Chains] = {}  # node name -> its chains as committed
        self._sockets = sockets

    def sync(self, nodes: Iterable[Node], policies: Sequence[NetworkPolicy], view: View) -> None:
        """One transaction per node whose chains change."""
        for node in nodes:
            have = self._installed.get(node.name)
            if have is None and not policies:
                continue
            want = render(node, policies, view)
            if have == want:
                continue
            batch = Batch()
            _changes(batch, have, want)
            doing = f"enforcing NetworkPolicies on node {node.name!r}"
            try:
                batch.commit(self._sockets.of(node))
            except _nft.NftError as exc:
                raise _nft.NftError(exc.errno or errno.EIO, exc.request, exc.detail, doing) from None
            self._installed[node.name] = want


def _changes(batch: Batch, have: Chains | None, want: Chains) -> None:
    if have is None:
        batch.add_table(FAMILY, TABLE)
        for name, priority in BASE.items():
            batch.add_chain(FAMILY, TABLE, name, hook=_nft.HOOK_FORWARD, priority=priority)
        have = {name: () for name in BASE}
    refill = [name for name in want if name in have and have[name] != want[name]]
    stale = [name for name in have if name not in want]
    for name in refill + stale:
        batch.flush_chain(FAMILY, TABLE, name)
    for name in stale:
        batch.delete_chain(FAMILY, TABLE, name)
    new = [name for name in want if name not in have]
    for name in new:
        batch.add_chain(FAMILY, TABLE, name)
    for name in refill + new:
        for spec in want[name]:
            _encode(batch, name, spec)
