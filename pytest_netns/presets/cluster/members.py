"""Which nodes, pods and external hosts a cluster has: looked up by name or object, listed, described."""

from __future__ import annotations

from collections.abc import Iterable

from ...namespace import Namespace
from .network import IPv4, check_member_name
from .objects import External, Node, Pod, Service


class Members:
    """A cluster's nodes, pods (the test's own: not the kube-dns pod) and external hosts, in creation order."""

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.pods: dict[str, Pod] = {}
        self.externals: dict[str, External] = {}

    def tables(self) -> tuple[dict[str, Node], dict[str, Pod], dict[str, External]]:
        return self.nodes, self.pods, self.externals

    def names(self) -> list[str]:
        return [*self.nodes, *self.pods, *self.externals]

    def __contains__(self, name: object) -> bool:
        return name in self.nodes or name in self.pods or name in self.externals

    def __getitem__(self, name: str) -> Namespace:
        for table in self.tables():
            if name in table:
                return table[name]
        known = ", ".join(self.names()) or "none"
        raise KeyError(f"no node, pod or external host {name!r} in this cluster (it has {known})")

    def addresses(self) -> dict[str, IPv4]:
        """Each member's name and address, pods first."""
        return {name: member.ip for table in (self.pods, self.nodes, self.externals) for name, member in table.items()}

    def check_new_name(self, name: object, what: str) -> str:
        name = check_member_name(name, what)
        if name in self.names():
            raise ValueError(f"name {name!r} is already used in this cluster")
        return name

    def node(self, node: object) -> Node:
        if isinstance(node, Node) and self.nodes.get(node.name) is node:
            return node
        if isinstance(node, str) and node in self.nodes:
            return self.nodes[node]
        raise ValueError(
            f"node {getattr(node, 'name', node)!r} is not a node of this cluster "
            f"(it has {', '.join(self.nodes) or 'none'})"
        )

    def pod(self, pod: object) -> Pod:
        if isinstance(pod, Pod) and self.pods.get(pod.name) is pod:
            return pod
        if isinstance(pod, str) and pod in self.pods:
            return self.pods[pod]
        raise ValueError(
            f"pod {getattr(pod, 'name', pod)!r} is not a pod of this cluster (it has {', '.join(self.pods) or 'none'})"
        )

    def partition_groups(self, groups: Iterable[object], dns_pod: Pod | None) -> list[list[Namespace]]:
        """The namespaces of each group of ``Cluster.partition``: a node with its pods, or an external host."""
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
                side += self._partition_member(item, dns_pod)
            members.append(side)
        return members

    def _partition_member(self, item: object, dns_pod: Pod | None) -> list[Namespace]:
        if isinstance(item, External) and self.externals.get(item.name) is item:
            return [item]
        if isinstance(item, str) and item in self.externals:
            return [self.externals[item]]
        pod = item if isinstance(item, Pod) else self.pods.get(item) if isinstance(item, str) else None
        if pod is not None:
            raise ValueError(f"pod {pod.name!r} cannot be in a group of a partition: pods follow their node")
        node = self.node(item)
        return [node, *node.pods, *([dns_pod] if dns_pod is not None and dns_pod.node is node else [])]

    def describe(self, services: Iterable[Service]) -> str:
        """Nodes with their pods, services, external hosts, as text."""
        lines = []
        for node in self.nodes.values():
            lines.append(f"node {node.name}: {node.ip} pods {node.pod_cidr} (gateway {node.gateway})")
            lines += [f"  pod {pod.name}: {pod.ip} (port {pod.node_port})" for pod in node.pods]
        for svc in services:
            backends = ", ".join(f"{p.name}={p.ip}" for p in svc.pods) or "no pods"
            ports = ", ".join(f"{svc.ip}:{p.port}/{p.proto} -> :{p.target_port}" for p in svc.ports)
            lines.append(f"service {svc.name}: {ports} [{backends}]")
        lines += [f"external {ext.name}: {ext.ip}" for ext in self.externals.values()]
        return "\n".join(lines)
