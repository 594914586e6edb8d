"""kube-proxy's nftables mode on every node: the spread over endpoints, session affinity, the rules read back."""

from __future__ import annotations

import shutil
import socket
from collections import Counter

import pytest
from _servers import Responder, ask

from pytest_netns._kernel import nft as _nft
from pytest_netns._kernel.handle import handle_of
from pytest_netns.presets.cluster import Cluster, Node, Pod
from pytest_netns.presets.cluster import proxy as _proxy

#: chi-square critical value for 2 degrees of freedom at p = 0.001.
CHI2_CRIT_DF2 = 13.816

BOTH_CNI = pytest.mark.parametrize("cni", ["ptp", pytest.param("bridge", marks=pytest.mark.netns(cni="bridge"))])


def three_backends(cluster: Cluster, servers: list[Responder]) -> tuple[Node, Node, list[Pod]]:
    """Two nodes, backends web-0 and web-1 on node1 (the clients' node), web-2 on node2, serving 8080."""
    n1, n2 = cluster.node("node1"), cluster.node("node2")
    pods = [cluster.pod("web-0", node=n1), cluster.pod("web-1", node=n1), cluster.pod("web-2", node=n2)]
    servers += [Responder(pod, 8080) for pod in pods]
    return n1, n2, pods


def chi2(counts: Counter[str], labels: list[str], total: int) -> float:
    expected = total / len(labels)
    return sum((counts[label] - expected) ** 2 / expected for label in labels)


@BOTH_CNI
def test_new_connections_spread_uniformly_over_the_endpoints(
    netns_cluster: Cluster, servers: list[Responder], cni: str
) -> None:
    """300 connections over 3 endpoints: chi-square below the p = 0.001 bound (13.8 for 2 degrees of freedom).

    Power: a 50/25/25 split (the iptables-mode cascade with a fixed 1/2 per
    rule instead of 1/(n-i)) gives an expected chi-square of 37.5 + 2, which
    exceeds 13.8 with probability above 0.99; one endpoint never chosen gives
    about 150.  A uniform spread fails this test once in a thousand runs.
    """
    n1, _, pods = three_backends(netns_cluster, servers)
    client = netns_cluster.pod("client", node=n1)
    svc = netns_cluster.service("web", port=80, target_port=8080, pods=pods)
    labels = [pod.name for pod in pods]
    counts = Counter(ask(client, svc.address)[0] for _ in range(300))
    assert set(counts) == set(labels)
    assert chi2(counts, labels, 300) < CHI2_CRIT_DF2, counts


def test_a_client_keeps_its_endpoint_with_client_ip_affinity(netns_cluster: Cluster, servers: list[Responder]) -> None:
    n1, n2, pods = three_backends(netns_cluster, servers)
    clients = [netns_cluster.pod(f"client-{i}", node=(n1, n2)[i % 2]) for i in range(10)]
    svc = netns_cluster.service("web", port=80, target_port=8080, pods=pods, session_affinity="ClientIP")
    assert (svc.session_affinity, svc.session_affinity_timeout) == ("ClientIP", 10800)
    first = ask(clients[0], svc.address)[0]
    assert {ask(clients[0], svc.address)[0] for _ in range(50)} == {first}
    # Each client is pinned to the endpoint its first connection drew.  All ten clients on one of the
    # three endpoints would happen with probability 3 * (1/3)**10 = 5e-5.
    chosen = {client.name: ask(client, svc.address)[0] for client in clients}
    assert len(set(chosen.values())) > 1, chosen
    assert all(ask(client, svc.address)[0] == chosen[client.name] for client in clients)
    # The endpoint a client is pinned to goes: the client gets another one, and keeps that one.
    gone = netns_cluster[chosen[clients[0].name]]
    assert isinstance(gone, Pod)
    svc.remove(gone)
    after = {ask(clients[0], svc.address)[0] for _ in range(20)}
    assert len(after) == 1 and after != {gone.name}


def test_without_affinity_one_client_spreads(netns_cluster: Cluster, servers: list[Responder]) -> None:
    """The control of the affinity test: 30 connections from one client on one of 3 endpoints has p = 3 * 3**-30."""
    n1, _, pods = three_backends(netns_cluster, servers)
    client = netns_cluster.pod("client", node=n1)
    svc = netns_cluster.service("web", port=80, target_port=8080, pods=pods)
    assert len({ask(client, svc.address)[0] for _ in range(30)}) > 1


def test_round_robin_goes_through_the_endpoints_in_turn(netns_cluster: Cluster, servers: list[Responder]) -> None:
    n1, _, pods = three_backends(netns_cluster, servers)
    client = netns_cluster.pod("client", node=n1)
    svc = netns_cluster.service("web", port=80, target_port=8080, pods=pods, spread="round_robin")
    seen = [ask(client, svc.address)[0] for _ in range(9)]
    assert Counter(seen) == Counter({pod.name: 3 for pod in pods})
    assert seen[:3] == seen[3:6] == seen[6:]


@BOTH_CNI
def test_a_service_without_endpoints_refuses_udp_too(netns_cluster: Cluster, cni: str) -> None:
    """kube-proxy rejects what comes to a ClusterIP with no endpoint: ICMP port unreachable for UDP.

    An ``ip`` table's reject of type icmpx sends nothing: the datagram was dropped silently and recv timed out.
    """
    n1, n2 = netns_cluster.node("node1"), netns_cluster.node("node2")
    clients = [netns_cluster.pod("client-1", node=n1), netns_cluster.pod("client-2", node=n2)]
    empty = netns_cluster.service("empty", port=53, proto="udp", pods=[])
    for client in clients:
        with client:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sock:
            sock.settimeout(5)
            sock.connect(empty.address)
            sock.send(b"query")
            with pytest.raises(ConnectionRefusedError):
                sock.recv(100)


def test_a_table_deleted_behind_kube_proxys_back_is_made_again(
    netns_cluster: Cluster, servers: list[Responder]
) -> None:
    """kube-proxy keeps the chain names it committed; a table gone behind its back is read back and remade."""
    n1, _, pods = three_backends(netns_cluster, servers)
    client = netns_cluster.pod("client", node=n1)
    svc = netns_cluster.service("web", port=80, target_port=8080, pods=pods[:2])
    with handle_of(n1).entered():
        _nft.delete_table(_proxy.FAMILY, _proxy.TABLE)
    with pytest.raises((TimeoutError, ConnectionRefusedError)):
        ask(client, svc.address, timeout=0.5)  # no DNAT on n1 any more
    svc.add(pods[2])
    seen = {ask(client, svc.address)[0] for _ in range(30)}
    assert seen == {pod.name for pod in pods}  # p of missing one of 3 in 30 draws: 3 * (2/3)**30 = 1.6e-5


def test_bad_session_affinity_is_refused_naming_it(netns_cluster: Cluster) -> None:
    node = netns_cluster.node("node1")
    netns_cluster.pod("web-0", node=node)
    for bad in ("clientip", "None", True):
        with pytest.raises(ValueError, match=f"session_affinity {bad!r}"):
            netns_cluster.service("web", port=80, pods=["web-0"], session_affinity=bad)  # type: ignore[arg-type]
    for timeout in (0, 86401, 1.5, True, "60"):
        with pytest.raises(ValueError, match=f"session_affinity_timeout {timeout!r}"):
            netns_cluster.service(
                "web",
                port=80,
                pods=["web-0"],
                session_affinity="ClientIP",
                session_affinity_timeout=timeout,  # type: ignore[arg-type]
            )
    assert netns_cluster.services == []


@pytest.mark.skipif(shutil.which("nft") is None, reason="needs the nft binary to read rules back")
def test_the_rules_read_back_as_kube_proxys(netns_cluster: Cluster, servers: list[Responder]) -> None:
    n1, _, pods = three_backends(netns_cluster, servers)
    client = netns_cluster.pod("client", node=n1)
    svc = netns_cluster.service("web", port=80, target_port=8080, pods=pods[:2])
    sticky = netns_cluster.service(
        "sticky", port=81, target_port=8080, pods=pods[2:], session_affinity="ClientIP", session_affinity_timeout=60
    )
    svc.add(pods[2])
    svc.remove(pods[0])
    ask(client, sticky.address)
    text = " ".join(n1.run(["nft", "list", "table", "ip", _proxy.TABLE]).stdout.split())
    chain, sticky_chain = _proxy.service_chain(svc), _proxy.service_chain(sticky)
    web1, web2 = (_proxy.endpoint_chain(svc, pod.ip, 8080) for pod in pods[1:])
    sticky_end = _proxy.endpoint_chain(sticky, pods[2].ip, 8080)
    affinity = _proxy.affinity_set(sticky, pods[2].ip, 8080)
    expected = [
        "map service-ips { type ipv4_addr . inet_proto . inet_service : verdict",
        f"{svc.ip} . tcp . 80 : goto {chain}",
        "ip daddr . meta l4proto . th dport vmap @service-ips",
        "type nat hook prerouting priority dstnat; policy accept; jump services",
        "type nat hook postrouting priority srcnat; policy accept; jump masquerading",
        # One numgen per service, over the endpoints it has now (web-0 is gone).
        f"chain {chain} {{ numgen random mod 2 vmap {{ 0 : goto {web1}, 1 : goto {web2} }} }}",
        f"chain {web1} {{ ip saddr {pods[1].ip} jump mark-for-masquerade meta l4proto tcp dnat to {pods[1].ip}:8080",
        # Affinity: a dynamic set per endpoint, looked up first, updated on the way to the endpoint.
        f"set {affinity} {{ type ipv4_addr size 65535 flags dynamic,timeout timeout 1m elements = {{ {client.ip}",
        f"chain {sticky_chain} {{ ip saddr @{affinity} goto {sticky_end} numgen random mod 1 vmap",
        f"update @{affinity} {{ ip saddr }} meta l4proto tcp dnat to {pods[2].ip}:8080",
    ]
    missing = [words for words in expected if words not in text]
    assert not missing, f"{missing} not in:\n{text}"
    assert _proxy.endpoint_chain(svc, pods[0].ip, 8080) not in text
