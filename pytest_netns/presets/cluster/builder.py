"""``Cluster``: nodes, pods, services and external hosts built from the shared primitives.

The node network is a switch (``_net.bridge.switch``) in a namespace of its
own, as a ``Topology`` segment is; each node routes for a bridge with an
address (``_net.bridge.router_bridge``: ``cni0``) that its pods are plugged
into (``_net.bridge.plug``); sysctls are settled with ``_net.sysctl``.  What
is left here is Kubernetes: the address plan, names, services and the
rules of ``proxy``.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

from ..._kernel import rtnl as _rtnl
from ..._kernel import validate as _validate
from ..._kernel.handle import handle_of
from ..._net import resolver, sysctl
from ..._net.bridge import Plug, plug, router_bridge, switch
from ..._net.hosts import HostsFile, kubelet_resolv_conf, release
from ..._net.veth import veth
from ...errors import NetnsError, TeardownError
from ...namespace import Namespace
from . import dns as _dns
from . import proxy
from .network import (
    BRIDGE_NF_CALL_IPTABLES,
    CLUSTER_DOMAIN,
    FIRST_EXTERNAL_HOST,
    FIRST_NODE_HOST,
    K8S_NAMESPACE,
    NAMESPACE_NAME_LABEL,
    NODE_NETWORK,
    NODE_SYSCTLS,
    NODE_UPLINK,
    POD_BRIDGE,
    POD_IFNAME,
    PORT_PREFIX,
    PTP_NODE_SYSCTLS,
    SERVICE_CIDR,
    WITHOUT_BR_NETFILTER,
    IPv4,
    check_cni,
    check_member_name,
    check_namespace_name,
    check_service_name,
    interface,
    pod_cidr,
)
from .objects import DEFAULT_AFFINITY_TIMEOUT, MAX_AFFINITY_TIMEOUT, External, Node, Pod, Service, _Member

if TYPE_CHECKING:
    from ..._net.partition import Partition

__all__ = ["Cluster"]

DEFAULT_ROUTE = ipaddress.IPv4Network("0.0.0.0/0")


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
        self._nodes: dict[str, Node] = {}
        self._pods: dict[str, Pod] = {}
        self._externals: dict[str, External] = {}
        self._services: dict[tuple[str, str], Service] = {}
        self._next_service_host = 1
        #: The kube-dns pod, its two services (UDP and TCP port 53) and server, made with the first node.
        self._dns_pod: Pod | None = None
        self._dns_services: list[Service] = []
        self._dns: _dns.KubeDns | None = None
        #: Each pod's private /etc/hosts and resolv.conf (kubelet's), closed after the namespaces.
        self._pods_files: dict[IPv4, HostsFile] = {}
        #: The namespaces registered with the in-process resolver (by inode).
        self._resolving: list[int] = []
        self._closed = False
        self._hosts = HostsFile()
        try:
            #: The namespace of the node network's switch (``br0``).
            self.fabric = Namespace("fabric", kill_grace=self.kill_grace, _defer_setup=True)
            self._adopt(self.fabric)
            self._fabric = switch(self.fabric, mtu=self._mtu, port_prefix=PORT_PREFIX)
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
        for table in self._tables():
            if name in table:
                return table[name]
        known = ", ".join(self._names()) or "none"
        raise KeyError(f"no node, pod or external host {name!r} in this cluster (it has {known})")

    def __contains__(self, name: object) -> bool:
        return name in self._nodes or name in self._pods or name in self._externals

    def hosts(self) -> dict[str, IPv4]:
        """Every name of the cluster and its address: services (all their names), pods, nodes, external hosts."""
        entries: dict[str, IPv4] = {}
        for service in self._services.values():
            if service.ip is not None:
                for name in service.names:
                    entries[name] = service.ip
        for table in (self._pods, self._nodes, self._externals):
            for name, member in table.items():
                entries[name] = member.ip
        return entries

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
        found = self._dns.zone.lookup(key) if self._dns is not None else []
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
        lines = []
        for node in self._nodes.values():
            lines.append(f"node {node.name}: {node.ip} pods {node.pod_cidr} (gateway {node.gateway})")
            lines += [f"  pod {pod.name}: {pod.ip} (port {pod.node_port})" for pod in node.pods]
        for svc in self._services.values():
            backends = ", ".join(f"{p.name}={p.ip}" for p in svc.pods) or "no pods"
            lines.append(f"service {svc.name}: {svc.ip}:{svc.port}/{svc.proto} -> :{svc.target_port} [{backends}]")
        lines += [f"external {ext.name}: {ext.ip}" for ext in self._externals.values()]
        return "\n".join(lines)

    # -- building --------------------------------------------------------------------------

    def node(self, name: str) -> Node:
        """A new node: ``eth0`` on the node network, the next pod CIDR (on ``cni0`` in bridge mode), routes both ways.

        Services that exist already get their rules on it too.
        """
        self._check_open()
        self._check_new_name(name, "node")
        number = len(self._nodes)
        if number >= FIRST_EXTERNAL_HOST - FIRST_NODE_HOST or number >= 255:
            raise ValueError(f"a cluster holds at most {FIRST_EXTERNAL_HOST - FIRST_NODE_HOST} nodes")
        node = Node(
            name,
            ip=NODE_NETWORK[FIRST_NODE_HOST + number],
            pod_cidr=pod_cidr(number + 1),
            hosts=self._hosts,
            kill_grace=self.kill_grace,
        )
        self._adopt(node)
        if self.cni == "bridge":
            sysctl.settle(node, NODE_SYSCTLS, required={BRIDGE_NF_CALL_IPTABLES}, needed_for=WITHOUT_BR_NETFILTER)
        else:
            sysctl.settle(node, PTP_NODE_SYSCTLS)
        self._attach_to_fabric(node)
        if self.cni == "bridge":
            node._bridge = router_bridge(
                node,
                POD_BRIDGE,
                interface(node.gateway, node.pod_cidr),
                mtu=self._mtu,
                nf_call_iptables=True,
                port_prefix=PORT_PREFIX,
                reserved=(NODE_UPLINK,),
            )
        handle_of(node).execute(
            [
                # The node's own connections to a ClusterIP need a route before the nat
                # output hook sees them (a real node has its default route for that).
                _rtnl.new_route(
                    SERVICE_CIDR, oif=node._uplink_index, doing=f"routing {SERVICE_CIDR} via {name}:{NODE_UPLINK}"
                ),
            ]
            + [
                _rtnl.new_route(
                    other.pod_cidr, via=other.ip, doing=f"routing {other.pod_cidr} via {other.name} on {name}"
                )
                for other in self._nodes.values()
            ]
        )
        for other in self._nodes.values():
            handle_of(other).execute(
                [
                    _rtnl.new_route(
                        node.pod_cidr, via=node.ip, doing=f"routing {node.pod_cidr} via {name} on {other.name}"
                    )
                ]
            )
        proxy.set_up_node(node, [s for s in [*self._dns_services, *self._services.values()] if s.ip is not None])
        self._nodes[name] = node
        if self._dns is None:
            self._start_dns(node)
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
        self._check_new_name(name, "pod")
        namespace = check_namespace_name(namespace)
        checked = _validate.labels(labels)
        host = self._node(node)
        last = host.pod_cidr.num_addresses - (2 if self._dns_pod is not None and self._dns_pod.node is host else 1)
        if host._next_host >= last:
            raise ValueError(f"node {host.name!r} has no free address left in {host.pod_cidr}")
        pod = Pod(
            name,
            ip=host.pod_cidr[host._next_host],
            node=host,
            cluster=self,
            hosts=self._pod_files(name, host.pod_cidr[host._next_host], namespace),
            kill_grace=self.kill_grace,
            namespace=namespace,
            labels=checked,
        )
        self._adopt(pod)
        if self.cni == "bridge":
            (plugged,) = plug(
                host._bridge, [Plug(pod, POD_IFNAME, [interface(pod.ip, host.pod_cidr)])], mtu=self._mtu, hairpin=True
            )
            pod.node_port = plugged.port
            pod._uplink_index = plugged.member_index
            routes: list[_rtnl.Request] = []
        else:
            routes = self._ptp_plug(host, pod)
        routes.append(
            _rtnl.new_route(
                DEFAULT_ROUTE, via=host.gateway, doing=f"adding the default route via {host.gateway} in {name!r}"
            )
        )
        handle_of(pod).execute(routes)
        host._next_host += 1
        host.pods.append(pod)
        self._pods[name] = pod
        for service in self._services.values():
            if service.selector is not None and pod in service.pods:
                self._install(service)  # its endpoints follow the labels
        self._publish_names()
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
        inode = handle_of(pod).inode
        resolver.unregister(inode)
        self._resolving.remove(inode)
        self._owned.remove(pod)
        self._publish_names()
        try:
            pod.close()
        finally:
            files = self._pods_files.pop(pod.ip, None)
            if files is not None:
                files.close()

    @property
    def k8s_namespaces(self) -> dict[str, Mapping[str, str]]:
        """The Kubernetes namespaces (those something was created in) and their labels.

        Each carries ``kubernetes.io/metadata.name=<namespace>``, as the API server sets it.
        """
        names = [pod.namespace for pod in ([self._dns_pod] if self._dns_pod else []) + list(self._pods.values())]
        names += [svc.namespace for svc in self._services.values()]
        return {name: MappingProxyType({NAMESPACE_NAME_LABEL: name}) for name in dict.fromkeys(names)}

    def service(
        self,
        name: str,
        *,
        port: int,
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
    ) -> Service:
        """A ClusterIP service: new connections to ``ip:port`` from any pod or node go to one of ``pods``.

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
        """
        self._check_open()
        check_service_name(name)
        namespace = check_namespace_name(namespace)
        if (namespace, name) in self._services:
            raise ValueError(f"service {name!r} already exists in namespace {namespace!r}")
        if (pods is None) == (selector is None):
            raise ValueError(f"service {name!r}: give either pods= or selector=, not {'both' if pods else 'neither'}")
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
        if pods is not None and (isinstance(pods, (str, Namespace)) or not isinstance(pods, Sequence)):
            raise ValueError(f"pods must be a list of pods of this cluster, got {pods!r}")
        backends: list[Pod] = []
        for item in pods or ():
            pod = self._pod(item)
            if pod in backends:
                raise ValueError(f"pod {pod.name!r} is given twice in pods")
            backends.append(pod)
        ip = None if headless else self._cluster_ip(cluster_ip)
        service = Service(
            self,
            name,
            ip,
            port,
            target,
            proto,
            spread,
            backends,
            namespace=namespace,
            selector=wanted,
            port_name=port_name,
        )
        service.session_affinity = session_affinity
        service.session_affinity_timeout = timeout
        self._install(service)
        self._services[namespace, name] = service
        self._publish_names()
        return service

    def external(self, name: str) -> External:
        """A host outside the cluster on the node network (172.18.0.200 upwards), with no route to pods.

        Pods reach it through their node, which masquerades: it sees the node's IP.
        """
        self._check_open()
        self._check_new_name(name, "external host")
        number = len(self._externals)
        if FIRST_EXTERNAL_HOST + number >= NODE_NETWORK.num_addresses - 1:
            limit = NODE_NETWORK.num_addresses - 1 - FIRST_EXTERNAL_HOST
            raise ValueError(f"a cluster holds at most {limit} external hosts")
        host = External(
            name, ip=NODE_NETWORK[FIRST_EXTERNAL_HOST + number], hosts=self._hosts, kill_grace=self.kill_grace
        )
        self._adopt(host)
        self._attach_to_fabric(host)
        self._externals[name] = host
        self._publish_names()
        return host

    def set_mtu(self, mtu: int) -> None:
        """Change the MTU of every link of the cluster: node network, ``cni0``, every pod's veth, external hosts."""
        self._check_open()
        value = _validate.mtu(mtu, "mtu")
        doing = f"setting MTU {value}"
        self._fabric.set_mtu(value, "the node network")
        for node in self._nodes.values():
            requests = [_rtnl.set_link(node._uplink_index, mtu=value, doing=f"{doing} in node {node.name!r}")]
            requests += [
                _rtnl.set_link(index, mtu=value, doing=f"{doing} on {node.name}:{port}")
                for port, index in node._veths.items()
            ]
            handle_of(node).execute(requests)
            if self.cni == "bridge":
                node._bridge.set_mtu(value, f"{node.name}:{POD_BRIDGE}")
        for ns in [*self._pods.values(), *self._externals.values()]:
            handle_of(ns).execute([_rtnl.set_link(ns._uplink_index, mtu=value, doing=f"{doing} in {ns.name!r}")])
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

        members: list[list[Namespace]] = []
        for number, group in enumerate(groups, 1):
            if isinstance(group, (str, Namespace)):
                items: list[object] = [group]
            elif isinstance(group, Iterable):
                items = list(group)
            else:
                raise ValueError(
                    f"group {number} must be a node, an external host, a name or an iterable of them, got {group!r}"
                )
            side: list[Namespace] = []
            for item in items:
                side += self._partition_member(item)
            members.append(side)
        return partition(*members)

    # -- teardown ----------------------------------------------------------------------------

    def close(self) -> None:
        """Tear everything down: processes stopped, every namespace released (last made, first).

        Raises ``TeardownError`` listing every step that failed.  Calling it again does nothing.
        """
        if self._closed:
            return
        self._closed = True
        if self._dns is not None:
            self._dns.close()  # its sockets pin the kube-dns pod's namespace
        for inode in self._resolving:
            resolver.unregister(inode)
        try:
            release(self._owned, self._hosts, "cluster")
        finally:
            for files in self._pods_files.values():
                files.close()

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

    def _tables(self) -> tuple[dict[str, Node], dict[str, Pod], dict[str, External]]:
        return self._nodes, self._pods, self._externals

    def _names(self) -> list[str]:
        return [*self._nodes, *self._pods, *self._externals]

    def _check_new_name(self, name: object, what: str) -> str:
        name = check_member_name(name, what)
        if name in self._names():
            raise ValueError(f"name {name!r} is already used in this cluster")
        return name

    def _adopt(self, ns: Namespace) -> None:
        self._owned.append(ns)
        # In-process getaddrinfo in this namespace: a pod asks the cluster DNS, the rest the hosts table.
        inode = handle_of(ns).inode
        self._resolving.append(inode)
        if isinstance(ns, Pod):
            resolver.register(inode, functools.partial(_dns.search, namespace=ns.namespace))
        else:
            resolver.register(inode, self._lookup_host)
        if self._namespace_created is not None:
            self._namespace_created(ns)

    def _node(self, node: object) -> Node:
        if isinstance(node, Node) and self._nodes.get(node.name) is node:
            return node
        if isinstance(node, str) and node in self._nodes:
            return self._nodes[node]
        raise ValueError(
            f"node {getattr(node, 'name', node)!r} is not a node of this cluster "
            f"(it has {', '.join(self._nodes) or 'none'})"
        )

    def _partition_member(self, item: object) -> list[Namespace]:
        """A node with its pods, or an external host, for a partition's group."""
        if isinstance(item, External) and self._externals.get(item.name) is item:
            return [item]
        if isinstance(item, str) and item in self._externals:
            return [self._externals[item]]
        pod = item if isinstance(item, Pod) else self._pods.get(item) if isinstance(item, str) else None
        if pod is not None:
            raise ValueError(f"pod {pod.name!r} cannot be in a group of a partition: pods follow their node")
        node = self._node(item)
        dns_pod = [self._dns_pod] if self._dns_pod is not None and self._dns_pod.node is node else []
        return [node, *node.pods, *dns_pod]

    def _pod(self, pod: object) -> Pod:
        if isinstance(pod, Pod) and self._pods.get(pod.name) is pod:
            return pod
        if isinstance(pod, str) and pod in self._pods:
            return self._pods[pod]
        raise ValueError(
            f"pod {getattr(pod, 'name', pod)!r} is not a pod of this cluster (it has {', '.join(self._pods) or 'none'})"
        )

    def _cluster_ip(self, wanted: object) -> IPv4:
        used = {svc.ip for svc in self._services.values() if svc.ip is not None} | {_dns.DNS_IP}
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
        while self._next_service_host < SERVICE_CIDR.num_addresses - 1:
            ip = SERVICE_CIDR[self._next_service_host]
            self._next_service_host += 1
            if ip not in used:
                return ip
        raise ValueError(f"no free ClusterIP left in {SERVICE_CIDR}")

    def _install(self, service: Service) -> None:
        """Write (or atomically replace) the service's rules on every node."""
        if service.ip is not None:  # a headless service has no rules
            for node in self._nodes.values():
                proxy.install_service(node, service)
        self._refresh_dns()

    def _publish_names(self) -> None:
        self._hosts.update({name: [ip] for name, ip in self.hosts().items()})
        self._refresh_dns()

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
        return self._dns_pod

    def _start_dns(self, node: Node) -> None:
        """The kube-dns pod on ``node`` (the last address of its pod CIDR), its services and server."""
        saved = node._next_host
        node._next_host = node.pod_cidr.num_addresses - 2
        try:
            pod = self.pod(_dns.DNS_POD, node=node, namespace=_dns.DNS_NAMESPACE, labels=_dns.DNS_LABELS)
        finally:
            node._next_host = saved
        del self._pods[pod.name]
        node.pods.remove(pod)
        self._dns_pod = pod
        self._dns = _dns.KubeDns(pod)
        protos: tuple[tuple[Literal["tcp", "udp"], str], ...] = (("udp", "dns"), ("tcp", "dns-tcp"))
        for proto, port_name in protos:
            service = Service(
                self,
                _dns.DNS_SERVICE,
                _dns.DNS_IP,
                _dns.DNS_PORT,
                _dns.DNS_PORT,
                proto,
                "random",
                [pod],
                namespace=_dns.DNS_NAMESPACE,
                port_name=port_name,
            )
            self._dns_services.append(service)
            self._install(service)

    def _lookup_host(self, name: str) -> list[IPv4]:
        """A node's or external host's in-process lookup: the cluster's hosts table, as its processes see."""
        found = self.hosts().get(name.rstrip(".").lower())
        return [] if found is None else [found]

    def _pod_files(self, name: str, ip: IPv4, namespace: str) -> HostsFile:
        """A pod's files as kubelet writes them: /etc/hosts with localhost and its own name, resolv.conf."""
        files = HostsFile(resolv_conf=kubelet_resolv_conf(_dns.DNS_IP, namespace, CLUSTER_DOMAIN))
        self._pods_files[ip] = files
        files.update({name: [ip]})
        return files

    def _refresh_dns(self) -> None:
        """A new snapshot for the server: the next answer sees the change."""
        if self._dns is None or self._dns_pod is None:
            return
        services = [
            _dns.ServiceRecord(
                svc.name,
                svc.namespace,
                svc.ip,
                [_dns.ServicePort(svc.port_name, svc.proto, svc.port, svc.target_port)],
                [ip for ip, _ in svc.endpoints],
            )
            for svc in self._services.values()
        ]
        services.append(
            _dns.ServiceRecord(
                _dns.DNS_SERVICE,
                _dns.DNS_NAMESPACE,
                _dns.DNS_IP,
                [_dns.ServicePort("dns", "udp", 53, 53), _dns.ServicePort("dns-tcp", "tcp", 53, 53)],
                [self._dns_pod.ip],
            )
        )
        pods = [(pod.namespace, pod.ip) for pod in [*self._pods.values(), self._dns_pod]]
        hosts = {name: member.ip for table in self._tables() for name, member in table.items()}
        self._dns.zone = _dns.Zone.build(services, pods, hosts)

    def _ptp_plug(self, host: Node, pod: Pod) -> list[_rtnl.Request]:
        """The ptp CNI plugin's veth (as kind's kindnet configures it); returns the pod's routes still to add.

        The node's end holds the gateway as a /32 (the same address on every
        pod's veth) and a /32 route to the pod; the pod keeps its /24 address
        without the prefix route, reaches the gateway through a link-scope
        /32 route and everything else via the gateway, so traffic between two
        pods of one node is routed by the node as well: no bridge, no
        br_netfilter.
        """
        taken = {"lo", NODE_UPLINK, *host._veths}
        port = pod.name if _is_ifname(pod.name) and pod.name not in taken else ""
        number = len(host._veths)
        while not port or port in taken:
            port, number = f"{PORT_PREFIX}{number}", number + 1
        gateway = ipaddress.IPv4Interface((host.gateway, 32))
        port_index, pod_index = veth(host, pod, name_a=port, name_b=POD_IFNAME, mtu=self._mtu, ipv6=False)
        host._veths[port] = port_index
        pod.node_port = port
        pod._uplink_index = pod_index
        where, there = f"{host.name}:{port}", f"{pod.name}:{POD_IFNAME}"
        address = interface(pod.ip, host.pod_cidr)
        handle_of(host).execute(
            [
                _rtnl.new_address(port_index, gateway, f"adding {gateway} to {where}"),
                _rtnl.new_route(ipaddress.IPv4Network(pod.ip), oif=port_index, doing=f"routing {pod.ip}/32 to {where}"),
            ]
        )
        return [
            _rtnl.new_address(pod_index, address, f"adding {address} to {there}", noprefixroute=True),
            _rtnl.new_route(gateway.network, oif=pod_index, doing=f"routing {gateway} to {there} in {pod.name!r}"),
            _rtnl.new_route(
                host.pod_cidr, via=host.gateway, doing=f"routing {host.pod_cidr} via {host.gateway} in {pod.name!r}"
            ),
        ]

    def _attach_to_fabric(self, member: _Member) -> None:
        (plugged,) = plug(
            self._fabric, [Plug(member, NODE_UPLINK, [interface(member.ip, NODE_NETWORK)])], mtu=self._mtu
        )
        member._uplink_index = plugged.member_index


def _is_ifname(name: str) -> bool:
    try:
        _validate.ifname(name)
    except ValueError:
        return False
    return True
