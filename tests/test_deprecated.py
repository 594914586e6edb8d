"""Deprecated spellings (docs/architecture.md, "Names") still work, and each warns naming the new spelling.

One test per alias; everywhere else the project's tests use the new names (pyproject's filterwarnings turns
these warnings into errors, so a stray old spelling fails).
"""

from __future__ import annotations

import pytest

from pytest_netns import Namespace
from pytest_netns.topology import Segment, Topology


def test_link_down_is_down(netns_pair: tuple[Namespace, Namespace]) -> None:
    a, _ = netns_pair
    with pytest.deprecated_call(match=r"Namespace\.link_down\(iface\); use Namespace\.down\(iface\)") as record:
        a.link_down("eth0")
    assert record[0].filename == __file__  # the warning points at the caller
    assert not a.ping("10.0.0.2", timeout=0.2)
    a.up("eth0")
    assert a.ping("10.0.0.2")


def test_link_up_is_up(netns_pair: tuple[Namespace, Namespace]) -> None:
    a, _ = netns_pair
    a.down("eth0")
    with pytest.deprecated_call(match=r"Namespace\.link_up\(iface\); use Namespace\.up\(iface\)") as record:
        a.link_up("eth0", timeout=2.0)
    assert record[0].filename == __file__
    assert a.ping("10.0.0.2")
    with pytest.raises(ValueError, match="'bad/if'"), pytest.deprecated_call():
        a.link_up("bad/if")


def test_topology_bridge_is_segment(netns_topology: Topology) -> None:
    a, b = netns_topology.add("a"), netns_topology.add("b")
    with pytest.deprecated_call(match=r"Topology\.bridge\(members\); use Topology\.segment\(members\)") as record:
        segment = netns_topology.bridge([a, b], subnet="10.7.0.0/24", mtu=1400)
    assert record[0].filename == __file__
    assert isinstance(segment, Segment) and netns_topology.segments == [segment]
    assert segment.mtu == 1400 and str(a.ip) == "10.7.0.1" and a.ping("10.7.0.2")


def test_the_project_turns_its_deprecation_warnings_into_errors(netns_pair: tuple[Namespace, Namespace]) -> None:
    """pyproject's filterwarnings: an old spelling left in a test of this project fails it."""
    a, _ = netns_pair
    with pytest.raises(DeprecationWarning, match=r"^pytest-netns deprecates Namespace\.link_down"):
        a.link_down("eth0")
