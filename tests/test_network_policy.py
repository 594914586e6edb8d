"""NetworkPolicy on the cluster model: real connections allowed and blocked, same node and across nodes."""

from __future__ import annotations

import errno
import re
import socket
from typing import TypeVar

import pytest
from _servers import Responder

from pytest_netns.errors import NetnsError
from pytest_netns.namespace import Namespace
from pytest_netns.presets.cluster import Cluster, Node

N = TypeVar("N", bound=Namespace)
BOTH_CNI = pytest.mark.parametrize("cni", ["ptp", pytest.param("bridge", marks=pytest.mark.netns(cni="bridge"))])
#: A blocked connect waits this long; an allowed one between namespaces of one machine takes microseconds.
BLOCKED_AFTER = 0.6


def reach(ns: Namespace, ip: object, port: int, proto: str = "tcp") -> bool:
    """Whether a new connection (TCP) or a datagram's answer (UDP) gets through; a refusal is an error.

    Blocked traffic is dropped: the connect times out (never refused, which would mean a missing server).
    """
    with ns:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    with sock:
        sock.settimeout(BLOCKED_AFTER)
        try:
            if proto == "tcp":
                sock.connect((str(ip), port))
                return sock.recv(256).endswith(b"\n")
            sock.sendto(b"hello", (str(ip), port))
            return sock.recv(256).endswith(b"\n")
        except TimeoutError:
            return False
        except OSError as exc:
            if exc.errno == errno.ECONNREFUSED:
                raise AssertionError(f"{ns.name} -> {ip}:{port}/{proto} was refused, not dropped") from None
            raise


def serve(servers: list[Responder], ns: N, *ports: int, proto: str = "tcp") -> N:
    servers += [Responder(ns, port, proto=proto) for port in ports]
    return ns


def two_nodes(cluster: Cluster) -> tuple[Node, Node]:
    return cluster.node("node1"), cluster.node("node2")


ALLOW_CLIENTS = [{"from": [{"pod_selector": {"role": "client"}}]}]


@BOTH_CNI
def test_ingress_admits_only_selected_peers_on_the_same_node_and_across_nodes(
    netns_cluster: Cluster, servers: list[Responder], cni: str
) -> None:
    n1, n2 = two_nodes(netns_cluster)
    web = serve(servers, netns_cluster.pod("web", node=n1, labels={"app": "web"}), 8080)
    other = serve(servers, netns_cluster.pod("other", node=n1, labels={"app": "other"}), 8080)
    near = netns_cluster.pod("near", node=n1, labels={"role": "client"})
    far = netns_cluster.pod("far", node=n2, labels={"role": "client"})
    stranger = netns_cluster.pod("stranger", node=n1)
    remote_stranger = netns_cluster.pod("remote-stranger", node=n2)
    assert all(reach(pod, web.ip, 8080) for pod in (near, far, stranger, remote_stranger))
    policy = netns_cluster.network_policy("web", pod_selector={"app": "web"}, ingress=ALLOW_CLIENTS)
    assert policy.pods == [web] and policy.policy_types == ("Ingress",)
    assert reach(near, web.ip, 8080) and reach(far, web.ip, 8080)
    assert not reach(stranger, web.ip, 8080)
    assert not reach(remote_stranger, web.ip, 8080)
    # A pod no policy selects is not isolated; the isolated pod's own connections out are not either.
    assert reach(stranger, other.ip, 8080) and reach(remote_stranger, other.ip, 8080)
    assert reach(web, other.ip, 8080)
    policy.delete()
    assert policy.deleted and netns_cluster.network_policies == []
    assert reach(stranger, web.ip, 8080) and reach(remote_stranger, web.ip, 8080)


def test_namespace_selector_and_the_and_of_both_selectors(netns_cluster: Cluster, servers: list[Responder]) -> None:
    n1, n2 = two_nodes(netns_cluster)
    db = serve(servers, netns_cluster.pod("db", node=n1, namespace="data", labels={"app": "db"}), 5432)
    api = netns_cluster.pod("api", node=n2, namespace="backend", labels={"app": "api"})
    worker = netns_cluster.pod("worker", node=n1, namespace="backend", labels={"app": "worker"})
    same_label_elsewhere = netns_cluster.pod("api-copy", node=n2, namespace="default", labels={"app": "api"})
    local = netns_cluster.pod("local", node=n2, namespace="data")
    backend = {"kubernetes.io/metadata.name": "backend"}
    netns_cluster.network_policy(
        "from-backend-api",
        namespace="data",
        pod_selector={"app": "db"},
        ingress=[{"from": [{"namespace_selector": backend, "pod_selector": {"app": "api"}}]}],
    )
    assert reach(api, db.ip, 5432)
    assert not reach(worker, db.ip, 5432)  # right namespace, wrong pod
    assert not reach(same_label_elsewhere, db.ip, 5432)  # right pod labels, wrong namespace
    assert not reach(local, db.ip, 5432)  # a pod_selector alone would mean the policy's own namespace
    whole = netns_cluster.network_policy(
        "from-backend", namespace="data", pod_selector={}, ingress=[{"from": [{"namespace_selector": backend}]}]
    )
    assert reach(worker, db.ip, 5432) and not reach(same_label_elsewhere, db.ip, 5432)
    whole.delete()
    netns_cluster.network_policy(
        "from-own-namespace", namespace="data", pod_selector={}, ingress=[{"from": [{"pod_selector": {}}]}]
    )
    assert reach(local, db.ip, 5432) and reach(api, db.ip, 5432) and not reach(worker, db.ip, 5432)


def test_ip_block_with_except_for_egress_to_external_hosts(netns_cluster: Cluster, servers: list[Responder]) -> None:
    n1, _ = two_nodes(netns_cluster)
    allowed, excepted = netns_cluster.external("mirror"), netns_cluster.external("tracker")
    serve(servers, allowed, 443)
    serve(servers, excepted, 443)
    app = netns_cluster.pod("app", node=n1, labels={"app": "app"})
    netns_cluster.network_policy(
        "egress-out",
        pod_selector={"app": "app"},
        egress=[{"to": [{"ip_block": {"cidr": "172.18.0.0/24", "except": [f"{excepted.ip}/32"]}}], "ports": [443]}],
    )
    assert reach(app, allowed.ip, 443)
    assert not reach(app, excepted.ip, 443)
    # The policy's types are Ingress and Egress: with no ingress rule, nothing gets in either.
    peer = netns_cluster.pod("peer", node=n1)
    serve(servers, app, 8080)
    assert not reach(peer, app.ip, 8080)


def test_ports_ranges_and_udp(netns_cluster: Cluster, servers: list[Responder]) -> None:
    n1, n2 = two_nodes(netns_cluster)
    srv = serve(servers, netns_cluster.pod("srv", node=n2, labels={"app": "srv"}), 8080, 9000, 9001, 9002)
    serve(servers, srv, 5353, 5354, proto="udp")
    client = netns_cluster.pod("client", node=n1)
    netns_cluster.network_policy(
        "ports",
        pod_selector={"app": "srv"},
        ingress=[{"ports": [{"port": 9000, "end_port": 9001}, {"port": 5353, "protocol": "UDP"}]}],
    )
    assert reach(client, srv.ip, 9000) and reach(client, srv.ip, 9001)
    assert not reach(client, srv.ip, 9002) and not reach(client, srv.ip, 8080)
    assert reach(client, srv.ip, 5353, "udp")
    assert not reach(client, srv.ip, 5354, "udp")
    netns_cluster.network_policy("all-udp", pod_selector={"app": "srv"}, ingress=[{"ports": [{"protocol": "UDP"}]}])
    assert reach(client, srv.ip, 5354, "udp") and not reach(client, srv.ip, 8080)


def test_policies_add_up_and_deleting_them_restores(netns_cluster: Cluster, servers: list[Responder]) -> None:
    n1, n2 = two_nodes(netns_cluster)
    web = serve(servers, netns_cluster.pod("web", node=n1, labels={"app": "web"}), 8080)
    a = netns_cluster.pod("a", node=n1, labels={"team": "a"})
    b = netns_cluster.pod("b", node=n2, labels={"team": "b"})
    c = netns_cluster.pod("c", node=n2, labels={"team": "c"})
    pa = netns_cluster.network_policy(
        "allow-a", pod_selector={"app": "web"}, ingress=[{"from": [{"pod_selector": {"team": "a"}}]}]
    )
    pb = netns_cluster.network_policy(
        "allow-b", pod_selector={"app": "web"}, ingress=[{"from": [{"pod_selector": {"team": "b"}}]}]
    )
    assert [reach(p, web.ip, 8080) for p in (a, b, c)] == [True, True, False]
    pa.delete()
    assert [reach(p, web.ip, 8080) for p in (a, b, c)] == [False, True, False]
    pb.delete()
    assert [reach(p, web.ip, 8080) for p in (a, b, c)] == [True, True, True]
    with pytest.raises(ValueError, match="allow-b"):
        pb.delete()


def test_policies_apply_to_pods_created_later_and_deleted_pods_leave_them(
    netns_cluster: Cluster, servers: list[Responder]
) -> None:
    n1, n2 = two_nodes(netns_cluster)
    netns_cluster.network_policy("web", pod_selector={"app": "web"}, ingress=ALLOW_CLIENTS)
    web = serve(servers, netns_cluster.pod("web", node=n2, labels={"app": "web"}), 8080)
    stranger = netns_cluster.pod("stranger", node=n1)
    assert not reach(stranger, web.ip, 8080)
    client = netns_cluster.pod("client", node=n1, labels={"role": "client"})
    assert reach(client, web.ip, 8080)
    client.delete()
    late = netns_cluster.pod("late", node=n1, labels={"role": "client"})
    assert reach(late, web.ip, 8080)


def test_match_expressions(netns_cluster: Cluster, servers: list[Responder]) -> None:
    n1, n2 = two_nodes(netns_cluster)
    web = serve(servers, netns_cluster.pod("web", node=n1, labels={"app": "web", "tier": "front"}), 8080)
    clients = {
        "prod": netns_cluster.pod("prod", node=n2, labels={"env": "prod", "trusted": ""}),
        "staging": netns_cluster.pod("staging", node=n2, labels={"env": "staging", "trusted": ""}),
        "dev": netns_cluster.pod("dev", node=n1, labels={"env": "dev", "trusted": ""}),
        "quarantined": netns_cluster.pod(
            "quarantined", node=n1, labels={"env": "prod", "trusted": "", "quarantine": "yes"}
        ),
        "untrusted": netns_cluster.pod("untrusted", node=n2, labels={"env": "prod"}),
    }
    netns_cluster.network_policy(
        "expr",
        pod_selector={"match_expressions": [{"key": "tier", "operator": "In", "values": ["front", "edge"]}]},
        ingress=[
            {
                "from": [
                    {
                        "pod_selector": {
                            "match_labels": {},
                            "match_expressions": [
                                {"key": "env", "operator": "NotIn", "values": ["dev"]},
                                {"key": "trusted", "operator": "Exists"},
                                {"key": "quarantine", "operator": "DoesNotExist"},
                            ],
                        }
                    }
                ]
            }
        ],
    )
    assert {name: reach(pod, web.ip, 8080) for name, pod in clients.items()} == {
        "prod": True,
        "staging": True,
        "dev": False,
        "quarantined": False,
        "untrusted": False,
    }


DNS_RULE = {
    "to": [
        {
            "namespace_selector": {"kubernetes.io/metadata.name": "kube-system"},
            "pod_selector": {"k8s-app": "kube-dns"},
        }
    ],
    "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
}


@BOTH_CNI
@pytest.mark.parametrize("where", ["same node as kube-dns", "other node"])
def test_egress_policy_blocks_dns_until_it_is_allowed(
    netns_cluster: Cluster, servers: list[Responder], where: str, cni: str
) -> None:
    n1, n2 = two_nodes(netns_cluster)
    web = serve(servers, netns_cluster.pod("web-0", node=n2, labels={"app": "web"}), 8080)
    netns_cluster.service("web", port=80, target_port=8080, selector={"app": "web"})
    app = netns_cluster.pod("app", node=n1 if where.startswith("same") else n2, labels={"app": "app"})
    assert app.resolve("web") == netns_cluster.resolve("web")
    netns_cluster.network_policy(
        "egress-web-only",
        pod_selector={"app": "app"},
        egress=[{"to": [{"pod_selector": {"app": "web"}}], "ports": [8080]}],
    )
    with pytest.raises(NetnsError, match="no answer from the cluster DNS"):
        app.resolve("web")
    assert reach(app, web.ip, 8080)
    # Queries go to 10.96.0.10, DNATed to the kube-dns pod: a rule naming the pod admits them.
    netns_cluster.network_policy("allow-dns", pod_selector={}, egress=[DNS_RULE], policy_types=["Egress"])
    assert app.resolve("web") == netns_cluster.resolve("web")


@BOTH_CNI
def test_service_traffic_matches_the_backend_and_its_target_port(
    netns_cluster: Cluster, servers: list[Responder], cni: str
) -> None:
    n1, n2 = two_nodes(netns_cluster)
    backends = [
        serve(servers, netns_cluster.pod(f"web-{i}", node=n, labels={"app": "web"}), 8080)
        for i, n in enumerate((n1, n2))
    ]
    svc = netns_cluster.service("web", port=80, target_port=8080, selector={"app": "web"})
    client = netns_cluster.pod("client", node=n1, labels={"role": "client"})
    on_80 = netns_cluster.network_policy("port-80", pod_selector={"app": "web"}, ingress=[{"ports": [80]}])
    assert not any(reach(client, svc.ip, 80) for _ in range(2))  # the pod sees port 8080, never 80
    on_80.delete()
    netns_cluster.network_policy(
        "port-8080",
        pod_selector={"app": "web"},
        ingress=[{"from": [{"pod_selector": {"role": "client"}}], "ports": [8080]}],
    )
    assert all(reach(client, svc.ip, 80) for _ in range(6))
    assert all(reach(client, pod.ip, 8080) for pod in backends)
    # Egress from the client names the backends, not the ClusterIP.
    netns_cluster.network_policy(
        "client-out",
        pod_selector={"role": "client"},
        egress=[{"to": [{"pod_selector": {"app": "web"}}], "ports": [8080]}],
    )
    assert all(reach(client, svc.ip, 80) for _ in range(6))


def test_replies_pass_and_established_connections_survive(netns_cluster: Cluster, servers: list[Responder]) -> None:
    n1, n2 = two_nodes(netns_cluster)
    web = serve(servers, netns_cluster.pod("web", node=n1, labels={"app": "web"}), 8080)
    client = netns_cluster.pod("client", node=n2, labels={"role": "client"})
    serve(servers, client, 9090)
    # The server may send nothing on its own, the client may receive nothing unasked: replies still pass.
    netns_cluster.network_policy("web-no-egress", pod_selector={"app": "web"}, ingress=ALLOW_CLIENTS, egress=[])
    netns_cluster.network_policy("client-no-ingress", pod_selector={"role": "client"}, ingress=[])
    with client:
        sock = socket.create_connection((str(web.ip), 8080), timeout=5)
    with sock:
        assert sock.recv(256).startswith(b"web ")
        sock.sendall(b"ping\n")
        assert sock.recv(256) == b"ping\n"
        assert not reach(web, client.ip, 9090)  # a new connection the other way is blocked
        netns_cluster.network_policy("deny-web", pod_selector={"app": "web"}, ingress=[])  # adds nothing
        sock.sendall(b"again\n")
        assert sock.recv(256) == b"again\n"


def test_default_deny_for_a_namespace_and_the_nodes_own_traffic(
    netns_cluster: Cluster, servers: list[Responder]
) -> None:
    n1, n2 = two_nodes(netns_cluster)
    web = serve(servers, netns_cluster.pod("web", node=n1, namespace="shop", labels={"app": "web"}), 8080)
    neighbour = netns_cluster.pod("neighbour", node=n1, namespace="shop")
    outside = serve(servers, netns_cluster.pod("outside", node=n2), 8080)
    visitor = netns_cluster.pod("visitor", node=n1)
    netns_cluster.network_policy("default-deny", namespace="shop", pod_selector={}, policy_types=["Ingress", "Egress"])
    assert not reach(neighbour, web.ip, 8080)
    assert not reach(outside, web.ip, 8080)
    assert not reach(web, outside.ip, 8080)
    assert reach(visitor, outside.ip, 8080)  # other namespaces are not isolated
    assert reach(n1, web.ip, 8080)  # the pod's own node (kubelet's probes) always gets in
    assert not reach(n2, web.ip, 8080)  # another node is a peer like any other


BAD_POLICIES: list[tuple[dict[str, object], str]] = [
    ({"name": "Bad_Name"}, "Bad_Name"),
    ({"namespace": "No-Such_NS"}, "No-Such_NS"),
    ({"pod_selector": ["app"]}, "['app']"),
    ({"pod_selector": {"app": 1}}, "1"),
    ({"pod_selector": {"bad key!": "x"}}, "bad key!"),
    ({"pod_selector": {"match_expressions": [{"key": "a", "operator": "Equals", "values": ["x"]}]}}, "Equals"),
    ({"pod_selector": {"match_expressions": [{"key": "a", "operator": "In"}]}}, "'In'"),
    ({"pod_selector": {"match_expressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}}, "['x']"),
    ({"pod_selector": {"match_expressions": [{"key": "a", "operator": "In", "values": [5]}]}}, "5"),
    ({"pod_selector": {"match_expressions": [{"key": "a", "operator": "In", "values": ["x"], "extra": 1}]}}, "extra"),
    ({"policy_types": ["Ingres"]}, "Ingres"),
    ({"policy_types": []}, "[]"),
    ({"policy_types": ["Ingress", "Ingress"]}, "Ingress"),
    ({"policy_types": ["Ingress"], "egress": []}, "Egress"),
    ({"ingress": {"from": []}}, "{'from': []}"),
    ({"ingress": [{"form": []}]}, "form"),
    ({"ingress": [{"to": []}]}, "'to'"),
    ({"egress": [{"from": []}]}, "'from'"),
    ({"ingress": [{"from": [{"podSelector": {}}]}]}, "podSelector"),
    ({"ingress": [{"from": [{}]}]}, "{}"),
    ({"ingress": [{"from": [{"ip_block": {"cidr": "10.0.0.0/33"}}]}]}, "10.0.0.0/33"),
    ({"ingress": [{"from": [{"ip_block": {"cidr": "not-a-cidr"}}]}]}, "not-a-cidr"),
    ({"ingress": [{"from": [{"ip_block": {"cidr": "10.0.0.1"}}]}]}, "10.0.0.1"),
    ({"ingress": [{"from": [{"ip_block": {"cidr": "10.0.0.0/8", "except": ["192.168.0.0/16"]}}]}]}, "192.168.0.0/16"),
    ({"ingress": [{"from": [{"ip_block": {"cidr": "10.0.0.0/8", "except": ["10.0.0.0/8"]}}]}]}, "10.0.0.0/8"),
    ({"ingress": [{"from": [{"ip_block": {"cidr": "10.0.0.0/8"}, "pod_selector": {}}]}]}, "ip_block"),
    ({"ingress": [{"from": [{"ip_block": {"cidr": "10.0.0.0/8", "excepts": []}}]}]}, "excepts"),
    ({"ingress": [{"ports": [{"port": 80, "protocol": "ICMP"}]}]}, "ICMP"),
    ({"ingress": [{"ports": [{"port": 80, "protocol": "tcp"}]}]}, "'tcp'"),
    ({"ingress": [{"ports": [0]}]}, "0"),
    ({"ingress": [{"ports": [70000]}]}, "70000"),
    ({"ingress": [{"ports": [{"port": 90, "end_port": 80}]}]}, "80"),
    ({"ingress": [{"ports": [{"end_port": 80}]}]}, "80"),
    ({"ingress": [{"ports": [{"port": 80, "endPort": 90}]}]}, "endPort"),
    ({"ingress": [{"ports": ["Not_A_Name"]}]}, "Not_A_Name"),
    ({"ingress": [{"ports": [{"port": "http", "end_port": 90}]}]}, "90"),
    ({"ingress": [{"ports": [True]}]}, "True"),
]


@pytest.mark.parametrize(("change", "named"), BAD_POLICIES, ids=[named for _, named in BAD_POLICIES])
def test_bad_policies_are_refused_naming_the_value(
    netns_cluster: Cluster, change: dict[str, object], named: str
) -> None:
    kwargs: dict[str, object] = {"name": "p", "pod_selector": {}} | change
    name = kwargs.pop("name")
    with pytest.raises(ValueError) as info:
        netns_cluster.network_policy(name, **kwargs)  # type: ignore[arg-type]
    assert named in str(info.value)
    assert netns_cluster.network_policies == []


def test_a_second_policy_of_the_same_name_is_refused_and_the_spec_reads_back(netns_cluster: Cluster) -> None:
    policy = netns_cluster.network_policy("p", namespace="shop", pod_selector={"app": "web"}, egress=[{}])
    assert policy.policy_types == ("Ingress", "Egress")
    assert policy.egress[0].peers == () and policy.egress[0].ports == ()
    assert repr(policy) == "<NetworkPolicy shop/p Ingress+Egress>"
    with pytest.raises(ValueError, match="'p' already exists in namespace 'shop'"):
        netns_cluster.network_policy("p", namespace="shop", pod_selector={})
    netns_cluster.network_policy("p", pod_selector={})  # another namespace


def test_policies_follow_label_and_namespace_label_changes(netns_cluster: Cluster, servers: list[Responder]) -> None:
    n1, n2 = two_nodes(netns_cluster)
    web = serve(servers, netns_cluster.pod("web-0", node=n1, labels={"app": "web"}), 8080)
    svc = netns_cluster.service("web", port=80, target_port=8080, selector={"app": "web"})
    client = netns_cluster.pod("client", node=n2, namespace="team-a")
    netns_cluster.network_policy(
        "from-frontend-teams",
        pod_selector={"app": "web"},
        ingress=[{"from": [{"namespace_selector": {"tier": "frontend"}, "pod_selector": {"role": "client"}}]}],
    )
    assert not reach(client, web.ip, 8080)
    netns_cluster.set_namespace_labels("team-a", {"tier": "frontend"})
    assert netns_cluster.k8s_namespaces["team-a"] == {"tier": "frontend", "kubernetes.io/metadata.name": "team-a"}
    assert not reach(client, web.ip, 8080)  # the namespace matches, the pod not yet
    client.set_labels({"role": "client"})
    assert reach(client, web.ip, 8080)
    netns_cluster.set_namespace_labels("team-a", {})
    assert not reach(client, web.ip, 8080)
    # The isolated pod's own labels: relabelled out of the policy's pod_selector, it is open again,
    # and the service's selector lets it go too (the service has no endpoint left).
    web.set_labels({"app": "retired"})
    assert reach(client, web.ip, 8080)
    assert svc.pods == ()
    web.set_labels({"app": "web"})
    assert svc.pods == (web,) and not reach(client, web.ip, 8080)


@pytest.mark.parametrize(
    ("labels", "named"),
    [({"kubernetes.io/metadata.name": "other"}, "other"), ({"tier": 1}, "1"), ({"bad key!": "x"}, "bad key!")],
)
def test_bad_namespace_and_pod_labels_are_refused(
    netns_cluster: Cluster, labels: dict[str, object], named: str
) -> None:
    pod = netns_cluster.pod("p", node=netns_cluster.node("node1"), labels={"app": "x"})
    with pytest.raises(ValueError, match=re.escape(named)):
        netns_cluster.set_namespace_labels("team-a", labels)  # type: ignore[arg-type]
    assert "team-a" not in netns_cluster.k8s_namespaces
    if "kubernetes.io" not in str(labels):
        with pytest.raises(ValueError, match=re.escape(named)):
            pod.set_labels(labels)  # type: ignore[arg-type]
        assert pod.labels == {"app": "x"}


def test_named_ports_are_the_target_ports_of_the_pods_services(
    netns_cluster: Cluster, servers: list[Responder]
) -> None:
    n1, n2 = two_nodes(netns_cluster)
    web = serve(servers, netns_cluster.pod("web-0", node=n1, labels={"app": "web"}), 8080, 9090)
    unnamed = serve(servers, netns_cluster.pod("other", node=n2, labels={"app": "web", "port": "unnamed"}), 8080)
    client = netns_cluster.pod("client", node=n2, labels={"role": "client"})
    netns_cluster.network_policy("http-in", pod_selector={"app": "web"}, ingress=[{"ports": ["http"]}])
    assert not reach(client, web.ip, 8080)  # no service names the port yet
    svc = netns_cluster.service("web", port=80, target_port=8080, port_name="http", pods=[web])
    assert reach(client, web.ip, 8080) and reach(client, svc.ip, 80)
    assert not reach(client, web.ip, 9090)
    assert not reach(client, unnamed.ip, 8080)  # selected, but no service of it names a port "http"
    svc.add(unnamed)
    assert reach(client, unnamed.ip, 8080)
    # Egress: the peer's port of that name; kube-dns's ports are named dns (UDP) and dns-tcp (TCP).
    netns_cluster.network_policy(
        "client-out",
        pod_selector={"role": "client"},
        egress=[{"ports": [{"port": "http"}]}, {"ports": [{"port": "dns", "protocol": "UDP"}]}],
    )
    assert reach(client, web.ip, 8080) and not reach(client, web.ip, 9090)
    assert client.resolve("web") == svc.ip


@pytest.mark.parametrize("traffic_policy", ["Cluster", "Local"])
def test_node_port_traffic_is_matched_with_the_source_the_pods_node_sees(
    netns_cluster: Cluster, servers: list[Responder], traffic_policy: str
) -> None:
    """As documented: a NodePort connection with "Cluster" that crossed nodes arrives from the forwarding node."""
    n1, n2 = two_nodes(netns_cluster)
    serve(servers, netns_cluster.pod("web-0", node=n1, labels={"app": "web"}), 8080)
    client = netns_cluster.external("client")
    svc = netns_cluster.service(
        "web",
        port=80,
        target_port=8080,
        selector={"app": "web"},
        type="NodePort",
        external_traffic_policy=traffic_policy,  # type: ignore[arg-type]
    )
    assert svc.node_port is not None
    netns_cluster.network_policy(
        "from-client", pod_selector={"app": "web"}, ingress=[{"from": [{"ip_block": {"cidr": f"{client.ip}/32"}}]}]
    )
    assert reach(client, n1.ip, svc.node_port)  # the backend's own node: the client's address, before masquerade
    if traffic_policy == "Cluster":
        assert not reach(client, n2.ip, svc.node_port)  # forwarded by node2, masqueraded to node2's address
        netns_cluster.network_policy(
            "from-nodes", pod_selector={"app": "web"}, ingress=[{"from": [{"ip_block": {"cidr": "172.18.0.0/24"}}]}]
        )
        assert reach(client, n2.ip, svc.node_port)


def test_selector_semantics_without_a_kernel() -> None:
    """Kubernetes' reading: NotIn and DoesNotExist match a pod without the key; {} matches everything."""
    from pytest_netns.presets.cluster.selectors import selector

    not_in = selector({"match_expressions": [{"key": "env", "operator": "NotIn", "values": ["dev"]}]}, "s")
    assert not_in.matches({}) and not_in.matches({"env": "prod"}) and not not_in.matches({"env": "dev"})
    in_ = selector({"match_expressions": [{"key": "env", "operator": "In", "values": ["dev"]}]}, "s")
    assert not in_.matches({}) and in_.matches({"env": "dev"})
    both = selector({"match_labels": {"app": "web"}, "match_expressions": [{"key": "x", "operator": "Exists"}]}, "s")
    assert both.matches({"app": "web", "x": ""}) and not both.matches({"app": "web"})
    assert selector({}, "s").empty and selector({}, "s").matches({"any": "thing"})
    # A plain mapping is match_labels, even with keys that look like the structured form's neighbours.
    assert selector({"match_labels_x": "1"}, "s").match_labels == {"match_labels_x": "1"}
