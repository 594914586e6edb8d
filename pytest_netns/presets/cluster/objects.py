"""What a cluster is made of: ``Node``, ``Pod``, ``External`` (namespaces) and ``Service``."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Literal, Protocol

import dns.exception

from ..._kernel import validate as _validate
from ..._kernel.handle import handle_of
from ..._net.bridge import Bridge
from ..._net.hosts import HostsFile
from ...errors import NetnsError
from ...namespace import Namespace
from . import dns as _dns
from .dns import ServicePort
from .network import CLUSTER_DOMAIN, K8S_NAMESPACE, IPv4
from .selectors import matches_labels


class Owner(Protocol):
    """What pods and services ask of the cluster that made them: ``Cluster``, which imports this module."""

    @property
    def pods(self) -> list[Pod]: ...

    def delete_pod(self, pod: Pod | str) -> None: ...

    def _check_open(self) -> None: ...

    def _pod(self, pod: object) -> Pod: ...

    def _install(self, service: Service) -> None: ...

    def _relabel(self, pod: Pod, previous: Mapping[str, str]) -> None: ...


class _Member(Namespace):
    """A namespace of a cluster: its address in the model, and processes started with run/popen see the hosts file."""

    def __init__(self, name: str, *, ip: IPv4, hosts: HostsFile, kill_grace: float) -> None:
        super().__init__(name, kill_grace=kill_grace, _defer_setup=True)
        self._ip = ip
        # Processes started with run/popen are started by the hosts file's thread, which sees its files.
        handle_of(self).spawner = hosts.spawn_via
        #: Its interface on the bridge it is plugged into (set once plugged).
        self._uplink_index = 0

    @property
    def ip(self) -> IPv4:
        """Its address in the cluster (on ``eth0``), known without asking the kernel."""
        return self._ip


class Node(_Member):
    """A node of a ``Cluster`` (a ``Namespace``): ``eth0`` on the node network, pods on ``cni0``.

    ``ip`` is its address on the node network, ``pod_cidr`` its pods'
    network, ``gateway`` the address of ``cni0`` (the pods' default route),
    ``pods`` the pods scheduled on it.
    """

    #: ``cni0`` and its ports (made by ``Cluster.node`` right after the namespace).
    _bridge: Bridge

    def __init__(
        self, name: str, *, ip: IPv4, pod_cidr: ipaddress.IPv4Network, hosts: HostsFile, kill_grace: float
    ) -> None:
        super().__init__(name, ip=ip, hosts=hosts, kill_grace=kill_grace)
        #: The network its pods get addresses from (10.244.k.0/24).
        self.pod_cidr = pod_cidr
        #: The pods' gateway, the first host of ``pod_cidr``: ``cni0``'s address (bridge CNI), or the
        #: /32 on every pod's veth end on the node (ptp CNI).
        self.gateway: IPv4 = pod_cidr[1]
        self.pods: list[Pod] = []
        self._next_host = 2
        #: ptp CNI: the node's end of each pod's veth (name -> ifindex).
        self._veths: dict[str, int] = {}

    @property
    def _bridge_index(self) -> int:
        """``cni0``'s ifindex."""
        return self._bridge.index

    def __repr__(self) -> str:
        return f"<Node {self.name!r} {self.ip} pods {self.pod_cidr}>" if not self.closed else super().__repr__()


class Pod(_Member):
    """A pod (a ``Namespace``): ``eth0`` on its node's ``cni0``, one IP shared by all its containers.

    ``name`` is the name given, ``ip`` its address, ``node`` the ``Node`` it
    runs on, ``node_port`` the name of its veth's other end on the node's
    bridge.  ``resolve(name)`` answers as the cluster's names would.
    """

    def __init__(
        self,
        name: str,
        *,
        ip: IPv4,
        node: Node,
        cluster: Owner,
        hosts: HostsFile,
        kill_grace: float,
        namespace: str = K8S_NAMESPACE,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(name, ip=ip, hosts=hosts, kill_grace=kill_grace)
        self.node = node
        #: Its Kubernetes namespace (``default`` unless given).
        self.namespace = namespace
        self._labels: Mapping[str, str] = MappingProxyType(dict(labels or {}))
        #: The name of its veth's other end, a port of the node's ``cni0`` (set once plugged).
        self.node_port = ""
        self._cluster = cluster

    @property
    def labels(self) -> Mapping[str, str]:
        """Its labels (read-only; ``set_labels`` replaces them): services and NetworkPolicies select pods by them."""
        return self._labels

    def set_labels(self, labels: Mapping[str, str]) -> None:
        """Replace its labels: services' selectors, DNS and NetworkPolicies follow at once."""
        self._cluster._check_open()
        checked = _validate.labels(labels)
        previous = self._labels
        self._labels = MappingProxyType(checked)
        try:
            self._cluster._relabel(self, previous)
        except BaseException:
            self._labels = previous
            raise

    def delete(self) -> None:
        """Remove the pod (``Cluster.delete_pod``): services stop sending to it, DNS forgets it."""
        self._cluster.delete_pod(self)

    def resolve(self, name: str) -> IPv4:
        """The address ``name`` has for this pod: the cluster DNS through kubelet's search path.

        The first address of the answer (a headless service has several).
        An unknown name raises ``ValueError``; a DNS server that does not
        answer (a partition cut the first node off) ``NetnsError``.
        """
        if not isinstance(name, str):
            raise ValueError(f"name must be a string, got {name!r}")
        try:
            with handle_of(self).entered():
                found = _dns.search(name, self.namespace)
        except dns.exception.Timeout:
            raise NetnsError(
                f"resolving {name!r} in pod {self.name!r}: no answer from the cluster DNS {_dns.DNS_IP}"
            ) from None
        if not found:
            tried = ", ".join(_dns.search_names(name, self.namespace))
            raise ValueError(f"no name {name!r} for pod {self.name!r} in the cluster DNS (tried {tried})")
        return found[0]

    def __repr__(self) -> str:
        return f"<Pod {self.name!r} {self.ip} on {self.node.name!r}>" if not self.closed else super().__repr__()


class External(_Member):
    """A host outside the cluster (a ``Namespace``) on the node network, with no route to pods."""

    def __repr__(self) -> str:
        return f"<External {self.name!r} {self.ip}>" if not self.closed else super().__repr__()


#: Kubernetes' default ``sessionAffinityConfig.clientIP.timeoutSeconds`` (3 hours), and its maximum (a day).
DEFAULT_AFFINITY_TIMEOUT = 10800
MAX_AFFINITY_TIMEOUT = 86400


class Service:
    """A service: new connections to ``ip:port`` (and nodes' ``node_port``) go to one of ``pods`` at ``target_port``.

    Made with ``Cluster.service``.  ``ports`` lists its ports; ``port``,
    ``target_port``, ``proto``, ``port_name`` and ``node_port`` are the
    first one's.  ``add(pod)`` / ``remove(pod)`` change the set; ``names``
    are the names that resolve to ``ip``.
    """

    def __init__(
        self,
        cluster: Owner,
        name: str,
        ip: IPv4 | None,
        ports: Sequence[ServicePort],
        spread: Literal["random", "round_robin"],
        pods: list[Pod],
        *,
        namespace: str = K8S_NAMESPACE,
        selector: Mapping[str, str] | None = None,
        type: Literal["ClusterIP", "NodePort"] = "ClusterIP",
        external_traffic_policy: Literal["Cluster", "Local"] = "Cluster",
    ) -> None:
        self._cluster = cluster
        #: The service name (a DNS label).
        self.name = name
        #: Its Kubernetes namespace.
        self.namespace = namespace
        #: The ClusterIP; ``None`` for a headless service (DNS answers with its pods).
        self.ip: IPv4 | None = ip
        #: Its ports, in the order given (at least one).
        self.ports: list[ServicePort] = list(ports)
        self.spread: Literal["random", "round_robin"] = spread
        #: ``"ClientIP"``: a client keeps its pod for ``session_affinity_timeout`` seconds (else None).
        self.session_affinity: Literal["ClientIP"] | None = None
        self.session_affinity_timeout = DEFAULT_AFFINITY_TIMEOUT
        #: ``"ClusterIP"`` or ``"NodePort"`` (also reachable at every node's IP on each port's ``node_port``).
        self.type: Literal["ClusterIP", "NodePort"] = type
        #: NodePort traffic: ``"Cluster"`` (any pod, client SNATed to the node) or ``"Local"`` (the node's own pods,
        #: client address kept; nodes without one drop it).
        self.external_traffic_policy: Literal["Cluster", "Local"] = external_traffic_policy
        self._selector: Mapping[str, str] | None = None if selector is None else MappingProxyType(dict(selector))
        self._pods = pods

    @property
    def port(self) -> int:
        """The first port's number."""
        return self.ports[0].port

    @property
    def target_port(self) -> int:
        """The first port's target port on the pods."""
        return self.ports[0].target_port

    @property
    def proto(self) -> Literal["tcp", "udp"]:
        """The first port's protocol."""
        return self.ports[0].proto

    @property
    def port_name(self) -> str | None:
        """The first port's name (an IANA service name): SRV records ``_<port_name>._<proto>.<svc>...``."""
        return self.ports[0].name

    @property
    def node_port(self) -> int | None:
        """The port every node serves the first port on (30000-32767), or None for a ClusterIP service."""
        return self.ports[0].node_port

    @property
    def headless(self) -> bool:
        return self.ip is None

    @property
    def selector(self) -> Mapping[str, str] | None:
        """The labels its pods carry (pods of its namespace, created or deleted later too), or None for ``pods=``."""
        return self._selector

    @property
    def pods(self) -> tuple[Pod, ...]:
        """The pods new connections are spread over: in the order added, or in creation order for a selector."""
        if self._selector is None:
            return tuple(self._pods)
        wanted = self._selector
        return tuple(
            pod for pod in self._cluster.pods if pod.namespace == self.namespace and matches_labels(wanted, pod.labels)
        )

    @property
    def endpoints(self) -> list[tuple[IPv4, int]]:
        """``(pod ip, target_port)`` of every pod for each port (port by port, once each), as kube-proxy sees them."""
        return list(dict.fromkeys((pod.ip, port.target_port) for port in self.ports for pod in self.pods))

    @property
    def address(self) -> tuple[str, int]:
        """``(ClusterIP, port)`` as a string and an int: ready for ``socket.connect``."""
        if self.ip is None:
            raise ValueError(f"service {self.name!r} is headless: it has no ClusterIP (resolve its name for the pods)")
        return str(self.ip), self.port

    @property
    def names(self) -> list[str]:
        """The names that resolve to the ClusterIP: ``web``, ``web.default``, ..., ``web.default.svc.cluster.local``.

        The bare name only for the ``default`` namespace; none for a headless service.
        """
        if self.ip is None:
            return []
        base = f"{self.name}.{self.namespace}"
        names = [base, f"{base}.svc", f"{base}.svc.{CLUSTER_DOMAIN}"]
        return [self.name, *names] if self.namespace == K8S_NAMESPACE else names

    def _check_listed(self) -> None:
        if self._selector is not None:
            raise ValueError(f"service {self.name!r} has a selector: its pods follow their labels, not add/remove")

    def add(self, pod: Pod) -> None:
        """Send new connections to ``pod`` too (every node's rules replaced atomically)."""
        self._cluster._check_open()
        self._check_listed()
        pod = self._cluster._pod(pod)
        if pod in self._pods:
            raise ValueError(f"pod {pod.name!r} is already a backend of service {self.name!r}")
        self._pods.append(pod)
        try:
            self._cluster._install(self)
        except BaseException:
            self._pods.remove(pod)
            raise

    def remove(self, pod: Pod) -> None:
        """Stop sending new connections to ``pod``; its established connections keep working."""
        self._cluster._check_open()
        self._check_listed()
        pod = self._cluster._pod(pod)
        if pod not in self._pods:
            raise ValueError(
                f"pod {pod.name!r} is not a backend of service {self.name!r} "
                f"(it has {', '.join(p.name for p in self._pods) or 'none'})"
            )
        position = self._pods.index(pod)
        self._pods.remove(pod)
        try:
            self._cluster._install(self)
        except BaseException:
            self._pods.insert(position, pod)
            raise

    def __repr__(self) -> str:
        pods = ", ".join(p.name for p in self.pods)
        policy = f" ({self.external_traffic_policy})"
        ports = [
            f"{self.ip}:{p.port}/{p.proto}{'' if p.node_port is None else f' nodePort {p.node_port}{policy}'}"
            f" -> [{pods}]:{p.target_port}"
            for p in self.ports
        ]
        return f"<Service {self.name!r} {', '.join(ports)}>"
