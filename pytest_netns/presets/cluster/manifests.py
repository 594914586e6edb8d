"""Kubernetes manifests as calls of ``Cluster.service`` and ``Cluster.network_policy`` (``Cluster.apply``).

``translate`` reads YAML text (several documents), a dict or a list of dicts
and turns each object into the call that makes it, checking every field
first: a kind or a field this model does not have is a ``ValueError`` naming
it (``spec.ports[0].appProtocol``), so nothing in a manifest is silently
ignored.  ``apply`` then makes the objects in order.

* ``v1`` ``Service``: ``metadata.name``/``namespace`` (``default`` when
  missing), ``spec.selector`` (required), ``type`` (ClusterIP, NodePort),
  ``clusterIP`` (an address, or ``None`` for a headless service), ``ports``
  (``name``, ``port``, ``targetPort`` as a number, ``protocol`` TCP/UDP,
  ``nodePort``; with several, each named, names and port/protocol pairs
  distinct, as Kubernetes requires), ``sessionAffinity`` (+
  ``sessionAffinityConfig.clientIP.timeoutSeconds``), ``externalTrafficPolicy``.
* ``networking.k8s.io/v1`` ``NetworkPolicy``: its whole spec (``podSelector``,
  ``policyTypes``, ``ingress[].from``/``ports``, ``egress[].to``/``ports``,
  peers ``podSelector``/``namespaceSelector``/``ipBlock{cidr, except}``, ports
  ``port``/``protocol``/``endPort``, selectors ``matchLabels``/``matchExpressions``),
  with ``policyTypes`` defaulted as the API server does.
* ``metadata.labels`` and ``metadata.annotations`` are accepted (checked to
  be string maps) and change nothing on the network.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

from .objects import DEFAULT_AFFINITY_TIMEOUT, Service
from .policy import check_policy
from .services import check_options

if TYPE_CHECKING:
    from .policy import NetworkPolicy

#: What ``Cluster.apply`` takes: YAML text, one object, or a list of objects.
Manifest = str | Mapping[str, object] | Sequence[Mapping[str, object]]

SERVICE = ("v1", "Service")
NETWORK_POLICY = ("networking.k8s.io/v1", "NetworkPolicy")
_METADATA = ("name", "namespace", "labels", "annotations")
_SERVICE_SPEC = (
    "selector",
    "type",
    "clusterIP",
    "ports",
    "sessionAffinity",
    "sessionAffinityConfig",
    "externalTrafficPolicy",
)
_SERVICE_PORT = ("name", "port", "targetPort", "protocol", "nodePort")
_PROTOCOLS = {"TCP": "tcp", "UDP": "udp"}
#: ``Cluster.service``'s defaults, for checking a Service's options before anything is made.
_SERVICE_DEFAULTS: dict[str, object] = {
    "port": None,
    "target_port": None,
    "proto": "tcp",
    "cluster_ip": None,
    "spread": "random",
    "session_affinity": None,
    "session_affinity_timeout": DEFAULT_AFFINITY_TIMEOUT,
    "headless": False,
    "port_name": None,
}


@dataclass(frozen=True)
class Call:
    """One object of a manifest as the call that makes it: ``cluster.<method>(name, **kwargs)``."""

    method: Literal["service", "network_policy"]
    name: str
    kwargs: Mapping[str, object] = field(default_factory=dict)
    #: Where it came from, for messages: ``document 2 (NetworkPolicy default/deny-all)``.
    where: str = ""


def apply(
    manifest: Manifest,
    *,
    service: Callable[..., Service],
    network_policy: Callable[..., NetworkPolicy],
) -> list[Service | NetworkPolicy]:
    """Make every object of ``manifest`` in order with ``service``/``network_policy``; return them.

    Every document is checked before the first object is made.  When making
    one fails (a name already taken), the error names its document and the
    objects already made stay.
    """
    calls = translate(manifest)
    made: list[Service | NetworkPolicy] = []
    for call in calls:
        maker = service if call.method == "service" else network_policy
        try:
            made.append(maker(call.name, **call.kwargs))
        except ValueError as exc:
            done = f"; made before it: {', '.join(calls[i].where for i in range(len(made)))}" if made else ""
            raise ValueError(f"{call.where}: {exc}{done}") from None
    return made


def translate(manifest: Manifest) -> list[Call]:
    """The calls that make the objects of ``manifest``, in order; ``ValueError`` naming any bad kind or field."""
    calls = []
    for number, document in enumerate(load(manifest), start=1):
        calls.append(_translate(document, f"document {number}"))
    return calls


def load(manifest: Manifest) -> list[Mapping[str, object]]:
    """The documents of ``manifest``: YAML text is read with ``yaml.safe_load_all`` (empty documents skipped)."""
    if isinstance(manifest, str):
        import yaml  # PyYAML, only when given text

        try:
            documents = [doc for doc in yaml.safe_load_all(manifest) if doc is not None]
        except yaml.YAMLError as exc:
            raise ValueError(f"manifest is not valid YAML: {exc}") from None
    elif isinstance(manifest, Mapping):
        documents = [manifest]
    elif isinstance(manifest, Sequence) and not isinstance(manifest, (bytes, bytearray)):
        documents = list(manifest)
    else:
        raise ValueError(f"a manifest is YAML text, a dict or a list of dicts, got {manifest!r}")
    if not documents:
        raise ValueError("the manifest holds no objects")
    for number, document in enumerate(documents, start=1):
        if not isinstance(document, Mapping):
            raise ValueError(
                f"document {number} is not a Kubernetes object (a mapping with apiVersion and kind), got {document!r}"
            )
    return documents


# -- one object ------------------------------------------------------------------------------------


def _translate(document: Mapping[str, object], where: str) -> Call:
    kind, api_version = document.get("kind"), document.get("apiVersion")
    if (api_version, kind) not in (SERVICE, NETWORK_POLICY):
        known = [k for v, k in (SERVICE, NETWORK_POLICY) if k == kind]
        if known:
            wanted = SERVICE[0] if kind == "Service" else NETWORK_POLICY[0]
            raise ValueError(f"{where}: {kind} has apiVersion {wanted!r}, got {api_version!r}")
        raise ValueError(
            f"{where}: kind {kind!r} (apiVersion {api_version!r}) is not supported; "
            "apply takes v1 Service and networking.k8s.io/v1 NetworkPolicy"
        )
    _fields(document, "", ("apiVersion", "kind", "metadata", "spec"), where)
    metadata = _mapping(document.get("metadata"), "metadata", where)
    _fields(metadata, "metadata", _METADATA, where)
    name = metadata.get("name")
    if not isinstance(name, str):
        raise ValueError(f"{where}: {kind} needs metadata.name, got {name!r}")
    namespace = metadata.get("namespace", "default")
    if namespace is None:
        namespace = "default"
    for key in ("labels", "annotations"):
        _strings(metadata.get(key), f"metadata.{key}", where)
    where = f"{where} ({kind} {namespace}/{name})"
    spec = _mapping(document.get("spec"), "spec", where)
    # The options are checked as the call checks them, before anything is made; what depends on the
    # cluster (a name or node port taken) is checked when the object is made.
    if kind == "Service":
        kwargs = {"namespace": namespace, **_service(spec, where)}
        options = cast("dict[str, Any]", _SERVICE_DEFAULTS | kwargs)
        try:
            check_options(name, taken=(), has_pods=False, ports_what="spec.ports", **options)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        return Call("service", name, kwargs, where)
    kwargs = {"namespace": namespace, **_network_policy(spec, where)}
    try:
        check_policy(name, **({"ingress": None, "egress": None} | kwargs))
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    return Call("network_policy", name, kwargs, where)


def _service(spec: Mapping[str, object], where: str) -> dict[str, object]:
    _fields(spec, "spec", _SERVICE_SPEC, where)
    kwargs: dict[str, object] = {}
    selector = spec.get("selector")
    if selector is None:
        raise ValueError(f"{where}: spec.selector is required (services without a selector are not supported)")
    kwargs["selector"] = dict(_strings(selector, "spec.selector", where))
    if "type" in spec:
        kwargs["type"] = spec["type"]
    cluster_ip = spec.get("clusterIP")
    if cluster_ip == "None":
        kwargs["headless"] = True
    elif cluster_ip not in (None, ""):
        kwargs["cluster_ip"] = cluster_ip
    ports = spec.get("ports")
    if not isinstance(ports, Sequence) or isinstance(ports, str) or not ports:
        raise ValueError(f"{where}: spec.ports must list the service's ports, got {ports!r}")
    entries = [_service_port(item, f"spec.ports[{number}]", where) for number, item in enumerate(ports)]
    if len(entries) > 1:
        kwargs["ports"] = entries
    else:  # the single-port form of the call
        renamed = {"name": "port_name"}
        kwargs.update({renamed.get(key, key): value for key, value in entries[0].items()})
    affinity = spec.get("sessionAffinity")
    if affinity not in (None, "None", "ClientIP"):
        raise ValueError(f"{where}: spec.sessionAffinity {affinity!r} is not 'None' or 'ClientIP'")
    if affinity == "ClientIP":
        kwargs["session_affinity"] = "ClientIP"
    config = spec.get("sessionAffinityConfig")
    if config is not None:
        if affinity != "ClientIP":
            raise ValueError(f"{where}: spec.sessionAffinityConfig needs spec.sessionAffinity 'ClientIP'")
        client_ip = _mapping(config, "spec.sessionAffinityConfig", where)
        _fields(client_ip, "spec.sessionAffinityConfig", ("clientIP",), where)
        timeout = _mapping(client_ip.get("clientIP"), "spec.sessionAffinityConfig.clientIP", where)
        _fields(timeout, "spec.sessionAffinityConfig.clientIP", ("timeoutSeconds",), where)
        if timeout.get("timeoutSeconds") is not None:
            kwargs["session_affinity_timeout"] = timeout["timeoutSeconds"]
    if "externalTrafficPolicy" in spec:
        kwargs["external_traffic_policy"] = spec["externalTrafficPolicy"]
    return kwargs


def _network_policy(spec: Mapping[str, object], where: str) -> dict[str, object]:
    _fields(spec, "spec", ("podSelector", "policyTypes", "ingress", "egress"), where)
    if "podSelector" not in spec:
        raise ValueError(f"{where}: spec.podSelector is required ({{}} selects every pod of the namespace)")
    kwargs: dict[str, object] = {"pod_selector": _selector(spec["podSelector"], "spec.podSelector", where)}
    rules = {}
    for direction, peers in (("ingress", "from"), ("egress", "to")):
        raw = spec.get(direction)
        if raw is None:
            continue
        items = _list(raw, f"spec.{direction}", where)
        rules[direction] = [_rule(item, f"spec.{direction}[{n}]", peers, where) for n, item in enumerate(items)]
    types = spec.get("policyTypes")
    if types is None or types == []:
        # As the API server defaults it: Ingress, plus Egress when there are egress rules.
        types = ["Ingress", "Egress"] if rules.get("egress") else ["Ingress"]
        if not rules.get("egress"):
            rules.pop("egress", None)  # `egress: []` without policyTypes isolates nothing
    kwargs["policy_types"] = list(_list(types, "spec.policyTypes", where))
    return kwargs | rules


def _rule(value: object, path: str, peers_key: str, where: str) -> dict[str, object]:
    rule = _fields(_mapping(value, path, where), path, (peers_key, "ports"), where)
    out: dict[str, object] = {}
    if rule.get(peers_key) is not None:
        peers = _list(rule[peers_key], f"{path}.{peers_key}", where)
        out[peers_key] = [_peer(peer, f"{path}.{peers_key}[{n}]", where) for n, peer in enumerate(peers)]
    if rule.get("ports") is not None:
        ports = _list(rule["ports"], f"{path}.ports", where)
        out["ports"] = [_policy_port(port, f"{path}.ports[{n}]", where) for n, port in enumerate(ports)]
    return out


def _peer(value: object, path: str, where: str) -> dict[str, object]:
    peer = _fields(_mapping(value, path, where), path, ("podSelector", "namespaceSelector", "ipBlock"), where)
    out: dict[str, object] = {}
    for key, snake in (("podSelector", "pod_selector"), ("namespaceSelector", "namespace_selector")):
        if peer.get(key) is not None:
            out[snake] = _selector(peer[key], f"{path}.{key}", where)
    if peer.get("ipBlock") is not None:
        block = _fields(
            _mapping(peer["ipBlock"], f"{path}.ipBlock", where), f"{path}.ipBlock", ("cidr", "except"), where
        )
        out["ip_block"] = {"cidr": block.get("cidr")} | (
            {"except": list(_list(block["except"], f"{path}.ipBlock.except", where))}
            if block.get("except") is not None
            else {}
        )
    return out


def _service_port(value: object, path: str, where: str) -> dict[str, object]:
    """An entry of ``spec.ports`` as an entry of ``service(ports=...)``; a named ``targetPort`` is refused."""
    port = _fields(_mapping(value, path, where), path, _SERVICE_PORT, where)
    out: dict[str, object] = {"port": port.get("port")}
    if "name" in port:
        out["name"] = port["name"]
    target = port.get("targetPort")
    if isinstance(target, str):
        raise ValueError(
            f"{where}: {path}.targetPort {target!r} is a named port, which this model cannot resolve "
            "(its pods declare no container ports): give the number"
        )
    if target is not None:
        out["target_port"] = target
    if "protocol" in port:
        protocol = port["protocol"]
        if protocol not in _PROTOCOLS:
            raise ValueError(f"{where}: {path}.protocol {protocol!r} is not 'TCP' or 'UDP'")
        out["proto"] = _PROTOCOLS[str(protocol)]
    if port.get("nodePort") is not None:
        out["node_port"] = port["nodePort"]
    return out


def _policy_port(value: object, path: str, where: str) -> dict[str, object]:
    port = _fields(_mapping(value, path, where), path, ("port", "protocol", "endPort"), where)
    if isinstance(port.get("port"), str):
        raise ValueError(f"{where}: {path}.port {port['port']!r} is a named port, which this model cannot resolve")
    out: dict[str, object] = {}
    for key, snake in (("port", "port"), ("protocol", "protocol"), ("endPort", "end_port")):
        if port.get(key) is not None:
            out[snake] = port[key]
    return out


def _selector(value: object, path: str, where: str) -> dict[str, object]:
    selector = _fields(_mapping(value, path, where), path, ("matchLabels", "matchExpressions"), where)
    out: dict[str, object] = {}
    if selector.get("matchLabels") is not None:
        out["match_labels"] = dict(_strings(selector["matchLabels"], f"{path}.matchLabels", where))
    if selector.get("matchExpressions") is not None:
        expressions = _list(selector["matchExpressions"], f"{path}.matchExpressions", where)
        out["match_expressions"] = [
            dict(
                _fields(
                    _mapping(item, f"{path}.matchExpressions[{n}]", where),
                    f"{path}.matchExpressions[{n}]",
                    ("key", "operator", "values"),
                    where,
                )
            )
            for n, item in enumerate(expressions)
        ]
    return out


# -- plain data ----------------------------------------------------------------------------------------


def _mapping(value: object, path: str, where: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: {path} must be a mapping, got {value!r}")
    return value


def _list(value: object, path: str, where: str) -> Sequence[object]:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise ValueError(f"{where}: {path} must be a list, got {value!r}")
    return value


def _strings(value: object, path: str, where: str) -> Mapping[str, str]:
    if value is None:
        return {}
    mapping = _mapping(value, path, where)
    for key, item in mapping.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise ValueError(f"{where}: {path} maps strings to strings, got {key!r}: {item!r}")
    return cast("Mapping[str, str]", mapping)


def _fields(value: Mapping[str, object], path: str, allowed: Collection[str], where: str) -> Mapping[str, object]:
    """``value`` when each of its keys is in ``allowed``; else ``ValueError`` naming the field's path."""
    for key in value:
        if key not in allowed:
            full = f"{path}.{key}" if path else str(key)
            raise ValueError(f"{where}: field {full} is not supported (supported there: {', '.join(allowed)})")
    return value
