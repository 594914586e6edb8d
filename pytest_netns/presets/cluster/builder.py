"""``Cluster``: nodes, pods, services and external hosts, the facade over the cluster's parts.

``wiring`` connects the namespaces (from the shared primitives), ``names`` answers the cluster's names (hosts
files, the in-process resolver, kube-dns), ``services`` checks a service's options and hands out ClusterIPs,
``proxy`` writes kube-proxy's rules, ``members`` finds nodes, pods and external hosts.  What is left here is the
order in which each change reaches those parts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

from ..._kernel import validate as _validate
from ..._net.hosts import release
from ..._net.lan import make_lan
from ...errors import NetnsError, TeardownError
from ...namespace import Namespace
from . import dns as _dns
from . import enforce, manifests, proxy, wiring
from .dns import ServicePort
from .manifests import Manifest
from .members import Members
from .names import Names, k8s_namespaces
from .network import (
    FIRST_EXTERNAL_HOST,
    FIRST_NODE_HOST,
    K8S_NAMESPACE,
    NAMESPACE_NAME_LABEL,
    NODE_NETWORK,
    IPv4,
    check_cni,
    check_namespace_name,
    pod_cidr,
)
from .nftsockets import NodeSockets
from .objects import DEFAULT_AFFINITY_TIMEOUT, External, Node, Pod, Service
from .policy import NetworkPolicy, check_policy
from .selectors import matches_labels
from .services import ClusterIPs, check_options

if TYPE_CHECKING:
    from ..._net.partition import Partition

__all__ = ["Cluster"]


class Cluster:
    """Nodes, pods, services and external hosts on one machine, torn down together.

    ``Cluster(kill_grace=1.0, mtu=1500, cni="ptp")``; use it as a context
    manager or call ``close()``.  Build with ``node``, ``pod``, ``service``
    and ``external``; ``cluster["name"]`` is the node, pod or external host
    of that name.  ``cni="ptp"`` (kind's kindnet) routes a veth per pod on
    its node; ``cni="bridge"`` plugs the pods into a bridge ``cni0`` and
    needs br_netfilter (``FeatureUnavailable`` where it is missing).  See the module docstring for the network it makes.
    """

    def __init__(
        self,
        *,
        kill_grace: float = 1.0,
        mtu: int = 1500,
        cni: Literal["ptp", "bridge"] = "ptp",
        _namespace_created: Callable[[Namespace], None] | None = None,
    ) -> None:
        self.kill_grace = _validate.duration(kill_grace, "kill_grace")
        self._mtu = _validate.mtu(mtu, "mtu")
        #: How pods are connected to their node: ``"ptp"`` (a routed veth each) or ``"bridge"`` (``cni0``).
        self.cni: Literal["ptp", "bridge"] = "bridge" if check_cni(cni) == "bridge" else "ptp"
        self._namespace_created = _namespace_created
        self._owned: list[Namespace] = []
        self._registry = Members()
        self._nodes, self._pods, self._externals = self._registry.tables()
        self._services: dict[tuple[str, str], Service] = {}
        self._cluster_ips = ClusterIPs()
        self._naming = Names(self._lookup_host)
        self._policies: dict[tuple[str, str], NetworkPolicy] = {}
        self._namespace_labels: dict[str, Mapping[str, str]] = {}
        sockets = NodeSockets()
        self._enforcer = enforce.Enforcer(sockets)
        self._proxy = proxy.KubeProxy(sockets)
        self._closed = False
        try:
            #: The namespace of the node network's lower device (``lan0``: nodes' ``eth0`` are macvlans on it).
            self.fabric = Namespace("fabric", kill_grace=self.kill_grace, _defer_setup=True)
            self._adopt(self.fabric)
            self._fabric = make_lan(self.fabric, mtu=self._mtu)
        except BaseException:
            self._abandon()
            raise

    # -- looking things up ---------------------------------------------------------------

    @property
    def nodes(self) -> list[Node]:
        return list(self._nodes.values())

    @property
    def pods(self) -> list[Pod]:
        return list(self._pods.values())

    @property
    def services(self) -> list[Service]:
        return list(self._services.values())

    @property
    def externals(self) -> list[External]:
        return list(self._externals.values())

    @property
    def namespaces(self) -> list[Namespace]:
        """Every namespace of the cluster in creation order, the node network's (``fabric``) first."""
        return list(self._owned)

    @property
    def mtu(self) -> int:
        """The MTU of every link of the cluster."""
        return self._mtu

    @property
    def closed(self) -> bool:
        return self._closed

    def __getitem__(self, name: str) -> Namespace:
        return self._registry[name]

    def __contains__(self, name: object) -> bool:
        return name in self._registry

    def hosts(self) -> dict[str, IPv4]:
        """Every name of the cluster and its address: services (all their names), pods, nodes, external hosts."""
        entries: dict[str, IPv4] = {}
        for service in self._services.values():
            if service.ip is not None:
                for name in service.names:
                    entries[name] = service.ip
        return entries | self._registry.addresses()

    def resolve(self, name: str) -> IPv4:
        """The address a name of the cluster resolves to, for code that runs in the test process.

        The names of ``hosts()`` and every fully qualified name of the
        cluster DNS (``kube-dns.kube-system.svc.cluster.local``, pod records).
        A trailing dot is allowed; an unknown name raises ``ValueError``.
        ``pod.resolve`` follows a pod's search path instead.
        """
        if not isinstance(name, str):
            raise ValueError(f"name must be a string, got {name!r}")
        entries = self.hosts()
        key = name[:-1] if name.endswith(".") else name
        try:
            return entries[key.lower()]
        except KeyError:
            pass
        found = self._naming.lookup(key)
        if found:
            return found[0]
        raise ValueError(f"no name {name!r} in this cluster (known: {', '.join(entries) or 'none'})")

    def __repr__(self) -> str:
        if self._closed:
            return "<Cluster closed>"
        return (
            f"<Cluster {len(self._nodes)} nodes, {len(self._pods)} pods, {len(self._services)} services, "
            f"{len(self._externals)} external hosts>"
        )

    def describe(self) -> str:
        """The cluster as text: nodes with their pods, services, external hosts."""
        return self._registry.describe(self._services.values())

    # -- building --------------------------------------------------------------------------

    def node(self, name: str) -> Node:
        """A new node: ``eth0`` on the node network, the next pod CIDR (on ``cni0`` in bridge mode), routes both ways.

        Services that exist already get their rules on it too.
        """
        self._check_open()
        self._registry.check_new_name(name, "node")
        number = len(self._nodes)
        if number >= FIRST_EXTERNAL_HOST - FIRST_NODE_HOST or number >= 255:
            raise ValueError(f"a cluster holds at most {FIRST_EXTERNAL_HOST - FIRST_NODE_HOST} nodes")
        node = Node(
            name,
            ip=NODE_NETWORK[FIRST_NODE_HOST + number],
            pod_cidr=pod_cidr(number + 1),
            hosts=self._naming.hosts,
            kill_grace=self.kill_grace,
        )
        self._adopt(node)
        wiring.wire_node(node, list(self._nodes.values()), fabric=self._fabric, cni=self.cni, mtu=self._mtu)
        self._nodes[name] = node
        if self._naming.server is None:
            self._start_dns(node)  # its services' rules come with the node's, in one transaction
        services = [s for s in [*self._naming.dns_services, *self._services.values()] if s.ip is not None]
        self._proxy.set_up_node(node, services)
        self._publish_names()
        return node

    def pod(
        self, name: str, *, node: Node | str, namespace: str = K8S_NAMESPACE, labels: Mapping[str, str] | None = None
    ) -> Pod:
        """A new pod on ``node``: ``eth0`` with the next address of its pod CIDR, default route via the node's gateway.

        ptp: a veth routed by the node (a /32 route to the pod), bridge: a port of ``cni0``.
        ``namespace`` is its Kubernetes namespace (a DNS-1123 label): processes
        started in it get kubelet's resolv.conf, searching ``<namespace>.svc.cluster.local`` first.
        """
        self._check_open()
        self._registry.check_new_name(name, "pod")
        namespace = check_namespace_name(namespace)
        checked = _validate.labels(labels)
        host = self._node(node)
        dns_pod = self._naming.dns_pod
        last = host.pod_cidr.num_addresses - (2 if dns_pod is not None and dns_pod.node is host else 1)
        if host._next_host >= last:
            raise ValueError(f"node {host.name!r} has no free address left in {host.pod_cidr}")
        pod = Pod(
            name,
            ip=host.pod_cidr[host._next_host],
            node=host,
            cluster=self,
            hosts=self._naming.pod_files(name, host.pod_cidr[host._next_host], namespace),
            kill_grace=self.kill_grace,
            namespace=namespace,
            labels=checked,
        )
        self._adopt(pod)
        link = wiring.wire_pod(host, pod, cni=self.cni, mtu=self._mtu)
        host._next_host += 1
        host.pods.append(pod)
        self._pods[name] = pod
        for service in self._services.values():
            # Not for the kube-dns pod (no server yet): its node is set up with every service right after.
            if service.selector is not None and pod in service.pods and self._naming.server is not None:
                self._install(service)  # its endpoints follow the labels
        self._enforce()
        self._publish_names()
        link.wait()  # the link came up while the rest was set up
        return pod

    def delete_pod(self, pod: Pod | str) -> None:
        """Delete a pod: services stop sending new connections to it, DNS forgets it, its namespace is released.

        ``pod.delete()`` does the same.
        """
        self._check_open()
        pod = self._pod(pod)
        serving = [svc for svc in self._services.values() if pod in svc.pods]
        del self._pods[pod.name]
        pod.node.pods.remove(pod)
        for service in serving:
            if service.selector is None:
                service._pods.remove(pod)
            self._install(service)
        pod.node._veths.pop(pod.node_port, None)
        self._naming.unregister(pod)
        self._owned.remove(pod)
        self._enforce()
        self._publish_names()
        try:
            pod.close()
        finally:
            self._naming.close_pod_files(pod.ip)

    @property
    def k8s_namespaces(self) -> dict[str, Mapping[str, str]]:
        """The Kubernetes namespaces (those something was created in) and their labels.

        Each carries ``kubernetes.io/metadata.name=<namespace>``, as the API server sets it, and
        those given with ``set_namespace_labels``.
        """
        dns_pod = self._naming.dns_pod
        names = [pod.namespace for pod in ([dns_pod] if dns_pod else []) + list(self._pods.values())]
        found = k8s_namespaces(names + [svc.namespace for svc in self._services.values()] + [*self._namespace_labels])
        return {
            name: MappingProxyType({**self._namespace_labels.get(name, {}), **labels}) for name, labels in found.items()
        }

    def set_namespace_labels(self, namespace: str, labels: Mapping[str, str]) -> None:
        """Replace the labels of a Kubernetes namespace (making it if nothing is in it yet).

        ``kubernetes.io/metadata.name=<namespace>`` stays, as the API server
        keeps it.  NetworkPolicies' namespace selectors follow at once.
        """
        self._check_open()
        namespace = check_namespace_name(namespace)
        checked = _validate.labels(labels)
        if checked.get(NAMESPACE_NAME_LABEL, namespace) != namespace:
            raise ValueError(
                f"label {NAMESPACE_NAME_LABEL}={checked[NAMESPACE_NAME_LABEL]!r} of namespace {namespace!r} "
                "must be the namespace's own name"
            )
        previous = self._namespace_labels.get(namespace)
        self._namespace_labels[namespace] = MappingProxyType(checked)
        try:
            self._enforce()
        except BaseException:
            if previous is None:
                del self._namespace_labels[namespace]
            else:
                self._namespace_labels[namespace] = previous
            raise

    def service(
        self,
        name: str,
        *,
        port: int | None = None,
        target_port: int | None = None,
        pods: Sequence[Pod | str] | None = None,
        proto: Literal["tcp", "udp"] = "tcp",
        cluster_ip: str | IPv4 | None = None,
        spread: Literal["random", "round_robin"] = "random",
        session_affinity: Literal["ClientIP"] | None = None,
        session_affinity_timeout: int = DEFAULT_AFFINITY_TIMEOUT,
        namespace: str = K8S_NAMESPACE,
        selector: Mapping[str, str] | None = None,
        headless: bool = False,
        port_name: str | None = None,
        type: Literal["ClusterIP", "NodePort"] = "ClusterIP",
        node_port: int | None = None,
        external_traffic_policy: Literal["Cluster", "Local"] = "Cluster",
        ports: Sequence[Mapping[str, object]] | None = None,
    ) -> Service:
        """A service: new connections to ``ip:port`` from any pod or node go to one of ``pods``.

        ``target_port`` defaults to ``port``; ``cluster_ip`` to the next free
        address of 10.96.0.0/12.  ``spread="random"`` (kube-proxy's way)
        chooses a pod uniformly at random per connection, ``"round_robin"``
        in turn (per node).  The rules go on every node, present and future.
        ``session_affinity="ClientIP"``: a client address keeps the pod it
        got for ``session_affinity_timeout`` seconds (1-86400, default 10800)
        after its last new connection, as kube-proxy does.

        ``namespace``: its Kubernetes namespace (names are unique per
        namespace).  ``selector={"app": "web"}`` instead of ``pods``: the
        pods of its namespace carrying those labels, followed as pods are
        created and deleted.  ``headless=True``: no ClusterIP (``ip`` is
        None), DNS answers with the pods' addresses.  ``port_name``: an IANA
        service name, for SRV records ``_<port_name>._<proto>.<name>.<namespace>.svc.cluster.local``.

        ``type="NodePort"``: also served on every node's IP at ``node_port``
        (default: the lowest free port of 30000-32767), for ``external`` hosts
        too.  ``external_traffic_policy="Cluster"``: any pod, the client
        masqueraded to the node; ``"Local"``: only a node's own pods, the
        client's address kept, nodes without one drop the connection.

        ``ports=[{"port": 80, "target_port": 8080, "proto": "tcp", "name":
        "http", "node_port": 30080}, ...]`` instead of ``port=`` (and its
        ``target_port``, ``proto``, ``port_name``, ``node_port``): a service
        with several ports, each served as above (only ``port`` is required).
        With more than one, each needs a distinct ``name`` and (port, proto)
        pairs are distinct, as Kubernetes requires.  ``service.ports`` lists
        them as ``ServicePort``; ``port``, ``target_port``... are the first's.
        """
        self._check_open()
        options = check_options(
            name,
            namespace=namespace,
            taken=self._services,
            port=port,
            target_port=target_port,
            has_pods=pods is not None,
            proto=proto,
            cluster_ip=cluster_ip,
            spread=spread,
            session_affinity=session_affinity,
            session_affinity_timeout=session_affinity_timeout,
            selector=selector,
            headless=headless,
            port_name=port_name,
            type=type,
            node_port=node_port,
            external_traffic_policy=external_traffic_policy,
            node_ports=[p.node_port for svc in self._services.values() for p in svc.ports if p.node_port is not None],
            ports=ports,
        )
        if pods is not None and (isinstance(pods, (str, Namespace)) or not isinstance(pods, Sequence)):
            raise ValueError(f"pods must be a list of pods of this cluster, got {pods!r}")
        backends: list[Pod] = []
        for item in pods or ():
            pod = self._pod(item)
            if pod in backends:
                raise ValueError(f"pod {pod.name!r} is given twice in pods")
            backends.append(pod)
        used = [svc.ip for svc in self._services.values() if svc.ip is not None]
        ip = None if headless else self._cluster_ips.take(cluster_ip, used)
        service = Service(
            self,
            name,
            ip,
            options.ports,
            options.spread,
            backends,
            namespace=options.namespace,
            selector=options.selector,
            type=options.type,
            external_traffic_policy=options.external_traffic_policy,
        )
        service.session_affinity = options.session_affinity
        service.session_affinity_timeout = options.session_affinity_timeout
        self._install(service)
        self._services[options.namespace, name] = service
        self._enforce()  # named ports
        self._publish_names()
        return service

    def network_policy(
        self,
        name: str,
        *,
        namespace: str = K8S_NAMESPACE,
        pod_selector: Mapping[str, object],
        policy_types: Sequence[str] | None = None,
        ingress: Sequence[Mapping[str, object]] | None = None,
        egress: Sequence[Mapping[str, object]] | None = None,
    ) -> NetworkPolicy:
        """A NetworkPolicy (Kubernetes' spec in snake_case), enforced on every node at once (``policy``).

        ``pod_selector`` picks the pods of ``namespace`` it isolates (``{}``: all of them).  An ingress
        rule is ``{"from": [peer, ...], "ports": [...]}``, an egress rule ``{"to": [...], "ports": [...]}``;
        a peer ``{"pod_selector": ...}``, ``{"namespace_selector": ...}`` (both in one dict: AND) or
        ``{"ip_block": {"cidr": ..., "except": [...]}}``; a port an int or ``{"port", "protocol",
        "end_port"}``.  ``policy_types`` defaults to ``["Ingress"]``, plus ``"Egress"`` when ``egress``
        is given.  Peers and ports are the backend pod's after a Service's DNAT; replies pass; blocked
        packets are dropped.  ``ValueError`` names any bad value before anything changes.
        """
        self._check_open()
        spec = check_policy(
            name,
            namespace=namespace,
            pod_selector=pod_selector,
            policy_types=policy_types,
            ingress=ingress,
            egress=egress,
        )
        key = (spec.namespace, spec.name)
        if key in self._policies:
            raise ValueError(f"NetworkPolicy {spec.name!r} already exists in namespace {spec.namespace!r}")
        policy = NetworkPolicy(self, spec)
        self._policies[key] = policy
        try:
            self._enforce()
        except BaseException:
            del self._policies[key]
            raise
        return policy

    @property
    def network_policies(self) -> list[NetworkPolicy]:
        return list(self._policies.values())

    def apply(self, manifest: Manifest) -> list[Service | NetworkPolicy]:
        """Make the objects of Kubernetes manifests in order (v1 Service, networking.k8s.io/v1 NetworkPolicy).

        ``manifest`` is YAML text (several documents, read with PyYAML), a
        dict or a list of dicts.  Each becomes a ``service()`` or
        ``network_policy()`` call; a missing ``metadata.namespace`` is
        ``default``.  Another kind, or a field the model does not have, is a
        ``ValueError`` naming it (``spec.ports[0].appProtocol``), raised
        before anything is made (``manifests`` lists the fields).
        """
        self._check_open()
        return manifests.apply(manifest, service=self.service, network_policy=self.network_policy)

    def external(self, name: str) -> External:
        """A host outside the cluster on the node network (172.18.0.200 upwards), with no route to pods.

        Pods reach it through their node, which masquerades: it sees the node's IP.
        """
        self._check_open()
        self._registry.check_new_name(name, "external host")
        number = len(self._externals)
        if FIRST_EXTERNAL_HOST + number >= NODE_NETWORK.num_addresses - 1:
            limit = NODE_NETWORK.num_addresses - 1 - FIRST_EXTERNAL_HOST
            raise ValueError(f"a cluster holds at most {limit} external hosts")
        host = External(
            name, ip=NODE_NETWORK[FIRST_EXTERNAL_HOST + number], hosts=self._naming.hosts, kill_grace=self.kill_grace
        )
        self._adopt(host)
        wiring.attach(self._fabric, host, self._mtu)
        self._externals[name] = host
        self._publish_names()
        return host

    def set_mtu(self, mtu: int) -> None:
        """Change the MTU of every link of the cluster: node network, ``cni0``, every pod's veth, external hosts."""
        self._check_open()
        value = _validate.mtu(mtu, "mtu")
        members = [*self._pods.values(), *self._externals.values()]
        wiring.set_mtu(self._fabric, self._nodes.values(), members, cni=self.cni, mtu=value)
        self._mtu = value

    def partition(self, *groups: Node | External | str | Iterable[Node | External | str]) -> Partition:
        """Cut groups of nodes off from each other; each node's pods follow it (``pytest_netns.partition``).

        A group is a node or an external host (or its name), or an iterable
        of them; a node brings the pods it runs when the partition is made.
        Packets between groups vanish silently, pod to pod across nodes
        too; the returned ``Partition`` is a context manager, or call
        ``heal()``.  A pod named in a group raises ``ValueError``: pods
        follow their node.
        """
        self._check_open()
        from ..._net.partition import partition

        return partition(*self._registry.partition_groups(groups, self._naming.dns_pod))

    # -- teardown ----------------------------------------------------------------------------

    def close(self) -> None:
        """Tear everything down: processes stopped, every namespace released (last made, first).

        Raises ``TeardownError`` listing every step that failed.  Calling it again does nothing.
        """
        if self._closed:
            return
        self._closed = True
        self._naming.close_server()
        try:
            release(self._owned, self._naming.hosts, "cluster")
        finally:
            self._naming.close_files()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------------

    def _abandon(self) -> None:
        """Release what a failed constructor made (its own error wins)."""
        try:
            self.close()
        except TeardownError:
            pass

    def _check_open(self) -> None:
        if self._closed:
            raise NetnsError("this cluster is already torn down")

    def _adopt(self, ns: Namespace) -> None:
        self._owned.append(ns)
        self._naming.register(ns)
        if self._namespace_created is not None:
            self._namespace_created(ns)

    def _node(self, node: object) -> Node:
        return self._registry.node(node)

    def _pod(self, pod: object) -> Pod:
        return self._registry.pod(pod)

    def _install(self, service: Service) -> None:
        """Write (or atomically replace) the service's rules on every node."""
        if service.ip is not None:  # a headless service has no rules
            for node in self._nodes.values():
                self._proxy.install_service(node, service)
        self._naming.refresh(self._services.values(), self._pods.values(), self._registry.addresses())
        self._enforce()  # a named port of a policy follows the service's pods

    def _policy_pods(self) -> list[Pod]:
        """Every pod policies see: the kube-dns pod and the test's own."""
        dns_pod = self._naming.dns_pod
        return [*([dns_pod] if dns_pod is not None else []), *(p for p in self._pods.values() if p is not dns_pod)]

    def _enforce(self) -> None:
        services = [*self._naming.dns_services, *self._services.values()]
        view = enforce.View(self._policy_pods(), self.k8s_namespaces, services)
        self._enforcer.sync(self._nodes.values(), list(self._policies.values()), view)

    def _relabel(self, pod: Pod, previous: Mapping[str, str]) -> None:
        """A pod's labels changed from ``previous``: services selecting it, DNS and policies follow."""
        for service in self._services.values():
            wanted = service.selector
            if service.namespace == pod.namespace and wanted is not None:
                if matches_labels(wanted, previous) != matches_labels(wanted, pod.labels):
                    self._install(service)
        self._enforce()
        self._publish_names()

    def _delete_policy(self, policy: NetworkPolicy) -> None:
        key = (policy.namespace, policy.name)
        if self._policies.get(key) is not policy:
            raise ValueError(f"NetworkPolicy {policy.name!r} is not a policy of this cluster")
        kept = dict(self._policies)
        del self._policies[key]
        try:
            self._enforce()
        except BaseException:
            self._policies = kept  # refused: the policy stays (a node that did change gets it back next sync)
            raise
        policy._deleted = True

    def _publish_names(self) -> None:
        self._naming.publish(self.hosts(), self._services.values(), self._pods.values(), self._registry.addresses())

    # -- cluster DNS ------------------------------------------------------------------------------

    @property
    def dns_ip(self) -> IPv4:
        """The kube-dns service's ClusterIP, 10.96.0.10: pods' ``nameserver``."""
        return _dns.DNS_IP

    @property
    def dns_pod(self) -> Pod | None:
        """The kube-dns pod (``k8s-app=kube-dns`` in ``kube-system``, on the first node; None before it).

        It is not in ``pods``, which lists the test's own pods.
        """
        return self._naming.dns_pod

    def _start_dns(self, node: Node) -> None:
        """The kube-dns pod on ``node`` (the last address of its pod CIDR), its service (UDP and TCP 53) and server.

        ``node`` is the first node, not set up for kube-proxy yet: ``node()`` writes the services' rules with its own.
        """
        saved = node._next_host
        node._next_host = node.pod_cidr.num_addresses - 2
        try:
            pod = self.pod(_dns.DNS_POD, node=node, namespace=_dns.DNS_NAMESPACE, labels=_dns.DNS_LABELS)
        finally:
            node._next_host = saved
        del self._pods[pod.name]
        node.pods.remove(pod)
        self._naming.dns_pod = pod
        self._naming.server = _dns.KubeDns(pod)
        port = _dns.DNS_PORT
        ports = [ServicePort("dns", port, port, "udp"), ServicePort("dns-tcp", port, port, "tcp")]
        service = Service(self, _dns.DNS_SERVICE, _dns.DNS_IP, ports, "random", [pod], namespace=_dns.DNS_NAMESPACE)
        self._naming.dns_services.append(service)

    def _lookup_host(self, name: str) -> list[IPv4]:
        """A node's or external host's in-process lookup: the cluster's hosts table, as its processes see."""
        found = self.hosts().get(name.rstrip(".").lower())
        return [] if found is None else [found]
