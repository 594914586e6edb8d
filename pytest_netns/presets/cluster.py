"""Kubernetes-style pod networking in network namespaces: ``Cluster``, ``Node``, ``Pod``, ``Service``.

The model kubelet, a bridge CNI plugin and kube-proxy (nftables mode) build
on a real cluster, made with netlink only (no Kubernetes, no binaries).  It
works without pytest; ``netns_cluster`` is the function-scoped fixture::

    with Cluster() as cluster:
        n1, n2 = cluster.node("node1"), cluster.node("node2")
        web = [cluster.pod(f"web-{i}", node=n) for i, n in enumerate((n1, n2, n2))]
        client = cluster.pod("client", node=n1)
        svc = cluster.service("web", port=80, target_port=8080, pods=web)
        client.run(["curl", "http://web/"])          # names resolve in run/popen
        with client:                                   # in-process code: no hosts file
            socket.create_connection((str(cluster.resolve("web")), 80))

The network:

* **Node network** 172.18.0.0/24: a bridge ``br0`` in a namespace of its own
  (``cluster.fabric``); node *k* (0-based, in creation order) has ``eth0``
  172.18.0.(k+2) on it, external hosts get 172.18.0.200 upwards.
* **Pod network**: the k-th node (counting from 1) has the pod CIDR 10.244.k.0/24 (``node.pod_cidr``)
  on a bridge ``cni0`` whose address is the gateway 10.244.k.1; every node
  routes every other node's pod CIDR via that node's IP; forwarding is on.
  Pods are flat: every pod reaches every pod by its own IP, without NAT.
* **Pods**: ``eth0`` (one end of a veth whose other end is a port of the
  node's ``cni0``), the next free address of the node's pod CIDR from .2,
  default route via the gateway.  All containers of a pod share it: run them
  as several processes of the pod (they talk over ``localhost``).
* **Services**: a ClusterIP from 10.96.0.0/12 (sequential from 10.96.0.1,
  or ``cluster_ip=``).  Every node has an nftables table per service (nat
  chains on prerouting, for traffic from its pods, and output, for its own)
  that DNATs *new* connections to ``ip:port`` to one of the service's pods at
  ``target_port``, chosen uniformly at random per connection (the cascade
  kube-proxy uses: rule *i* of *n* fires with probability 1/(n-i)), whether
  that pod is on the client's node or another.  ``service.add(pod)`` /
  ``service.remove(pod)`` replace each node's table atomically: established
  connections keep their pod (conntrack), new ones only see the new set.
  With no pod, new connections are refused (TCP reset), as kube-proxy does.
* **Egress**: a pod's packet to anything outside the pod network (an
  ``external`` host, a node) leaves its node MASQUERADEd to the node IP.
* **Names** (private hosts file for processes started with ``run``/``popen``
  in any namespace of the cluster): ``<service>``, ``<service>.default``,
  ``<service>.default.svc`` and ``<service>.default.svc.cluster.local`` give
  the ClusterIP; pod, node and external names their address.  Code running
  in the test process under ``with pod:`` uses the host's resolver, which
  knows none of them: use ``cluster.resolve(name)`` / ``pod.resolve(name)``.

Kernel settings the model relies on, set explicitly in the cluster's own
namespaces (never on the host):

* nodes: ``ip_forward=1``; ``rp_filter=0``; bridged IPv4 traffic passes
  netfilter (``net.bridge.bridge-nf-call-iptables=1`` plus the per-bridge
  option on ``cni0``).  The last one decides whether a connection to a
  ClusterIP whose chosen pod sits on the client's own node works at all: the
  DNAT-ed request and the reply are *bridged* between the two pods' ports
  (br_netfilter routes the rewritten packet straight back onto ``cni0``), so
  only when bridged frames pass the IP hooks does conntrack see the reply and
  rewrite its source back to the ClusterIP; without it the client gets a
  reply from the pod's own IP and drops it.  Its bridge ports are in hairpin
  mode and a pod reaching itself through a service is masqueraded to the
  gateway (what kubelet's ``hairpin-veth`` mode and kube-proxy's
  masquerade-hairpin rule do), so a pod may call its own service;
* the node network's bridge passes no frame to netfilter (a plain switch);
* every link of the cluster has no IPv6 address (the model is IPv4, as a
  default cluster is); ``lo`` keeps ``::1``.

Not modelled: NetworkPolicy, NodePort/LoadBalancer services, session
affinity, a DNS server (names come from a hosts file), IPv6.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
from collections.abc import Callable, Sequence
from typing import Any, Literal

from .._kernel import netns as _kernel
from .._kernel import nft as _nft
from .._kernel import rtnl as _rtnl
from .._kernel import validate as _validate
from .._net.hosts import HostsFile, release
from .._net.veth import wait_ready
from ..errors import FeatureUnavailable, KernelError, NetnsError, TeardownError
from ..namespace import Namespace

__all__ = [
    "CLUSTER_CIDR",
    "CLUSTER_DOMAIN",
    "NODE_NETWORK",
    "SERVICE_CIDR",
    "Cluster",
    "External",
    "Node",
    "Pod",
    "Service",
]

IPv4 = ipaddress.IPv4Address

NODE_NETWORK = ipaddress.IPv4Network("172.18.0.0/24")
#: Every node's pod CIDR is a /24 of this network (the k-th node, counting from 1: 10.244.k.0/24).
CLUSTER_CIDR = ipaddress.IPv4Network("10.244.0.0/16")
SERVICE_CIDR = ipaddress.IPv4Network("10.96.0.0/12")
CLUSTER_DOMAIN = "cluster.local"
#: The Kubernetes namespace every service lives in (names: <svc>.default.svc.cluster.local).
K8S_NAMESPACE = "default"
FIRST_NODE_HOST = 2  # 172.18.0.2, .3, ... (kind's numbering)
FIRST_EXTERNAL_HOST = 200  # 172.18.0.200, .201, ...
POD_BRIDGE = "cni0"
FABRIC_BRIDGE = "br0"
NODE_UPLINK = "eth0"
POD_IFNAME = "eth0"
#: The nftables table (inet) of each node holding its masquerade rules.
NAT_TABLE = f"{_nft.TABLE_PREFIX}_cluster"

#: A pod, node or external name: a DNS-1123 label (as Kubernetes requires of pod
#: names, dots allowed), at most 63 characters: it goes into the hosts file.
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$")
#: A service name: a DNS-1035 label (lowercase, starts with a letter).
_SERVICE_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")

_FORWARDING = (("/proc/sys/net/ipv4/ip_forward", "1"),)
_NO_RP_FILTER = (
    ("/proc/sys/net/ipv4/conf/all/rp_filter", "0"),
    ("/proc/sys/net/ipv4/conf/default/rp_filter", "0"),
)
#: Bridged IPv4 frames pass the IP netfilter hooks, so conntrack rewrites the
#: reply of a DNAT-ed connection bridged between two pods of one node (see the
#: module docstring).  This kernel has it on by default in new namespaces;
#: others have it off, or br_netfilter not loaded at all (then the file is
#: missing and building a node raises FeatureUnavailable).
BRIDGE_NF_CALL_IPTABLES = "/proc/sys/net/bridge/bridge-nf-call-iptables"
NODE_SYSCTLS = _FORWARDING + _NO_RP_FILTER + ((BRIDGE_NF_CALL_IPTABLES, "1"),)
#: The node network's bridge is a plain switch: no netfilter on bridged frames.
FABRIC_SYSCTLS = (
    ("/proc/sys/net/bridge/bridge-nf-call-iptables", "0"),
    ("/proc/sys/net/bridge/bridge-nf-call-ip6tables", "0"),
    ("/proc/sys/net/bridge/bridge-nf-call-arptables", "0"),
)

# rtnetlink attributes not in _rtnl.
IFLA_INFO_SLAVE_DATA = 5
IFLA_BRPORT_MODE = 4  # hairpin
IFLA_BR_NF_CALL_IPTABLES, IFLA_BR_NF_CALL_IP6TABLES, IFLA_BR_NF_CALL_ARPTABLES = 36, 37, 38


# -- namespaces of the cluster -------------------------------------------------------


class _Member(Namespace):
    """A namespace of a cluster: processes started with run/popen see the cluster's hosts file."""

    _hosts: HostsFile
    _ip: IPv4
    #: Its interface on the bridge it is plugged into, and that bridge port (set by _plug).
    _uplink_index: int
    _port_index: int

    @property
    def ip(self) -> IPv4:  # type: ignore[override]
        """Its address in the cluster (on ``eth0``), known without asking the kernel."""
        return self._ip

    def _spawn(self, command: Any, **kwargs: Any) -> Any:
        # The hosts file is bind-mounted in a mount namespace that only the
        # hosts file's thread is in: a child started there inherits it.
        def start(kw: dict[str, Any]) -> Any:
            return Namespace._spawn(self, command, **kw)

        self._check_open()
        return self._hosts.spawn_via(start, kwargs)


class Node(_Member):
    """A node of a ``Cluster`` (a ``Namespace``): ``eth0`` on the node network, pods on ``cni0``.

    ``ip`` is its address on the node network, ``pod_cidr`` its pods'
    network, ``gateway`` the address of ``cni0`` (the pods' default route),
    ``pods`` the pods scheduled on it.
    """

    #: The network its pods get addresses from (10.244.k.0/24).
    pod_cidr: ipaddress.IPv4Network
    #: ``cni0``'s address: the first host of ``pod_cidr``.
    gateway: IPv4

    def __init__(self, name: str, *, kill_grace: float) -> None:
        super().__init__(name, kill_grace=kill_grace, _defer_setup=True)
        self.pods: list[Pod] = []
        self._bridge_index = 0
        self._next_host = 2
        self._port_names: set[str] = {"lo", NODE_UPLINK, POD_BRIDGE}

    def __repr__(self) -> str:
        return f"<Node {self.name!r} {self.ip} pods {self.pod_cidr}>" if not self.closed else super().__repr__()


class Pod(_Member):
    """A pod (a ``Namespace``): ``eth0`` on its node's ``cni0``, one IP shared by all its containers.

    ``name`` is the name given, ``ip`` its address, ``node`` the ``Node`` it
    runs on, ``node_port`` the name of its veth's other end on the node's
    bridge.  ``resolve(name)`` answers as the cluster's names would.
    """

    node: Node
    node_port: str
    _cluster: Cluster

    def resolve(self, name: str) -> IPv4:
        """The address ``name`` has in the cluster (``Cluster.resolve``), for in-process code."""
        return self._cluster.resolve(name)

    def __repr__(self) -> str:
        return f"<Pod {self.name!r} {self.ip} on {self.node.name!r}>" if not self.closed else super().__repr__()


class External(_Member):
    """A host outside the cluster (a ``Namespace``) on the node network, with no route to pods."""

    def __repr__(self) -> str:
        return f"<External {self.name!r} {self.ip}>" if not self.closed else super().__repr__()


# -- services --------------------------------------------------------------------------


class Service:
    """A ClusterIP service: new connections to ``ip:port`` go to one of ``pods`` at ``target_port``.

    Made with ``Cluster.service``.  ``add(pod)`` / ``remove(pod)`` change the
    set; ``names`` are the names that resolve to ``ip``.
    """

    def __init__(
        self,
        cluster: Cluster,
        name: str,
        ip: IPv4,
        port: int,
        target_port: int,
        proto: Literal["tcp", "udp"],
        spread: Literal["random", "round_robin"],
        pods: list[Pod],
    ) -> None:
        self._cluster = cluster
        #: The service name (a DNS label).
        self.name = name
        #: The ClusterIP.
        self.ip = ip
        self.port = port
        self.target_port = target_port
        self.proto: Literal["tcp", "udp"] = proto
        self.spread: Literal["random", "round_robin"] = spread
        self._pods = pods

    @property
    def pods(self) -> tuple[Pod, ...]:
        """The pods new connections are spread over, in the order they were added."""
        return tuple(self._pods)

    @property
    def endpoints(self) -> list[tuple[IPv4, int]]:
        """``(pod ip, target_port)`` of every pod, as kube-proxy would see them."""
        return [(pod.ip, self.target_port) for pod in self._pods]

    @property
    def address(self) -> tuple[str, int]:
        """``(ClusterIP, port)`` as a string and an int: ready for ``socket.connect``."""
        return str(self.ip), self.port

    @property
    def names(self) -> list[str]:
        """The names that resolve to the ClusterIP: ``web``, ``web.default``, ..., ``web.default.svc.cluster.local``."""
        base = f"{self.name}.{K8S_NAMESPACE}"
        return [self.name, base, f"{base}.svc", f"{base}.svc.{CLUSTER_DOMAIN}"]

    def add(self, pod: Pod) -> None:
        """Send new connections to ``pod`` too (every node's rules replaced atomically)."""
        self._cluster._check_open()
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
        pods = ", ".join(p.name for p in self._pods)
        return f"<Service {self.name!r} {self.ip}:{self.port}/{self.proto} -> [{pods}]:{self.target_port}>"


# -- the cluster -----------------------------------------------------------------------


class Cluster:
    """Nodes, pods, services and external hosts on one machine, torn down together.

    ``Cluster(kill_grace=1.0, mtu=1500)``; use it as a context manager or
    call ``close()``.  Build with ``node``, ``pod``, ``service`` and
    ``external``; ``cluster["name"]`` is the node, pod or external host of
    that name.  See the module docstring for the network it makes.
    """

    def __init__(
        self, *, kill_grace: float = 1.0, mtu: int = 1500, _namespace_created: Callable[[Namespace], None] | None = None
    ) -> None:
        self.kill_grace = _validate.duration(kill_grace, "kill_grace")
        self._mtu = _validate.mtu(mtu, "mtu")
        self._namespace_created = _namespace_created
        self._owned: list[Namespace] = []
        self._nodes: dict[str, Node] = {}
        self._pods: dict[str, Pod] = {}
        self._externals: dict[str, External] = {}
        self._services: dict[str, Service] = {}
        self._next_service_host = 1
        self._closed = False
        self._hosts = HostsFile()
        try:
            self.fabric = self._make_fabric()
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
        for table in (self._nodes, self._pods, self._externals):
            if name in table:
                return table[name]  # type: ignore[no-any-return]
        known = ", ".join(self._names()) or "none"
        raise KeyError(f"no node, pod or external host {name!r} in this cluster (it has {known})")

    def __contains__(self, name: object) -> bool:
        return name in self._nodes or name in self._pods or name in self._externals

    def hosts(self) -> dict[str, IPv4]:
        """Every name of the cluster and its address: services (all their names), pods, nodes, external hosts."""
        entries: dict[str, IPv4] = {}
        for service in self._services.values():
            for name in service.names:
                entries[name] = service.ip
        for table in (self._pods, self._nodes, self._externals):
            for name, ns in table.items():
                entries[name] = ns.ip  # type: ignore[attr-defined]
        return entries

    def resolve(self, name: str) -> IPv4:
        """The address a name of the cluster resolves to, for code that runs in the test process.

        Processes started with ``run``/``popen`` resolve the same names
        through ``getaddrinfo``; code under ``with pod:`` uses the test
        process's resolver, which does not know them.  A trailing dot is
        allowed; an unknown name raises ``ValueError``.
        """
        if not isinstance(name, str):
            raise ValueError(f"name must be a string, got {name!r}")
        entries = self.hosts()
        key = name[:-1] if name.endswith(".") else name
        try:
            return entries[key.lower()]
        except KeyError:
            raise ValueError(f"no name {name!r} in this cluster (known: {', '.join(entries) or 'none'})") from None

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
        """A new node: ``eth0`` on the node network, ``cni0`` with the next pod CIDR, routes both ways.

        Services that exist already get their rules on it too.
        """
        self._check_open()
        self._check_new_name(name, "node")
        number = len(self._nodes)
        if number >= FIRST_EXTERNAL_HOST - FIRST_NODE_HOST or number >= 255:
            raise ValueError(f"a cluster holds at most {FIRST_EXTERNAL_HOST - FIRST_NODE_HOST} nodes")
        node = Node(name, kill_grace=self.kill_grace)
        self._adopt(node)
        node._ip = NODE_NETWORK[FIRST_NODE_HOST + number]
        # The i-th node (counting from 1, as the contract reads) gets 10.244.<i>.0/24.
        node.pod_cidr = ipaddress.IPv4Network((int(CLUSTER_CIDR.network_address) + ((number + 1) << 8), 24))
        node.gateway = node.pod_cidr[1]
        _settle_sysctls(node, NODE_SYSCTLS, required={BRIDGE_NF_CALL_IPTABLES})
        self._attach_to_fabric(node, node.ip)
        bridge = node.allocate_index()
        node._bridge_index = bridge
        where = f"{name}:{POD_BRIDGE}"
        node.execute(
            [
                _bridge(POD_BRIDGE, bridge, self._mtu, nf_call_iptables=True),
                _rtnl.no_ipv6_link_local(bridge, f"switching IPv6 off on {where}"),
                _rtnl.set_link(bridge, up=True, doing=f"bringing {where} up"),
                _rtnl.new_address(
                    bridge, ipaddress.IPv4Interface(f"{node.gateway}/24"), f"adding {node.gateway}/24 to {where}"
                ),
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
            other.execute(
                [
                    _rtnl.new_route(
                        node.pod_cidr, via=node.ip, doing=f"routing {node.pod_cidr} via {name} on {other.name}"
                    )
                ]
            )
        with node:
            _node_nat_table()
            for service in self._services.values():
                _install_service(service)
        self._nodes[name] = node
        self._publish_names()
        return node

    def pod(self, name: str, *, node: Node | str) -> Pod:
        """A new pod on ``node``: ``eth0`` on its ``cni0``, the next address of its pod CIDR, default route via cni0."""
        self._check_open()
        self._check_new_name(name, "pod")
        host = self._node(node)
        if host._next_host >= host.pod_cidr.num_addresses - 1:
            raise ValueError(f"node {host.name!r} has no free address left in {host.pod_cidr}")
        pod = Pod(name, kill_grace=self.kill_grace, _defer_setup=True)
        self._adopt(pod)
        pod._ip = host.pod_cidr[host._next_host]
        pod.node = host
        pod._cluster = self
        pod.node_port = _port_name(name, len(host.pods), host._port_names)
        _plug(
            host,
            host._bridge_index,
            pod.node_port,
            pod,
            POD_IFNAME,
            ipaddress.IPv4Interface(f"{pod.ip}/{host.pod_cidr.prefixlen}"),
            self._mtu,
            hairpin=True,
        )
        pod.execute(
            [
                _rtnl.new_route(
                    ipaddress.IPv4Network("0.0.0.0/0"),
                    via=host.gateway,
                    doing=f"adding the default route via {host.gateway} in {name!r}",
                )
            ]
        )
        with host:
            _add_hairpin_masquerade(pod.ip)
        host._next_host += 1
        host._port_names.add(pod.node_port)
        host.pods.append(pod)
        self._pods[name] = pod
        self._publish_names()
        return pod

    def service(
        self,
        name: str,
        *,
        port: int,
        target_port: int | None = None,
        pods: Sequence[Pod | str],
        proto: Literal["tcp", "udp"] = "tcp",
        cluster_ip: str | IPv4 | None = None,
        spread: Literal["random", "round_robin"] = "random",
    ) -> Service:
        """A ClusterIP service: new connections to ``ip:port`` from any pod or node go to one of ``pods``.

        ``target_port`` defaults to ``port``; ``cluster_ip`` to the next free
        address of 10.96.0.0/12.  ``spread="random"`` (kube-proxy's way)
        chooses a pod uniformly at random per connection, ``"round_robin"``
        in turn (per node).  The rules go on every node, present and future.
        """
        self._check_open()
        if not isinstance(name, str) or not _SERVICE_NAME.match(name):
            raise ValueError(
                f"service name {name!r} is not a DNS-1035 label (1-63 lowercase letters, digits or '-', "
                "starting with a letter, not ending with '-')"
            )
        if name in self._services:
            raise ValueError(f"service {name!r} already exists in this cluster")
        if name in self._names():
            raise ValueError(f"name {name!r} is already used by a node, pod or external host of this cluster")
        port = _check_port(port, "port")
        target = port if target_port is None else _check_port(target_port, "target_port")
        if proto not in ("tcp", "udp"):
            raise ValueError(f"proto {proto!r} is not 'tcp' or 'udp'")
        if spread not in ("random", "round_robin"):
            raise ValueError(f"spread {spread!r} is not 'random' or 'round_robin'")
        if isinstance(pods, (str, Namespace)) or not isinstance(pods, Sequence):
            raise ValueError(f"pods must be a list of pods of this cluster, got {pods!r}")
        backends: list[Pod] = []
        for item in pods:
            pod = self._pod(item)
            if pod in backends:
                raise ValueError(f"pod {pod.name!r} is given twice in pods")
            backends.append(pod)
        ip = self._cluster_ip(cluster_ip)
        service = Service(self, name, ip, port, target, proto, spread, backends)
        self._install(service)
        self._services[name] = service
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
        host = External(name, kill_grace=self.kill_grace, _defer_setup=True)
        self._adopt(host)
        host._ip = NODE_NETWORK[FIRST_EXTERNAL_HOST + number]
        self._attach_to_fabric(host, host.ip)
        self._externals[name] = host
        self._publish_names()
        return host

    def set_mtu(self, mtu: int) -> None:
        """Change the MTU of every link of the cluster: node network, ``cni0``, every pod's veth, external hosts."""
        self._check_open()
        value = _validate.mtu(mtu, "mtu")
        doing = f"setting MTU {value}"
        # Ports first, bridges last: a bridge whose MTU was set explicitly keeps it.
        fabric_links = [index for index in self._fabric_ports.values()] + [self._fabric_bridge]
        self.fabric.execute([_rtnl.set_link(i, mtu=value, doing=f"{doing} on the node network") for i in fabric_links])
        for node in self._nodes.values():
            indexes = [node._uplink_index] + [pod._port_index for pod in node.pods] + [node._bridge_index]
            node.execute([_rtnl.set_link(i, mtu=value, doing=f"{doing} in node {node.name!r}") for i in indexes])
        for ns in [*self._pods.values(), *self._externals.values()]:
            ns.execute([_rtnl.set_link(ns._uplink_index, mtu=value, doing=f"{doing} in {ns.name!r}")])
        self._mtu = value

    # -- teardown ----------------------------------------------------------------------------

    def close(self) -> None:
        """Tear everything down: processes stopped, every namespace released (last made, first).

        Raises ``TeardownError`` listing every step that failed.  Calling it again does nothing.
        """
        if self._closed:
            return
        self._closed = True
        release(self._owned, self._hosts, "cluster")

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

    def _names(self) -> list[str]:
        return [*self._nodes, *self._pods, *self._externals]

    def _check_new_name(self, name: object, what: str) -> str:
        if not isinstance(name, str) or not _NAME.match(name) or re.fullmatch(r"[0-9.]+", name):
            raise ValueError(
                f"{what} name {name!r} is not a DNS-1123 name (1-63 lowercase letters, digits, '-', '.', "
                "starting and ending with a letter or digit, not all digits): names go into a hosts file"
            )
        if name in self._names():
            raise ValueError(f"name {name!r} is already used in this cluster")
        if any(name in svc.names for svc in self._services.values()):
            raise ValueError(f"name {name!r} is already a name of a service of this cluster")
        return name

    def _adopt(self, ns: _Member) -> None:
        ns._hosts = self._hosts
        self._owned.append(ns)
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

    def _pod(self, pod: object) -> Pod:
        if isinstance(pod, Pod) and self._pods.get(pod.name) is pod:
            return pod
        if isinstance(pod, str) and pod in self._pods:
            return self._pods[pod]
        raise ValueError(
            f"pod {getattr(pod, 'name', pod)!r} is not a pod of this cluster (it has {', '.join(self._pods) or 'none'})"
        )

    def _cluster_ip(self, wanted: object) -> IPv4:
        used = {svc.ip for svc in self._services.values()}
        if wanted is not None:
            try:
                ip = ipaddress.IPv4Address(wanted)  # type: ignore[arg-type]
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
        for node in self._nodes.values():
            with node:
                _install_service(service)

    def _publish_names(self) -> None:
        self._hosts.update({name: [ip] for name, ip in self.hosts().items()})

    def _make_fabric(self) -> Namespace:
        fabric = Namespace("fabric", kill_grace=self.kill_grace, _defer_setup=True)
        self._owned.append(fabric)
        if self._namespace_created is not None:
            self._namespace_created(fabric)
        _settle_sysctls(fabric, FABRIC_SYSCTLS)
        self._fabric_bridge = fabric.allocate_index()
        self._fabric_ports: dict[str, int] = {}
        fabric.execute(
            [
                _bridge(FABRIC_BRIDGE, self._fabric_bridge, self._mtu, nf_call_iptables=False),
                _rtnl.no_ipv6_link_local(self._fabric_bridge, "switching IPv6 off on the node network's bridge"),
                _rtnl.set_link(self._fabric_bridge, up=True, doing="bringing the node network's bridge up"),
            ]
        )
        return fabric

    def _attach_to_fabric(self, ns: Namespace, ip: IPv4) -> None:
        name = _port_name(ns.name, len(self._fabric_ports), {"lo", FABRIC_BRIDGE, *self._fabric_ports})
        _plug(
            self.fabric,
            self._fabric_bridge,
            name,
            ns,
            NODE_UPLINK,
            ipaddress.IPv4Interface(f"{ip}/{NODE_NETWORK.prefixlen}"),
            self._mtu,
        )
        self._fabric_ports[name] = ns._port_index  # type: ignore[attr-defined]


# -- netlink and nftables helpers (also used by docker.py) -----------------------------------


def _check_port(port: object, what: str) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"{what} {port!r} is not a port number (1-65535)")
    return port


def _port_name(member: str, position: int, taken: set[str]) -> str:
    """A bridge port named after its member where that is a valid, unused interface name, else ``vethN``."""
    if len(member) < _validate.IFNAMSIZ and member not in taken:
        return member
    number = position
    while f"veth{number}" in taken:
        number += 1
    return f"veth{number}"


def _bridge(name: str, index: int, mtu: int, *, nf_call_iptables: bool) -> _rtnl.Request:
    """A bridge, created down, that forwards at once: STP off, no forwarding delay.

    ``nf_call_iptables`` sets the bridge's own switch for passing bridged
    IPv4 frames to netfilter (the namespace-wide sysctl is set as well).
    """
    flag = b"\1" if nf_call_iptables else b"\0"
    data = (
        _rtnl.attr_u32(_rtnl.IFLA_BR_STP_STATE, 0)
        + _rtnl.attr_u32(_rtnl.IFLA_BR_FORWARD_DELAY, 0)
        + _rtnl.attr(IFLA_BR_NF_CALL_IPTABLES, flag)
        + _rtnl.attr(IFLA_BR_NF_CALL_IP6TABLES, b"\0")
        + _rtnl.attr(IFLA_BR_NF_CALL_ARPTABLES, b"\0")
    )
    linkinfo = _rtnl.attr(_rtnl.IFLA_INFO_KIND, b"bridge\0") + _rtnl.attr(_rtnl.IFLA_INFO_DATA, data)
    body = (
        _rtnl.ifinfo(index)
        + _rtnl.attr_str(_rtnl.IFLA_IFNAME, name)
        + _rtnl.attr_u32(_rtnl.IFLA_MTU, mtu)
        + _rtnl.attr(_rtnl.IFLA_LINKINFO, linkinfo)
    )
    return _rtnl.Request(_rtnl.RTM_NEWLINK, _rtnl.NLM_F_CREATE | _rtnl.NLM_F_EXCL, body, f"creating bridge {name}")


def _hairpin(index: int, doing: str) -> _rtnl.Request:
    """Let the bridge send a frame back out of the port it came in on (``bridge link set ... hairpin on``)."""
    slave = _rtnl.attr(IFLA_INFO_SLAVE_DATA, _rtnl.attr(IFLA_BRPORT_MODE, b"\1"))
    body = _rtnl.ifinfo(index) + _rtnl.attr(_rtnl.IFLA_LINKINFO, slave)
    return _rtnl.Request(_rtnl.RTM_NEWLINK, 0, body, doing)


def _plug(
    bridge_ns: Namespace,
    bridge_index: int,
    port: str,
    member: Namespace,
    ifname: str,
    address: ipaddress.IPv4Interface,
    mtu: int,
    *,
    hairpin: bool = False,
) -> None:
    """A veth from ``member:ifname`` (with ``address``) to a new port ``port`` of a bridge; ready for the first packet.

    Neither end gets an IPv6 address.  Records ``member._uplink_index`` and
    ``member._port_index``.
    """
    port_index = bridge_ns.allocate_index()
    member_index = member.allocate_index()
    if member_index == port_index:  # equal indexes on both ends make the link slow to come up
        member_index = member.allocate_index()
    where = f"{member.name}:{ifname}"
    create = _rtnl.new_veth(port, ifname, member._nsfd, index=port_index, peer_index=member_index, mtu=mtu, up=False)
    create.body += _rtnl.attr_u32(_rtnl.IFLA_MASTER, bridge_index)
    create.doing = f"plugging {where} into {bridge_ns.name} (port {port})"
    bridge_requests = [
        create,
        _rtnl.no_ipv6_link_local(port_index, f"switching IPv6 off on port {port} of {bridge_ns.name}"),
        _rtnl.set_link(port_index, up=True, doing=f"bringing port {port} of {bridge_ns.name} up"),
    ]
    if hairpin:
        bridge_requests.append(_hairpin(port_index, f"turning hairpin mode on for port {port} of {bridge_ns.name}"))
    bridge_ns.execute(bridge_requests)
    member.execute(
        [
            _rtnl.no_ipv6_link_local(member_index, f"switching IPv6 off on {where}"),
            _rtnl.set_link(member_index, up=True, doing=f"bringing {where} up"),
            _rtnl.new_address(member_index, address, f"adding {address} to {where}"),
        ]
    )
    wait_ready([(bridge_ns, port_index, []), (member, member_index, [])], f"{where} <-> {bridge_ns.name}:{port}")
    member._uplink_index = member_index  # type: ignore[attr-defined]
    member._port_index = port_index  # type: ignore[attr-defined]


def _settle_sysctls(
    ns: Namespace, settings: Sequence[tuple[str, str]], *, required: frozenset[str] | set[str] = frozenset()
) -> None:
    """Write the settings that differ, in one namespace switch.

    A missing file in ``required`` raises ``FeatureUnavailable``; other
    missing files are skipped (no ``/proc/sys/net/bridge`` where
    br_netfilter is not loaded).
    """
    with _kernel.entered(ns._nsfd):
        for path, value in settings:
            try:
                with open(path) as handle:
                    if handle.read().strip() == value:
                        continue
            except FileNotFoundError:
                if path in required:
                    raise FeatureUnavailable(
                        f"{path} does not exist: this kernel has no br_netfilter (load it with "
                        "`modprobe br_netfilter`); without it a reply bridged between two pods of one node "
                        "is never translated back from a ClusterIP",
                        feature="br_netfilter",
                    ) from None
                continue
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
                try:
                    os.write(fd, value.encode())
                finally:
                    os.close(fd)
            except OSError as exc:
                raise KernelError(exc.errno or errno.EIO, f"writing {value} to {path} in {ns.name!r}") from None


def _install_service(service: Service) -> None:
    """The service's table in the calling thread's namespace (a node)."""
    _nft.dnat_service(
        service.name,
        service.ip,
        service.port,
        [(pod.ip, service.target_port) for pod in service._pods],
        proto=service.proto,
        spread=service.spread,
    )


# The masquerade rules below need matches ``_nft.masquerade`` does not offer
# (``ip daddr != <net>``, ``ip saddr == ip daddr``): they are written with
# _nft's own expression builders, in a table of their own.


def _node_nat_table() -> None:
    """A node's egress masquerade, in the calling thread's namespace.

    ``ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 oifname "eth0" masquerade``:
    what leaves a node for anything outside the pod network goes out with the
    node's IP; pod-to-pod traffic between nodes keeps its addresses.
    """
    rule = (
        _nft._nfproto(4)
        + _nft._addr_match(CLUSTER_CIDR, "saddr")
        + _nft._addr_match(CLUSTER_CIDR, "daddr", _nft._CMP_NEQ)
        + [_nft._meta(_nft._META_OIFNAME), _nft._cmp(_nft._CMP_EQ, _nft._ifname_bytes(NODE_UPLINK))]
        + [_nft._expr("masq", "MASQ")]
    )
    batch = _nft._Batch()
    with _nft._netlink_socket() as sock:
        batch.add_table("inet", NAT_TABLE)
        batch.add_chain(
            "inet", NAT_TABLE, "postrouting", hook=_nft._HOOK_POSTROUTING, priority=_nft._PRIO_SRCNAT, kind="nat"
        )
        batch.add_rule("inet", NAT_TABLE, "postrouting", rule)
        batch.commit(sock)


def _add_hairpin_masquerade(ip: IPv4) -> None:
    """``ip saddr <pod> ip daddr <pod> masquerade`` on the pod's node (calling thread inside it).

    A pod whose service connection was DNAT-ed back to itself would answer
    itself over ``lo`` with the wrong source; seen from the gateway's
    address, the reply goes back through the bridge and conntrack.
    """
    pod = ipaddress.ip_network(ip)
    rule = (
        _nft._nfproto(4)
        + _nft._addr_match(pod, "saddr")
        + _nft._addr_match(pod, "daddr")
        + [_nft._expr("masq", "MASQ")]
    )
    batch = _nft._Batch()
    with _nft._netlink_socket() as sock:
        batch.add_rule("inet", NAT_TABLE, "postrouting", rule)
        batch.commit(sock)
