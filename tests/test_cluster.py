"""The Kubernetes network model (pytest_netns.presets.cluster), shown with real traffic.

Each test checks one statement of the model: the layout, the flat pod
network, pods sharing nothing but a port number, names, services spreading
connections over their pods (on the client's node or another), changing the
set of pods, egress NAT, and the bridge-netfilter setting the model relies
on.  Servers are threads of the test process listening inside the pods
(``Responder``, tests/_servers.py); each connection is answered with
"<name> <peer address>", so a test sees both who served it and whom the
server saw.

Statistics: 600 connections over 3 pods, which should be chosen uniformly
at random.  The test asks that every pod gets at least one and that
Pearson's chi-square (df = 2) stays below 13.8, whose tail probability is
exp(-13.8 / 2) = 0.001: a correct implementation fails it once in a thousand
runs.  Power, from the noncentral chi-square with noncentrality
600 * sum((p_i - 1/3)**2 / (1/3)): a 50/25/25 split (expected chi-square
75) passes with probability 2.5e-7, and kube-proxy's classic cascade bug
(every rule firing with 1/n instead of 1/(n-i): 1/3, 2/9, 4/9; expected
chi-square 44) with probability 1.2e-3.  With the earlier 60 connections
they passed 79 % and 92 % of the time.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import pytest
from _routes import routes
from _servers import Responder, ask, connect

from pytest_netns import Namespace, NetnsError
from pytest_netns._kernel import rtnl as _rtnl
from pytest_netns._kernel.handle import handle_of
from pytest_netns.presets.cluster import BRIDGE_NF_CALL_IPTABLES, Cluster, Node, Pod

#: Connections per spread measurement, and Pearson's chi-square bound for 3 pods
#: (df = 2): P(X > 13.8) = exp(-13.8 / 2) = 0.001.  Power: see the module docstring.
CONNECTIONS = 600
CHI_SQUARE_LIMIT = 13.8


#: A test run in both CNI modes (``cni`` is the mode; bridge mode skips where br_netfilter is missing).
BOTH_CNI = pytest.mark.parametrize("cni", ["ptp", pytest.param("bridge", marks=pytest.mark.netns(cni="bridge"))])


@pytest.fixture
def two_nodes(netns_cluster: Cluster) -> tuple[Cluster, Node, Node]:
    return netns_cluster, netns_cluster.node("node1"), netns_cluster.node("node2")


# -- layout --------------------------------------------------------------------------------


@pytest.mark.netns(cni="bridge")
def test_nodes_have_node_ips_pod_cidrs_bridges_and_routes_to_each_other(two_nodes) -> None:
    cluster, n1, n2 = two_nodes
    n3 = cluster.node("node3")
    assert [str(n.ip) for n in (n1, n2, n3)] == ["172.18.0.2", "172.18.0.3", "172.18.0.4"]
    assert [str(n.pod_cidr) for n in (n1, n2, n3)] == ["10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/24"]
    for node in (n1, n2, n3):
        assert isinstance(node, Namespace)
        assert node.addresses("eth0") == [ipaddress.ip_interface(f"{node.ip}/24")]
        assert node.addresses("cni0") == [ipaddress.ip_interface(f"{node.pod_cidr[1]}/24")]
        assert node.gateway == node.pod_cidr[1]
        assert node.sysctl("net.ipv4.ip_forward") == "1"
        others = {(str(o.pod_cidr), str(o.ip)) for o in (n1, n2, n3) if o is not node}
        assert others <= routes(node)
    # A node added later is routed from the earlier ones too.
    assert ("10.244.3.0/24", "172.18.0.4") in routes(n1)


@pytest.mark.netns(cni="bridge")
def test_pods_have_eth0_on_cni0_an_ip_of_the_node_and_a_default_route(two_nodes) -> None:
    cluster, n1, n2 = two_nodes
    a, b, c = cluster.pod("a", node=n1), cluster.pod("b", node="node1"), cluster.pod("c", node=n2)
    assert (a.name, b.name, c.name) == ("a", "b", "c")
    assert isinstance(a, Pod) and isinstance(a, Namespace)
    assert [str(p.ip) for p in (a, b, c)] == ["10.244.1.2", "10.244.1.3", "10.244.2.2"]
    assert (a.node, c.node) == (n1, n2)
    assert n1.pods == [a, b]
    for pod in (a, b, c):
        assert pod.interfaces() == ["lo", "eth0"]
        assert pod.addresses("eth0") == [ipaddress.ip_interface(f"{pod.ip}/24")]
        assert pod.ip == pod.addresses("eth0")[0].ip
        assert ("0.0.0.0/0", str(pod.node.gateway)) in routes(pod)
        assert pod.node_port in pod.node.interfaces()
    assert cluster["a"] is a and cluster["node2"] is n2
    with pytest.raises(KeyError, match="nope"):
        cluster["nope"]


# -- the flat pod network ------------------------------------------------------------------


@BOTH_CNI
def test_every_pod_reaches_every_pod_by_its_own_ip_without_nat(two_nodes, servers, cni: str) -> None:
    cluster, n1, n2 = two_nodes
    pods = [cluster.pod("a", node=n1), cluster.pod("b", node=n1), cluster.pod("c", node=n2), cluster.pod("d", node=n2)]
    servers += [Responder(p, 7000) for p in pods]
    for client in pods:
        for server in pods:
            if server is not client:
                assert ask(client, (str(server.ip), 7000)) == (server.name, str(client.ip))


def test_two_pods_listen_on_the_same_port_and_a_pods_processes_share_localhost(two_nodes, servers) -> None:
    cluster, n1, n2 = two_nodes
    a, b, client = cluster.pod("a", node=n1), cluster.pod("b", node=n1), cluster.pod("client", node=n2)
    servers += [Responder(a, 8080), Responder(b, 8080)]  # no conflict: each pod has its own IP
    assert ask(client, (str(a.ip), 8080))[0] == "a"
    assert ask(client, (str(b.ip), 8080))[0] == "b"
    # Two "containers" of pod a: an app on localhost only, a sidecar process reaching it over localhost.
    servers.append(Responder(a, 9000, label="app", host="127.0.0.1"))
    sidecar = a.run([sys.executable, "-c", textwrap.dedent("""
        import socket
        with socket.create_connection(("localhost", 9000), timeout=5) as s:
            print(s.recv(100).decode().strip())
    """)])
    assert sidecar.stdout.split() == ["app", "127.0.0.1"]
    with pytest.raises(OSError):  # localhost of a pod is its own
        connect(b, ("127.0.0.1", 9000), timeout=1).close()


# -- names ---------------------------------------------------------------------------------

RESOLVE = textwrap.dedent("""
    import socket, sys
    for name in sys.argv[1:]:
        print(name, socket.getaddrinfo(name, 80, socket.AF_INET, socket.SOCK_STREAM)[0][4][0])
""")


def test_names_resolve_for_processes_and_through_resolve(two_nodes, servers) -> None:
    cluster, n1, n2 = two_nodes
    before = {path: Path(path).read_text() for path in ("/etc/hosts", "/etc/resolv.conf")}
    web, client = cluster.pod("web-0", node=n2), cluster.pod("client", node=n1)
    ext = cluster.external("ext")
    svc = cluster.service("web", port=80, target_port=8080, pods=[web])
    names = ["web", "web.default", "web.default.svc", "web.default.svc.cluster.local", "web-0", "client",
             "node1", "node2", "ext"]
    expected = [str(svc.ip)] * 4 + [str(web.ip), str(client.ip), str(n1.ip), str(n2.ip), str(ext.ip)]
    for ns in (client, n1, ext):
        result = ns.run([sys.executable, "-c", RESOLVE, *names], check=False)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == [f"{n} {ip}" for n, ip in zip(names, expected, strict=True)]
    assert [str(cluster.resolve(n)) for n in names] == expected
    assert client.resolve("web.default.svc.cluster.local.") == svc.ip
    assert set(svc.names) == set(names[:4])
    with pytest.raises(ValueError, match="'nope'"):
        cluster.resolve("nope")
    # A process connects by name, as an application in a pod would.
    servers.append(Responder(web, 8080))
    reply = client.run([sys.executable, "-c",
                        "import socket; print(socket.create_connection(('web', 80), timeout=5).recv(100).decode())"])
    assert reply.stdout.split() == ["web-0", str(client.ip)]
    # A pod added later resolves in the same processes' files; the host's files are untouched.
    late = cluster.pod("late", node=n2)
    assert client.run([sys.executable, "-c", RESOLVE, "late"]).stdout == f"late {late.ip}\n"
    assert {path: Path(path).read_text() for path in before} == before


# -- services ------------------------------------------------------------------------------


def spread(client: Namespace, address: tuple[str, int], count: int = CONNECTIONS) -> Counter[str]:
    return Counter(ask(client, address)[0] for _ in range(count))


def assert_fair(counts: Counter[str], pods: Sequence[Pod | SimpleNamespace]) -> None:
    """Every one of 3 pods served at least one connection, and the split passes Pearson's test at p = 0.001."""
    assert len(pods) == 3, "CHI_SQUARE_LIMIT is for 3 pods (df = 2)"
    assert set(counts) == {p.name for p in pods}, counts  # every pod served at least one
    expected = sum(counts.values()) / len(pods)
    chi_square = sum((counts[p.name] - expected) ** 2 / expected for p in pods)
    assert chi_square < CHI_SQUARE_LIMIT, f"chi-square {chi_square:.1f} for {dict(counts)}"


@pytest.mark.parametrize(
    ("split", "fair"),
    [
        ((200, 200, 200), True),
        ((215, 190, 195), True),  # chi-square 1.75
        ((300, 150, 150), False),  # 50/25/25: chi-square 75
        ((200, 133, 267), False),  # the cascade bug 1/3, 2/9, 4/9: chi-square 45
    ],
)
def test_assert_fair_rejects_the_skews_it_is_meant_to_catch(split: tuple[int, ...], fair: bool) -> None:
    pods = [SimpleNamespace(name=f"web-{i}") for i in range(3)]
    counts = Counter({pod.name: n for pod, n in zip(pods, split, strict=True)})
    if fair:
        assert_fair(counts, pods)
    else:
        with pytest.raises(AssertionError, match="chi-square"):
            assert_fair(counts, pods)


@BOTH_CNI
def test_service_spreads_connections_over_pods_on_the_clients_node_and_others(two_nodes, servers, cni: str) -> None:
    cluster, n1, n2 = two_nodes
    pods = [cluster.pod("web-0", node=n1), cluster.pod("web-1", node=n2), cluster.pod("web-2", node=n2)]
    client = cluster.pod("client", node=n1)
    svc = cluster.service("web", port=80, target_port=8080, pods=pods)
    assert svc.ip in ipaddress.ip_network("10.96.0.0/12")
    assert svc.endpoints == [(p.ip, 8080) for p in pods]
    servers += [Responder(p, 8080) for p in pods]
    # No NAT on the way in: every pod, local or remote, sees the client's own address.
    answers = [ask(client, svc.address) for _ in range(CONNECTIONS)]
    assert {peer for _, peer in answers} == {str(client.ip)}
    assert_fair(Counter(label for label, _ in answers), pods)
    # The node's own connections (nat output chain) are served too, on both nodes.
    for node in (n1, n2):
        label, peer = ask(node, svc.address)
        assert label in {p.name for p in pods}
        assert peer in (str(node.ip), str(node.gateway))


def test_round_robin_spread_is_exactly_even(two_nodes, servers) -> None:
    cluster, n1, n2 = two_nodes
    pods = [cluster.pod("web-0", node=n1), cluster.pod("web-1", node=n2), cluster.pod("web-2", node=n2)]
    client = cluster.pod("client", node=n2)
    svc = cluster.service("web", port=80, target_port=8080, pods=pods, spread="round_robin")
    servers += [Responder(p, 8080) for p in pods]
    assert spread(client, svc.address, 60) == Counter({"web-0": 20, "web-1": 20, "web-2": 20})


def test_add_and_remove_change_the_set_and_established_connections_survive(two_nodes, servers) -> None:
    cluster, n1, n2 = two_nodes
    pods = [cluster.pod(f"web-{i}", node=n) for i, n in enumerate((n1, n2, n2, n1))]
    client = cluster.pod("client", node=n1)
    svc = cluster.service("web", port=80, target_port=8080, pods=pods[:3])
    servers += [Responder(p, 8080) for p in pods]
    # An established connection to each pod, opened before the change.
    held: dict[str, socket.socket] = {}
    while len(held) < 3:
        sock = connect(client, svc.address)
        label = sock.recv(100).decode().split()[0]
        if label in held:
            sock.close()
        else:
            held[label] = sock
    try:
        svc.remove(pods[1])
        svc.add(pods[3])
        assert svc.pods == (pods[0], pods[2], pods[3])
        assert_fair(spread(client, svc.address), [pods[0], pods[2], pods[3]])
        for label, sock in held.items():  # conntrack keeps them on their pod, even the removed one
            sock.sendall(f"still {label}?".encode())
            assert sock.recv(100) == f"still {label}?".encode()
        n3 = cluster.node("node3")  # a node added later gets the current rules
        late = cluster.pod("late-client", node=n3)
        assert ask(late, svc.address)[0] in {"web-0", "web-2", "web-3"}
    finally:
        for sock in held.values():
            sock.close()
    with pytest.raises(ValueError, match="'web-1' is not a backend"):
        svc.remove(pods[1])
    with pytest.raises(ValueError, match="'web-0' is already a backend"):
        svc.add(pods[0])


def test_service_without_pods_refuses_and_udp_services_work(two_nodes, servers) -> None:
    cluster, n1, n2 = two_nodes
    dns, client = cluster.pod("dns-0", node=n2), cluster.pod("client", node=n1)
    empty = cluster.service("empty", port=80, pods=[])
    with pytest.raises(ConnectionRefusedError):
        connect(client, empty.address)
    udp = cluster.service("dns", port=53, target_port=5353, proto="udp", pods=[dns])
    servers.append(Responder(dns, 5353, proto="udp"))
    with client:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.settimeout(5)
        sock.connect(udp.address)  # the answer comes back from the ClusterIP, or a connected socket drops it
        sock.send(b"query")
        assert sock.recv(100).decode().split() == ["dns-0", str(client.ip)]


@BOTH_CNI
def test_a_pod_reaches_itself_through_its_own_service(two_nodes, servers, cni: str) -> None:
    cluster, n1, _ = two_nodes
    web = cluster.pod("web-0", node=n1)
    svc = cluster.service("web", port=80, target_port=8080, pods=[web])
    servers.append(Responder(web, 8080))
    # Hairpin: the bridge sends the DNAT-ed packet back out of the port it came from, and the
    # node masquerades it (to the gateway) so that the reply, too, goes back through conntrack.
    assert ask(web, svc.address) == ("web-0", str(n1.gateway))


@pytest.mark.netns(cni="bridge")
def test_same_node_backend_needs_bridged_traffic_to_pass_netfilter(two_nodes, servers) -> None:
    """The reason the nodes set bridge-nf-call-iptables: without it the reply is not un-DNAT-ed."""
    cluster, n1, _ = two_nodes
    web, client = cluster.pod("web-0", node=n1), cluster.pod("client", node=n1)
    svc = cluster.service("web", port=80, target_port=8080, pods=[web])
    servers.append(Responder(web, 8080))
    assert n1.sysctl(BRIDGE_NF_CALL_IPTABLES.removeprefix("/proc/sys/")) == "1"
    assert ask(client, svc.address) == ("web-0", str(client.ip))
    # Both switches off (the namespace's sysctl and cni0's own option): the reply is bridged
    # straight back from the pod's own address, and the client's kernel drops it.
    n1.sysctl("net.bridge.bridge-nf-call-iptables", 0)
    data = _rtnl.attr(_rtnl.IFLA_BR_NF_CALL_IPTABLES, b"\0")
    info = _rtnl.attr(_rtnl.IFLA_INFO_KIND, b"bridge\0") + _rtnl.attr(_rtnl.IFLA_INFO_DATA, data)
    body = _rtnl.ifinfo(n1._bridge_index) + _rtnl.attr(_rtnl.IFLA_LINKINFO, info)
    handle_of(n1).execute([_rtnl.Request(_rtnl.RTM_NEWLINK, 0, body, "cni0: bridged traffic skips netfilter")])
    with pytest.raises((TimeoutError, ConnectionRefusedError, ConnectionResetError)):
        ask(client, svc.address, timeout=1.0)
    assert ask(client, (str(web.ip), 8080))[0] == "web-0"  # direct pod-to-pod traffic never needed it


# -- outside the cluster -------------------------------------------------------------------


@BOTH_CNI
def test_pods_reach_an_external_host_that_sees_the_node_ip(two_nodes, servers, cni: str) -> None:
    cluster, n1, n2 = two_nodes
    a, b = cluster.pod("a", node=n1), cluster.pod("b", node=n2)
    ext = cluster.external("ext")
    assert str(ext.ip) == "172.18.0.200"
    servers += [Responder(ext, 443), Responder(b, 8080)]
    assert ask(a, (str(ext.ip), 443)) == ("ext", str(n1.ip))
    assert ask(b, (str(ext.ip), 443)) == ("ext", str(n2.ip))
    assert ask(a, (str(b.ip), 8080)) == ("b", str(a.ip))  # pod to pod across nodes: still no NAT
    with pytest.raises(OSError) as info:  # pod addresses are not routed outside the cluster
        connect(ext, (str(b.ip), 8080), timeout=1).close()
    assert info.value.errno == errno.ENETUNREACH


# -- MTU, input checking, teardown ---------------------------------------------------------


@BOTH_CNI
def test_set_mtu_changes_every_link_and_large_transfers_cross_nodes(two_nodes, servers, cni: str) -> None:
    cluster, n1, n2 = two_nodes
    a, b = cluster.pod("a", node=n1), cluster.pod("b", node=n2)
    cluster.set_mtu(9000)
    assert cluster.mtu == 9000
    assert two_nodes[0].cni == cni
    pod_side = n1.mtu("cni0" if cni == "bridge" else a.node_port)
    assert {a.mtu("eth0"), b.mtu("eth0"), n1.mtu("eth0"), pod_side, n2.mtu(b.node_port),
            cluster.fabric.mtu("lan0")} == {9000}
    with b:
        listener = socket.create_server(("0.0.0.0", 9100))
    received = []
    thread = threading.Thread(target=lambda: received.append(_drain(listener)))
    thread.start()
    with connect(a, (str(b.ip), 9100)) as sock:
        sock.setsockopt(socket.IPPROTO_IP, 10, 2)  # IP_MTU_DISCOVER = IP_PMTUDISC_DO: never fragment
        sock.sendall(bytes(4 << 20))
    thread.join()
    listener.close()
    assert received == [4 << 20]


def _drain(listener: socket.socket) -> int:
    conn, _ = listener.accept()
    total = 0
    with conn:
        while chunk := conn.recv(1 << 16):
            total += len(chunk)
    return total


def test_bad_input_is_refused_before_anything_is_made(netns_cluster: Cluster) -> None:
    cluster = netns_cluster
    node = cluster.node("node1")
    pod = cluster.pod("a", node=node)
    made = len(cluster.namespaces)
    for bad in ("", "UPPER", "-x", "x" * 64, "a", "node1", "1.2.3.4", "under_score", None):
        with pytest.raises(ValueError, match="name"):
            cluster.pod(bad, node=node)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'nowhere' is not a node"):
        cluster.pod("b", node="nowhere")
    for kwargs in ({"port": 0}, {"port": 80, "target_port": 70000}, {"port": 80, "proto": "sctp"},
                   {"port": 80, "spread": "hash"}, {"port": 80, "cluster_ip": "10.0.0.1"}):
        with pytest.raises(ValueError):
            cluster.service("svc", pods=[pod], **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="DNS-1035"):
        cluster.service("9svc", port=80, pods=[pod])
    with pytest.raises(ValueError, match="'ghost' is not a pod"):
        cluster.service("svc", port=80, pods=["ghost"])
    with pytest.raises(ValueError, match="given twice"):
        cluster.service("svc", port=80, pods=[pod, "a"])
    with pytest.raises(ValueError, match="mtu"):
        cluster.set_mtu(50)
    svc = cluster.service("svc", port=80, pods=[pod], cluster_ip="10.100.0.7")
    assert str(svc.ip) == "10.100.0.7"
    with pytest.raises(ValueError, match="already used"):
        cluster.service("other", port=80, pods=[pod], cluster_ip="10.100.0.7")
    cluster.pod("svc", node=node).delete()  # a pod and a service may share a name (#13)
    with Cluster() as other:
        stranger = other.pod("s", node=other.node("n"))
        with pytest.raises(ValueError, match="'s' is not a pod of this cluster"):
            svc.add(stranger)
    assert len(cluster.namespaces) == made


def test_cluster_works_without_pytest_and_tears_everything_down() -> None:
    with Cluster(mtu=1400) as cluster:
        node = cluster.node("n")
        pod = cluster.pod("p", node=node)
        proc = pod.popen(["sleep", "60"])
        assert pod.mtu("eth0") == 1400
        namespaces = cluster.namespaces
    assert cluster.closed and all(ns.closed for ns in namespaces)
    assert proc.poll() is not None
    assert namespaces[0] is cluster.fabric
    with pytest.raises(NetnsError, match="torn down"):
        cluster.node("again")
    cluster.close()  # twice is fine


def test_fixtures_are_listed_and_announce_their_namespaces(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("""
        seen = []
        def pytest_netns_namespace_created(item, namespace):
            seen.append(namespace.name)
    """)
    pytester.makepyfile("""
        import conftest
        import pytest
        def test_cluster(netns_cluster):
            node = netns_cluster.node("n1")
            netns_cluster.pod("p1", node=node)
            assert conftest.seen == ["fabric", "n1", "coredns", "p1"]  # the kube-dns pod comes with the first node
        def test_docker(netns_docker):
            netns_docker.container("c1")
            assert conftest.seen[-3:] == ["host", "external", "c1"]
        @pytest.mark.netns(cni="bridge")
        def test_bridge_cluster(netns_cluster):
            netns_cluster.pod("p1", node=netns_cluster.node("n1"))
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-v", "-rs")
    # The default (ptp) cluster and the Docker model need no br_netfilter; a bridge-CNI node does.
    result.stdout.fnmatch_lines(["*::test_cluster PASSED*", "*::test_docker PASSED*"])
    if os.path.exists(BRIDGE_NF_CALL_IPTABLES):
        result.assert_outcomes(passed=3)
    else:
        result.assert_outcomes(passed=2, skipped=1)
        result.stdout.fnmatch_lines(["*::test_bridge_cluster SKIPPED*"])
        result.stdout.fnmatch_lines(["SKIPPED *: *no br_netfilter*modprobe br_netfilter*"])
    listing = pytester.runpytest_inprocess("--fixtures")  # lists only: touches no namespace
    listing.stdout.fnmatch_lines(["netns_cluster*", "*Kubernetes-style*", "netns_docker*", "*docker0*"])
    assert listing.ret == 0


def test_pod_processes_run_under_the_private_files_only() -> None:
    """Processes of the cluster see its hosts file; the test process and a plain namespace do not."""
    with Cluster() as cluster:
        pod = cluster.pod("p", node=cluster.node("n"))
        mine = pod.run(["cat", "/etc/hosts"]).stdout
        assert f"{pod.ip}\tp" in mine
        plain = Namespace("plain")
        try:
            theirs = plain.run(["cat", "/etc/hosts"]).stdout
        finally:
            plain.close()
        assert theirs == Path("/etc/hosts").read_text() != mine
        assert subprocess.run(["cat", "/etc/hosts"], capture_output=True, text=True).stdout == theirs


def test_a_kernel_without_br_netfilter_is_reported_as_unavailable(netns: Namespace) -> None:
    """Where /proc/sys/net/bridge is missing (br_netfilter not loaded) a node cannot be built: a precise skip reason."""
    from pytest_netns import FeatureUnavailable
    from pytest_netns._net.sysctl import settle as _settle_sysctls

    missing = "/proc/sys/net/bridge/no-such-setting"
    with pytest.raises(FeatureUnavailable, match="br_netfilter"):
        _settle_sysctls(netns, [(missing, "1")], required={missing})
    _settle_sysctls(netns, [(missing, "1")])  # optional settings that do not exist are skipped


def test_building_a_cluster_enters_no_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cluster's own kernel calls (sysctls, bridges, rules) use namespace fds: nothing registers with the watchdog.

    A registered namespace costs a scan of /proc for its processes at teardown.
    """
    from pytest_netns._kernel.watchdog import client

    registered: list[int] = []
    monkeypatch.setattr(client, "register", registered.append)
    with Cluster() as cluster:
        n1, n2 = cluster.node("n1"), cluster.node("n2")
        pods = [cluster.pod(f"p{i}", node=node) for i, node in enumerate((n1, n2, n2))]
        svc = cluster.service("web", port=80, pods=pods[:2])
        svc.remove(pods[0])
        svc.add(pods[2])
        cluster.external("ext")
        cluster.node("n3")
        cluster.set_mtu(1400)
        assert registered == []
        pods[0].run(["true"])  # code that runs inside does register: the probe sees it
        assert registered == [pods[0].inode]
