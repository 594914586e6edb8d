"""A cluster's names: the hosts file its processes see, each pod's files (kubelet's), the in-process resolver,
and the kube-dns server's zone (``dns``), rebuilt after every change."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType

from ..._kernel.handle import handle_of
from ..._net import resolver
from ..._net.hosts import FileSet, HostsFile, kubelet_resolv_conf
from ...namespace import Namespace
from . import dns as _dns
from .network import CLUSTER_DOMAIN, NAMESPACE_NAME_LABEL, IPv4
from .objects import Pod, Service


class Names:
    """What answers a cluster's names, for its processes and for in-process code, and the kube-dns pod."""

    def __init__(self, lookup_host: Callable[[str], list[IPv4]]) -> None:
        #: One directory for every private file of the cluster (removed by ``close_files``).
        self._files = FileSet()
        #: The hosts file of nodes and external hosts (and the thread that starts their processes).
        self.hosts = HostsFile(files=self._files)
        self._lookup_host = lookup_host
        #: The kube-dns pod, its service (UDP and TCP port 53) and server, made with the first node.
        self.dns_pod: Pod | None = None
        self.dns_services: list[Service] = []
        self.server: _dns.KubeDns | None = None
        #: Each pod's private /etc/hosts and resolv.conf (kubelet's), closed after the namespaces.
        self._pod_files: dict[IPv4, HostsFile] = {}
        #: The namespaces registered with the in-process resolver (by inode).
        self._resolving: list[int] = []
        #: What the server's zone was last built from.
        self._zone_inputs: object = None

    def register(self, ns: Namespace) -> None:
        """In-process getaddrinfo in ``ns``: a pod asks the cluster DNS, the rest the hosts table."""
        inode = handle_of(ns).inode
        self._resolving.append(inode)
        if isinstance(ns, Pod):
            resolver.register(inode, functools.partial(_dns.search, namespace=ns.namespace))
        else:
            resolver.register(inode, self._lookup_host)

    def unregister(self, ns: Namespace) -> None:
        inode = handle_of(ns).inode
        resolver.unregister(inode)
        self._resolving.remove(inode)

    def pod_files(self, name: str, ip: IPv4, namespace: str) -> HostsFile:
        """A pod's files as kubelet writes them: /etc/hosts with localhost and its own name, resolv.conf."""
        resolv_conf = kubelet_resolv_conf(_dns.DNS_IP, namespace, CLUSTER_DOMAIN)
        files = HostsFile(resolv_conf=resolv_conf, files=self._files)
        self._pod_files[ip] = files
        files.update({name: [ip]})
        return files

    def close_pod_files(self, ip: IPv4) -> None:
        files = self._pod_files.pop(ip, None)
        if files is not None:
            files.close()

    def lookup(self, name: str) -> list[IPv4]:
        """The cluster DNS's answer for a fully qualified name (none before the first node)."""
        return self.server.zone.lookup(name) if self.server is not None else []

    def publish(
        self, entries: Mapping[str, IPv4], services: Iterable[Service], pods: Iterable[Pod], members: Mapping[str, IPv4]
    ) -> None:
        """The hosts file holds ``entries``; a new zone for the server (the next answer sees the change)."""
        self.hosts.update({name: [ip] for name, ip in entries.items()})
        self.refresh(services, pods, members)

    def refresh(self, services: Iterable[Service], pods: Iterable[Pod], members: Mapping[str, IPv4]) -> None:
        """A new zone for the server from the cluster's services, pods and other members' names."""
        if self.server is None or self.dns_pod is None:
            return
        records = [
            _dns.ServiceRecord(svc.name, svc.namespace, svc.ip, svc.ports, [pod.ip for pod in svc.pods])
            for svc in [*self.dns_services, *services]
        ]
        addresses = [(pod.namespace, pod.ip) for pod in [*pods, self.dns_pod]]
        inputs = (records, addresses, dict(members))
        if inputs != self._zone_inputs:  # a service's install and the publish after it: built once
            self.server.zone = _dns.Zone.build(*inputs)
            self._zone_inputs = inputs

    def close_server(self) -> None:
        """Stop the DNS server (its sockets pin the kube-dns pod's namespace) and leave the resolver."""
        if self.server is not None:
            self.server.close()
        for inode in self._resolving:
            resolver.unregister(inode)

    def close_files(self) -> None:
        try:
            for files in self._pod_files.values():
                files.close()
        finally:
            self._files.close()


def k8s_namespaces(names: Iterable[str]) -> dict[str, Mapping[str, str]]:
    """Kubernetes namespaces and their labels: ``kubernetes.io/metadata.name=<namespace>``, as the API server sets."""
    return {name: MappingProxyType({NAMESPACE_NAME_LABEL: name}) for name in dict.fromkeys(names)}
