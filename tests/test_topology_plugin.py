"""Topology fixtures as a downstream suite sees them, run in inner pytest sessions (subprocesses)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs", *args)


def test_bridge_fixture_default_and_marker_sizes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        def test_default(netns_bridge):
            assert len(netns_bridge) == 3
            assert [str(ns.ip) for ns in netns_bridge] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
            assert netns_bridge[0].ping("fd00::3")

        @pytest.mark.netns(size=5)
        def test_size(netns_bridge):
            assert len(netns_bridge) == 5 and netns_bridge.segment.members == list(netns_bridge)
            assert netns_bridge[4].ping("10.0.0.1")

        @pytest.mark.netns(size=2, mtu=9000, subnet="172.16.4.0/30", ipv6=False)
        def test_everything(netns_bridge):
            a, b = netns_bridge
            assert a.mtu("eth0") == 9000 and str(b.ip) == "172.16.4.2" and b.ip6 is None
            assert a.ping("172.16.4.2")

        @pytest.mark.netns(size=1)
        def test_one(netns_bridge):
            assert [str(ns.ip) for ns in netns_bridge] == ["10.0.0.1"]
        """
    )
    run(pytester).assert_outcomes(passed=4)


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ("size=0", "*UsageError*size must be a positive integer, got 0*"),
        ("size='3'", "*UsageError*size must be a positive integer, got '3'*"),
        ("size=5, subnet='10.0.0.0/30'", "*UsageError*10.0.0.0/30 has room for 2 host addresses, 5 needed*"),
        ("mtu=1000", "*UsageError*mtu=1000 is below 1280*"),
    ],
)
def test_bad_bridge_marker_is_a_usage_error_naming_it(pytester: pytest.Pytester, marker: str, message: str) -> None:
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.netns({marker})
        def test_x(netns_bridge):
            pass
        """
    )
    result = run(pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([message])


def test_nat_and_topology_fixtures_in_a_downstream_suite(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import socket
        import pytest_netns
        from pytest_netns.topology import Topology

        def test_nat(netns_nat):
            client, router, server = netns_nat
            assert netns_nat.client is client and router.name == "router"
            with server:
                listener = socket.create_server(("203.0.113.2", 8080))
            with client:
                conn = socket.create_connection(("203.0.113.2", 8080), timeout=2)
            with listener, conn:
                accepted, peer = listener.accept()
                accepted.close()
            assert peer[0] == "203.0.113.1"

        def test_topology(netns_topology):
            assert isinstance(netns_topology, Topology)
            a, r, b = netns_topology.add("a"), netns_topology.add("r", router=True), netns_topology.add("b")
            netns_topology.link(a, r)
            netns_topology.link(r, b)
            netns_topology.autoroute()
            assert a.ping(str(b.ip)) and b.ping(str(a.ip6))
        """
    )
    run(pytester).assert_outcomes(passed=2)


def test_fixtures_record_their_namespaces_for_the_test(pytester: pytest.Pytester) -> None:
    """Every namespace (the bridge's too) goes through pytest_netns_namespace_created."""
    pytester.makeconftest(
        """
        SEEN = []

        def pytest_netns_namespace_created(item, namespace):
            SEEN.append((item.name, namespace.name))
        """
    )
    pytester.makepyfile(
        """
        from conftest import SEEN

        def test_bridge(netns_bridge):
            assert SEEN == [("test_bridge", n) for n in ("h1", "h2", "h3", "bridge1")]

        def test_nat(netns_nat):
            assert [n for t, n in SEEN if t == "test_nat"] == ["client", "router", "server"]

        def test_topology(netns_topology):
            netns_topology.add("x")
            netns_topology.segment([netns_topology.add("y")])
            assert [n for t, n in SEEN if t == "test_topology"] == ["x", "y", "bridge1"]
        """
    )
    run(pytester).assert_outcomes(passed=3)


def test_teardown_leaves_nothing_behind(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import os
        import pytest
        from pytest_netns._kernel.watchdog import pids_in_netns

        STATE = {}

        @pytest.mark.netns(size=4)
        def test_bridge(netns_bridge):
            STATE["bridge"] = [*netns_bridge, netns_bridge.segment.namespace]
            netns_bridge[0].popen(["sleep", "60"])
            netns_bridge.segment.impair(rate="1mbit", loss=0.1)  # left active on purpose

        def test_nat(netns_nat):
            STATE["nat"] = list(netns_nat)
            netns_nat.server.popen(["sleep", "60"])

        def test_topology(netns_topology):
            a, b = netns_topology.add("a"), netns_topology.add("b", router=True)
            netns_topology.link(a, b)
            a.run(["true"])
            STATE["topology"] = [a, b]
            STATE["hosts"] = netns_topology._hosts.hosts_path

        def test_all_gone():
            spaces = [ns for group in ("bridge", "nat", "topology") for ns in STATE[group]]
            assert len(spaces) == 10 and all(ns.closed for ns in spaces)
            inodes = {ns.inode for ns in spaces}
            assert pids_in_netns(inodes, {os.getpid()}) == []
            held = set()
            for fd in os.listdir("/proc/self/fd"):
                try:
                    held.add(os.readlink(f"/proc/self/fd/{fd}"))
                except OSError:
                    pass
            assert not {f"net:[{inode}]" for inode in inodes} & held
            assert not os.path.exists(STATE["hosts"])
        """
    )
    result = run(pytester, "-W", "error::pytest_netns.NetnsLeakWarning", "-p", "no:randomly")
    result.assert_outcomes(passed=4)


def test_missing_kernel_feature_skips_with_its_reason(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from pytest_netns import FeatureUnavailable

        @pytest.fixture
        def needs_something():
            raise FeatureUnavailable("the running kernel has no sch_example")

        def test_in_the_call():
            raise FeatureUnavailable("the running kernel has no sch_other")

        def test_in_a_fixture(needs_something):
            pass

        @pytest.mark.xfail(reason="expected")
        def test_xfail_is_untouched():
            raise AssertionError("plain failure")

        def test_other_errors_still_fail():
            raise RuntimeError("boom")
        """
    )
    result = run(pytester)
    result.assert_outcomes(skipped=2, xfailed=1, failed=1)
    result.stdout.fnmatch_lines_random([
        "SKIPPED [[]1[]] test_missing_kernel_*.py:8: the running kernel has no sch_other",
        "SKIPPED [[]1[]] test_missing_kernel_*.py:11: the running kernel has no sch_example",
    ])


def test_delay_without_netem_is_a_skip_naming_sch_netem(pytester: pytest.Pytester) -> None:
    from pytest_netns._net import impair as _impair

    if _impair.netem_unavailable_reason() is None:  # pragma: no cover - kernels with sch_netem
        pytest.skip("this kernel has sch_netem: delay works, nothing to skip")
    pytester.makepyfile(
        """
        def test_delay(netns_bridge):
            with netns_bridge.segment.impair(delay="40ms"):
                raise AssertionError("not reached: there is no netem")
        """
    )
    result = run(pytester)
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED*impair(delay='40ms')*sch_netem*"])


def test_fixtures_are_documented(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--fixtures")
    result.stdout.fnmatch_lines(["netns_bridge -- *", "*N namespaces (default 3) with ``eth0`` on one Linux bridge*"])
    result.stdout.fnmatch_lines(["netns_nat -- *", "*a client behind a router that masquerades*"])
    result.stdout.fnmatch_lines(["netns_topology -- *", "*An empty ``Topology`` to build on*"])
