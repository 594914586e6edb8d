"""A service's options as ``Cluster.service`` takes them, checked before anything is made, and ClusterIPs."""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Literal

from ..._kernel import validate as _validate
from . import dns as _dns
from . import nodeport as _nodeport
from .network import SERVICE_CIDR, IPv4, check_namespace_name, check_service_name
from .objects import MAX_AFFINITY_TIMEOUT


@dataclass(frozen=True)
class ServiceOptions:
    """What ``Cluster.service`` was given, checked (the pods are the cluster's to check)."""

    namespace: str
    port: int
    target_port: int
    proto: Literal["tcp", "udp"]
    spread: Literal["random", "round_robin"]
    session_affinity: Literal["ClientIP"] | None
    session_affinity_timeout: int
    selector: Mapping[str, str] | None
    port_name: str | None
    type: Literal["ClusterIP", "NodePort"] = "ClusterIP"
    node_port: int | None = None
    external_traffic_policy: Literal["Cluster", "Local"] = "Cluster"


def check_options(
    name: str,
    *,
    namespace: str,
    taken: Collection[tuple[str, str]],
    port: int,
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
) -> ServiceOptions:
    """``ValueError`` naming the first bad value.

    ``taken`` are the (namespace, name) of existing services, ``node_ports`` the node ports they hold.
    """
    check_service_name(name)
    namespace = check_namespace_name(namespace)
    if (namespace, name) in taken:
        raise ValueError(f"service {name!r} already exists in namespace {namespace!r}")
    if has_pods == (selector is not None):
        raise ValueError(f"service {name!r}: give either pods= or selector=, not {'both' if has_pods else 'neither'}")
    if not isinstance(headless, bool):
        raise ValueError(f"headless must be True or False, got {headless!r}")
    if port_name is not None:
        _validate.check_name(port_name, what="port_name", rule=_validate.IANA_SVC_NAME)
    wanted = None if selector is None else _validate.labels(selector, "selector")
    if wanted == {}:
        raise ValueError(f"service {name!r}: an empty selector would select every pod; give at least one label")
    if headless and cluster_ip is not None:
        raise ValueError(f"service {name!r} is headless: it takes no cluster_ip (got {cluster_ip!r})")
    port = _validate.port(port, "port")
    target = port if target_port is None else _validate.port(target_port, "target_port")
    if proto not in ("tcp", "udp"):
        raise ValueError(f"proto {proto!r} is not 'tcp' or 'udp'")
    if spread not in ("random", "round_robin"):
        raise ValueError(f"spread {spread!r} is not 'random' or 'round_robin'")
    if session_affinity not in (None, "ClientIP"):
        raise ValueError(f"session_affinity {session_affinity!r} is not None or 'ClientIP'")
    timeout = session_affinity_timeout
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 0 < timeout <= MAX_AFFINITY_TIMEOUT:
        raise ValueError(f"session_affinity_timeout {timeout!r} is not a whole number of seconds in 1-86400")
    kind, node_port, policy = _nodeport.check_options(
        name,
        type=type,
        node_port=node_port,
        external_traffic_policy=external_traffic_policy,
        headless=headless,
        used=node_ports,
    )
    return ServiceOptions(
        namespace, port, target, proto, spread, session_affinity, timeout, wanted, port_name, kind, node_port, policy
    )


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
