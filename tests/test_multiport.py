"""Services with several ports (Kubernetes' multi-port Service): every port served, each to its own target port."""

from __future__ import annotations

import re
from typing import Any

import dns.message
import dns.query
import pytest
from _servers import Responder, ask

from pytest_netns.presets.cluster import Cluster, External, NetworkPolicy, Node, Pod, Service, ServicePort
from pytest_netns.presets.cluster import proxy as _proxy

HTTP = {"port": 80, "target_port": 8080, "name": "http"}
METRICS = {"port": 9090, "name": "metrics"}
#: How long a connect waits before it counts as dropped (an answer comes in milliseconds).
DROP_WAIT = 0.6


def serve(servers: list[Responder], pods: list[Pod], *ports: int, proto: str = "tcp") -> None:
    """On each pod, a Responder per port labelled ``<pod>:<port>``: the answer tells which target port served."""
    servers += [Responder(pod, port, label=f"{pod.name}:{port}", proto=proto) for pod in pods for port in ports]


def two_nodes(cluster: Cluster, servers: list[Responder]) -> tuple[list[Node], list[Pod]]:
    """node1 runs web-0, node2 web-1 (both serving 8080 and 9090)."""
    nodes = [cluster.node("node1"), cluster.node("node2")]
    pods = [cluster.pod(f"web-{i}", node=nodes[i], labels={"app": "web"}) for i in (0, 1)]
    serve(servers, pods, 8080, 9090)
    return nodes, pods


def drops(ns: External | Pod, address: tuple[str, int]) -> bool:
    try:
        ask(ns, address, timeout=DROP_WAIT)
    except TimeoutError:
        return True
    return False


def test_each_port_reaches_its_target_port_from_the_same_and_another_node(
    netns_cluster: Cluster, servers: list[Responder]
) -> None:
    nodes, pods = two_nodes(netns_cluster, servers)
    svc = netns_cluster.service("web", ports=[HTTP, METRICS], selector={"app": "web"})
    assert svc.ports == [ServicePort("http", 80, 8080, "tcp", None), ServicePort("metrics", 9090, 9090, "tcp", None)]
    assert (svc.port, svc.target_port, svc.proto, svc.port_name, svc.node_port) == (80, 8080, "tcp", "http", None)
    assert svc.endpoints == [(p.ip, 8080) for p in pods] + [(p.ip, 9090) for p in pods]
    assert f"{svc.ip}:80/tcp -> :8080, {svc.ip}:9090/tcp -> :9090" in netns_cluster.describe()
    assert repr(svc) == (
        f"<Service 'web' {svc.ip}:80/tcp -> [web-0, web-1]:8080, {svc.ip}:9090/tcp -> [web-0, web-1]:9090>"
    )
    names = {pod.name for pod in pods}
    for node in nodes:  # web-0 is on node1, web-1 on node2: both clients reach pods on their node and the other
        client = netns_cluster.pod(f"client-{node.name}", node=node)
        for port, target in ((80, 8080), (9090, 9090)):
            for _ in range(6):
                label, peer = ask(client, (str(svc.ip), port))
                pod, served = label.split(":")
                assert pod in names and served == str(target) and peer == str(client.ip), (port, label)
    # A port the service does not have goes nowhere (no rule DNATs it).
    with pytest.raises(OSError):
        ask(client, (str(svc.ip), 8080))


def test_tcp_and_udp_on_the_same_port_number_each_go_to_their_own_target(
    netns_cluster: Cluster, servers: list[Responder]
) -> None:
    node = netns_cluster.node("node1")
    pod = netns_cluster.pod("dns-0", node=node, labels={"app": "dns"})
    serve(servers, [pod], 5353, proto="udp")
    serve(servers, [pod], 5354)
    ports = [
        {"port": 53, "target_port": 5353, "proto": "udp", "name": "dns"},
        {"port": 53, "target_port": 5354, "proto": "tcp", "name": "dns-tcp"},
    ]
    svc = netns_cluster.service("resolver", ports=ports, selector={"app": "dns"})
    client = netns_cluster.pod("client", node=netns_cluster.node("node2"))
    assert ask(client, (str(svc.ip), 53), proto="udp") == ("dns-0:5353", str(client.ip))
    assert ask(client, (str(svc.ip), 53)) == ("dns-0:5354", str(client.ip))
    # Each port has its own chain: kube-proxy's names per protocol and port.
    assert [_proxy.service_chain(svc, port) for port in svc.ports] == [
        "service-default/resolver/udp/53",
        "service-default/resolver/tcp/53",
    ]


def test_add_remove_and_session_affinity_cover_every_port(netns_cluster: Cluster, servers: list[Responder]) -> None:
    nodes, pods = two_nodes(netns_cluster, servers)
    svc = netns_cluster.service("web", ports=[HTTP, METRICS], pods=[pods[0]])
    client = netns_cluster.pod("client", node=nodes[0])
    assert {ask(client, (str(svc.ip), port))[0] for port in (80, 9090)} == {"web-0:8080", "web-0:9090"}
    svc.add(pods[1])
    svc.remove(pods[0])
    assert svc.endpoints == [(pods[1].ip, 8080), (pods[1].ip, 9090)]
    assert {ask(client, (str(svc.ip), port))[0] for port in (80, 9090)} == {"web-1:8080", "web-1:9090"}
    svc.remove(pods[1])
    for port in (80, 9090):  # no pod: refused on every port
        with pytest.raises(ConnectionRefusedError):
            ask(client, (str(svc.ip), port))
    # Affinity per port: each port keeps the client on one pod. Without it 8 answers from one of 2 pods at random
    # would all agree with probability 2 * 2**-8 per port, so a broken affinity fails this with >99%.
    sticky = netns_cluster.service("sticky", ports=[HTTP, METRICS], pods=pods, session_affinity="ClientIP")
    for port in (80, 9090):
        assert len({ask(client, (str(sticky.ip), port))[0] for _ in range(8)}) == 1, port


def test_node_ports_serve_each_port_on_every_node(netns_cluster: Cluster, servers: list[Responder]) -> None:
    nodes, pods = two_nodes(netns_cluster, servers)
    nodes.append(netns_cluster.node("node3"))  # no backend of its own
    ext = netns_cluster.external("outside")
    http = HTTP | {"node_port": 30000}
    svc = netns_cluster.service("web", ports=[http, METRICS], selector={"app": "web"}, type="NodePort")
    # The given node port first; the other gets the lowest free one, not the one its sibling holds.
    assert [port.node_port for port in svc.ports] == [30000, 30001] and svc.node_port == 30000
    for node in nodes:
        for node_port, target in ((30000, 8080), (30001, 9090)):
            for _ in range(4):
                label, peer = ask(ext, (str(node.ip), node_port))
                pod, served = label.split(":")
                mine = any(p.name == pod and p.node is node for p in pods)
                assert served == str(target) and peer == str(node.gateway if mine else node.ip), (node.name, label)
    with pytest.raises(ValueError, match=re.escape("ports[1]: node_port 30001 is already taken")):
        taken = [{"port": 1, "name": "a"}, {"port": 2, "name": "b", "node_port": 30001}]
        netns_cluster.service("other", ports=taken, pods=[], type="NodePort")
    # Local: each port keeps the client's address on a node with a pod and drops on node3, which has none.
    local = netns_cluster.service(
        "local", ports=[HTTP, METRICS], selector={"app": "web"}, type="NodePort", external_traffic_policy="Local"
    )
    assert [port.node_port for port in local.ports] == [30002, 30003]
    for node_port, target in ((30002, 8080), (30003, 9090)):
        assert ask(ext, (str(nodes[1].ip), node_port)) == (f"web-1:{target}", str(ext.ip))
        assert drops(ext, (str(nodes[2].ip), node_port))


def test_srv_records_for_every_named_port(netns_cluster: Cluster) -> None:
    node = netns_cluster.node("node1")
    client = netns_cluster.pod("client", node=node)
    netns_cluster.service("web", ports=[HTTP, METRICS], pods=[])
    dns_ports = [{"port": 53, "proto": "udp", "name": "dns"}, {"port": 53, "proto": "tcp", "name": "dns-tcp"}]
    netns_cluster.service("resolver", ports=dns_ports, pods=[])
    wanted = {
        "_http._tcp.web": "0 100 80 web.default.svc.cluster.local.",
        "_metrics._tcp.web": "0 100 9090 web.default.svc.cluster.local.",
        "_dns._udp.resolver": "0 100 53 resolver.default.svc.cluster.local.",
        "_dns-tcp._tcp.resolver": "0 100 53 resolver.default.svc.cluster.local.",
    }
    for name, record in wanted.items():
        query = dns.message.make_query(f"{name}.default.svc.cluster.local", "SRV")
        with client:
            answer = dns.query.udp(query, str(netns_cluster.dns_ip), timeout=2)
        assert [rr.to_text() for rr in answer.answer[0]] == [record], name
    assert client.resolve("web") == netns_cluster.services[0].ip  # one A record, as for one port


TWO_PORTS_AND_POLICY = """
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports:
    - {name: http, port: 80, targetPort: 8080, protocol: TCP}
    - {name: metrics, port: 9090, targetPort: 9090}
---
# Only the http target port is open: metrics is blocked.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: http-only}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
    - ports: [{port: 8080}]
"""


def test_apply_a_two_port_service_with_a_policy_opening_one_target_port(
    netns_cluster: Cluster, servers: list[Responder]
) -> None:
    nodes, _ = two_nodes(netns_cluster, servers)
    svc, policy = netns_cluster.apply(TWO_PORTS_AND_POLICY)
    assert isinstance(svc, Service) and isinstance(policy, NetworkPolicy)
    assert [(p.name, p.port, p.target_port, p.proto) for p in svc.ports] == [
        ("http", 80, 8080, "tcp"),
        ("metrics", 9090, 9090, "tcp"),
    ]
    client = netns_cluster.pod("client", node=nodes[0])
    for _ in range(4):
        assert ask(client, (str(svc.ip), 80))[0].endswith(":8080")
    assert drops(client, (str(svc.ip), 9090))


def test_a_named_policy_port_is_each_service_ports_target(netns_cluster: Cluster, servers: list[Responder]) -> None:
    nodes, _ = two_nodes(netns_cluster, servers)
    svc = netns_cluster.service("web", ports=[HTTP, METRICS], selector={"app": "web"})
    netns_cluster.network_policy("metrics-only", pod_selector={}, ingress=[{"ports": [{"port": "metrics"}]}])
    client = netns_cluster.pod("client", node=nodes[1])
    assert ask(client, (str(svc.ip), 9090))[0].endswith(":9090")
    assert drops(client, (str(svc.ip), 80))


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"port": 80, "ports": [HTTP]}, "give either port= or ports=, not both"),
        ({}, "give either port= or ports=, not neither"),
        ({"ports": [HTTP], "target_port": 8080}, "with ports= give target_port in each entry"),
        ({"ports": [HTTP], "proto": "udp"}, "with ports= give proto in each entry"),
        ({"ports": []}, "ports must be a non-empty list"),
        ({"ports": HTTP}, "ports must be a non-empty list"),
        ({"ports": [HTTP, 80]}, "ports[1]: a port is a mapping"),
        ({"ports": [HTTP, {"name": "b"}]}, "ports[1]: 'port' is required"),
        ({"ports": [HTTP, {"port": 81, "name": "b", "targetPort": 1}]}, "ports[1]: key 'targetPort' is not one of"),
        ({"ports": [HTTP, {"port": 81}]}, "ports[1]: a service with several ports needs a name"),
        ({"ports": [{"port": 81}, HTTP]}, "ports[0]: a service with several ports needs a name"),
        ({"ports": [HTTP, {"port": 81, "name": "http"}]}, "ports[1]: name 'http' is given twice"),
        ({"ports": [HTTP, {"port": 80, "name": "b"}]}, "ports[1]: port 80/tcp is given twice"),
        ({"ports": [HTTP, {"port": 70000, "name": "b"}]}, "ports[1]: port 70000 is not a port number"),
        ({"ports": [HTTP, {"port": 81, "name": "b", "target_port": 0}]}, "ports[1]: target_port 0"),
        ({"ports": [HTTP, {"port": 81, "name": "b", "proto": "sctp"}]}, "ports[1]: proto 'sctp'"),
        ({"ports": [HTTP, {"port": 81, "name": "B_"}]}, "ports[1]: name 'B_' is not an IANA service name"),
        ({"ports": [HTTP, {"port": 81, "name": "b", "node_port": 30000}]}, "ports[1]: node_port 30000 needs type"),
        (
            {"ports": [HTTP, {"port": 81, "name": "b", "node_port": 80}], "type": "NodePort"},
            "ports[1]: node_port 80 is not in the node port range",
        ),
        (
            {"ports": [HTTP | {"node_port": 30005}, METRICS | {"node_port": 30005}], "type": "NodePort"},
            "ports[1]: node_port 30005/tcp is given twice",
        ),
    ],
)
def test_bad_ports_are_value_errors_naming_the_entry(
    netns_cluster: Cluster, options: dict[str, Any], named: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(named)) as info:
        netns_cluster.service("web", pods=[], **options)
    assert "service 'web'" in str(info.value)
    assert netns_cluster.services == []


def test_one_entry_of_ports_needs_no_name_and_is_the_single_port_form(netns_cluster: Cluster) -> None:
    one = netns_cluster.service("one", ports=[{"port": 53, "proto": "udp"}], pods=[])
    assert one.ports == [ServicePort(None, 53, 53, "udp")] and (one.port, one.proto, one.port_name) == (53, "udp", None)
    # The same node port for TCP and UDP of one service, as Kubernetes allows.
    both = [
        {"port": 53, "name": "u", "proto": "udp", "node_port": 30053},
        {"port": 53, "name": "t", "node_port": 30053},
    ]
    svc = netns_cluster.service("both", ports=both, pods=[], type="NodePort")
    assert [port.node_port for port in svc.ports] == [30053, 30053]
