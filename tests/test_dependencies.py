"""Faults of dependency versions that pyproject.toml's lower bounds exclude.

``tox -e oldest`` runs these (and the rest of the suite) with every dependency
at its declared lower bound, so lowering a bound past a version that has the
fault fails there.
"""

from __future__ import annotations

import pytest


def test_first_use_of_pyroute2_inside_a_namespace_leaves_nothing_in_it(pytester: pytest.Pytester) -> None:
    """pyroute2 0.9.1 and 0.9.2 open a TCP socket for each of 8 functions when imported (``LocalMock``).

    The plugin imports pyroute2 lazily, on the thread that first needs it. When
    that thread was inside a namespace (``with a: b.addresses()``) those sockets
    were made there and held the namespace after teardown: a leak warning that
    blamed the user's code.  Hence ``pyroute2>=0.9.3``.
    """
    pytester.makepyfile(
        """
        import sys

        def test_first_dump_from_inside_a_namespace(netns_pair):
            assert "pyroute2" not in sys.modules, "pyroute2 was imported before the test: it proves nothing"
            a, b = netns_pair
            with a:
                assert b.addresses()
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error::pytest_netns.NetnsLeakWarning")
    result.assert_outcomes(passed=1)
