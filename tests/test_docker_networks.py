"""Docker's user-defined networks (pytest_netns.presets.docker): subnets, embedded DNS, isolation, host_ip.

Names are asked with real resolvers from inside containers: glibc (``getent`` started with ``run``),
dnspython and ``dig`` (where installed) against 127.0.0.11, and ``socket.getaddrinfo`` of code running inside.
Servers are threads of the test process listening inside the namespaces (``Responder``, tests/_servers.py):
each TCP connection is answered with "<label> <peer address>", so a test sees who served it and whom the server
saw.  Nothing here needs br_netfilter (where the kernel has it, the host switches bridged frames off netfilter;
the VM's pass without the module shows the same results).
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import socket

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.reversename
import pytest
from _servers import Responder
from _servers import ask as ask_at

from pytest_netns import Namespace
from pytest_netns._kernel import nft as _nft
from pytest_netns._kernel.handle import handle_of
from pytest_netns.presets.docker import Container, DockerHost, Network
from pytest_netns.presets.docker.networks import ISOLATION_TABLE

IPv4 = ipaddress.IPv4Address
BRIDGE_NF_CALL_IPTABLES = "/proc/sys/net/bridge/bridge-nf-call-iptables"
DIG = shutil.which("dig")
PORT = 7000


def ask(ns: Namespace, address: IPv4 | str, port: int = PORT, *, timeout: float = 5.0) -> tuple[str, str]:
    """Connect from ``ns``: (label of the server, address the server saw)."""
    return ask_at(ns, (str(address), port), timeout=timeout)


def unreachable(ns: Namespace, address: IPv4 | str, port: int = PORT) -> bool:
    """A connection from ``ns`` gets no answer within 0.5 s (dropped on the way), or is refused."""
    try:
        ask(ns, address, port, timeout=0.5)
    except (TimeoutError, ConnectionRefusedError):
        return True
    return False


def query(ns: Namespace, name: str, rdtype: str = "A", *, tcp: bool = False) -> dns.message.Message:
    """dnspython asking 127.0.0.11 from inside ``ns``; a server that stays silent raises Timeout after 1 s."""
    message = dns.message.make_query(name, rdtype)
    with ns:
        if tcp:
            return dns.query.tcp(message, "127.0.0.11", timeout=1.0)
        return dns.query.udp(message, "127.0.0.11", timeout=1.0)


def addresses(response: dns.message.Message) -> list[str]:
    return [rr.address for rrset in response.answer if rrset.rdtype == dns.rdatatype.A for rr in rrset]


def getent(ns: Container, name: str) -> list[str]:
    """glibc's answer in a process started in the container (its resolv.conf, nsswitch and hosts)."""
    result = ns.run(["getent", "ahostsv4", name], check=False)
    return sorted({line.split()[0] for line in result.stdout.splitlines()})


# -- networks -------------------------------------------------------------------------------------------


def test_subnets_come_from_dockers_default_pool_in_order_skipping_used_ones(netns_docker: DockerHost) -> None:
    docker = netns_docker
    first = docker.network("first")
    explicit = docker.network("explicit", subnet="172.20.0.0/16")
    second = docker.network("second")
    third = docker.network("third")  # 172.20.0.0/16 is taken by "explicit"
    assert [n.subnet for n in (first, second, explicit, third)] == [
        ipaddress.IPv4Network(f"172.{i}.0.0/16") for i in (18, 19, 20, 21)
    ]
    assert first.gateway == IPv4("172.18.0.1") and third.gateway == IPv4("172.21.0.1")
    assert list(docker.networks) == ["bridge", "first", "explicit", "second", "third"]
    assert docker.networks["bridge"].subnet == ipaddress.IPv4Network("172.17.0.0/16")
    # Each network is a bridge of its own in the host namespace, holding the gateway.
    assert {n.bridge for n in (first, explicit, second, third)} <= set(docker.host.interfaces())
    assert re.fullmatch(r"br-[0-9a-f]{12}", first.bridge)
    web = docker.container("web", network="second")
    assert web.ip == IPv4("172.19.0.2") and web.networks == {"second": IPv4("172.19.0.2")}
    assert ask_gateway_route(web) == "172.19.0.1"


def ask_gateway_route(ns: Namespace) -> str:
    [line] = [x for x in ns.run(["ip", "-4", "route", "show", "default"]).stdout.splitlines() if x]
    return line.split()[2]


def test_subnets_after_the_172_pools_are_192_168_slash_20s(netns_docker: DockerHost) -> None:
    docker = netns_docker
    for i in range(18, 32):
        docker.network(f"n{i}", subnet=f"172.{i}.0.0/16")
    assert docker.network("next").subnet == ipaddress.IPv4Network("192.168.0.0/20")
    assert docker.network("after").subnet == ipaddress.IPv4Network("192.168.16.0/20")


# -- embedded DNS ---------------------------------------------------------------------------------------


def test_containers_resolve_names_and_aliases_with_real_resolvers(netns_docker: DockerHost) -> None:
    docker = netns_docker
    app = docker.network("app")
    db = docker.container("db", network=app, aliases=["postgres", "Primary.DB"])
    web = docker.container("web", network="app")
    resolv = web.run(["cat", "/etc/resolv.conf"]).stdout
    assert "nameserver 127.0.0.11\n" in resolv and "options ndots:0\n" in resolv
    assert not [line for line in resolv.splitlines() if line.startswith("nameserver") and "127.0.0.11" not in line]
    for name in ("db", "DB", "postgres", "primary.db", "db.app"):
        assert getent(web, name) == [str(db.ip)], name
        assert addresses(query(web, name)) == [str(db.ip)], name
        assert web.resolve(name) == db.ip
    assert addresses(query(web, "postgres", tcp=True)) == [str(db.ip)]
    assert getent(db, "web") == [str(web.ip)]  # both ways, and a container resolves itself
    assert db.resolve("db") == db.ip
    # Code of the test process inside the container resolves through the same server.
    infos = web.call(socket.getaddrinfo, "postgres", 5432, socket.AF_INET, socket.SOCK_STREAM)
    assert {info[4] for info in infos} == {(str(db.ip), 5432)}
    with web:
        assert socket.getaddrinfo("DB.app", None, socket.AF_INET)[0][4][0] == str(db.ip)
    # PTR: <name>.<network>, as Docker answers.
    reverse = query(web, dns.reversename.from_address(str(db.ip)).to_text(), "PTR")
    assert [rr.target.to_text() for rrset in reverse.answer for rr in rrset] == ["db.app."]
    if DIG is None:
        return
    assert web.run([DIG, "+short", "postgres"]).stdout.split() == [str(db.ip)]
    assert web.run([DIG, "+short", "+tcp", "DB.app"]).stdout.split() == [str(db.ip)]
    assert web.run([DIG, "+short", "-x", str(db.ip)]).stdout.split() == ["db.app."]


def test_unknown_names_are_nxdomain_at_once_and_aaaa_is_nodata(netns_docker: DockerHost) -> None:
    docker = netns_docker
    app = docker.network("app")
    db = docker.container("db", network=app)
    web = docker.container("web", network=app)
    for name in ("nope", "nope.app", "example.com", "db.other"):
        response = query(web, name)  # an answer within 1 s: the resolver never waits for a timeout
        assert response.rcode() == dns.rcode.NXDOMAIN, name
        assert getent(web, name) == []
    aaaa = query(web, "db", "AAAA")
    assert aaaa.rcode() == dns.rcode.NOERROR and aaaa.answer == []  # NODATA: the name exists, IPv4 only
    assert web.run(["getent", "ahosts", "db"]).stdout.split()[0] == str(db.ip)  # AF_UNSPEC gets the A record
    with pytest.raises(ValueError, match="'nope'"):
        web.resolve("nope")
    with web, pytest.raises(socket.gaierror):
        socket.getaddrinfo("nope", 80)
    if DIG is not None:
        out = web.run([DIG, "+tries=1", "+time=1", "nope"], check=False).stdout
        assert "status: NXDOMAIN" in out


def test_names_resolve_only_across_shared_networks_and_changes_show_in_the_next_answer(
    netns_docker: DockerHost,
) -> None:
    docker = netns_docker
    front, back = docker.network("front"), docker.network("back")
    web = docker.container("web", network=front)
    db = docker.container("db", network=back)
    assert getent(web, "db") == [] and query(web, "db").rcode() == dns.rcode.NXDOMAIN
    late = docker.container("late", network=front, aliases=["cache"])
    assert getent(web, "cache") == [str(late.ip)]  # a container made after web started resolving
    api = docker.connect(db, front, aliases=["database"])
    assert api == IPv4("172.18.0.4") and db.networks == {"back": db.ip, "front": api}
    # The address on the shared network, for its name and for the new alias.
    assert getent(web, "db") == getent(web, "database") == [str(api)]
    assert getent(db, "web") == [str(web.ip)]
    assert db.resolve("db") == db.ip  # its first network first
    assert query(late, "database.back").rcode() == dns.rcode.NXDOMAIN  # the alias is scoped to "front"
    assert db.aliases("front") == ("database",) and db.aliases("back") == ()


def test_one_alias_on_several_containers_answers_all_of_them(netns_docker: DockerHost) -> None:
    docker = netns_docker
    app = docker.network("app")
    one = docker.container("one", network=app, aliases=["worker"])
    two = docker.container("two", network=app, aliases=["worker"])
    client = docker.container("client", network=app)
    assert sorted(addresses(query(client, "worker"))) == sorted([str(one.ip), str(two.ip)])
    assert getent(client, "worker") == sorted([str(one.ip), str(two.ip)])


def test_the_default_bridge_resolves_no_container_names(netns_docker: DockerHost) -> None:
    docker = netns_docker
    plain = docker.container("plain")
    other = docker.container("other")
    app = docker.network("app")
    web = docker.container("web", network=app)
    # Processes see the machine's resolv.conf, as today (Docker copies the host's).
    with open("/etc/resolv.conf") as handle:
        assert plain.run(["cat", "/etc/resolv.conf"]).stdout == handle.read()
    with pytest.raises(ValueError, match="default bridge"):
        plain.resolve("other")
    with plain, pytest.raises(socket.gaierror):  # at once, rather than asking an unreachable nameserver
        socket.getaddrinfo("other", 80)
    assert query(web, "plain").rcode() == dns.rcode.NXDOMAIN  # not on a shared network
    # Connecting it to a user network gives it the embedded DNS.
    docker.connect(plain, app)
    assert plain.resolve("web") == web.ip and getent(plain, "web") == [str(web.ip)]
    assert web.resolve("plain") == plain.networks["app"]
    assert other.ip == IPv4("172.17.0.3")


# -- isolation ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bridged_frames_pass_netfilter", [False, True])
def test_networks_are_isolated_by_ip_both_ways_until_connected(
    netns_docker: DockerHost, servers: list[Responder], bridged_frames_pass_netfilter: bool
) -> None:
    docker = netns_docker
    if bridged_frames_pass_netfilter and not os.path.exists(BRIDGE_NF_CALL_IPTABLES):
        pytest.skip("br_netfilter is not loaded on this kernel: bridged frames never pass netfilter here")
    front, back = docker.network("front"), docker.network("back")
    web = docker.container("web", network=front)
    db = docker.container("db", network=back)
    neighbour = docker.container("neighbour", network=front)
    plain = docker.container("plain")
    if bridged_frames_pass_netfilter:
        docker.host.sysctl("net.bridge.bridge-nf-call-iptables", 1)
    servers += [Responder(ns, PORT) for ns in (web, db, neighbour, plain, docker.external)]
    assert ask(web, neighbour.ip) == ("neighbour", str(web.ip))  # same network: plainly bridged
    for client, server in ((web, db), (db, web), (plain, web), (web, plain), (db, plain)):
        assert unreachable(client, server.ip), (client.name, server.name)
    # Every network still reaches the outside, masqueraded.
    for client in (web, db, plain):
        assert ask(client, docker.external.ip) == ("external", str(docker.host.ip))
    docker.connect(web, back)
    assert ask(web, db.ip) == ("db", str(web.networks["back"]))  # across the shared network, no NAT
    assert ask(db, web.networks["back"]) == ("web", str(db.ip))
    assert unreachable(db, web.ip)  # web's address on "front" is still behind the isolation
    assert unreachable(neighbour, db.ip)  # connecting web lifts nothing for the others


def test_isolation_is_routed_filtering_in_the_host(netns_docker: DockerHost) -> None:
    """The host drops forwarding between bridges in a forward chain: no br_netfilter involved."""
    docker = netns_docker
    assert not _has_isolation(docker)  # only the default bridge: nothing to isolate yet
    app = docker.network("app")
    assert _has_isolation(docker)
    rules = docker.host.run(["nft", "list", "table", "inet", ISOLATION_TABLE], check=False)
    if rules.returncode == 0:  # nft installed: the rules as nft prints them
        for bridge in ("docker0", app.bridge):
            assert f'iifname "{bridge}" oifname != "{bridge}" goto stage2' in rules.stdout
            assert f'oifname "{bridge}" drop' in rules.stdout


def _has_isolation(docker: DockerHost) -> bool:
    with handle_of(docker.host).entered():
        return ("inet", ISOLATION_TABLE) in _nft.list_tables()


# -- published ports ------------------------------------------------------------------------------------


def test_publishing_from_a_user_network(netns_docker: DockerHost, servers: list[Responder]) -> None:
    docker = netns_docker
    app = docker.network("app")
    web = docker.container("web", network=app)
    other = docker.container("other", network=app)
    servers.append(Responder(web, PORT))
    published = docker.publish(web, host_port=8080, container_port=PORT)
    assert published.address == (str(docker.host.ip), 8080) and published.host_ip is None
    assert ask(docker.external, docker.host.ip, 8080) == ("web", str(docker.external.ip))
    assert ask(docker.host, docker.host.ip, 8080) == ("web", str(docker.host.ip))
    assert ask(other, docker.host.ip, 8080) == ("web", str(app.gateway))  # the hairpin, on this bridge too
    assert unreachable(docker.host, "127.0.0.1", 8080)  # no host_ip: not on loopback, as before


def test_publish_to_host_loopback_only(netns_docker: DockerHost, servers: list[Responder]) -> None:
    docker = netns_docker
    app = docker.network("app")
    web = docker.container("web", network=app)
    plain = docker.container("plain")
    servers += [Responder(web, PORT), Responder(plain, PORT)]
    local = docker.publish(web, host_port=8080, container_port=PORT, host_ip="127.0.0.1")
    assert local.address == ("127.0.0.1", 8080) and local.host_ip == "127.0.0.1"
    assert ask(docker.host, "127.0.0.1", 8080) == ("web", str(app.gateway))
    assert unreachable(docker.external, docker.host.ip, 8080)  # not from outside
    assert unreachable(docker.host, docker.host.ip, 8080)  # nor at the host's other address
    on_default = docker.publish(plain, host_port=8081, container_port=PORT, host_ip="127.0.0.1")
    assert ask(docker.host, *on_default.address) == ("plain", "172.17.0.1")
    # Bound on the host's outside address only: from outside, not at 127.0.0.1.
    outside = docker.publish(web, host_port=8082, container_port=PORT, host_ip=str(docker.host.ip))
    assert ask(docker.external, *outside.address) == ("web", str(docker.external.ip))
    assert unreachable(docker.host, "127.0.0.1", 8082)
    local.remove()
    assert unreachable(docker.host, "127.0.0.1", 8080)
    assert docker.publish(web, host_port=8080, container_port=PORT).address == (str(docker.host.ip), 8080)


# -- bad input ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["", "-app", ".app", "app net", "app/x", "é", 5, None, "bridge", "host", "none", "app"]
)
def test_bad_network_names_are_refused_naming_them(netns_docker: DockerHost, name: object) -> None:
    netns_docker.network("app")
    with pytest.raises(ValueError, match=re.escape(repr(name))):
        netns_docker.network(name)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "subnet",
    ["172.18.0.0/16", "172.18.5.0/24", "172.0.0.0/8", "172.17.0.0/24", "203.0.113.0/25", "10.0.0.1/24",
     "10.0.0.0/31", "fd00::/64", "300.0.0.0/8", "127.0.0.0/16", "224.0.0.0/24", "nope", 42],
)
def test_bad_or_overlapping_subnets_are_refused_naming_them(netns_docker: DockerHost, subnet: object) -> None:
    netns_docker.network("taken")  # 172.18.0.0/16
    with pytest.raises(ValueError, match=re.escape(repr(subnet))):
        netns_docker.network("new", subnet=subnet)  # type: ignore[arg-type]
    assert list(netns_docker.networks) == ["bridge", "taken"]


def test_bad_containers_networks_aliases_and_host_ips_are_refused_naming_them(netns_docker: DockerHost) -> None:
    docker = netns_docker
    app = docker.network("app")
    web = docker.container("web", network=app)
    before = len(docker.namespaces)
    for network in ("nope", "host", "none"):
        with pytest.raises(ValueError, match=f"network '{network}'"):
            docker.container("x", network=network)
        with pytest.raises(ValueError, match=f"network '{network}'"):
            docker.connect(web, network)
    with DockerHost() as elsewhere:
        foreign = elsewhere.network("app")
        with pytest.raises(ValueError, match="network 'app' is not a network of this host"):
            docker.container("x", network=foreign)
    with pytest.raises(ValueError, match="'web' is already connected to network 'app'"):
        docker.connect(web, app)
    with pytest.raises(ValueError, match="'ghost' is not a container"):
        docker.connect("ghost", app)
    with pytest.raises(ValueError, match=re.escape("'db'")):
        docker.container("x", network=app, aliases="db")  # one string, not a list of aliases
    with pytest.raises(ValueError, match=re.escape("['db']")):
        docker.container("x", aliases=["db"])  # the default bridge has no aliases
    for alias in ("", "a b", "-x"):
        with pytest.raises(ValueError, match=re.escape(repr(alias))):
            docker.container("x", network=app, aliases=[alias])
    for host_ip in ("192.0.2.1", "nope", "::1", "203.0.113.2"):
        with pytest.raises(ValueError, match=re.escape(repr(host_ip))):
            docker.publish(web, host_port=80, container_port=80, host_ip=host_ip)
    assert len(docker.namespaces) == before and docker.published == []


def test_a_network_works_without_pytest_and_is_torn_down() -> None:
    with DockerHost() as docker:
        app = docker.network("app")
        web = docker.container("web", network=app)
        proc = web.popen(["sleep", "60"])
        assert isinstance(app, Network) and web.resolve("web") == web.ip
        namespaces = docker.namespaces
    assert all(ns.closed for ns in namespaces) and proc.poll() is not None


def test_the_dns_thread_starts_when_something_runs_inside_and_answers_what_waited(netns_docker: DockerHost) -> None:
    """The sockets exist from the start; the server thread gets them once code or a process runs inside."""
    from pytest_netns._net import dns_server

    docker = netns_docker
    app = docker.network("app")
    db = docker.container("db", network=app)
    web = docker.container("web", network=app)
    assert not dns_server.running()  # nothing ran inside yet: no thread started and stopped for nothing
    with handle_of(web).entered():  # the plugin's own entry: not code of the test's
        early = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with early:
        early.settimeout(5.0)
        early.sendto(dns.message.make_query("db", "A").to_wire(), ("127.0.0.11", 53))  # queued
        web.run(["true"])  # a process starts inside: the server takes the sockets
        assert dns_server.running()
        reply = dns.message.from_wire(early.recv(512))
    assert addresses(reply) == [str(db.ip)]
