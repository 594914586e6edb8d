"""A service's options as ``Cluster.service`` takes them, checked before anything is made, and ClusterIPs."""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from ..._kernel import validate as _validate
from . import dns as _dns
from . import nodeport as _nodeport
from .dns import ServicePort
from .network import SERVICE_CIDR, IPv4, check_namespace_name, check_service_name
from .objects import MAX_AFFINITY_TIMEOUT


@dataclass(frozen=True)
class ServiceOptions:
    """What ``Cluster.service`` was given, checked (the pods are the cluster's to check)."""

    namespace: str
    ports: tuple[ServicePort, ...]
    spread: Literal["random", "round_robin"]
    session_affinity: Literal["ClientIP"] | None
    session_affinity_timeout: int
    selector: Mapping[str, str] | None
    type: Literal["ClusterIP", "NodePort"] = "ClusterIP"
    external_traffic_policy: Literal["Cluster", "Local"] = "Cluster"


#: The keys of an entry of ``ports=``.
PORT_KEYS = ("port", "target_port", "proto", "name", "node_port")


def check_options(
    name: str,
    *,
    namespace: str,
    taken: Collection[tuple[str, str]],
    port: int | None,
    target_port: int | None,
    has_pods: bool,
    proto: Literal["tcp", "udp"],
    cluster_ip: str | IPv4 | None,
    spread: Literal["random", "round_robin"],
    session_affinity: Literal["ClientIP"] | None,
    session_affinity_timeout: int,
    selector: Mapping[str, str] | None,
    headless: bool,
    port_name: str | None,
    type: Literal["ClusterIP", "NodePort"] = "ClusterIP",
    node_port: int | None = None,
    external_traffic_policy: Literal["Cluster", "Local"] = "Cluster",
    node_ports: Collection[int] = (),
    ports: object = None,
    ports_what: str = "ports",
) -> ServiceOptions:
    """``ValueError`` naming the first bad value.

    ``taken`` are the (namespace, name) of existing services, ``node_ports`` the node ports they hold;
    ``ports_what`` is what messages call ``ports`` (``spec.ports`` for a manifest).
    """
    check_service_name(name)
    namespace = check_namespace_name(namespace)
    if (namespace, name) in taken:
        raise ValueError(f"service {name!r} already exists in namespace {namespace!r}")
    if has_pods == (selector is not None):
        raise ValueError(f"service {name!r}: give either pods= or selector=, not {'both' if has_pods else 'neither'}")
    if not isinstance(headless, bool):
        raise ValueError(f"headless must be True or False, got {headless!r}")
    entries = _port_entries(name, port, target_port, proto, port_name, node_port, ports, ports_what)
    wanted = None if selector is None else _validate.labels(selector, "selector")
    if wanted == {}:
        raise ValueError(f"service {name!r}: an empty selector would select every pod; give at least one label")
    if headless and cluster_ip is not None:
        raise ValueError(f"service {name!r} is headless: it takes no cluster_ip (got {cluster_ip!r})")
    checked = [_check_port(where, entry) for where, entry in entries]
    _check_distinct(name, [where for where, _ in entries], checked)
    if spread not in ("random", "round_robin"):
        raise ValueError(f"spread {spread!r} is not 'random' or 'round_robin'")
    if session_affinity not in (None, "ClientIP"):
        raise ValueError(f"session_affinity {session_affinity!r} is not None or 'ClientIP'")
    timeout = session_affinity_timeout
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 0 < timeout <= MAX_AFFINITY_TIMEOUT:
        raise ValueError(f"session_affinity_timeout {timeout!r} is not a whole number of seconds in 1-86400")
    given = zip(entries, checked, strict=True)
    wanted_node_ports = [(where, entry.get("node_port"), checked_port.proto) for (where, entry), checked_port in given]
    kind, numbers, policy = _nodeport.check_options(
        name,
        type=type,
        node_ports=wanted_node_ports,
        external_traffic_policy=external_traffic_policy,
        headless=headless,
        used=node_ports,
    )
    final = tuple(replace(port, node_port=number) for port, number in zip(checked, numbers, strict=True))
    return ServiceOptions(namespace, final, spread, session_affinity, timeout, wanted, kind, policy)


def _port_entries(
    name: str,
    port: object,
    target_port: object,
    proto: object,
    port_name: object,
    node_port: object,
    ports: object,
    ports_what: str,
) -> list[tuple[str, Mapping[str, object]]]:
    """``(prefix for messages, entry)`` per port: ``port=`` and its options as one entry, or ``ports=``'s."""
    if (port is None) == (ports is None):
        both = "both" if ports is not None else "neither"
        raise ValueError(f"service {name!r}: give either port= or ports=, not {both}")
    if port is not None:
        entry = {"port": port, "target_port": target_port, "proto": proto, "port_name": port_name}
        return [("", entry | {"node_port": node_port})]
    single = {"target_port": target_port, "port_name": port_name, "node_port": node_port}
    given = [key for key, value in single.items() if value is not None] + (["proto"] if proto != "tcp" else [])
    if given:
        raise ValueError(f"service {name!r}: with ports= give {', '.join(given)} in each entry of ports, not beside it")
    if isinstance(ports, (str, bytes, Mapping)) or not isinstance(ports, Sequence) or not ports:
        raise ValueError(f"service {name!r}: {ports_what} must be a non-empty list of ports, got {ports!r}")
    entries: list[tuple[str, Mapping[str, object]]] = []
    for number, item in enumerate(ports):
        where = f"{ports_what}[{number}]: "
        if not isinstance(item, Mapping):
            raise ValueError(f"service {name!r}: {where}a port is a mapping like {{'port': 80}}, got {item!r}")
        unknown = [key for key in item if key not in PORT_KEYS]
        if unknown:
            raise ValueError(
                f"service {name!r}: {where}key {unknown[0]!r} is not one of {', '.join(map(repr, PORT_KEYS))}"
            )
        if "port" not in item:
            raise ValueError(f"service {name!r}: {where}'port' is required, got {dict(item)!r}")
        entry = {**item, "port_name": item.get("name"), "proto": item.get("proto", "tcp")}
        entries.append((f"service {name!r}: {where}", entry))
    return entries


def _check_port(where: str, entry: Mapping[str, object]) -> ServicePort:
    """One port's numbers, protocol and name; ``where`` prefixes messages (``service 'web': ports[1]: ``)."""
    named = "name" if where else "port_name"
    if entry.get("port_name") is not None:
        _validate.check_name(entry["port_name"], what=f"{where}{named}", rule=_validate.IANA_SVC_NAME)
    port = _validate.port(entry["port"], f"{where}port")
    target = entry.get("target_port")
    target = port if target is None else _validate.port(target, f"{where}target_port")
    proto = entry.get("proto")
    if proto not in ("tcp", "udp"):
        raise ValueError(f"{where}proto {proto!r} is not 'tcp' or 'udp'")
    name = entry.get("port_name")
    return ServicePort(name if isinstance(name, str) else None, port, target, "udp" if proto == "udp" else "tcp")


def _check_distinct(service: str, wheres: Sequence[str], ports: Sequence[ServicePort]) -> None:
    """Kubernetes' rules for several ports: each named, names distinct, (port, protocol) pairs distinct."""
    if len(ports) < 2:
        return
    names: set[str] = set()
    pairs: set[tuple[int, str]] = set()
    for where, port in zip(wheres, ports, strict=True):
        if port.name is None:
            raise ValueError(f"{where}a service with several ports needs a name for each (an IANA service name)")
        if port.name in names:
            raise ValueError(f"{where}name {port.name!r} is given twice in service {service!r}")
        if (port.port, port.proto) in pairs:
            raise ValueError(f"{where}port {port.port}/{port.proto} is given twice in service {service!r}")
        names.add(port.name)
        pairs.add((port.port, port.proto))


class ClusterIPs:
    """ClusterIPs of 10.96.0.0/12: sequential from 10.96.0.1 (kube-dns's 10.96.0.10 excepted), or one asked for."""

    def __init__(self) -> None:
        self._next_host = 1

    def take(self, wanted: str | IPv4 | None, used: Collection[IPv4]) -> IPv4:
        used = {*used, _dns.DNS_IP}
        if wanted is not None:
            try:
                ip = ipaddress.IPv4Address(wanted)
            except ValueError:
                raise ValueError(f"cluster_ip {wanted!r} is not an IPv4 address") from None
            if ip not in SERVICE_CIDR or ip in (SERVICE_CIDR.network_address, SERVICE_CIDR.broadcast_address):
                raise ValueError(f"cluster_ip {wanted!r} is not a host address of {SERVICE_CIDR}")
            if ip in used:
                raise ValueError(f"cluster_ip {wanted!r} is already used by another service")
            return ip
        while self._next_host < SERVICE_CIDR.num_addresses - 1:
            ip = SERVICE_CIDR[self._next_host]
            self._next_host += 1
            if ip not in used:
                return ip
        raise ValueError(f"no free ClusterIP left in {SERVICE_CIDR}")
