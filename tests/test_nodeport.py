"""NodePort services: every node's IP serves them to external hosts, with externalTrafficPolicy Cluster or Local."""

from __future__ import annotations

import pytest
from _servers import Responder, ask

from pytest_netns.presets.cluster import Cluster, External, Node, Pod, Service

BOTH_CNI = pytest.mark.parametrize("cni", ["ptp", pytest.param("bridge", marks=pytest.mark.netns(cni="bridge"))])
#: How long a connect waits before a node counts as dropping it (an answer comes in milliseconds).
DROP_WAIT = 0.5


def web_cluster(cluster: Cluster, servers: list[Responder]) -> tuple[list[Node], list[Pod], External]:
    """Three nodes; backends web-0 on node1 and web-1 on node2 (serving 8080), none on node3; an external host."""
    nodes = [cluster.node(f"node{i}") for i in (1, 2, 3)]
    pods = [cluster.pod(f"web-{i}", node=nodes[i], labels={"app": "web"}) for i in (0, 1)]
    servers += [Responder(pod, 8080) for pod in pods]
    return nodes, pods, cluster.external("client")


def at(node: Node, service: Service) -> tuple[str, int]:
    assert service.node_port is not None
    return str(node.ip), service.node_port


def drops(ext: External, address: tuple[str, int]) -> bool:
    """The connection gets no answer at all (neither a reply nor a reset)."""
    try:
        ask(ext, address, timeout=DROP_WAIT)
    except TimeoutError:
        return True
    return False


@BOTH_CNI
def test_cluster_policy_serves_on_every_node_and_the_pod_sees_that_node(
    netns_cluster: Cluster, servers: list[Responder], cni: str
) -> None:
    nodes, pods, ext = web_cluster(netns_cluster, servers)
    svc = netns_cluster.service("web", port=80, target_port=8080, selector={"app": "web"}, type="NodePort")
    assert (svc.type, svc.node_port, svc.external_traffic_policy) == ("NodePort", 30000, "Cluster")
    for node in nodes:
        for _ in range(6):
            label, peer = ask(ext, at(node, svc))
            assert label in {pod.name for pod in pods}
            # Masqueraded by the node the client connected to: its eth0 address when the pod is on another node,
            # its address on the pod network when the pod is its own.
            mine = any(pod.name == label and pod.node is node for pod in pods)
            assert peer == str(node.gateway if mine else node.ip), (node.name, label, peer)
    # node3 has no backend and still serves: everything it answers went to another node's pod.
    assert {ask(ext, at(nodes[2], svc))[1] for _ in range(4)} == {str(nodes[2].ip)}
    # The ClusterIP keeps working beside it.
    client = netns_cluster.pod("inside", node=nodes[2])
    assert ask(client, svc.address)[1] == str(client.ip)


@BOTH_CNI
def test_local_policy_keeps_the_client_address_and_nodes_without_a_local_pod_drop(
    netns_cluster: Cluster, servers: list[Responder], cni: str
) -> None:
    nodes, pods, ext = web_cluster(netns_cluster, servers)
    svc = netns_cluster.service(
        "web", port=80, target_port=8080, selector={"app": "web"}, type="NodePort", external_traffic_policy="Local"
    )
    for node, pod in zip(nodes, pods, strict=False):
        # Only the node's own pod, and it sees the external client's real address.
        assert {ask(ext, at(node, svc)) for _ in range(6)} == {(pod.name, str(ext.ip))}
    assert drops(ext, at(nodes[2], svc))


def test_local_policy_follows_pods_as_they_come_and_go(netns_cluster: Cluster, servers: list[Responder]) -> None:
    nodes, pods, ext = web_cluster(netns_cluster, servers)
    svc = netns_cluster.service(
        "web", port=80, target_port=8080, selector={"app": "web"}, type="NodePort", external_traffic_policy="Local"
    )
    assert drops(ext, at(nodes[2], svc))
    late = netns_cluster.pod("web-2", node=nodes[2], labels={"app": "web"})
    servers.append(Responder(late, 8080))
    assert ask(ext, at(nodes[2], svc)) == ("web-2", str(ext.ip))
    servers.pop(0).close()  # its socket would hold the deleted pod's namespace
    pods[0].delete()
    assert drops(ext, at(nodes[0], svc))
    assert ask(ext, at(nodes[1], svc)) == ("web-1", str(ext.ip))
    # A node made after the service gets its rules too: no local pod, so it drops.
    node4 = netns_cluster.node("node4")
    assert drops(ext, at(node4, svc))


def test_add_and_remove_keep_a_listed_services_node_ports_in_step(
    netns_cluster: Cluster, servers: list[Responder]
) -> None:
    nodes, pods, ext = web_cluster(netns_cluster, servers)
    local = netns_cluster.service(
        "local", port=80, target_port=8080, pods=[pods[0]], type="NodePort", external_traffic_policy="Local"
    )
    spread = netns_cluster.service("spread", port=80, target_port=8080, pods=[pods[0]], type="NodePort")
    assert (local.node_port, spread.node_port) == (30000, 30001)
    assert drops(ext, at(nodes[1], local))
    assert ask(ext, at(nodes[1], spread)) == ("web-0", str(nodes[1].ip))
    local.add(pods[1])
    spread.add(pods[1])
    assert ask(ext, at(nodes[1], local)) == ("web-1", str(ext.ip))
    local.remove(pods[0])
    spread.remove(pods[0])
    assert drops(ext, at(nodes[0], local))
    assert {ask(ext, at(nodes[0], spread)) for _ in range(4)} == {("web-1", str(nodes[0].ip))}


def test_local_policy_short_circuits_the_nodes_own_and_their_pods_traffic(
    netns_cluster: Cluster, servers: list[Responder]
) -> None:
    """As kube-proxy: traffic from the pod network or from the node itself goes to any endpoint, not dropped."""
    nodes, pods, _ = web_cluster(netns_cluster, servers)
    svc = netns_cluster.service(
        "web", port=80, target_port=8080, selector={"app": "web"}, type="NodePort", external_traffic_policy="Local"
    )
    client = netns_cluster.pod("inside", node=nodes[2])
    assert ask(client, at(nodes[2], svc)) in {(pod.name, str(client.ip)) for pod in pods}
    label, _ = ask(nodes[2], at(nodes[2], svc))
    assert label in {pod.name for pod in pods}


def test_udp_node_port(netns_cluster: Cluster, servers: list[Responder]) -> None:
    import socket

    n1 = netns_cluster.node("node1")
    pod = netns_cluster.pod("dns-ish", node=n1)
    servers.append(Responder(pod, 5353, proto="udp"))
    ext = netns_cluster.external("client")
    svc = netns_cluster.service(
        "udp",
        port=53,
        target_port=5353,
        pods=[pod],
        proto="udp",
        type="NodePort",
        node_port=31000,
        external_traffic_policy="Local",
    )
    with ext:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.settimeout(5)
        sock.sendto(b"?", at(n1, svc))
        assert sock.recv(256).decode().split() == ["dns-ish", str(ext.ip)]


def test_no_endpoint_at_all_is_refused_with_cluster_policy(netns_cluster: Cluster) -> None:
    """A NodePort with no pod answers a reset, as its ClusterIP does (kube-proxy rejects, it does not drop)."""
    node = netns_cluster.node("node1")
    ext = netns_cluster.external("client")
    svc = netns_cluster.service("web", port=80, pods=[], type="NodePort")
    with pytest.raises(ConnectionRefusedError):
        ask(ext, at(node, svc))


def test_cluster_ip_is_still_the_default(netns_cluster: Cluster, servers: list[Responder]) -> None:
    nodes, _, ext = web_cluster(netns_cluster, servers)
    svc = netns_cluster.service("web", port=80, target_port=8080, selector={"app": "web"})
    assert (svc.type, svc.node_port, svc.external_traffic_policy) == ("ClusterIP", None, "Cluster")
    assert "nodePort" not in repr(svc)
    # Nothing on the nodes' ports: the range's first port (what a NodePort would get) is closed on node1.
    with pytest.raises(ConnectionRefusedError):
        ask(ext, (str(nodes[0].ip), 30000))


def test_node_ports_are_taken_lowest_free_first_and_never_twice(netns_cluster: Cluster) -> None:
    make = netns_cluster.service
    assert make("a", port=80, pods=[], type="NodePort", node_port=30001).node_port == 30001
    assert make("b", port=80, pods=[], type="NodePort").node_port == 30000
    assert make("c", port=80, pods=[], type="NodePort").node_port == 30002
    with pytest.raises(ValueError, match="node_port 30002 is already taken"):
        make("d", port=80, pods=[], type="NodePort", node_port=30002)
    # The same port number in another namespace is taken too: node ports are the nodes', not a namespace's.
    with pytest.raises(ValueError, match="30000"):
        make("b", namespace="other", port=80, pods=[], type="NodePort", node_port=30000)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"type": "NodePort", "node_port": 29999}, "29999"),
        ({"type": "NodePort", "node_port": 32768}, "32768"),
        ({"type": "NodePort", "node_port": 80}, "80"),
        ({"type": "NodePort", "node_port": "30000"}, "'30000'"),
        ({"type": "NodePort", "node_port": True}, "True"),
        ({"type": "LoadBalancer"}, "'LoadBalancer'"),
        ({"type": "nodeport"}, "'nodeport'"),
        ({"type": "NodePort", "external_traffic_policy": "local"}, "'local'"),
        ({"type": "NodePort", "external_traffic_policy": None}, "None"),
        ({"node_port": 30000}, "node_port 30000 needs type='NodePort'"),
        ({"external_traffic_policy": "Local"}, "'Local' needs type='NodePort'"),
        ({"type": "NodePort", "headless": True}, "headless"),
    ],
)
def test_bad_node_port_options_name_the_value(netns_cluster: Cluster, options: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError) as info:
        netns_cluster.service("web", port=80, pods=[], **options)  # type: ignore[arg-type]
    assert named in str(info.value)
    assert netns_cluster.services == []
