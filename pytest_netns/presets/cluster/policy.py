"""NetworkPolicy: the spec as ``Cluster.network_policy`` takes it (Kubernetes' fields in snake_case), checked.

``check_policy`` turns plain data into a ``PolicySpec`` before anything is touched, raising
``ValueError`` naming the bad value; ``NetworkPolicy`` is the object the user holds;
``enforce`` renders every policy into the nodes' nftables rules.

* A rule: ``{"from": [peer, ...], "ports": [...]}`` (ingress) or ``{"to": [...], "ports": [...]}``
  (egress); a missing or empty ``from``/``to`` allows every peer, missing or empty ``ports`` every port.
* A peer: ``{"pod_selector": sel}`` (pods of the policy's namespace), ``{"namespace_selector": sel}``
  (every pod of the selected namespaces), both in one dict (pods matching both), or
  ``{"ip_block": {"cidr": "...", "except": [...]}}``.
* A port: an int (TCP), or ``{"port": 5432, "protocol": "TCP"|"UDP"|"SCTP", "end_port": 5440}``
  (``port`` omitted: every port of the protocol), or a named port (``"http"``, ``{"port": "dns", "protocol":
  "UDP"}``): the target port of the destination pod's services with that ``port_name``.
* ``policy_types`` defaults to ``["Ingress"]``, plus ``"Egress"`` when ``egress`` is given.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from ..._kernel import validate as _validate
from .network import check_namespace_name
from .objects import Pod
from .selectors import Selector, selector

PolicyType = Literal["Ingress", "Egress"]
Protocol_ = Literal["TCP", "UDP", "SCTP"]
POLICY_TYPES: tuple[PolicyType, ...] = ("Ingress", "Egress")
PROTOCOLS: tuple[Protocol_, ...] = ("TCP", "UDP", "SCTP")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_PEER_KEYS = ("pod_selector", "namespace_selector", "ip_block")
_PORT_KEYS = ("port", "protocol", "end_port")
_CAMEL = {
    "podSelector": "pod_selector",
    "namespaceSelector": "namespace_selector",
    "ipBlock": "ip_block",
    "endPort": "end_port",
    "matchLabels": "match_labels",
    "matchExpressions": "match_expressions",
    "policyTypes": "policy_types",
}


@dataclass(frozen=True)
class IPBlock:
    """``cidr`` without the ``excepts`` (each strictly inside ``cidr``)."""

    cidr: IPNetwork
    excepts: tuple[IPNetwork, ...] = ()


@dataclass(frozen=True)
class Peer:
    """Pods (``pod_selector`` and/or ``namespace_selector``, ANDed) or an ``ip_block``."""

    pod_selector: Selector | None = None
    namespace_selector: Selector | None = None
    ip_block: IPBlock | None = None


@dataclass(frozen=True)
class Port:
    """``protocol`` and a port (``None``: every port), the range ``port``-``end_port``, or a named port.

    A named port (a string) is the target port of the services of the destination pod whose
    ``port_name`` it is (the model's pods declare no container ports); a pod without one is not matched.
    """

    protocol: Protocol_ = "TCP"
    port: int | str | None = None
    end_port: int | None = None


@dataclass(frozen=True)
class Rule:
    """An ingress or egress rule: ``peers`` empty means every peer, ``ports`` empty every port."""

    peers: tuple[Peer, ...] = ()
    ports: tuple[Port, ...] = ()


@dataclass(frozen=True)
class PolicySpec:
    name: str
    namespace: str
    pod_selector: Selector
    policy_types: tuple[PolicyType, ...]
    ingress: tuple[Rule, ...]
    egress: tuple[Rule, ...]


def check_policy(
    name: object,
    *,
    namespace: object,
    pod_selector: object,
    policy_types: object,
    ingress: object,
    egress: object,
) -> PolicySpec:
    """The checked spec, or ``ValueError`` naming the first bad value."""
    name = _validate.check_name(name, what="NetworkPolicy name", rule=_validate.DNS1123_SUBDOMAIN)
    namespace = check_namespace_name(namespace)
    where = f"NetworkPolicy {name!r}"
    pods = selector(pod_selector, f"{where}: pod_selector")
    if policy_types is None:
        types: tuple[PolicyType, ...] = ("Ingress", "Egress") if egress is not None else ("Ingress",)
    else:
        types = _policy_types(policy_types, where)
    if egress is not None and "Egress" not in types:
        raise ValueError(f"{where}: egress rules are given but policy_types {list(types)!r} lacks 'Egress'")
    if ingress is not None and "Ingress" not in types:
        raise ValueError(f"{where}: ingress rules are given but policy_types {list(types)!r} lacks 'Ingress'")
    return PolicySpec(
        name,
        namespace,
        pods,
        types,
        _rules(ingress, "from", f"{where}: ingress"),
        _rules(egress, "to", f"{where}: egress"),
    )


def _list(value: object, what: str) -> Sequence[object]:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise ValueError(f"{what} must be a list, got {value!r}")
    return value


def _unknown(value: Mapping[object, object], allowed: Sequence[str], what: str) -> None:
    for key in value:
        if key not in allowed:
            hint = f" (did you mean {_CAMEL[key]!r}?)" if isinstance(key, str) and _CAMEL.get(key) in allowed else ""
            raise ValueError(f"{what}: unknown field {key!r}{hint}; it takes {', '.join(allowed)}")


def _policy_types(value: object, where: str) -> tuple[PolicyType, ...]:
    items = _list(value, f"{where}: policy_types")
    if not items:
        raise ValueError(f"{where}: policy_types {value!r} is empty (give 'Ingress', 'Egress' or both)")
    types: list[PolicyType] = []
    for item in items:
        if item not in POLICY_TYPES:
            raise ValueError(f"{where}: policy type {item!r} is not 'Ingress' or 'Egress'")
        if item in types:
            raise ValueError(f"{where}: policy type {item!r} is given twice")
        types.append("Ingress" if item == "Ingress" else "Egress")
    return tuple(types)


def _rules(value: object, peers_key: Literal["from", "to"], what: str) -> tuple[Rule, ...]:
    if value is None:
        return ()
    rules = []
    for number, item in enumerate(_list(value, what)):
        where = f"{what}[{number}]"
        if not isinstance(item, Mapping):
            raise ValueError(f"{where} must be a mapping with {peers_key!r} and 'ports', got {item!r}")
        _unknown(item, (peers_key, "ports"), where)
        raw_peers = item.get(peers_key)
        raw_ports = item.get("ports")
        peers = () if raw_peers is None else _list(raw_peers, f"{where}.{peers_key}")
        ports = () if raw_ports is None else _list(raw_ports, f"{where}.ports")
        rules.append(
            Rule(
                tuple(_peer(peer, f"{where}.{peers_key}[{n}]") for n, peer in enumerate(peers)),
                tuple(_port(port, f"{where}.ports[{n}]") for n, port in enumerate(ports)),
            )
        )
    return tuple(rules)


def _peer(value: object, what: str) -> Peer:
    if not isinstance(value, Mapping) or not value:
        raise ValueError(f"{what} must be a mapping with pod_selector, namespace_selector or ip_block, got {value!r}")
    _unknown(value, _PEER_KEYS, what)
    if "ip_block" in value:
        if len(value) > 1:
            raise ValueError(f"{what}: ip_block cannot be combined with a selector, got {dict(value)!r}")
        return Peer(ip_block=_ip_block(value["ip_block"], f"{what}.ip_block"))
    pods = value.get("pod_selector")
    namespaces = value.get("namespace_selector")
    return Peer(
        pod_selector=None if pods is None else selector(pods, f"{what}.pod_selector"),
        namespace_selector=None if namespaces is None else selector(namespaces, f"{what}.namespace_selector"),
    )


def _network(value: object, what: str) -> IPNetwork:
    if not isinstance(value, str) or "/" not in value:
        raise ValueError(f"{what} {value!r} is not a CIDR (address/prefix length)")
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{what} {value!r} is not a CIDR (address/prefix length)") from None


def _ip_block(value: object, what: str) -> IPBlock:
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a mapping with cidr and except, got {value!r}")
    _unknown(value, ("cidr", "except"), what)
    if "cidr" not in value:
        raise ValueError(f"{what}: no cidr in {dict(value)!r}")
    cidr = _network(value["cidr"], f"{what}: cidr")
    raw = value.get("except")
    excepts = []
    for item in () if raw is None else _list(raw, f"{what}: except"):
        network = _network(item, f"{what}: except")
        if network.version != cidr.version or not network.subnet_of(cidr) or network == cidr:  # type: ignore[arg-type]
            raise ValueError(f"{what}: except {item!r} is not strictly inside cidr {value['cidr']!r}")
        excepts.append(network)
    return IPBlock(cidr, tuple(excepts))


def _port(value: object, what: str) -> Port:
    if isinstance(value, int) and not isinstance(value, bool):
        return Port("TCP", _validate.port(value, what))
    if isinstance(value, str):
        return Port("TCP", _named_port(value, what))
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a port number or a mapping with port, protocol, end_port, got {value!r}")
    _unknown(value, _PORT_KEYS, what)
    raw_protocol = value.get("protocol", "TCP")
    protocols = [p for p in PROTOCOLS if p == raw_protocol]
    if not protocols:
        raise ValueError(f"{what}: protocol {raw_protocol!r} is not one of {', '.join(PROTOCOLS)}")
    protocol = protocols[0]
    raw = value.get("port")
    end = value.get("end_port")
    if isinstance(raw, str):
        if end is not None:
            raise ValueError(f"{what}: end_port {end!r} cannot follow the named port {raw!r}")
        return Port(protocol, _named_port(raw, what))
    port = None if raw is None else _validate.port(raw, f"{what}: port")
    if end is not None:
        if port is None:
            raise ValueError(f"{what}: end_port {end!r} needs a port to start the range")
        end_port = _validate.port(end, f"{what}: end_port")
        if end_port < port:
            raise ValueError(f"{what}: end_port {end_port!r} is below port {port!r}")
        return Port(protocol, port, end_port)
    return Port(protocol, port)


def _named_port(value: str, what: str) -> str:
    return _validate.check_name(value, what=f"{what}: named port", rule=_validate.IANA_SVC_NAME)


class PolicyOwner(Protocol):
    """What a ``NetworkPolicy`` asks of the cluster that made it."""

    def _check_open(self) -> None: ...

    def _delete_policy(self, policy: NetworkPolicy) -> None: ...

    def _policy_pods(self) -> list[Pod]: ...


class NetworkPolicy:
    """A NetworkPolicy of a ``Cluster`` (``Cluster.network_policy``), enforced on every node until ``delete()``.

    ``name``, ``namespace``, ``pod_selector``, ``policy_types``, ``ingress`` and ``egress`` are the
    checked spec; ``pods`` are the pods it selects now.
    """

    def __init__(self, cluster: PolicyOwner, spec: PolicySpec) -> None:
        self._cluster = cluster
        self.spec = spec
        self._deleted = False

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def namespace(self) -> str:
        return self.spec.namespace

    @property
    def pod_selector(self) -> Selector:
        return self.spec.pod_selector

    @property
    def policy_types(self) -> tuple[PolicyType, ...]:
        return self.spec.policy_types

    @property
    def ingress(self) -> tuple[Rule, ...]:
        return self.spec.ingress

    @property
    def egress(self) -> tuple[Rule, ...]:
        return self.spec.egress

    @property
    def deleted(self) -> bool:
        return self._deleted

    def selects(self, pod: Pod) -> bool:
        """Whether ``pod`` is one this policy isolates (its namespace, its pod_selector)."""
        return pod.namespace == self.spec.namespace and self.spec.pod_selector.matches(pod.labels)

    @property
    def pods(self) -> list[Pod]:
        """The pods it selects now (the kube-dns pod included when it matches)."""
        return [pod for pod in self._cluster._policy_pods() if self.selects(pod)]

    def delete(self) -> None:
        """Remove the policy: every node's rules are rewritten without it (one transaction per node)."""
        if self._deleted:
            raise ValueError(f"NetworkPolicy {self.name!r} in namespace {self.namespace!r} is already deleted")
        self._cluster._check_open()
        self._cluster._delete_policy(self)

    def __repr__(self) -> str:
        state = " deleted" if self._deleted else ""
        return f"<NetworkPolicy {self.namespace}/{self.name} {'+'.join(self.policy_types)}{state}>"


__all__ = ["NetworkPolicy", "PolicySpec", "check_policy"]
