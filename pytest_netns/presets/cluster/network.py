"""The cluster's conventions: its address plan, interface names, kernel settings and name rules."""

from __future__ import annotations

import ipaddress
import re

from ..._kernel import nft as _nft
from ..._kernel import validate as _validate
from ..._net import sysctl

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
NODE_UPLINK = "eth0"
POD_IFNAME = "eth0"
#: Where a member's name cannot name its bridge port: veth0, veth1, ...
PORT_PREFIX = "veth"
#: The nftables table (inet) of each node holding its masquerade rules.
NAT_TABLE = f"{_nft.TABLE_PREFIX}_cluster"

#: Bridged IPv4 frames pass the IP netfilter hooks, so conntrack rewrites the reply of a DNAT-ed
#: connection bridged between two pods of one node (see the package docstring).  Some kernels have
#: it on by default in new namespaces, others off, or br_netfilter not loaded at all (then the file
#: is missing and building a node raises FeatureUnavailable).
BRIDGE_NF_CALL_IPTABLES = sysctl.BRIDGE_NF_CALL_IPTABLES
NODE_SYSCTLS = sysctl.BRIDGE_ROUTER
#: A ptp node routes each pod's veth: forwarding and no reverse-path filter, nothing bridged.
PTP_NODE_SYSCTLS = sysctl.IPV4_FORWARDING + sysctl.NO_RP_FILTER
WITHOUT_BR_NETFILTER = "a reply bridged between two pods of one node to be translated back from a ClusterIP"

#: The CNI modes: ``ptp`` routes a veth per pod (kind's kindnet), ``bridge`` plugs pods into ``cni0``.
CNI_MODES = ("ptp", "bridge")
DEFAULT_CNI = "ptp"


def check_cni(cni: object) -> str:
    """A CNI mode of ``CNI_MODES``; anything else is a ``ValueError`` naming it."""
    if not isinstance(cni, str) or cni not in CNI_MODES:
        raise ValueError(f"cni {cni!r} is not one of {', '.join(map(repr, CNI_MODES))}")
    return cni


#: A pod, node or external host name: a DNS-1123 subdomain (as Kubernetes requires of pod and
#: node names) of at most 63 characters, a host name in the cluster's hosts file.
MEMBER_NAME = _validate.NameRule(
    "a DNS-1123 name",
    "1-63 lowercase letters, digits, '-' or '.', each '.'-separated part starting and ending with a letter or digit",
    re.compile(r"(?=.{1,63}\Z)" + _validate.DNS1123_SUBDOMAIN.pattern.pattern),
)


def pod_cidr(number: int) -> ipaddress.IPv4Network:
    """The pod CIDR of the ``number``-th node (counting from 1, as the contract reads): 10.244.<number>.0/24."""
    return ipaddress.IPv4Network((int(CLUSTER_CIDR.network_address) + (number << 8), 24))


def interface(ip: IPv4, network: ipaddress.IPv4Network) -> ipaddress.IPv4Interface:
    return ipaddress.IPv4Interface((ip, network.prefixlen))


def check_member_name(name: object, what: str) -> str:
    """A node, pod or external host name (``MEMBER_NAME``, not one a resolver reads as an address)."""
    return _validate.check_name(name, what=f"{what} name", rule=MEMBER_NAME, hosts_file=True)


#: The label the API server puts on every namespace (what namespace selectors match).
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def check_namespace_name(name: object) -> str:
    """A Kubernetes namespace name: a DNS-1123 label (it is a label of the DNS names in it)."""
    return _validate.check_name(name, what="namespace name", rule=_validate.DNS1123_LABEL)


def check_service_name(name: object) -> str:
    """A service name: a DNS-1035 label (it is also the first label of the service's DNS names)."""
    return _validate.check_name(name, what="service name", rule=_validate.DNS1035_LABEL)
