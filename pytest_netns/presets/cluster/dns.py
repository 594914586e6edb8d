"""The cluster's DNS: what CoreDNS's ``kubernetes`` plugin answers, served at 10.96.0.10:53.

``Zone`` is a snapshot of the cluster's names, rebuilt by the builder after
every change (so the next answer sees it) and read by the server thread
(``_net.dns_server``) without locks: a rebuild replaces the reference.

Records (``cluster.local``, TTL 5):

* ``<svc>.<ns>.svc.cluster.local`` A: the ClusterIP, or every endpoint for a headless service;
* ``_<port>._<proto>.<svc>.<ns>.svc.cluster.local`` SRV for named ports: the service port and
  the service's name, or for a headless service one per endpoint with the target port and
  ``<a-b-c-d>.<svc>.<ns>.svc.cluster.local.`` (which has an A record);
* ``<a-b-c-d>.<ns>.pod.cluster.local`` A for the pods of that namespace;
* PTR for ClusterIPs and endpoint addresses;
* beyond Kubernetes: single-label names of pods, nodes and external hosts (what a search
  path ends with once its suffixes are exhausted).

Everything else is NXDOMAIN at once (there is no upstream), with the zone's SOA;
a name that exists without records of the type asked is NODATA.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from ..._net import dns_server
from ...namespace import Namespace
from .network import CLUSTER_DOMAIN, IPv4

DNS_PORT = 53
NDOTS = 5
#: The kube-dns service's ClusterIP (kubeadm's and kind's: the 10th address of the service CIDR).
DNS_IP = ipaddress.IPv4Address("10.96.0.10")
DNS_NAMESPACE = "kube-system"
DNS_SERVICE = "kube-dns"
DNS_POD = "coredns"
DNS_LABELS = {"k8s-app": "kube-dns"}

TTL = 5
#: CoreDNS's SOA for the cluster zone (negative answers carry it: resolvers cache misses by its minimum).
_SOA = f"ns.dns.{CLUSTER_DOMAIN}. hostmaster.{CLUSTER_DOMAIN}. 1 7200 1800 86400 {TTL}"
_ZONE = dns.name.from_text(CLUSTER_DOMAIN)
_REVERSE = dns.name.from_text("in-addr.arpa")


@dataclass(frozen=True)
class ServicePort:
    """One port of a service: ``ip:port/proto`` (and every node's ``node_port``) goes to its pods' ``target_port``.

    ``name`` (an IANA service name, or None) gives SRV records ``_<name>._<proto>.<svc>.<ns>.svc.cluster.local``.
    """

    name: str | None
    port: int
    target_port: int
    proto: Literal["tcp", "udp"] = "tcp"
    node_port: int | None = None


@dataclass(frozen=True)
class ServiceRecord:
    """What DNS knows of a service: ``ip`` None for a headless one."""

    name: str
    namespace: str
    ip: IPv4 | None
    ports: Sequence[ServicePort]
    endpoints: Sequence[IPv4]


def dashed(ip: IPv4) -> str:
    return str(ip).replace(".", "-")


def _absolute(name: str) -> str:
    """The key of a name in a ``Zone``: lowercase, with the trailing dot."""
    name = name.lower()
    return name if name.endswith(".") else name + "."


_ZONE_KEY = _absolute(CLUSTER_DOMAIN)


@dataclass
class Zone:
    """Names to records, built once per change of the cluster.

    Names are keys as text (lowercase, absolute): building a zone is a few dict
    operations per record (dnspython's ``Name`` objects are made per query).
    """

    a: dict[str, list[IPv4]] = field(default_factory=dict)
    srv: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    ptr: dict[str, list[str]] = field(default_factory=dict)
    #: Every name with records and all its ancestors down to the zone (NODATA rather than NXDOMAIN).
    exists: set[str] = field(default_factory=set)

    @classmethod
    def build(cls, services: Iterable[ServiceRecord], pods: Iterable[tuple[str, IPv4]], hosts: dict[str, IPv4]) -> Zone:
        """``pods``: (namespace, ip); ``hosts``: single-label names (pods, nodes, external hosts)."""
        zone = cls()
        for svc in services:
            fqdn = _absolute(f"{svc.name}.{svc.namespace}.svc.{CLUSTER_DOMAIN}")
            if svc.ip is not None:
                zone._add_a(fqdn, svc.ip)
                zone._add_ptr(svc.ip, fqdn)
                for port in svc.ports:
                    if port.name:
                        zone._add_srv(fqdn, port, port.port, fqdn)
                for ip in svc.endpoints:
                    zone._add_ptr(ip, f"{dashed(ip)}.{fqdn}")
            else:
                zone.exists.add(fqdn)
                for ip in svc.endpoints:
                    host = f"{dashed(ip)}.{fqdn}"
                    zone._add_a(fqdn, ip)
                    zone._add_a(host, ip)
                    zone._add_ptr(ip, host)
                    for port in svc.ports:
                        if port.name:
                            zone._add_srv(fqdn, port, port.target_port, host)
        for namespace, ip in pods:
            zone._add_a(_absolute(f"{dashed(ip)}.{namespace}.pod.{CLUSTER_DOMAIN}"), ip)
        for name, ip in hosts.items():
            zone._add_a(_absolute(name), ip)
        suffix = "." + _ZONE_KEY
        for owner in [*zone.a, *zone.srv, *zone.ptr]:
            while owner.endswith(suffix):
                zone.exists.add(owner)
                owner = owner.split(".", 1)[1]
            zone.exists.add(owner)
        zone.exists.add(_ZONE_KEY)
        return zone

    def lookup(self, name: str) -> list[IPv4]:
        """The A records of an absolute name (a trailing dot or not), for code outside the cluster."""
        return list(self.a.get(_absolute(name), []))

    def _add_a(self, name: str, ip: IPv4) -> None:
        addresses = self.a.setdefault(name, [])
        if ip not in addresses:
            addresses.append(ip)

    def _add_ptr(self, ip: IPv4, target: str) -> None:
        targets = self.ptr.setdefault(ip.reverse_pointer + ".", [])
        if target not in targets:
            targets.append(target)

    def _add_srv(self, fqdn: str, port: ServicePort, number: int, target: str) -> None:
        self.srv.setdefault(f"_{port.name}._{port.proto}.{fqdn}".lower(), []).append((number, target))

    def answer(self, query: dns.message.Message) -> dns.message.Message:
        """The response to ``query`` (one question, opcode QUERY: ``_net.dns_server.respond`` checked)."""
        response = dns.message.make_response(query)
        response.flags |= dns.flags.RA
        question = query.question[0]
        canonical = question.name.canonicalize()
        name = canonical.to_text()
        rdtype = question.rdtype
        in_zone = canonical.is_subdomain(_ZONE) or canonical.is_subdomain(_REVERSE)
        if in_zone:
            response.flags |= dns.flags.AA
        if question.rdclass != dns.rdataclass.IN:
            response.set_rcode(dns.rcode.NXDOMAIN if name not in self.exists else dns.rcode.NOERROR)
            return response
        records: list[str] = []
        found = False
        if name in self.a:
            found = True
            if rdtype in (dns.rdatatype.A, dns.rdatatype.ANY):
                records += [str(ip) for ip in self.a[name]]
                self._put(response, question.name, dns.rdatatype.A, records)
        if name in self.srv:
            found = True
            if rdtype in (dns.rdatatype.SRV, dns.rdatatype.ANY):
                srv = self.srv[name]
                weight = 100 // len(srv)
                self._put(
                    response,
                    question.name,
                    dns.rdatatype.SRV,
                    [f"0 {weight} {port} {target}" for port, target in srv],
                )
                for _, target in srv:
                    self._put(
                        response,
                        dns.name.from_text(target),
                        dns.rdatatype.A,
                        [str(ip) for ip in self.a.get(target, [])],
                        "additional",
                    )
        if name in self.ptr:
            found = True
            if rdtype in (dns.rdatatype.PTR, dns.rdatatype.ANY):
                self._put(response, question.name, dns.rdatatype.PTR, self.ptr[name])
        if not found and name not in self.exists:
            response.set_rcode(dns.rcode.NXDOMAIN)
        if not response.answer and (in_zone or found):
            response.authority.append(dns.rrset.from_text(_ZONE, TTL, dns.rdataclass.IN, dns.rdatatype.SOA, _SOA))
        return response

    @staticmethod
    def _put(
        response: dns.message.Message,
        name: dns.name.Name,
        rdtype: dns.rdatatype.RdataType,
        texts: list[str],
        section: str = "answer",
    ) -> None:
        if texts:
            rrset = dns.rrset.from_text_list(name, TTL, dns.rdataclass.IN, rdtype, texts)
            getattr(response, section).append(rrset)


class KubeDns:
    """The kube-dns pod's server: UDP and TCP sockets on port 53 made inside ``pod``, served by the one thread."""

    def __init__(self, pod: Namespace) -> None:
        self.zone = Zone()
        sockets = dns_server.listen(
            pod,
            "0.0.0.0",
            DNS_PORT,
            backlog=64,
            doing=f"starting the cluster DNS in pod {pod.name!r} (port {DNS_PORT})",
        )
        self._served = dns_server.serve(sockets, self.answer)

    def answer(self, query: dns.message.Message) -> dns.message.Message:
        return self.zone.answer(query)

    def close(self) -> None:
        """Stop serving and close the sockets (they pin the pod's namespace)."""
        self._served.close()


def search_names(name: str, namespace: str) -> list[str]:
    """The absolute names a pod's resolver tries for ``name``, in order (kubelet's search path, ndots:5)."""
    if name.endswith("."):
        return [name]
    suffixes = [f"{namespace}.svc.{CLUSTER_DOMAIN}", f"svc.{CLUSTER_DOMAIN}", CLUSTER_DOMAIN]
    searched = [f"{name}.{suffix}." for suffix in suffixes]
    return [f"{name}.", *searched] if name.count(".") >= NDOTS else [*searched, f"{name}."]


def search(name: str, namespace: str, *, timeout: float = 2.0) -> list[IPv4]:
    """The A records of ``name`` through the search path, asking 10.96.0.10 from the calling thread's namespace.

    [] when every candidate misses; ``dns.exception.Timeout`` when the server does not answer.
    """
    for candidate in search_names(name, namespace):
        try:
            query = dns.message.make_query(candidate, dns.rdatatype.A)
        except dns.exception.DNSException:
            return []  # not a valid DNS name: nothing resolves it
        response = dns.query.udp(query, str(DNS_IP), port=DNS_PORT, timeout=timeout)
        if response.flags & dns.flags.TC:
            response = dns.query.tcp(query, str(DNS_IP), port=DNS_PORT, timeout=timeout)
        found = [
            ipaddress.IPv4Address(rr.address)
            for rrset in response.answer
            if rrset.rdtype == dns.rdatatype.A
            for rr in rrset
        ]
        if found:
            return found
    return []
