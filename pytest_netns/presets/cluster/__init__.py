"""Kubernetes-style pod networking in network namespaces: ``Cluster``, ``Node``, ``Pod``, ``Service``.

The model kubelet, a CNI plugin (kindnet's ``ptp``, or ``bridge``) and kube-proxy (nftables mode) build
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

* **Node network** 172.18.0.0/24: one Ethernet segment; node *k* (0-based,
  in creation order) has ``eth0`` 172.18.0.(k+2) on it, external hosts get
  172.18.0.200 upwards.  Each ``eth0`` is a macvlan in bridge mode over the
  veth ``lan0`` in a namespace of its own (``cluster.fabric``; a capture on
  ``lan0`` sees the unicast between nodes), not a bridge: freeing a bridge
  holds the kernel's RTNL lock ~20 ms, which the next test would wait for.
* **Pod network**: the k-th node (counting from 1) has the pod CIDR 10.244.k.0/24 (``node.pod_cidr``)
  and the gateway 10.244.k.1 (``node.gateway``); every node routes every
  other node's pod CIDR via that node's IP; forwarding is on.  Pods are flat:
  every pod reaches every pod by its own IP, without NAT.
* **Pods**: ``eth0``, one end of a veth, with the next free address of the
  node's pod CIDR from .2 and the default route via the gateway.  All
  containers of a pod share it: run them as several processes of the pod
  (they talk over ``localhost``).  ``Cluster(cni="ptp")`` (the default, as
  kindnet): the veth's other end is on the node, holds the gateway as a /32
  and has a /32 route to the pod; the pod's /24 has no prefix route, so even
  its node's other pods are reached via the gateway (routed, never bridged).
  ``cni="bridge"``: the other end is a port of the node's bridge ``cni0``,
  which holds the gateway.
* **Services**: a ClusterIP from 10.96.0.0/12 (sequential from 10.96.0.1,
  or ``cluster_ip=``).  Every node has kube-proxy's nftables-mode table
  (``proxy``): new connections to ``ip:port`` (from its pods through
  prerouting, its own through output) go to one of the service's pods at
  ``target_port``, chosen by one ``numgen random mod N vmap`` (uniformly),
  whether that pod is on the client's node or another;
  ``session_affinity="ClientIP"`` keeps a client on its pod.  A service
  with several ports (``ports=[...]``, ``service.ports``) has a chain per
  port, each DNATing to that port's ``target_port``.
  ``service.add(pod)`` / ``service.remove(pod)`` change each node's rules in
  one transaction: established connections keep their pod (conntrack), new
  ones only see the new set.  With no pod, new connections are refused (TCP
  reset), as kube-proxy does.
* **NodePort** (``type="NodePort"``, ``nodeport``): also served at every
  node's IP on ``service.node_port`` (30000-32767, the lowest free one unless
  given; one per port of the service), from external hosts too, in the same per-node transaction.
  ``external_traffic_policy="Cluster"``: any pod, the client masqueraded
  (the pod sees the node's IP, or its gateway when the pod is on that node);
  ``"Local"``: only the node's own pods, the client's address kept; a node
  without one drops the connection.
* **Manifests**: ``cluster.apply(yaml_or_dicts)`` makes v1 Services and
  networking.k8s.io/v1 NetworkPolicies (``manifests``); any other kind or
  field is a ``ValueError`` naming it.
* **NetworkPolicy** (``cluster.network_policy``, ``policy``, ``enforce``):
  Kubernetes' semantics on every node, in one nftables table per node on
  the forward hook, after kube-proxy's DNAT (peers and ports are the
  backend pod's): isolated pods admit what some policy allows, replies
  pass, blocked packets are dropped.  Traffic between a pod and its own
  node is always allowed; other nodes and external hosts are peers.
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

* nodes: ``ip_forward=1``; ``rp_filter=0``; in bridge mode only, bridged IPv4
  traffic passes netfilter (``net.bridge.bridge-nf-call-iptables=1`` plus the
  per-bridge option on ``cni0``; ``FeatureUnavailable`` naming br_netfilter
  where the kernel lacks it).  The last one decides whether a connection to a
  ClusterIP whose chosen pod sits on the client's own node works at all: the
  DNAT-ed request and the reply are *bridged* between the two pods' ports
  (br_netfilter routes the rewritten packet straight back onto ``cni0``), so
  only when bridged frames pass the IP hooks does conntrack see the reply and
  rewrite its source back to the ClusterIP; without it the client gets a
  reply from the pod's own IP and drops it.  Its bridge ports are in hairpin
  mode.  In both modes a pod reaching itself through a service is
  masqueraded to the gateway (kube-proxy's mark for masquerade), so a pod
  may call its own service;
* the node network's bridge passes no frame to netfilter (a plain switch),
  and its namespace has no IPv6 at all;
* every link of the cluster has no IPv6 address (the model is IPv4, as a
  default cluster is); ``lo`` of nodes, pods and external hosts keeps ``::1``.

Not modelled: LoadBalancer and ExternalName services, IPv6.

Layout: ``network`` (address plan, names, settings), ``objects`` (``Node``,
``Pod``, ``External``, ``Service``), ``builder`` (``Cluster``, the facade),
``members`` (its nodes, pods and external hosts by name),
``wiring`` (links, bridges and routes of nodes and pods), ``names`` (hosts
files, the in-process resolver, kube-dns's zone), ``dns`` (the zone and
server), ``services`` (a service's options, ClusterIPs), ``proxy`` (the
nodes' nftables rules), ``policy`` and ``selectors`` (NetworkPolicy
specs, label selectors), ``enforce`` (their nftables rules), ``nodeport``
(what a NodePort adds to kube-proxy's rules),
``manifests`` (Kubernetes YAML as ``service``/``network_policy`` calls).
"""

from __future__ import annotations

from .builder import Cluster
from .dns import ServicePort
from .network import BRIDGE_NF_CALL_IPTABLES as BRIDGE_NF_CALL_IPTABLES  # the sysctl the nodes rely on
from .network import CLUSTER_CIDR, CLUSTER_DOMAIN, NODE_NETWORK, SERVICE_CIDR
from .objects import External, Node, Pod, Service
from .policy import NetworkPolicy

__all__ = [
    "CLUSTER_CIDR",
    "CLUSTER_DOMAIN",
    "NODE_NETWORK",
    "SERVICE_CIDR",
    "Cluster",
    "External",
    "NetworkPolicy",
    "Node",
    "Pod",
    "Service",
    "ServicePort",
]
