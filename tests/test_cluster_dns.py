"""The cluster DNS (issue 13): a real server at 10.96.0.10:53 answering as CoreDNS's kubernetes plugin."""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
import socket
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from pytest_netns import NetnsError
from pytest_netns._net import dns_server, resolver
from pytest_netns.cluster import Cluster, Pod

DNS = "10.96.0.10"
needs_dig = pytest.mark.skipif(shutil.which("dig") is None, reason="dig (dnsutils) is not installed")


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with Cluster() as made:
        yield made


def ask(pod: Pod, name: str, rdtype: str = "A", *, tcp: bool = False) -> dns.message.Message:
    """One query from inside ``pod`` (the socket is made in its namespace), 2 s at most."""
    query = dns.message.make_query(name, rdtype)
    with pod:
        if tcp:
            return dns.query.tcp(query, DNS, timeout=2)
        return dns.query.udp(query, DNS, timeout=2)


def addresses(response: dns.message.Message) -> list[str]:
    return sorted(rr.to_text() for rrset in response.answer if rrset.rdtype == dns.rdatatype.A for rr in rrset)


def test_the_server_answers_services_pods_and_misses_over_udp_and_tcp(cluster: Cluster) -> None:
    n1, n2 = cluster.node("n1"), cluster.node("n2")
    a, b = cluster.pod("a", node=n1), cluster.pod("b", node=n2)
    svc = cluster.service("web", port=80, pods=[a])
    assert cluster.dns_ip == ipaddress.IPv4Address(DNS)
    assert cluster.dns_pod is not None and cluster.dns_pod.node is n1 and cluster.dns_pod not in cluster.pods
    assert cluster.dns_pod.labels == {"k8s-app": "kube-dns"} and cluster.dns_pod.namespace == "kube-system"
    for tcp in (False, True):
        response = ask(b, "web.default.svc.cluster.local", tcp=tcp)  # b is on the other node: through the ClusterIP
        assert response.rcode() == dns.rcode.NOERROR and addresses(response) == [str(svc.ip)]
        assert response.answer[0].ttl == 5 and response.flags & dns.flags.AA
    assert addresses(ask(a, "kube-dns.kube-system.svc.cluster.local")) == [DNS]
    assert addresses(ask(a, "10-244-2-2.default.pod.cluster.local")) == [str(b.ip)]
    assert addresses(ask(a, "b")) == [str(b.ip)]  # a bare pod name, beyond Kubernetes
    assert addresses(ask(a, "n2")) == [str(n2.ip)]
    ptr = ask(a, svc.ip.reverse_pointer, "PTR")
    assert [rr.to_text() for rr in ptr.answer[0]] == ["web.default.svc.cluster.local."]
    srv = ask(a, "_dns._udp.kube-dns.kube-system.svc.cluster.local", "SRV")
    assert [rr.to_text() for rr in srv.answer[0]] == ["0 100 53 kube-dns.kube-system.svc.cluster.local."]
    for missing in ("nope.default.svc.cluster.local", "web.other.svc.cluster.local", "example.com", "nope"):
        response = ask(a, missing)
        assert response.rcode() == dns.rcode.NXDOMAIN, missing  # at once: there is no upstream
    nodata = ask(a, "web.default.svc.cluster.local", "AAAA")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer and nodata.authority  # with the SOA
    # A name with children but no records of its own exists: NODATA, not NXDOMAIN.
    assert ask(a, "default.svc.cluster.local").rcode() == dns.rcode.NOERROR


def test_changes_are_in_the_next_answer(cluster: Cluster) -> None:
    n1 = cluster.node("n1")
    a = cluster.pod("a", node=n1)
    assert ask(a, "db.default.svc.cluster.local").rcode() == dns.rcode.NXDOMAIN
    assert ask(a, "c").rcode() == dns.rcode.NXDOMAIN
    c = cluster.pod("c", node=n1)
    db = cluster.service("db", port=5432, pods=[c])
    assert addresses(ask(a, "db.default.svc.cluster.local")) == [str(db.ip)]
    assert addresses(ask(a, "c")) == [str(c.ip)]
    endpoint = ask(a, c.ip.reverse_pointer, "PTR")
    assert [rr.to_text() for rr in endpoint.answer[0]] == ["10-244-1-3.db.default.svc.cluster.local."]
    db.remove(c)
    assert ask(a, c.ip.reverse_pointer, "PTR").rcode() == dns.rcode.NXDOMAIN


def test_allocated_cluster_ips_skip_the_dns_address(cluster: Cluster) -> None:
    n1 = cluster.node("n1")
    a = cluster.pod("a", node=n1)
    ips = [cluster.service(f"s{i}", port=80, pods=[a]).ip for i in range(11)]
    assert ipaddress.IPv4Address(DNS) not in ips and len(set(ips)) == 11
    with pytest.raises(ValueError, match=r"10\.96\.0\.10"):
        cluster.service("taken", port=80, pods=[a], cluster_ip=DNS)


def test_teardown_closes_the_sockets_and_stops_the_thread() -> None:
    with Cluster() as one:
        one.node("n1")
        with Cluster() as two:
            two.node("n1")
            assert dns_server.running()
        assert dns_server.running()  # still serving the first cluster
        pod = one.pod("a", node="n1")
        assert ask(pod, "kube-dns.kube-system.svc.cluster.local").rcode() == dns.rcode.NOERROR
    assert not dns_server.running()
    assert one.dns_pod is not None and one.dns_pod.closed


def test_a_partition_cutting_the_first_node_off_cuts_dns(cluster: Cluster) -> None:
    n1, n2 = cluster.node("n1"), cluster.node("n2")
    b = cluster.pod("b", node=n2)
    with cluster.partition([n1], [n2]):
        with pytest.raises(dns.exception.Timeout):
            with b:
                dns.query.udp(dns.message.make_query("b", "A"), DNS, timeout=0.3)
    assert addresses(ask(b, "b")) == [str(b.ip)]


@needs_dig
def test_dig_gets_the_answers(cluster: Cluster) -> None:
    n1 = cluster.node("n1")
    a = cluster.pod("a", node=n1)
    svc = cluster.service("web", port=80, pods=[a])
    for transport in ("+notcp", "+tcp"):
        out = a.run(["dig", "+short", "+tries=1", "+time=2", transport, f"@{DNS}", "web.default.svc.cluster.local"])
        assert out.stdout.split() == [str(svc.ip)]
    out = a.run(["dig", "+tries=1", "+time=2", f"@{DNS}", "nothing.example"])
    assert "status: NXDOMAIN" in out.stdout


def getent(pod: Pod, name: str) -> list[str]:
    """The IPv4 addresses libc's resolver gives ``name`` in a process of ``pod`` ([] for a miss)."""
    out = pod.run(["getent", "ahostsv4", name], check=False)
    return sorted({line.split()[0] for line in out.stdout.splitlines()})


def test_pods_get_kubelets_resolv_conf_and_hosts_file(cluster: Cluster) -> None:
    n1 = cluster.node("n1")
    a = cluster.pod("a", node=n1)
    b = cluster.pod("b", node=n1, namespace="prod")
    assert a.run(["cat", "/etc/resolv.conf"]).stdout.splitlines() == [
        "search default.svc.cluster.local svc.cluster.local cluster.local",
        "nameserver 10.96.0.10",
        "options ndots:5",
    ]
    assert "search prod.svc.cluster.local svc.cluster.local cluster.local" in b.run(["cat", "/etc/resolv.conf"]).stdout
    entries = [line.split() for line in a.run(["cat", "/etc/hosts"]).stdout.splitlines() if not line.startswith("#")]
    assert [names for _, *names in entries] == [["localhost"], ["localhost", "ip6-localhost", "ip6-loopback"], ["a"]]
    assert entries[-1][0] == str(a.ip)


def test_libc_follows_the_search_path_across_namespaces(cluster: Cluster) -> None:
    n1, n2 = cluster.node("n1"), cluster.node("n2")
    web = cluster.pod("web-1", node=n1)
    db = cluster.pod("db-1", node=n2, namespace="prod")
    svc = cluster.service("api", port=80, pods=[web])
    assert getent(web, "api") == [str(svc.ip)]  # api.default.svc.cluster.local, the first suffix
    assert getent(web, "api.default") == [str(svc.ip)]  # api.default.svc.cluster.local, the second
    assert getent(web, "api.default.svc.cluster.local") == [str(svc.ip)]
    assert getent(db, "api") == []  # prod has no service api: the other suffixes miss too
    assert getent(db, "api.default") == [str(svc.ip)]
    assert getent(db, "web-1") == [str(web.ip)]  # a bare pod name, once the search path is exhausted
    assert getent(web, "kube-dns.kube-system") == [str(cluster.dns_ip)]
    assert getent(web, f"{str(db.ip).replace('.', '-')}.prod.pod.cluster.local") == [str(db.ip)]
    assert getent(web, "nothing.example.com") == []


def test_dnspython_in_a_pod_process_reads_the_same_resolv_conf(cluster: Cluster) -> None:
    n1 = cluster.node("n1")
    a = cluster.pod("a", node=n1, namespace="prod")
    svc = cluster.service("db", port=5432, pods=[a])
    script = "import dns.resolver; print(dns.resolver.resolve('db.default', 'A', search=True).rrset[0])"
    assert a.run([sys.executable, "-c", script]).stdout.split() == [str(svc.ip)]


@needs_dig
def test_dig_uses_the_search_path_with_plus_search(cluster: Cluster) -> None:
    n1 = cluster.node("n1")
    a = cluster.pod("a", node=n1)
    svc = cluster.service("web", port=80, pods=[a])
    assert a.run(["dig", "+short", "+search", "web"]).stdout.split() == [str(svc.ip)]


@pytest.mark.parametrize("bad", ["Prod", "-prod", "prod.x", "", "a" * 64, 7, None])
def test_namespace_names_are_dns_1123_labels(cluster: Cluster, bad: object) -> None:
    n1 = cluster.node("n1")
    with pytest.raises(ValueError, match="namespace name") as raised:
        cluster.pod("a", node=n1, namespace=bad)  # type: ignore[arg-type]
    assert repr(bad) in str(raised.value)


def test_pod_resolve_follows_the_pods_search_path(cluster: Cluster) -> None:
    n1, n2 = cluster.node("n1"), cluster.node("n2")
    a = cluster.pod("a", node=n1)
    p = cluster.pod("p", node=n2, namespace="prod")
    web = cluster.service("web", port=80, pods=[a])
    assert a.resolve("web") == web.ip and a.resolve("web.default.svc") == web.ip
    assert p.resolve("web.default") == web.ip and p.resolve("n2") == n2.ip
    with pytest.raises(ValueError, match="'web'"):
        p.resolve("web")  # prod has no service web
    assert cluster.resolve("kube-dns.kube-system.svc.cluster.local.") == cluster.dns_ip
    assert cluster.resolve("web") == web.ip  # the names that resolved before the DNS
    with cluster.partition([n1], [n2]):
        with pytest.raises(NetnsError, match="no answer from the cluster DNS"):
            p.resolve("n2")


def test_getaddrinfo_inside_a_pod_asks_the_cluster_dns(cluster: Cluster) -> None:
    n1 = cluster.node("n1")
    a = cluster.pod("a", node=n1)
    web = cluster.service("web", port=80, pods=[a])
    found = a.call(socket.getaddrinfo, "web", 80, type=socket.SOCK_STREAM)
    assert [info[4] for info in found] == [(str(web.ip), 80)]
    with a:
        assert socket.getaddrinfo("a", "http", socket.AF_INET, socket.SOCK_STREAM)[0][4] == (str(a.ip), 80)
        with pytest.raises(socket.gaierror) as missing:
            socket.getaddrinfo("nothing.example.com", 80)
        assert missing.value.errno == socket.EAI_NONAME  # at once, not the host's unreachable nameserver
        assert socket.getaddrinfo("127.0.0.1", 80, socket.AF_INET, socket.SOCK_STREAM)[0][4] == ("127.0.0.1", 80)
    # Threads elsewhere are untouched: outside the namespaces the original function answers.
    assert resolver.lookup_for_thread() is None


def test_asyncio_resolves_with_an_executor_whose_threads_are_inside_the_pod(cluster: Cluster) -> None:
    n1 = cluster.node("n1")
    a = cluster.pod("a", node=n1)
    web = cluster.service("web", port=80, pods=[a])

    async def main() -> list[tuple[str, int]]:
        loop = asyncio.get_running_loop()
        # The default executor's threads are outside the namespace: give the loop one whose threads enter it.
        loop.set_default_executor(ThreadPoolExecutor(1, initializer=a.__enter__))
        infos = await loop.getaddrinfo("web", 80, type=socket.SOCK_STREAM)
        return [info[4] for info in infos]

    assert asyncio.run(main()) == [(str(web.ip), 80)]


def a_records(pod: Pod, name: str) -> list[str]:
    return addresses(ask(pod, name))


def test_headless_service_answers_with_its_ready_pods_and_shrinks_as_they_go(cluster: Cluster) -> None:
    n1, n2 = cluster.node("n1"), cluster.node("n2")
    client = cluster.pod("client", node=n1)
    dbs = [cluster.pod(f"db-{i}", node=(n1, n2)[i % 2], labels={"app": "db"}) for i in range(3)]
    svc = cluster.service("db", port=5432, selector={"app": "db"}, headless=True, port_name="postgres")
    assert svc.ip is None and svc.headless and svc.names == []
    fqdn = "db.default.svc.cluster.local"
    assert a_records(client, fqdn) == sorted(str(p.ip) for p in dbs)
    srv = ask(client, f"_postgres._tcp.{fqdn}", "SRV")
    targets = sorted(rr.target.to_text() for rr in srv.answer[0])
    assert targets == sorted(f"{str(p.ip).replace('.', '-')}.{fqdn}." for p in dbs)
    assert all(rr.port == 5432 for rr in srv.answer[0])
    assert a_records(client, targets[0]) == [targets[0].split(".")[0].replace("-", ".")]
    dbs[0].delete()
    assert a_records(client, fqdn) == sorted(str(p.ip) for p in dbs[1:])
    cluster.delete_pod("db-1")
    assert a_records(client, fqdn) == [str(dbs[2].ip)]
    assert "db-0" not in cluster and dbs[0].closed
    cluster.delete_pod(dbs[2])
    assert ask(client, fqdn).rcode() == dns.rcode.NOERROR and not ask(client, fqdn).answer  # the name stays, empty


def test_selector_endpoints_follow_pods_created_and_deleted(cluster: Cluster) -> None:
    n1 = cluster.node("n1")
    first = cluster.pod("w1", node=n1, labels={"app": "web", "tier": "front"})
    cluster.pod("other", node=n1, labels={"app": "api"})
    cluster.pod("elsewhere", node=n1, namespace="prod", labels={"app": "web"})
    svc = cluster.service("web", port=80, selector={"app": "web"}, port_name="http")
    assert svc.pods == (first,)
    second = cluster.pod("w2", node=n1, labels={"app": "web"})
    assert svc.pods == (first, second) and svc.endpoints == [(first.ip, 80), (second.ip, 80)]
    srv = ask(first, "_http._tcp.web.default.svc.cluster.local", "SRV")
    assert [rr.to_text() for rr in srv.answer[0]] == ["0 100 80 web.default.svc.cluster.local."]
    first.delete()
    assert svc.pods == (second,)
    with pytest.raises(ValueError, match="selector"):
        svc.add(second)
    with pytest.raises(TypeError):
        second.labels["app"] = "x"  # type: ignore[index]


def test_kubernetes_namespaces_names_and_labels(cluster: Cluster) -> None:
    n1 = cluster.node("n1")
    a = cluster.pod("a", node=n1)
    b = cluster.pod("b", node=n1, namespace="prod")
    web = cluster.service("web", port=80, pods=[a])
    web_prod = cluster.service("web", port=80, pods=[b], namespace="prod")  # unique per namespace only
    cluster.service("a", port=80, pods=[a])  # a pod and a service may share a name
    assert web.ip != web_prod.ip and web_prod.names == ["web.prod", "web.prod.svc", "web.prod.svc.cluster.local"]
    assert b.resolve("web") == web_prod.ip and a.resolve("web") == web.ip
    assert a.resolve("a") == cluster.resolve("a.default.svc.cluster.local")  # the service wins over the pod
    assert getent(a, "web.prod") == [str(web_prod.ip)]
    assert cluster.k8s_namespaces == {
        "kube-system": {"kubernetes.io/metadata.name": "kube-system"},
        "default": {"kubernetes.io/metadata.name": "default"},
        "prod": {"kubernetes.io/metadata.name": "prod"},
    }
    with pytest.raises(ValueError, match="'web' already exists in namespace 'prod'"):
        cluster.service("web", port=81, pods=[b], namespace="prod")


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"labels": {"app": 1}}, "1"),
        ({"labels": {"-app": "x"}}, "'-app'"),
        ({"labels": {"app": "x" * 64}}, "'xxxx"),
        ({"labels": {"bad_prefix.Example/x": "y"}}, "bad_prefix.Example"),
        ({"labels": ["app"]}, "['app']"),
    ],
)
def test_bad_labels_are_refused_naming_them(cluster: Cluster, kwargs: dict[str, object], named: str) -> None:
    n1 = cluster.node("n1")
    with pytest.raises(ValueError) as raised:
        cluster.pod("a", node=n1, **kwargs)  # type: ignore[arg-type]
    assert named in str(raised.value)


def test_bad_service_arguments_are_refused(cluster: Cluster) -> None:
    n1 = cluster.node("n1")
    a = cluster.pod("a", node=n1, labels={"app": "a"})
    with pytest.raises(ValueError, match="not both"):
        cluster.service("s", port=80, pods=[a], selector={"app": "a"})
    with pytest.raises(ValueError, match="neither"):
        cluster.service("s", port=80)
    for bad in ("HTTP", "8080", "a--b", "much-too-long-name"):
        with pytest.raises(ValueError, match=f"port_name '{bad}' is not an IANA service name"):
            cluster.service("s", port=80, pods=[a], port_name=bad)
    with pytest.raises(ValueError, match="headless"):
        cluster.service("s", port=80, pods=[a], headless=True, cluster_ip="10.96.1.1")


def test_a_client_that_re_resolves_follows_the_service_as_its_pods_change(cluster: Cluster) -> None:
    n1, n2 = cluster.node("n1"), cluster.node("n2")
    client = cluster.pod("client", node=n1, namespace="shop")
    cluster.service("cache", port=6379, selector={"app": "cache"}, headless=True, namespace="shop")

    def current() -> list[str]:
        with client:  # in-process code: getaddrinfo asks the cluster DNS through the pod's search path
            try:
                return sorted({info[4][0] for info in socket.getaddrinfo("cache", 6379, socket.AF_INET)})
            except socket.gaierror:
                return []

    assert current() == []  # no pods yet: the name exists with no address, a miss for getaddrinfo
    one = cluster.pod("cache-1", node=n1, namespace="shop", labels={"app": "cache"})
    assert current() == [str(one.ip)]
    two = cluster.pod("cache-2", node=n2, namespace="shop", labels={"app": "cache"})
    assert current() == sorted([str(one.ip), str(two.ip)])
    one.delete()
    assert current() == [str(two.ip)]
    assert client.resolve("cache") == two.ip


def test_long_udp_answers_are_truncated_and_errors_are_answered() -> None:
    from pytest_netns.presets.cluster import ServicePort
    from pytest_netns.presets.cluster import dns as cluster_dns

    pods = [ipaddress.IPv4Address(f"10.244.1.{i}") for i in range(2, 62)]
    port = ServicePort(None, 80, 80, "tcp")
    zone = cluster_dns.Zone.build([cluster_dns.ServiceRecord("big", "default", None, [port], pods)], [], {})
    query = dns.message.make_query("big.default.svc.cluster.local", "A")  # no EDNS: 512 bytes at most
    udp = dns.message.from_wire(dns_server.handle_wire(query.to_wire(), zone.answer, limit=65535) or b"")
    assert udp.flags & dns.flags.TC and not udp.answer  # the client retries over TCP
    tcp = dns.message.from_wire(dns_server.handle_wire(query.to_wire(), zone.answer, limit=None) or b"")
    assert len(tcp.answer[0]) == 60
    notify = dns.message.make_query("big.default.svc.cluster.local", "A")
    notify.set_opcode(dns.opcode.NOTIFY)
    reply = dns.message.from_wire(dns_server.handle_wire(notify.to_wire(), zone.answer, limit=65535) or b"")
    assert reply.rcode() == dns.rcode.NOTIMP
    garbage = query.to_wire()[:12] + b"\xff\xff"
    formerr = dns_server.handle_wire(garbage, zone.answer, limit=65535)
    assert formerr is not None and formerr[:2] == garbage[:2] and formerr[3] & 0x0F == dns.rcode.FORMERR


def test_getaddrinfo_inside_a_topology_namespace_reads_its_names() -> None:
    from pytest_netns.topology import Topology

    with Topology() as topo:
        a, b = topo.add("a"), topo.add("b")
        topo.link(a, b)
        found = a.call(socket.getaddrinfo, "b", 80, socket.AF_INET, socket.SOCK_STREAM)
        expected = b.run(["getent", "ahostsv4", "b"]).stdout.split()[0]
        assert [info[4] for info in found] == [(expected, 80)]
        with a, pytest.raises(socket.gaierror):
            socket.getaddrinfo("nothing", 80)


def test_a_service_made_before_the_first_node_does_not_send_to_the_kube_dns_pod(cluster: Cluster) -> None:
    # Its selector matches the kube-dns pod's labels, but that pod is not one of the cluster's pods: the
    # first node's rules must not DNAT to it (they did: it was installed while the pod was being made).
    lookalike = cluster.service("lookalike", namespace="kube-system", selector={"k8s-app": "kube-dns"}, port=53)
    n1 = cluster.node("n1")
    client = cluster.pod("client", node=n1)
    assert lookalike.pods == ()
    with client:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        sock.settimeout(2)
        with pytest.raises(ConnectionRefusedError):  # no endpoint: kube-proxy resets (kube-dns would accept)
            sock.connect(lookalike.address)
    assert addresses(ask(client, "kube-dns.kube-system.svc.cluster.local", tcp=True)) == [DNS]  # the real one works
