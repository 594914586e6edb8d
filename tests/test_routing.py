"""``topology.routing``: shortest-path static routes from plain data (no kernel, no root)."""

from __future__ import annotations

import ipaddress
import itertools

from pytest_netns.topology.routing import Network, Route, collapse, route_table

net = ipaddress.ip_network
ip = ipaddress.ip_address


def link(number: int, a: str, b: str, *, ipv6: bool = False, up: bool = True) -> Network:
    """A link on 10.0.<number>.0/24 (and fd00:0:0:<number>::/64): a is .1/::1, b is .2/::2."""
    subnets = [net(f"10.0.{number}.0/24")]
    hops_a, hops_b = [ip(f"10.0.{number}.1")], [ip(f"10.0.{number}.2")]
    if ipv6:
        subnets.append(net(f"fd00:0:0:{number:x}::/64"))
        hops_a.append(ip(f"fd00:0:0:{number:x}::1"))
        hops_b.append(ip(f"fd00:0:0:{number:x}::2"))
    return Network(subnets, [(a, hops_a), (b, hops_b)], up)


def routes(*pairs: tuple[str, str]) -> set[Route]:
    return {(net(prefix), ip(via)) for prefix, via in pairs}


def test_a_chain_of_routers_merges_what_lies_behind_each_next_hop() -> None:
    # h0 - r1 - r2 - r3 - h4 on 10.0.1.0/24 .. 10.0.4.0/24
    nodes = ["h0", "r1", "r2", "r3", "h4"]
    networks = [link(i + 1, a, b) for i, (a, b) in enumerate(itertools.pairwise(nodes))]
    table = route_table(networks, ["r1", "r2", "r3"])
    # Behind r1 (10.0.1.2): 10.0.2.0/24 .. 10.0.4.0/24, two blocks.
    assert table["h0"] == routes(("10.0.2.0/23", "10.0.1.2"), ("10.0.4.0/24", "10.0.1.2"))
    assert table["r2"] == routes(("10.0.1.0/24", "10.0.2.1"), ("10.0.4.0/24", "10.0.3.2"))
    assert table["h4"] == routes(("10.0.1.0/24", "10.0.4.1"), ("10.0.2.0/23", "10.0.4.1"))


def test_a_hundred_router_chain_needs_a_few_routes_per_router_not_two_hundred() -> None:
    nodes = [f"r{i}" for i in range(100)]
    networks = [link(i + 1, a, b) for i, (a, b) in enumerate(itertools.pairwise(nodes))]
    table = route_table(networks, nodes)
    # Each side of a router is one contiguous run of /24s: at most 2 * 7 aligned blocks for up to 128 of them.
    assert max(len(r) for r in table.values()) <= 28
    assert sum(len(r) for r in table.values()) < 100 * 12
    for name, rs in table.items():  # every subnet the router is not on is covered exactly once
        own = {n.subnets[0] for n in networks if any(m == name for m, _ in n.members)}
        covered = [a for prefix, _ in rs for a in prefix.subnets(new_prefix=24)]
        assert sorted(covered) == sorted(n.subnets[0] for n in networks if n.subnets[0] not in own)


def test_hosts_do_not_forward() -> None:
    # a - h - b: h is not a router, so a cannot reach b's other network, nor can b reach a's.
    networks = [link(1, "a", "h"), link(2, "h", "b")]
    table = route_table(networks, [])
    assert table == {"a": set(), "h": set(), "b": set()}
    # The same with h a router.
    table = route_table(networks, ["h"])
    assert table["a"] == routes(("10.0.2.0/24", "10.0.1.2"))
    assert table["b"] == routes(("10.0.1.0/24", "10.0.2.1"))
    assert table["h"] == set()  # attached to both


def test_a_diamond_takes_the_shortest_path_and_ties_go_to_the_network_listed_first() -> None:
    #      r1
    #    /    \
    #  a        r2 - b
    #    \    /
    #      r3 - r4 (a longer way round: r3 - r4 - b)
    networks = [
        link(1, "a", "r1"),
        link(2, "a", "r3"),
        link(3, "r1", "r2"),
        link(4, "r3", "r2"),
        link(5, "r2", "b"),
        link(6, "r3", "r4"),
        link(7, "r4", "b"),
    ]
    table = route_table(networks, ["r1", "r2", "r3", "r4"])
    via_r1, via_r3 = ip("10.0.1.2"), ip("10.0.2.2")
    by_prefix = {prefix: via for prefix, via in table["a"]}
    # 10.0.3.0/24 and 10.0.5.0/24: two hops either way, the tie goes to link 1 (r1).
    assert by_prefix[net("10.0.3.0/24")] == via_r1
    assert by_prefix[net("10.0.5.0/24")] == via_r1
    # 10.0.4.0/24, 10.0.6.0/24 and 10.0.7.0/24 are one router away through r3.
    assert by_prefix[net("10.0.4.0/24")] == via_r3
    assert by_prefix[net("10.0.6.0/23")] == via_r3
    assert set(by_prefix.values()) == {via_r1, via_r3}


def test_a_network_that_is_down_is_avoided() -> None:
    # a - r1 -x- b (down), and the long way a - r2 - r3 - b.
    networks = [
        link(1, "a", "r1"),
        link(2, "r1", "b", up=False),
        link(3, "a", "r2"),
        link(4, "r2", "r3"),
        link(5, "r3", "b"),
    ]
    table = route_table(networks, ["r1", "r2", "r3"])
    # 10.0.4.0/24 and 10.0.5.0/24 through r2; the down link's subnet is reached through nothing.
    assert table["a"] == routes(("10.0.4.0/23", "10.0.3.2"))
    # From b, r1 is behind the down link or behind a, which does not forward: 10.0.1.0/24 is unreachable.
    assert table["b"] == routes(("10.0.3.0/24", "10.0.5.1"), ("10.0.4.0/24", "10.0.5.1"))
    # Up again, the short way wins.
    networks[1] = link(2, "r1", "b")
    table = route_table(networks, ["r1", "r2", "r3"])
    assert (net("10.0.2.0/24"), ip("10.0.1.2")) in table["a"]
    assert (net("10.0.1.0/24"), ip("10.0.2.1")) in table["b"]


def test_unreachable_parts_get_no_routes() -> None:
    # Two islands: a - r1 - b and c - r2 - d.
    networks = [link(1, "a", "r1"), link(2, "r1", "b"), link(3, "c", "r2"), link(4, "r2", "d")]
    table = route_table(networks, ["r1", "r2"])
    assert table["a"] == routes(("10.0.2.0/24", "10.0.1.2"))
    assert table["b"] == routes(("10.0.1.0/24", "10.0.2.1"))
    assert table["c"] == routes(("10.0.4.0/24", "10.0.3.2"))
    assert table["d"] == routes(("10.0.3.0/24", "10.0.4.1"))
    assert table["r1"] == table["r2"] == set()


def test_ipv6_gets_its_own_routes_via_ipv6_next_hops() -> None:
    networks = [link(1, "a", "r", ipv6=True), link(2, "r", "b", ipv6=True)]
    table = route_table(networks, ["r"])
    assert table["a"] == routes(("10.0.2.0/24", "10.0.1.2"), ("fd00:0:0:2::/64", "fd00:0:0:1::2"))
    assert table["b"] == routes(("10.0.1.0/24", "10.0.2.1"), ("fd00:0:0:1::/64", "fd00:0:0:2::1"))


def test_a_segment_is_one_hop_to_each_member() -> None:
    segment = Network(
        [net("10.0.9.0/24")],
        [("a", [ip("10.0.9.1")]), ("r", [ip("10.0.9.2")]), ("b", [ip("10.0.9.3")])],
    )
    table = route_table([segment, link(1, "r", "c")], ["r"])
    assert table["a"] == routes(("10.0.1.0/24", "10.0.9.2"))
    assert table["b"] == routes(("10.0.1.0/24", "10.0.9.2"))
    assert table["c"] == routes(("10.0.9.0/24", "10.0.1.1"))


def test_a_subnet_overlapping_an_attached_one_gets_no_route() -> None:
    # b's far side reuses 10.0.1.0/25, inside a's own 10.0.1.0/24: a's connected route wins.
    far = Network([net("10.0.1.0/25")], [("b", [ip("10.0.1.1")]), ("c", [ip("10.0.1.2")])])
    table = route_table([link(1, "a", "b"), far, link(3, "b", "d")], ["b"])
    assert table["a"] == routes(("10.0.3.0/24", "10.0.1.2"))


def test_no_networks_no_routes() -> None:
    assert route_table([], ["r"]) == {}


def test_collapse_covers_exactly_the_union() -> None:
    assert collapse([(0, 256), (256, 512), (768, 1024)], 32) == [(0, 23), (768, 24)]
    assert collapse([(10, 11)], 32) == [(10, 32)]
    assert collapse([(0, 1 << 32)], 32) == [(0, 0)]
    assert collapse([(0, 256), (0, 128)], 32) == [(0, 24)]
    assert collapse([], 32) == []
