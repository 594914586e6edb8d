"""Addresses are ``ipaddress`` objects, and every API that takes one takes a string too (issue 16, item 3).

``ns.ip`` stays an ``IPv4Address`` (typed, comparable); the socket module wants a string, so the README's first
example passes ``str(b.ip)``.  What the plugin takes, it takes in both forms, at run time and in its types.
"""

from __future__ import annotations

import ipaddress
import socket
import typing
from collections.abc import Callable
from typing import Any

import pytest

from pytest_netns import Namespace, NamespacePair, Topology, presets
from pytest_netns._kernel import rtnl as _rtnl
from pytest_netns._kernel.handle import handle_of
from pytest_netns.cluster import Cluster
from pytest_netns.presets.simple import NetworkSettings

IPv4Address, IPv6Address = ipaddress.IPv4Address, ipaddress.IPv6Address
IPv4Network, IPv4Interface = ipaddress.IPv4Network, ipaddress.IPv4Interface


def test_ip_is_an_ipaddress_object_and_sockets_take_its_string(netns_pair: NamespacePair) -> None:
    a, b = netns_pair
    assert isinstance(b.ip, IPv4Address) and isinstance(b.ip6, IPv6Address)
    assert b.ip == IPv4Address("10.0.0.2") and a.ip < b.ip
    with b:
        server = socket.create_server(("0.0.0.0", 8080))
    with server:
        with a, pytest.raises(TypeError):
            socket.create_connection((b.ip, 8080))  # type: ignore[arg-type]  # what the README warns about
        with a:
            client = socket.create_connection((str(b.ip), 8080), timeout=5)
        client.close()


def test_namespace_methods_take_ipaddress_objects(netns_pair: NamespacePair) -> None:
    a, b = netns_pair
    b4, b6 = b.ip, b.ip6  # read before adding addresses: ip6 is the first global one the kernel lists
    assert b4 is not None and b6 is not None
    assert a.ping(b4) and a.ping(b6) and a.ping(ipaddress.ip_interface("10.0.0.2/24").ip)

    b.add_address("eth0", IPv4Interface("10.0.0.9/24"))
    b.add_address("eth0", ipaddress.IPv6Interface("fd00::9/64"))
    b.add_address("lo", IPv4Address("192.0.2.1"))  # a bare address: /32
    b.add_address("eth0", IPv6Address("2001:db8::1"))  # and /128
    assert {"10.0.0.9/24", "fd00::9/64", "192.0.2.1/32", "2001:db8::1/128"} <= set(map(str, b.addresses()))
    assert a.ping(IPv4Address("10.0.0.9")) and a.ping(IPv6Address("fd00::9"))

    a.add_route(IPv4Network("192.0.2.0/24"), via=b4)  # network, and an address as the next hop
    a.add_route(IPv6Address("2001:db8::1"), via=b6)  # an address as the destination: a host route
    assert a.ping(IPv4Address("192.0.2.1")) and a.ping("2001:db8::1")
    a.add_route(IPv4Address("198.51.100.7"), dev="eth0")
    a.add_route("default", via=IPv6Address("fd00::2"))

    with b:
        server = socket.create_server(("::", 8081), family=socket.AF_INET6, dualstack_ipv6=True)
    with server:
        a.wait_for_port(b4, 8081, timeout=5)
        a.wait_for_port(b6, 8081, timeout=5)
        # An interface is also an address (IPv4Interface subclasses IPv4Address), but str() keeps its prefix:
        # a connect to "10.0.0.2/24" failed until the timeout.
        a.wait_for_port(link_address(netns_pair, b, 4), 8081, timeout=2)
        a.wait_for_port(link_address(netns_pair, b, 6), 8081, timeout=2)
    assert a.ping(link_address(netns_pair, b, 6))


def test_an_ipv6_address_is_usable_when_add_address_or_up_returns(netns_pair: NamespacePair) -> None:
    """Even with NODAD the kernel finishes an IPv6 address from its addrconf work queue: until then a packet
    to it is forwarded (dropped here) and a neighbour solicitation for it is lost (the sender retries after 1 s).

    Without the wait this test failed in 10 of 14 runs on a loaded machine (at ``up`` in most: the kernel
    redoes every kept address ~3 ms after the link comes up; a single new address is finished late less often).
    """
    a, b = netns_pair
    rtnl = handle_of(b).rtnl
    index = rtnl.link_by_name("eth0")["index"]

    def unusable(addresses: list[IPv6Address]) -> list[IPv6Address]:
        groups = rtnl.multicast_groups(index, "reading eth0's groups")  # first: the join comes first
        return [
            x
            for x in addresses
            if _rtnl.solicited_node_group(x) not in groups or not rtnl.is_local(x, index, "routing")
        ]

    added = [IPv6Address(f"fd00::1:{i:x}") for i in range(1, 101)]
    for address in added:
        b.add_address("eth0", address)
        assert unusable([address]) == []
    assert a.ping(added[-1])
    for _ in range(5):
        b.down("eth0")
        b.up("eth0")
        assert unusable(added) == []
    assert a.ping(added[0])


def link_address(pair: NamespacePair, ns: Namespace, version: int) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    """``ns``'s address of that family on the pair's link, as the link reports it (an interface object)."""
    return next(x for x in pair.link.addresses[ns] if x.version == version)


def test_bad_objects_are_still_refused_naming_them(netns_pair: NamespacePair) -> None:
    a, _ = netns_pair
    with pytest.raises(ValueError, match=r"10\.0\.1\.5/24 has host bits set"):
        a.add_route(IPv4Interface("10.0.1.5/24"), dev="eth0")
    with pytest.raises(ValueError, match="address families differ"):
        a.add_route(IPv4Network("192.0.2.0/24"), via=IPv6Address("fd00::2"))
    with pytest.raises(ValueError, match="is not a valid IPv4 or IPv6 address"):
        a.ping(12.5)  # type: ignore[arg-type]


def test_topology_links_and_segments_take_network_objects() -> None:
    with Topology() as net:
        a, b, c = net.add("a"), net.add("b"), net.add("c")
        link = net.link(a, b, subnet=IPv4Network("198.51.100.0/30"))
        segment = net.segment([a, b, c], subnet=IPv4Network("203.0.113.0/29"))
        assert link.subnet == IPv4Network("198.51.100.0/30") and b.ping(IPv4Address("198.51.100.1"))
        assert str(segment.addresses[c][0]) == "203.0.113.3/29"


def test_presets_and_network_settings_take_network_objects() -> None:
    assert NetworkSettings.checked(subnet=IPv4Network("10.7.0.0/24")).subnet == IPv4Network("10.7.0.0/24")
    with (
        presets.pair(subnet=IPv4Network("10.7.0.0/30")) as (a, b),
        presets.bridge(size=2, subnet=IPv4Network("10.8.0.0/29")) as members,
    ):
        assert (a.ip, b.ip) == (IPv4Address("10.7.0.1"), IPv4Address("10.7.0.2"))
        assert [m.ip for m in members] == [IPv4Address("10.8.0.1"), IPv4Address("10.8.0.2")]


def test_the_marker_takes_a_network_object(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import ipaddress
        import pytest

        @pytest.mark.netns(subnet=ipaddress.IPv4Network("192.168.7.0/24"))
        def test_x(netns_pair):
            a, b = netns_pair
            assert str(b.ip) == "192.168.7.2" and a.ping(b.ip)
        """
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_cluster_service_takes_an_address_object() -> None:
    with Cluster() as cluster:
        node = cluster.node("node1")
        pod = cluster.pod("web", node=node)
        service = cluster.service("web", port=80, pods=[pod], cluster_ip=IPv4Address("10.96.0.50"))
        assert service.ip == IPv4Address("10.96.0.50")


#: (callable, parameter, a type its annotation must include): what a type checker lets users pass.
TAKES = [
    (Namespace.ping, "dst", IPv4Address),
    (Namespace.ping, "dst", IPv6Address),
    (Namespace.add_address, "address", IPv4Interface),
    (Namespace.add_address, "address", IPv4Address),
    (Namespace.add_route, "dst", IPv4Network),
    (Namespace.add_route, "dst", IPv6Address),
    (Namespace.add_route, "via", IPv4Address),
    (Namespace.wait_for_port, "host", IPv4Address),
    (Namespace.wait_for_port, "host", IPv6Address),
    (Topology.link, "subnet", IPv4Network),
    (Topology.segment, "subnet", IPv4Network),
    (presets.pair, "subnet", IPv4Network),
    (presets.bridge, "subnet", IPv4Network),
    (Cluster.service, "cluster_ip", IPv4Address),
]


@pytest.mark.parametrize(("function", "parameter", "kind"), TAKES, ids=lambda x: getattr(x, "__qualname__", x))
def test_address_parameters_are_typed_to_take_both(function: Callable[..., Any], parameter: str, kind: type) -> None:
    hint = typing.get_type_hints(function)[parameter]
    assert {kind, str} <= set(typing.get_args(hint)), f"{function.__qualname__}({parameter}: {hint})"
