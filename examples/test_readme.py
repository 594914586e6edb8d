"""The code shown in README.md, run as tests so the documentation cannot rot."""

from __future__ import annotations

import socket
import sys

import pytest


def test_client_reaches_server(netns_pair):
    a, b = netns_pair  # a.ip = 10.0.0.1, b.ip = 10.0.0.2, eth0 on both
    with b:  # sockets made inside stay inside
        server = socket.create_server(("0.0.0.0", 8080))
    with a:
        client = socket.create_connection((str(b.ip), 8080))  # ip is an ipaddress object: str() for sockets
    conn, peer = server.accept()
    assert peer[0] == str(a.ip)
    with netns_pair.link.impair(loss=0.1):  # the veth is a Link: impair, down/up, set_mtu
        assert netns_pair.link.mtu == 1500
    for sock in (conn, client, server):
        sock.close()


def test_three_hops(netns_topology):
    t = netns_topology
    client, r1, r2, server = t.add("client"), t.add("r1", router=True), t.add("r2", router=True), t.add("server")
    t.link(client, r1)
    slow = t.link(r1, r2, mtu=1400)
    t.link(r2, server, subnet="198.51.100.0/30")
    t.autoroute()
    assert client.run(["getent", "hosts", "server"]).returncode == 0
    assert client.ping(str(server.ip)) and client.ping(str(server.ip6))
    with slow.impair(rate="8mbit", loss=0.01):
        assert slow.mtu == 1400
    slow.down()
    assert not client.ping(str(server.ip), timeout=0.3)
    slow.up()
    assert client.ping(str(server.ip))


def test_rst_from_closed_port(netns_pair):
    pytest.importorskip("scapy")
    from scapy.layers.inet import IP, TCP

    a, b = netns_pair
    with b.capture("eth0") as cap:  # already listening: no race with the next line
        answer = a.sr1(IP(dst="10.0.0.2") / TCP(dport=9, flags="S"))
    assert answer[TCP].flags == "RA"
    syn = cap.wait(lfilter=lambda p: TCP in p and p[TCP].flags == "S")[0]
    assert syn[IP].ttl == 64


def test_service_spreads_over_pods(netns_cluster):
    c = netns_cluster
    n1, n2 = c.node("node1"), c.node("node2")
    pods = [c.pod(f"web-{i}", node=n) for i, n in enumerate((n1, n2, n2))]
    client = c.pod("client", node=n1)
    svc = c.service("web", port=80, target_port=8080, pods=pods)
    lookup = "import socket; print(socket.gethostbyname('web.default.svc.cluster.local'))"
    assert client.run([sys.executable, "-c", lookup]).stdout.strip() == str(svc.ip)
    assert c.resolve("web") == svc.ip
    assert str(n1.pod_cidr) == "10.244.1.0/24" and str(n2.pod_cidr) == "10.244.2.0/24"


def test_leader_isolated(netns_bridge):
    from pytest_netns import partition

    leader, *followers = netns_bridge
    with partition([leader], followers) as cut:  # the groups stop hearing each other
        assert not leader.ping(str(followers[0].ip), timeout=0.3)
        assert followers[0].ping(str(followers[1].ip))
    assert not cut.active  # healed: traffic flows again
    assert leader.ping(str(followers[0].ip))


# -- README, "A topology shared by several tests" -------------------------------------------------------------


@pytest.fixture(scope="module")
def net():
    from pytest_netns import Topology

    with Topology() as t:
        a, b = t.add("a"), t.add("b")
        t.link(a, b)
        yield t


def test_lossy_link(net):
    net.links[0].impair(loss=0.2)  # reverted after this test, not at the end of the module


def test_clean_link(net):
    assert net.links[0].impairments == []
