"""The cluster's CNI modes: ``ptp`` (kind's kindnet, the default) and ``bridge`` (``cni0``, needs br_netfilter)."""

from __future__ import annotations

import ipaddress

import pytest
from _routes import routes, scoped_routes
from _servers import Responder, ask

from pytest_netns import FeatureUnavailable, NetnsError
from pytest_netns._kernel import rtnl as _rtnl
from pytest_netns._kernel.handle import handle_of
from pytest_netns.presets.cluster import Cluster
from pytest_netns.presets.cluster import wiring as _wiring

BOTH_CNI = pytest.mark.parametrize("cni", ["ptp", pytest.param("bridge", marks=pytest.mark.netns(cni="bridge"))])


@BOTH_CNI
def test_same_node_clusterip_reaches_a_backend_on_the_clients_node(
    netns_cluster: Cluster, servers: list[Responder], cni: str
) -> None:
    """Client and backend on one node, through the ClusterIP: the reply must be un-DNAT-ed on the node."""
    assert netns_cluster.cni == cni
    node = netns_cluster.node("node1")
    web, client = netns_cluster.pod("web-0", node=node), netns_cluster.pod("client", node=node)
    svc = netns_cluster.service("web", port=80, target_port=8080, pods=[web])
    servers.append(Responder(web, 8080))
    for _ in range(3):
        assert ask(client, svc.address) == ("web-0", str(client.ip))  # no NAT of the client's address
    assert ask(web, svc.address) == ("web-0", str(node.gateway))  # hairpin: masqueraded to the gateway


def test_ptp_routes_a_veth_per_pod_as_kindnet_does(netns_cluster: Cluster) -> None:
    assert netns_cluster.cni == "ptp"  # the default
    n1, n2 = netns_cluster.node("node1"), netns_cluster.node("node2")
    a, b, c = (netns_cluster.pod(name, node=node) for name, node in (("a", n1), ("b", n1), ("c", n2)))
    assert [str(p.ip) for p in (a, b, c)] == ["10.244.1.2", "10.244.1.3", "10.244.2.2"]
    gateway = ipaddress.ip_interface(f"{n1.gateway}/32")
    assert {"a", "b"} <= set(n1.interfaces()) and "cni0" not in n1.interfaces()  # veths named after pods, no bridge
    for pod in (a, b):
        # The node's end: the gateway as a /32 (on every pod's veth), a /32 route to the pod.
        assert n1.addresses(pod.node_port) == [gateway]
        assert any(dst == f"{pod.ip}/32" and scope == _rtnl.RT_SCOPE_LINK for dst, _, scope, _ in scoped_routes(n1))
        # The pod keeps its /24, but with no prefix route: everything goes through the gateway.
        assert pod.interfaces() == ["lo", "eth0"]
        assert pod.addresses("eth0") == [ipaddress.ip_interface(f"{pod.ip}/24")]
        assert routes(pod) == {
            (f"{n1.gateway}/32", None),
            ("10.244.1.0/24", str(n1.gateway)),
            ("0.0.0.0/0", str(n1.gateway)),
        }
    assert ("10.244.2.0/24", str(n2.ip)) in routes(n1)
    assert n1.sysctl("net.ipv4.ip_forward") == "1"


def test_ptp_needs_no_bridged_traffic_through_netfilter(netns_cluster: Cluster, servers: list[Responder]) -> None:
    """Nothing is bridged in ptp mode: with br_netfilter switched off, the same-node ClusterIP still works."""
    node = netns_cluster.node("node1")
    web, client = netns_cluster.pod("web-0", node=node), netns_cluster.pod("client", node=node)
    svc = netns_cluster.service("web", port=80, target_port=8080, pods=[web])
    servers.append(Responder(web, 8080))
    try:
        node.sysctl("net.bridge.bridge-nf-call-iptables", 0)
    except NetnsError:  # no br_netfilter on this kernel: that is the point
        pass
    assert ask(client, svc.address) == ("web-0", str(client.ip))


def test_bridge_mode_names_br_netfilter_where_it_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where /proc/sys/net/bridge is missing, bridge mode is unavailable (a skip naming br_netfilter), ptp works."""
    missing = "/proc/sys/net/bridge/no-such-setting"
    monkeypatch.setattr(_wiring, "BRIDGE_NF_CALL_IPTABLES", missing)
    monkeypatch.setattr(_wiring, "NODE_SYSCTLS", ((missing, "1"),))
    with Cluster(cni="bridge") as cluster:
        with pytest.raises(FeatureUnavailable, match="br_netfilter") as info:
            cluster.node("node1")
        assert info.value.feature == "br_netfilter"
    with Cluster() as cluster:
        cluster.pod("a", node=cluster.node("node1"))


@pytest.mark.parametrize("bad", ["flannel", "PTP", 1, None])
def test_a_bad_cni_is_refused_naming_it(bad: object) -> None:
    with pytest.raises(ValueError, match=repr(bad).replace("(", r"\(")):
        Cluster(cni=bad)  # type: ignore[arg-type]


def test_the_marker_takes_cni_and_refuses_a_bad_one(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.netns(cni="bridge")
        def test_bridge(netns_cluster):
            assert netns_cluster.cni == "bridge"

        def test_default(netns_cluster):
            assert netns_cluster.cni == "ptp"

        @pytest.mark.netns(cni="calico")
        def test_bad(netns_cluster):
            pass
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*cni 'calico' is not one of 'ptp', 'bridge'*"])


@BOTH_CNI
def test_cluster_links_carry_no_ipv6_link_local_address(netns_cluster: Cluster, cni: str) -> None:
    # IPv6 is off on the cluster's links (no link-local address, no solicitations of their own): a
    # link brought up in the same message that switches its addresses off must be the end whose
    # peer is still down, or it gets one when the carrier comes.
    n1, n2 = netns_cluster.node("n1"), netns_cluster.node("n2")
    pods = [netns_cluster.pod(f"p{i}", node=(n1, n2)[i % 2]) for i in range(3)]
    assert netns_cluster.dns_pod is not None
    for ns in [n1, n2, *pods, netns_cluster.dns_pod, netns_cluster.fabric]:
        with handle_of(ns).entered():
            with open("/proc/thread-self/net/if_inet6") as table:
                ipv6 = [line.split() for line in table]
        assert [(fields[5], fields[0]) for fields in ipv6 if fields[5] != "lo"] == [], ns.name
