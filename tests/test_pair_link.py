"""``netns_pair.link`` and ``netns_bridge.segment`` (issue 16, item 2): the pair's veth is a ``Link``, as a topology's.

Before, ``impair``, ``down``/``up`` and MTU changes needed a ``Link``, and a user rebuilt the pair with
``netns_topology`` to get one.
"""

from __future__ import annotations

import ipaddress

import pytest

from pytest_netns import BridgeMembers, Link, NamespacePair, NetnsError, Segment, presets


def reaches(src, dst, timeout: float = 2.0) -> bool:
    """One ping, answered within ``timeout`` (after a loss the neighbour entry may need a second ARP, 1 s later)."""
    return bool(src.ping(str(dst.ip), timeout=timeout))


def cut(src, dst) -> bool:
    """No answer to a ping within 0.3 s."""
    return not reaches(src, dst, timeout=0.3)


def test_the_pair_is_still_a_named_tuple_of_two(netns_pair: NamespacePair) -> None:
    a, b = netns_pair
    assert isinstance(netns_pair, tuple) and len(netns_pair) == 2
    assert netns_pair[0] is netns_pair.a is a and netns_pair[1] is netns_pair.b is b
    assert netns_pair._fields == ("a", "b") and list(netns_pair) == [a, b]
    assert repr(netns_pair).startswith("NamespacePair(a=")


def test_netns_pair_has_the_link_a_topology_would_give(netns_pair: NamespacePair) -> None:
    a, b = netns_pair
    link = netns_pair.link
    assert type(link) is Link
    assert link.ends == ((a, "eth0"), (b, "eth0"))
    assert link.members == [a, b]
    assert link.interface(b) == link.interface("b") == "eth0"
    assert link.subnet == ipaddress.ip_network("10.0.0.0/24") and link.subnet6 == ipaddress.ip_network("fd00::/64")
    assert link.addresses[a] == [ipaddress.ip_interface("10.0.0.1/24"), ipaddress.ip_interface("fd00::1/64")]
    assert link.is_up and link.mtu == 1500 and not link.offloads
    with pytest.raises(ValueError, match="'c' is not an end of this link"):
        link.interface("c")


def test_impair_through_the_pair_link_drops_and_is_reverted(netns_pair: NamespacePair) -> None:
    a, b = netns_pair
    assert reaches(a, b)
    with netns_pair.link.impair(loss=1.0):
        assert cut(a, b) and cut(b, a)
    assert reaches(a, b) and reaches(b, a)


def test_down_and_up_through_the_pair_link(netns_pair: NamespacePair) -> None:
    a, b = netns_pair
    a.add_route("192.0.2.0/24", via="10.0.0.2")
    netns_pair.link.down()
    assert not netns_pair.link.is_up and cut(a, b)
    netns_pair.link.up()
    assert netns_pair.link.is_up and reaches(a, b) and a.ping("fd00::2", timeout=2.0)
    assert _has_route(a, "192.0.2.0")  # the static route the kernel dropped with the link is back


def _has_route(ns, dst: str) -> bool:
    packed = ipaddress.ip_address(dst).packed[::-1].hex().upper()  # /proc/net/route: little-endian hex
    return any(line.split()[1] == packed for line in ns.run(["cat", "/proc/net/route"]).stdout.splitlines()[1:])


def test_set_mtu_through_the_pair_link(netns_pair: NamespacePair) -> None:
    a, b = netns_pair
    netns_pair.link.set_mtu(1400)
    assert netns_pair.link.mtu == a.mtu("eth0") == b.mtu("eth0") == 1400
    with pytest.raises(ValueError, match="mtu 1000 is below 1280, the minimum for IPv6"):
        netns_pair.link.set_mtu(1000)
    assert a.mtu("eth0") == 1400


@pytest.mark.netns(ipv6=False, mtu=1280)
def test_without_ipv6_the_pair_link_takes_small_mtus(netns_pair: NamespacePair) -> None:
    netns_pair.link.set_mtu(576)
    assert netns_pair.a.mtu("eth0") == 576 and reaches(*netns_pair)
    assert netns_pair.link.subnet6 is None


def test_netns_bridge_has_a_real_segment(netns_bridge: BridgeMembers) -> None:
    h1, h2, h3 = netns_bridge
    segment = netns_bridge.segment
    assert type(segment) is Segment and segment.members == [h1, h2, h3]
    with segment.impair(loss=1.0):
        assert cut(h1, h2)
    assert reaches(h1, h2)
    segment.down(h3)
    assert cut(h1, h3) and reaches(h1, h2)
    segment.up(h3)
    assert reaches(h1, h3)
    segment.set_mtu(1400)
    assert h2.mtu("eth0") == segment.mtu == 1400


def test_presets_give_the_link_and_the_segment_too() -> None:
    with presets.pair() as pair, presets.bridge(size=2) as members:
        assert type(pair.link) is Link and type(members.segment) is Segment
        with pair.link.impair(loss=1.0):
            assert cut(*pair)
        assert reaches(*pair)
    with pytest.raises(NetnsError, match="already torn down"):
        pair.link.down()
