"""Load: 1,000 tests using ``netns_pair`` and ``netns_bridge`` pass under xdist, run after run.

Each test pings across its network (IPv4 and IPv6, so a lost first packet
would show as a 1 s stall and, with ping's timeout, a failure); after each
run nothing of it is left (the fault suite's ``/proc`` scan, over the
2,500 namespaces the run made).

Cost, measured on the project's 2-core machine: one run of 1,000 tests
takes about 27 s under ``-n 2`` and 31 s under ``-n 8``.  Hence:

- ``test_thousand_tests_under_two_workers`` (one run, ``-n 2``) runs by
  default, also in CI: ~30 s;
- ``test_thousand_tests_three_runs_in_a_row`` (``-n 2`` and ``-n 8``, three
  runs each: ~3 min) is marked ``load``; CI runs it too (the whole suite
  stays far below its 90 min budget); ``-m "not load"`` skips it locally.

Both are ``serial``: they keep both cores busy, which would slow down (and
could upset the measurements of) whatever ran beside them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from faults.harness import InnerRun

pytestmark = [pytest.mark.serial, pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]

THOUSAND = """
import pytest

@pytest.mark.parametrize("i", range(500))
def test_pair(netns_pair, i):
    a, b = netns_pair
    assert a.ping("10.0.0.2") and b.ping("fd00::1")

@pytest.mark.parametrize("i", range(500))
def test_bridge(netns_bridge, i):
    h1, h2, h3 = netns_bridge
    assert h1.ping("10.0.0.3") and h3.ping("fd00::2")
"""


@pytest.fixture
def thousand(pytester: pytest.Pytester) -> Iterator[InnerRun]:
    run = InnerRun(pytester, THOUSAND)
    yield run
    run.cleanup()


def run_once(run: InnerRun, workers: int) -> None:
    result = run.start("-n", str(workers), "-q").finish(timeout=900)
    result.assert_outcomes(passed=1000)
    run.assert_nothing_left()


@pytest.mark.slow
def test_thousand_tests_under_two_workers(thousand: InnerRun) -> None:
    run_once(thousand, 2)


@pytest.mark.load
@pytest.mark.parametrize("workers", [2, 8])
def test_thousand_tests_three_runs_in_a_row(thousand: InnerRun, workers: int) -> None:
    for _ in range(3):
        run_once(thousand, workers)
