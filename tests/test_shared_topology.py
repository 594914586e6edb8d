"""A module- or session-scoped topology behaves as a per-test one (issue 16, item 6).

What a test changes through the topology's ``Link`` and ``Segment`` objects
(impairments, down/up, MTU) is put back after it, partitions are healed,
changes made around those objects are warned about, and a failing test that
used the shared topology gets its pcap files, ladder and topology dump.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

#: The README's way: Topology() as a context manager in a module fixture.
SHARED = """
import pytest
from pytest_netns import Topology, partition

@pytest.fixture(scope="module")
def net():
    with Topology() as t:
        a, b, c = t.add("a"), t.add("b"), t.add("c")
        t.link(a, b)
        t.segment([a, b, c])
        yield t

def wire(net):
    return net.links[0]

def lan(net):
    return net.segments[0]
"""

CHANGES_REVERTED = SHARED + """
def test_1_changes_everything(net):
    wire(net).impair(rate="1mbit", loss=0.5)
    wire(net).down()
    wire(net).set_mtu(1400)
    lan(net).impair(loss=0.3)
    lan(net).down(net["c"])
    lan(net).set_mtu(1300)
    partition([net["a"]], [net["b"], net["c"]])
    assert not net["a"].ping(str(net["b"].ip), timeout=0.2)

def test_2_sees_it_clean(net):
    assert wire(net).is_up and wire(net).impairments == [] and wire(net).mtu == 1500
    assert lan(net).impairments == [] and lan(net).mtu == 1500
    a, b, c = net["a"], net["b"], net["c"]
    assert a.mtu("eth0") == b.mtu("eth0") == 1500
    assert c.mtu("eth0") == 1500 and lan(net).namespace.mtu(lan(net).port(c)) == 1500
    for ns in (b, c):
        for address in lan(net).addresses[ns]:
            assert a.ping(str(address.ip), timeout=2), address
    for address in wire(net).addresses[b]:
        assert a.ping(str(address.ip), timeout=2), address
    rows = a.run(["ip", "-o", "route"]).stdout
    assert str(wire(net).subnet) in rows and str(lan(net).subnet) in rows

def test_3_what_the_fixture_set_stays(net):
    assert wire(net).impairments == []
"""


def test_what_a_test_changes_through_the_topology_is_put_back(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(CHANGES_REVERTED)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--netns-pcap=never", "-W", "error")
    result.assert_outcomes(passed=3)


FIXTURE_STATE_KEPT = SHARED + """
@pytest.fixture(scope="module")
def slow(net):
    with wire(net).impair(rate="2mbit") as impairment:
        yield impairment

def test_1_adds_and_reverts(net, slow):
    assert wire(net).impairments == [slow]
    wire(net).impair(rate="1mbit")
    lan(net).down()

def test_2_sees_the_fixture_state(net, slow):
    assert wire(net).impairments == [slow] and slow.active
    assert lan(net).is_up
"""


def test_what_a_module_fixture_set_up_stays_for_every_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(FIXTURE_STATE_KEPT)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--netns-pcap=never", "-W", "error")
    result.assert_outcomes(passed=2)


AROUND_THE_OBJECTS = SHARED + """
def test_1_downs_an_interface_directly(net):
    net["c"].down("eth0")

def test_2(net):
    pass
"""


def test_a_change_made_around_the_objects_is_left_in_place_with_a_warning(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(AROUND_THE_OBJECTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--netns-pcap=never", "-rw")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "*test_1_downs_an_interface_directly*",
        "*PytestWarning: test_1_downs_an_interface_directly left c:eth0 down (it was up) on a topology that "
        "outlives the test*",
    ])
    assert result.stdout.str().count("left c:eth0 down") == 1


FAILING = SHARED + """
def test_1_passes(net):
    assert net["a"].ping(str(net["b"].ip))

def test_2_fails(net):
    assert net["a"].ping(str(net["b"].ip))
    assert False, "look at the packets"
"""


def test_a_failing_test_gets_the_artefacts_of_the_shared_topology(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makepyfile(FAILING)
    artifacts = tmp_path / "artifacts"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--netns-artifacts-dir={artifacts}")
    result.assert_outcomes(passed=1, failed=1)
    (directory,) = artifacts.iterdir()
    assert directory.name.endswith("test_2_fails")
    files = sorted(p.name for p in directory.iterdir())
    assert {"a-eth0.pcap", "b-eth0.pcap", "packets.txt", "topology.txt"} <= set(files), files
    # The "where" column is as wide as the widest path: IPv6 reports the topology's
    # interfaces send after coming up (MLD, on the segment) can fall in this test's
    # window, with longer paths ("c:eth1 -> bridge1:c, bridge1:br0").
    result.stdout.re_match_lines([
        r".*- netns: pcap files -",
        r".*- netns: \d+ packets -",
        r"\s+[-+]\d+\.\d+  a:eth0 -> b:eth0 +IP / ICMP .* echo-request",
        r"\s+[-+]\d+\.\d+  b:eth0 -> a:eth0 +IP / ICMP .* echo-reply",
        r".*- netns: topology -",
        r"a \(net:",
    ])
    # Only this test's packets: the passing test's ping is not in the ladder.
    assert result.stdout.str().count("echo-request") == 1


def test_the_plugins_own_fixtures_pay_nothing_for_it(pytester: pytest.Pytester) -> None:
    """netns_pair's link is torn down with the test: nothing is read from the kernel for it."""
    pytester.makepyfile(
        """
        from pytest_netns._plugin import shared

        def test_pair(netns_pair, request):
            netns_pair.link.impair(loss=0.5)
            assert request.node.stash.get(shared.SHARED, None) is None
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
