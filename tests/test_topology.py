"""Functional tests of Topology, Link, Segment and the topology fixtures, with real namespaces.

Reachability checks send exactly one packet (``ping(count=1)``): a lost
first ARP or neighbour solicitation would cost a 1 s retransmit and fail them.
"""

from __future__ import annotations

import errno
import ipaddress
import itertools
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from pytest_netns import KernelError, Namespace, NetnsError
from pytest_netns._kernel import netns as _kernel
from pytest_netns._kernel import rtnl as _rtnl
from pytest_netns._kernel.handle import handle_of
from pytest_netns._kernel.watchdog import pids_in_netns
from pytest_netns._net.hosts import HostsFile
from pytest_netns.topology import Link, Segment, Topology

# Not exported by Python's socket module (linux/in.h).
IP_MTU_DISCOVER, IP_PMTUDISC_DO = 10, 2



def first_packet(src: Namespace, dst: str) -> bool:
    """One echo request, answered within 1 s: no retransmission of a lost neighbour lookup fits."""
    return src.ping(dst, count=1, timeout=1.0)


def addresses_of(network: Link | Segment, ns: Namespace) -> tuple[str, str | None]:
    addrs = network.addresses[ns]
    v4 = next(str(a.ip) for a in addrs if a.version == 4)
    v6 = next((str(a.ip) for a in addrs if a.version == 6), None)
    return v4, v6


def routes(ns: Namespace, family: int) -> set[str]:
    body = _rtnl.RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
    found = set()
    for msg in handle_of(ns).rtnl.dump(_rtnl.RTM_GETROUTE, body, "listing routes"):
        if msg["table"] != 254 or msg["proto"] == 2:  # main table, not the kernel's connected ones
            continue
        found.add(f"{msg.get_attr('RTA_DST') or 'default'}/{msg['dst_len']} via {msg.get_attr('RTA_GATEWAY')}")
    return found


# -- netns_bridge ----------------------------------------------------------------


def test_bridge_fixture_members_addresses_and_segment(netns_bridge) -> None:
    assert [ns.name for ns in netns_bridge] == ["h1", "h2", "h3"]
    segment = netns_bridge.segment
    assert isinstance(segment, Segment) and segment.members == list(netns_bridge)
    for i, ns in enumerate(netns_bridge, start=1):
        assert ns.interfaces() == ["lo", "eth0"]
        assert ns.ip == ipaddress.ip_address(f"10.0.0.{i}") and ns.ip6 == ipaddress.ip_address(f"fd00::{i}")
        assert segment.interface(ns) == "eth0" and ns.mtu("eth0") == 1500
    assert segment.subnet == ipaddress.ip_network("10.0.0.0/24")
    assert segment.subnet6 == ipaddress.ip_network("fd00::/64")
    bridge_ns = segment.namespace
    assert bridge_ns not in netns_bridge and sorted(bridge_ns.interfaces()) == sorted(["lo", "br0", "h1", "h2", "h3"])
    assert segment.port(netns_bridge[1]) == "h2"
    assert segment.mtu == 1500


@pytest.mark.netns(size=20)
def test_bridge_of_twenty_reaches_all_to_all_first_packet(netns_bridge) -> None:
    assert len(netns_bridge) == 20
    unreachable = []
    for src, dst in itertools.permutations(netns_bridge, 2):
        for address in addresses_of(netns_bridge.segment, dst):
            if not first_packet(src, address):
                unreachable.append(f"{src.name} -> {dst.name} {address}")
    assert unreachable == []


@pytest.mark.netns(size=4, mtu=1280, subnet="192.168.5.0/29", ipv6=False)
def test_bridge_fixture_follows_the_marker(netns_bridge) -> None:
    assert len(netns_bridge) == 4
    assert [str(ns.ip) for ns in netns_bridge] == [f"192.168.5.{i}" for i in range(1, 5)]
    assert all(ns.ip6 is None and ns.mtu("eth0") == 1280 for ns in netns_bridge)
    assert netns_bridge.segment.mtu == 1280 and netns_bridge.segment.subnet6 is None
    assert all(first_packet(netns_bridge[0], str(ns.ip)) for ns in netns_bridge[1:])


def test_bridge_has_stp_off_no_delay_and_explicit_bridge_netfilter(netns_bridge) -> None:
    segment = netns_bridge.segment
    [bridge] = [m for m in handle_of(segment.namespace).rtnl.dump(_rtnl.RTM_GETLINK, _rtnl.ifinfo(), "links")
                if m.get_attr("IFLA_IFNAME") == "br0"]
    data = bridge.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA")
    assert data.get_attr("IFLA_BR_STP_STATE") == 0
    assert data.get_attr("IFLA_BR_FORWARD_DELAY") == 0
    assert data.get_attr("IFLA_BR_NF_CALL_IPTABLES") == 0
    assert data.get_attr("IFLA_BR_MCAST_SNOOPING") == 0
    if os.path.exists("/proc/sys/net/bridge"):
        assert segment.namespace.sysctl("net.bridge.bridge-nf-call-iptables") == "0"
    # The bridge's own namespace takes no part in IPv6 (no link-local chatter on the segment).
    assert all(a.version == 4 or a.ip.is_loopback for a in segment.namespace.addresses())


# -- building ----------------------------------------------------------------------


def test_link_names_interfaces_in_attach_order_and_allocates_fresh_subnets(netns_topology: Topology) -> None:
    a, b, c = netns_topology.add("a"), netns_topology.add("b"), netns_topology.add("c")
    explicit = netns_topology.link(a, c, subnet="10.0.0.0/24")
    ab = netns_topology.link("a", "b")  # names work as well as namespaces
    bc = netns_topology.link(b, c, mtu=9000)
    assert explicit.ends == ((a, "eth0"), (c, "eth0"))
    assert ab.ends == ((a, "eth1"), (b, "eth0"))
    assert bc.ends == ((b, "eth1"), (c, "eth1"))
    assert a.interfaces() == ["lo", "eth0", "eth1"]
    # Fresh /24s collide with no subnet of the topology, the explicit one included.
    assert [str(x.subnet) for x in (explicit, ab, bc)] == ["10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24"]
    assert [str(x.subnet6) for x in (explicit, ab, bc)] == ["fd00::/64", "fd00:0:0:1::/64", "fd00:0:0:2::/64"]
    assert addresses_of(ab, a) == ("10.0.1.1", "fd00:0:0:1::1")
    assert addresses_of(ab, b) == ("10.0.1.2", "fd00:0:0:1::2")
    assert bc.mtu == 9000 and b.mtu("eth1") == 9000 and c.mtu("eth1") == 9000 and a.mtu("eth1") == 1500
    assert netns_topology.links == [explicit, ab, bc] and netns_topology["b"] is b and "c" in netns_topology
    assert [ns.name for ns in netns_topology] == ["a", "b", "c"] and len(netns_topology) == 3
    for link in (explicit, ab, bc):
        (x, _), (y, _) = link.ends
        for address in addresses_of(link, y):
            assert first_packet(x, address), (link, address)


def test_bridge_in_a_topology_with_explicit_subnet_and_more_links(netns_topology: Topology) -> None:
    nodes = [netns_topology.add(f"n{i}") for i in range(4)]
    segment = netns_topology.segment(nodes, subnet="172.20.0.0/28", mtu=1400)
    link = netns_topology.link(nodes[0], nodes[3])
    assert [addresses_of(segment, ns)[0] for ns in nodes] == [f"172.20.0.{i}" for i in range(1, 5)]
    assert segment.interface(nodes[0]) == "eth0" and link.ends[0] == (nodes[0], "eth1")
    assert str(link.subnet) == "10.0.0.0/24" and str(segment.subnet6) == "fd00::/64"
    assert all(ns.mtu("eth0") == 1400 for ns in nodes) and segment.mtu == 1400
    assert all(first_packet(nodes[3], addresses_of(segment, ns)[1]) for ns in nodes[:3])


def test_router_forwards_and_hosts_do_not(netns_topology: Topology) -> None:
    r = netns_topology.add("r", router=True)
    h = netns_topology.add("h")
    assert r.sysctl("net.ipv4.ip_forward") == "1" and r.sysctl("net.ipv6.conf.all.forwarding") == "1"
    assert h.sysctl("net.ipv4.ip_forward") == "0" and h.sysctl("net.ipv6.conf.all.forwarding") == "0"


# -- routing ---------------------------------------------------------------------------


def test_autoroute_across_a_chain_of_routers_both_families(netns_topology: Topology) -> None:
    client = netns_topology.add("client")
    routers = [netns_topology.add(f"r{i}", router=True) for i in range(6)]
    server = netns_topology.add("server")
    chain = [client, *routers, server]
    links = [netns_topology.link(x, y) for x, y in itertools.pairwise(chain)]
    v4, v6 = addresses_of(links[-1], server)
    assert not first_packet(client, v4)  # only connected routes until asked
    netns_topology.autoroute()
    assert first_packet(client, v4) and first_packet(client, v6)
    for ns in chain:  # every namespace reaches every subnet
        for link in links:
            for end, _ in link.ends:
                for address in addresses_of(link, end):
                    assert first_packet(ns, address), (ns.name, address)
    # Subnets behind the same first hop share the exact covering prefixes.
    assert routes(client, socket.AF_INET) == {
        "10.0.1.0/24 via 10.0.0.2", "10.0.2.0/23 via 10.0.0.2", "10.0.4.0/23 via 10.0.0.2", "10.0.6.0/24 via 10.0.0.2"}
    assert routes(client, socket.AF_INET6) == {
        "fd00:0:0:1::/64 via fd00::2", "fd00:0:0:2::/63 via fd00::2", "fd00:0:0:4::/63 via fd00::2",
        "fd00:0:0:6::/64 via fd00::2"}


def test_autoroute_routes_only_through_routers(netns_topology: Topology) -> None:
    a, middle, b = netns_topology.add("a"), netns_topology.add("middle"), netns_topology.add("b")
    netns_topology.link(a, middle)
    far = netns_topology.link(middle, b)
    netns_topology.autoroute()
    assert routes(a, socket.AF_INET) == set() and routes(a, socket.AF_INET6) == set()
    assert not first_packet(a, addresses_of(far, b)[0])


def test_autoroute_takes_shortest_path_and_reroutes_around_a_down_link(netns_topology: Topology) -> None:
    t = netns_topology
    a, b = t.add("a"), t.add("b")
    r1, r2, r3, r4 = (t.add(f"r{i}", router=True) for i in range(1, 5))
    t.link(a, r1)  # 10.0.0.0/24
    short = t.link(r1, r2)  # 10.0.1.0/24
    t.link(r2, b)  # 10.0.2.0/24
    t.link(r1, r3)
    t.link(r3, r4)
    long_end = t.link(r4, b)  # 10.0.5.0/24
    t.autoroute()
    assert first_packet(a, str(b.ip)) and first_packet(a, str(b.ip6))
    # b's far side is two hops away through r2, three through r3 and r4.
    assert "10.0.2.0/24 via 10.0.1.2" in routes(r1, socket.AF_INET)
    assert "10.0.4.0/23 via 10.0.3.2" in routes(r1, socket.AF_INET)  # 10.0.4.0/24 and 10.0.5.0/24 merged
    short.down()
    t.autoroute()  # converge around the failure, as a routing protocol would
    for address in addresses_of(long_end, b):
        assert first_packet(a, address)
    assert first_packet(b, str(a.ip6))
    short.up()
    t.autoroute()
    assert first_packet(a, str(b.ip)) and first_packet(b, str(a.ip))
    assert "10.0.2.0/24 via 10.0.1.2" in routes(r1, socket.AF_INET)


def test_autoroute_twice_and_after_growing_is_consistent(netns_topology: Topology) -> None:
    t = netns_topology
    a, r, b = t.add("a"), t.add("r", router=True), t.add("b")
    t.link(a, r)
    t.link(r, b)
    t.autoroute()
    before = routes(a, socket.AF_INET) | routes(a, socket.AF_INET6)
    t.autoroute()
    assert routes(a, socket.AF_INET) | routes(a, socket.AF_INET6) == before
    c = t.add("c")
    far = t.link(b, c)
    t.autoroute()  # b is a host: c's subnet is not reachable from a through it
    assert not first_packet(a, addresses_of(far, c)[0])
    r2 = t.add("r2", router=True)
    t.link(r, r2)
    behind_r2 = t.link(r2, c)
    t.autoroute()
    assert not first_packet(a, addresses_of(far, c)[0])  # still only hosts on that side
    assert all(first_packet(a, address) for address in addresses_of(behind_r2, c))
    assert first_packet(c, str(a.ip6))


# -- MTU, down and up ----------------------------------------------------------------


def test_link_mtu_is_enforced_and_can_change(netns_topology: Topology) -> None:
    a, b = netns_topology.add("a"), netns_topology.add("b")
    link = netns_topology.link(a, b, mtu=1400)
    assert link.mtu == 1400 and a.mtu("eth0") == b.mtu("eth0") == 1400
    dst = addresses_of(link, b)[0]
    with a:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
        sock.sendto(bytes(1400 - 28), (dst, 9))
        with pytest.raises(OSError) as caught:
            sock.sendto(bytes(1400 - 27), (dst, 9))
        assert caught.value.errno == errno.EMSGSIZE
        link.set_mtu(1500)
        assert link.mtu == 1500 and b.mtu("eth0") == 1500
        sock.sendto(bytes(1500 - 28), (dst, 9))


def test_link_down_stops_traffic_and_up_restores_it_with_its_routes(netns_topology: Topology) -> None:
    t = netns_topology
    a, r, b = t.add("a"), t.add("r", router=True), t.add("b")
    t.link(a, r)
    far = t.link(r, b)
    a.add_route("192.0.2.0/24", via=str(r.ip))  # a route the user added by hand survives too
    t.autoroute()
    before = {ns.name: routes(ns, socket.AF_INET) | routes(ns, socket.AF_INET6) for ns in (a, r, b)}
    assert first_packet(a, str(b.ip))
    far.down()
    assert not far.is_up
    assert not a.ping(str(b.ip), timeout=0.3) and not a.ping(str(b.ip6), timeout=0.3)
    assert not r.ping(addresses_of(far, b)[0], timeout=0.3)
    far.down()  # idempotent
    far.up()
    assert far.is_up
    assert first_packet(a, str(b.ip)) and first_packet(a, str(b.ip6)) and first_packet(b, str(a.ip6))
    assert {ns.name: routes(ns, socket.AF_INET) | routes(ns, socket.AF_INET6) for ns in (a, r, b)} == before


def test_segment_down_unplugs_members_who_keep_their_routes(netns_bridge) -> None:
    h1, h2, h3 = netns_bridge
    segment = netns_bridge.segment
    h1.add_route("198.51.100.0/24", via=str(h2.ip))
    segment.down()
    assert not segment.is_up
    assert not h1.ping(str(h2.ip), timeout=0.3)
    link = handle_of(h1).rtnl.link_by_name("eth0")
    assert link["flags"] & 1 and not link["carrier"]  # administratively up, no carrier: a pulled cable
    assert "198.51.100.0/24 via 10.0.0.2" in routes(h1, socket.AF_INET)
    segment.up()
    assert first_packet(h1, str(h2.ip)) and first_packet(h3, str(h1.ip6))
    segment.down(h2)  # one member only
    assert not h1.ping(str(h2.ip), timeout=0.3)
    assert first_packet(h1, str(h3.ip))
    segment.up(h2)
    assert first_packet(h1, str(h2.ip))


def test_segment_set_mtu_reaches_bridge_ports_and_members(netns_bridge) -> None:
    segment = netns_bridge.segment
    segment.set_mtu(9000)
    assert segment.mtu == 9000 and all(ns.mtu("eth0") == 9000 for ns in netns_bridge)
    assert all(segment.namespace.mtu(segment.port(ns)) == 9000 for ns in netns_bridge)
    with netns_bridge[0]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with netns_bridge[1]:
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock, server:
        server.bind((str(netns_bridge[1].ip), 9000))
        server.settimeout(1)
        sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
        sock.sendto(bytes(9000 - 28), (str(netns_bridge[1].ip), 9000))
        assert len(server.recv(65536)) == 9000 - 28


# -- NAT -------------------------------------------------------------------------


def _peer_seen_by_server(server: Namespace, client: Namespace, address: str, family: int) -> str:
    with server:
        listener = socket.create_server((address, 0), family=family)
    with client:
        conn = socket.socket(family, socket.SOCK_STREAM)
    with listener, conn:
        conn.settimeout(2)
        conn.connect(listener.getsockname()[:2])
        accepted, peer = listener.accept()
        with accepted:
            accepted.sendall(b"ok")
            assert conn.recv(2) == b"ok"  # the reply made it back through the NAT
        return peer[0]


def test_nat_fixture_server_sees_the_router(netns_nat) -> None:
    client, router, server = netns_nat
    assert str(client.ip) == "192.168.0.2" and str(server.ip) == "203.0.113.2"
    assert {str(a) for a in router.addresses() if a.version == 4} == {"127.0.0.1/8", "192.168.0.1/24", "203.0.113.1/24"}
    assert router.sysctl("net.ipv4.ip_forward") == "1"
    assert routes(server, socket.AF_INET) == set()  # no way back to 192.168.0.0/24 but NAT
    assert _peer_seen_by_server(server, client, "203.0.113.2", socket.AF_INET) == "203.0.113.1"
    assert not server.ping("192.168.0.2", timeout=0.3)


def test_nat_method_masquerades_both_families(netns_topology: Topology) -> None:
    t = netns_topology
    client, router, server = t.add("client"), t.add("router", router=True), t.add("server")
    t.link(router, client)
    outside = t.link(router, server)
    client.add_route("default", via=str(router.ip))
    client.add_route("default", via=str(router.ip6))
    t.nat(router, outside=outside)
    v4, v6 = addresses_of(outside, router)
    assert _peer_seen_by_server(server, client, str(server.ip), socket.AF_INET) == v4
    assert _peer_seen_by_server(server, client, str(server.ip6), socket.AF_INET6) == v6


# -- names ---------------------------------------------------------------------------

RESOLVE = textwrap.dedent(
    """
    import socket, sys
    for name in sys.argv[1:]:
        for family in (socket.AF_INET, socket.AF_INET6):
            print(name, socket.getaddrinfo(name, 80, family, socket.SOCK_STREAM)[0][4][0])
    """
)


def test_names_resolve_in_run_and_popen(netns_topology: Topology, tmp_path, monkeypatch) -> None:
    t = netns_topology
    a, r, b = t.add("a"), t.add("r", router=True), t.add("b")
    t.link(a, r)
    t.link(r, b)
    result = a.run([sys.executable, "-c", RESOLVE, "a", "r", "b"], check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:-1] == [
        "a 10.0.0.1", "a fd00::1", "r 10.0.0.2", "r fd00::2", "b 10.0.1.2", "b fd00:0:0:1::2"]
    late = t.add("late")
    t.link(b, late)  # names added later resolve too
    proc = b.popen([sys.executable, "-c", RESOLVE, "late"], stdout=subprocess.PIPE, text=True)
    assert proc.communicate(timeout=10)[0] == "late 10.0.2.2\nlate fd00:0:0:2::2\n"
    resolv = a.run(["cat", "/etc/resolv.conf"]).stdout
    assert not [line for line in resolv.splitlines() if line.startswith("nameserver")]
    nsswitch = a.run(["sh", "-c", "grep '^hosts:' /etc/nsswitch.conf || true"]).stdout
    assert nsswitch.split()[:2] in ([], ["hosts:", "files"])
    monkeypatch.chdir(tmp_path)  # children start in the caller's working directory, as usual
    assert a.run(["pwd"]).stdout.strip() == str(tmp_path)
    assert a.run("cat /proc/self/mountinfo").stdout != _read("/proc/self/mountinfo")  # a mount namespace of its own


def test_hosts_files_are_written_when_the_first_process_starts_and_follow_changes_after(netns: Namespace) -> None:
    """Nothing on disk while no process needs the files; then the current names, then every change at once."""
    from pytest_netns._net.hosts import FileSet

    files = FileSet()
    first, second = HostsFile(files=files), HostsFile(resolv_conf="nameserver 10.96.0.10\n", files=files)
    try:
        first.update({"alpha": [ipaddress.ip_address("10.1.2.3")]})
        second.update({"beta": [ipaddress.ip_address("10.1.2.4")]})
        assert os.listdir(files.dir) == []
        assert "10.1.2.3\talpha" in first.text

        def cat(kwargs: dict) -> subprocess.Popen:
            with _kernel.entered(netns.fd):
                return subprocess.Popen(["cat", "/etc/hosts", "/etc/resolv.conf"], stdout=subprocess.PIPE, text=True,
                                        **kwargs)

        seen = first.spawn_via(cat, {}).communicate(timeout=10)[0]
        assert "10.1.2.3\talpha" in seen and "\nnameserver" not in seen
        assert len(os.listdir(files.dir)) == 3  # its hosts file, the shared resolv.conf and nsswitch.conf
        first.add("gamma", [ipaddress.ip_address("10.1.2.5")])  # a process started earlier sees it
        with open(first.hosts_path) as handle:
            assert handle.read() == first.text and "10.1.2.5\tgamma" in first.text
        seen = second.spawn_via(cat, {}).communicate(timeout=10)[0]
        assert "10.1.2.4\tbeta" in seen and "nameserver 10.96.0.10" in seen
    finally:
        first.close()
        second.close()
        files.close()
    assert not os.path.exists(files.dir)


def test_hosts_file_serves_names_without_touching_the_hosts_files(netns: Namespace) -> None:
    """The _hosts module on its own: a process started through it sees the private files."""
    before = {path: _read(path) for path in ("/etc/hosts", "/etc/resolv.conf", "/etc/nsswitch.conf")}
    hosts = HostsFile()
    try:
        hosts.update({"alpha": [ipaddress.ip_address("10.1.2.3"), ipaddress.ip_address("fd00::7")]})

        def start(kwargs: dict) -> subprocess.Popen:
            with _kernel.entered(netns.fd):
                return subprocess.Popen([sys.executable, "-c", RESOLVE, "alpha", "localhost"],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)

        proc = hosts.spawn_via(start, {})
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert out == "alpha 10.1.2.3\nalpha fd00::7\nlocalhost 127.0.0.1\nlocalhost ::1\n"
        hosts.update({"alpha": [ipaddress.ip_address("10.1.2.3")], "beta": [ipaddress.ip_address("10.1.2.4")]})

        def cat(kwargs: dict) -> subprocess.Popen:
            with _kernel.entered(netns.fd):
                return subprocess.Popen(["cat", "/etc/hosts", "/etc/resolv.conf", "/etc/nsswitch.conf"],
                                        stdout=subprocess.PIPE, text=True, **kwargs)

        seen = hosts.spawn_via(cat, {}).communicate(timeout=10)[0]
        assert "10.1.2.4\tbeta" in seen and "fd00::7" not in seen
        assert "\nnameserver" not in seen and "hosts: files" in seen
        # The test process itself (and the host) still see the original files.
        assert {path: _read(path) for path in before} == before
        assert hosts.hosts_path not in _read("/proc/self/mountinfo")
    finally:
        hosts.close()
    assert not os.path.exists(hosts.hosts_path)


def _read(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read()
    except FileNotFoundError:
        return None


# -- bad input ---------------------------------------------------------------------------


# "0x1" and "10.1" are host names by their letters, but getaddrinfo reads them as 0.0.0.1 and 10.0.0.1.
@pytest.mark.parametrize("name", ["", "a b", "-a", "1.2.3.4", "12", "0x1", "10.1", "x" * 64, "a/b", 5, None])
def test_add_rejects_names_that_are_not_host_names(netns_topology: Topology, name: object) -> None:
    with pytest.raises(ValueError, match="namespace name " + _quoted(name)):
        netns_topology.add(name)  # type: ignore[arg-type]
    assert len(netns_topology) == 0


def _quoted(value: object) -> str:
    import re

    return re.escape(repr(value))


def test_bad_input_raises_value_error_naming_the_value(netns_topology: Topology) -> None:
    t = netns_topology
    a, b, c = t.add("a"), t.add("b"), t.add("c")
    cases = [
        (lambda: t.add("a"), "'a' is already used"),
        (lambda: t.add("x", router="yes"), "'yes'"),
        (lambda: t.link(a, a), "'a' to itself"),
        (lambda: t.link(a, "nobody"), "'nobody'"),
        (lambda: t.link(a, 42), "42"),
        (lambda: t.link(a, b, subnet="10.0.0.300/24"), "'10.0.0.300/24'"),
        (lambda: t.link(a, b, subnet="10.0.0.1/24"), "'10.0.0.1/24'"),
        (lambda: t.link(a, b, subnet="fd00:1::/64"), "'fd00:1::/64'"),
        (lambda: t.link(a, b, subnet="10.9.0.0/32"), "10.9.0.0/32 has room for 1"),
        (lambda: t.segment([a, b, c], subnet="10.9.0.0/31"), "10.9.0.0/31 has room for 2 host addresses, 3 needed"),
        (lambda: t.link(a, b, mtu=10), "10"),
        (lambda: t.link(a, b, mtu="big"), "'big'"),
        (lambda: t.link(a, b, mtu=1000), "mtu 1000 is below 1280"),
        (lambda: t.segment([]), r"\[\]"),
        (lambda: t.segment("a"), "'a'"),
        (lambda: t.segment([a, b, a]), "'a' is given twice"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    assert t.links == [] and t.segments == [] and a.interfaces() == ["lo"]
    link = t.link(a, b)
    with pytest.raises(ValueError, match="'c' is not attached"):
        t.nat(c, outside=link)
    with pytest.raises(ValueError, match="outside must be a Link or Segment"):
        t.nat(a, outside="eth0")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mtu 900 is below 1280"):
        link.set_mtu(900)
    with pytest.raises(KeyError, match="'zed'"):
        t["zed"]
    with Topology(ipv6=False) as small:
        x, y = small.add("x"), small.add("y")
        assert small.link(x, y, mtu=576).mtu == 576  # without IPv6 any MTU from 68 works
        with pytest.raises(ValueError, match="67"):
            small.link(x, y, mtu=67)


def test_foreign_namespace_is_refused(netns_topology: Topology, netns: Namespace) -> None:
    a = netns_topology.add("a")
    with pytest.raises(ValueError, match="'netns' is not part of this topology"):
        netns_topology.link(a, netns)


# -- lifetime ----------------------------------------------------------------------------


def test_topology_context_manager_tears_everything_down() -> None:
    with Topology() as t:
        a, r = t.add("a"), t.add("r", router=True)
        segment = t.segment([a, r])
        proc = a.popen(["sleep", "60"])
        inodes = {ns.inode for ns in (a, r, segment.namespace)}
    assert t.closed and a.closed and r.closed and segment.namespace.closed
    assert proc.poll() is not None
    assert pids_in_netns(inodes, {os.getpid()}) == []
    fds = {os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd") if _readable(fd)}
    assert not {f"net:[{inode}]" for inode in inodes} & fds
    t.close()  # idempotent
    with pytest.raises(NetnsError, match="torn down"):
        t.add("again")
    with pytest.raises(NetnsError, match="torn down"):
        a.ping("127.0.0.1")
    assert "closed" in repr(t)


def _readable(fd: str) -> bool:
    try:
        os.readlink(f"/proc/self/fd/{fd}")
        return True
    except OSError:
        return False


def test_topology_works_in_a_script_without_pytest() -> None:
    script = textwrap.dedent(
        """
        import sys
        from pytest_netns.topology import Topology

        with Topology() as net:
            client, server = net.add("client"), net.add("server")
            r1, r2 = net.add("r1", router=True), net.add("r2", router=True)
            net.link(client, r1)
            net.link(r1, r2)
            net.link(r2, server)
            net.autoroute()
            ok = client.ping(str(server.ip)) and client.ping(str(server.ip6))
            print(ok, "pytest" in sys.modules)
            print(net.describe())
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    first, *description = result.stdout.splitlines()
    assert first == "True False"
    assert "r1 (router)" in description and "  eth0: 10.0.2.2/24 fd00:0:0:2::2/64  [link r2-server]" in description


def test_describe_and_repr(netns_topology: Topology) -> None:
    a, b = netns_topology.add("a"), netns_topology.add("b", router=True)
    link = netns_topology.link(a, b)
    assert repr(netns_topology) == "<Topology 2 namespaces, 1 links, 0 segments>"
    assert repr(link) == "<link a-b 10.0.0.0/24 fd00::/64>"
    assert netns_topology.describe().splitlines() == [
        "a", "  eth0: 10.0.0.1/24 fd00::1/64  [link a-b]",
        "b (router)", "  eth0: 10.0.0.2/24 fd00::2/64  [link a-b]",
        "link a-b: 10.0.0.0/24 fd00::/64 -- a:eth0, b:eth0",
    ]
    assert netns_topology.hosts() == {"a": [ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("fd00::1")],
                                      "b": [ipaddress.ip_address("10.0.0.2"), ipaddress.ip_address("fd00::2")]}


def test_kernel_errors_name_what_was_being_done(netns_topology: Topology) -> None:
    a, b = netns_topology.add("a"), netns_topology.add("b")
    link = netns_topology.link(a, b)
    handle = handle_of(a)
    handle.execute([_rtnl.del_link(handle.rtnl.link_by_name("eth0")["index"])])  # the veth is gone under our feet
    with pytest.raises(KernelError, match="a:eth0"):
        link.set_mtu(1400)


def test_segment_capture_sees_frames_between_members_once(netns_bridge) -> None:
    h1, h2, _ = netns_bridge
    with h2:
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with h1:
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with receiver, sender:
        receiver.bind((str(h2.ip), 5000))
        is_ours = lambda pkt: pkt.haslayer("UDP") and pkt["UDP"].dport == 5000  # noqa: E731
        with netns_bridge.segment.capture(lfilter=is_ours) as capture:
            sender.sendto(b"across the bridge", (str(h2.ip), 5000))
            [frame] = capture.wait(1)
            receiver.settimeout(1)
            assert receiver.recv(100) == b"across the bridge"
        assert frame["IP"].src == str(h1.ip) and frame["IP"].dst == str(h2.ip)
        assert len(capture.packets) == 1  # the bridge device sees each frame once
