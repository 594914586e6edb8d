"""Marker arguments that no fixture of the test reads (issue 16, item 7).

``@pytest.mark.netns(size=5)`` on a ``netns_pair`` test was silently ignored.  The rule (README, "The netns
marker"): the closest marker is checked against the fixtures the test requests; on the test itself, an argument
none of them reads is a UsageError naming the argument and the fixtures; a class or module marker configures tests
with different fixtures, each of which takes what its fixtures read.  Unknown arguments are errors anywhere.
"""

from __future__ import annotations

import pytest

#: Records every namespace a fixture makes: a usage error must come before any.
CONFTEST = """
import pytest

def pytest_netns_namespace_created(item, namespace):
    with open("created.txt", "a") as handle:
        handle.write(f"{item.nodeid} {namespace.name}\\n")

@pytest.fixture
def server(netns_pair):
    return netns_pair.b
"""


def run(pytester: pytest.Pytester, source: str) -> pytest.RunResult:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(source)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA")


def created(pytester: pytest.Pytester) -> str:
    path = pytester.path / "created.txt"
    return path.read_text() if path.exists() else ""


def test_an_argument_the_tests_fixtures_do_not_read_is_a_usage_error_naming_both(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        import pytest

        @pytest.mark.netns(size=5)
        def test_size_on_pair(netns_pair):
            pass

        @pytest.mark.netns(cni="bridge", mtu=1400)
        def test_cni_on_pair(netns_pair):
            pass

        @pytest.mark.netns(offloads=True)
        def test_offloads_on_cluster(netns_cluster):
            pass

        @pytest.mark.netns(mtu=1400)
        def test_mtu_on_topology(netns_topology):
            pass

        @pytest.mark.parametrize("x", [1, pytest.param(2, marks=pytest.mark.netns(size=2))])
        def test_param_marks(netns_pair, x):
            pass
        """,
    )
    result.assert_outcomes(passed=1, errors=5)
    result.stdout.fnmatch_lines(
        [
            "*UsageError: @pytest.mark.netns on *test_size_on_pair: size= (read by netns_bridge) does not apply to "
            "netns_pair (netns_pair takes mtu, subnet, ipv6, offloads)",
            "*UsageError: @pytest.mark.netns on *test_cni_on_pair: cni= (read by netns_cluster) does not apply to "
            "netns_pair*",
            "*UsageError: @pytest.mark.netns on *test_offloads_on_cluster: offloads= (read by netns_pair, "
            "netns_bridge) does not apply to netns_cluster (netns_cluster takes cni)",
            "*UsageError: @pytest.mark.netns on *test_mtu_on_topology: no fixture this test requests reads the "
            "marker, so mtu= (read by netns_pair, netns_bridge) would be ignored*",
            "*UsageError: @pytest.mark.netns on *test_param_marks?2?: size= (read by netns_bridge) does not apply*",
        ]
    )
    made = created(pytester).splitlines()  # the errors came before any namespace: only test_param_marks[1] made some
    assert len(made) == 2 and all("test_param_marks[1]" in line for line in made)


def test_fixtures_requested_indirectly_or_with_usefixtures_count(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        import pytest

        @pytest.mark.netns(mtu=1400, offloads=True)
        def test_through_another_fixture(server):
            assert server.mtu("eth0") == 1400

        @pytest.mark.usefixtures("netns_bridge")
        @pytest.mark.netns(size=2)
        def test_usefixtures(request):
            assert len(request.getfixturevalue("netns_bridge")) == 2

        @pytest.mark.netns(size=2, mtu=1400)
        def test_both(netns_pair, netns_bridge):
            assert len(netns_bridge) == 2 and netns_pair.a.mtu("eth0") == 1400
        """,
    )
    result.assert_outcomes(passed=3)


def test_a_class_or_module_marker_gives_each_test_what_its_fixtures_read(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        import pytest

        pytestmark = pytest.mark.netns(size=2, mtu=1400)

        def test_pair(netns_pair):
            assert netns_pair.a.mtu("eth0") == 1400

        def test_bridge(netns_bridge):
            assert len(netns_bridge) == 2 and netns_bridge[0].mtu("eth0") == 1400

        def test_plain(netns):
            pass

        @pytest.mark.netns(cni="ptp", size=0)
        class TestClass:
            def test_pair_ignores_size(self, netns_pair):
                assert netns_pair.a.mtu("eth0") == 1500  # the class marker replaces the module's

            def test_bridge_reads_it(self, netns_bridge):
                pass

        @pytest.mark.netns(sizes=2)
        class TestUnknown:
            def test_x(self, netns):
                pass
        """,
    )
    result.assert_outcomes(passed=4, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*UsageError: @pytest.mark.netns on *test_bridge_reads_it: size must be a positive integer, got 0",
            "*UsageError: @pytest.mark.netns on *TestUnknown::test_x: unknown argument 'sizes'*",
        ]
    )


def test_offloads_takes_a_bool(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        import pytest

        @pytest.mark.netns(offloads="no")
        def test_x(netns_pair):
            pass
        """,
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*UsageError: @pytest.mark.netns on *test_x: offloads must be True or False, got 'no'"]
    )
    assert created(pytester) == ""
