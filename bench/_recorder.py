"""A pytest plugin (``-p bench._recorder``) that records what pytest measured per test.

For every test it writes one JSON line to the file named by ``BENCH_RECORD``:
the node id, the outcome, and ``report.duration`` of the setup and teardown
phases (pytest's own clock around the fixtures).  Every ``BENCH_SAMPLE_EVERY``
tests it also samples the process's resident memory and open file
descriptors (to see leaks over long runs).  Under pytest-xdist the
controller writes the reports (they reach it from the workers with their
durations); each worker writes its samples to ``BENCH_RECORD.<worker id>``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

_state: dict[str, Any] = {}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "bench(size): the size of a benchmark shape (members, routers, namespaces)")
    path = os.environ.get("BENCH_RECORD")
    if not path:
        return
    worker = getattr(config, "workerinput", None)
    suffix = f".{worker['workerid']}" if worker else ""
    _state["out"] = open(path + suffix, "a", buffering=1)  # closed at unconfigure
    _state["worker"] = worker is not None
    _state["every"] = int(os.environ.get("BENCH_SAMPLE_EVERY", "0"))
    _state["done"] = 0
    _state["phases"] = {}


def pytest_unconfigure(config: pytest.Config) -> None:
    out = _state.pop("out", None)
    if out is not None:
        out.close()


@pytest.fixture
def bench_noop() -> Iterator[None]:
    """A fixture that does nothing: what pytest's own fixture machinery costs."""
    yield


def _memory() -> dict[str, int]:
    """Resident memory (KiB), threads and open file descriptors of this process."""
    found = {}
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(("VmRSS:", "Threads:")):
                name, value = line.split()[:2]
                found[name] = int(value)
    return {
        "rss_kib": found.get("VmRSS:", 0),
        "threads": found.get("Threads:", 0),
        "fds": len(os.listdir("/proc/self/fd")),
    }


@pytest.hookimpl(trylast=True)
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    out = _state.get("out")
    if out is None:
        return
    if _state["worker"]:
        # Workers only sample memory; the controller records the reports.
        if report.when == "teardown":
            _sample(out)
        return
    phases = _state["phases"].setdefault(report.nodeid, {"outcome": "passed"})
    phases[report.when] = report.duration
    if report.outcome != "passed" and phases["outcome"] == "passed":
        phases["outcome"] = report.outcome
        phases["message"] = str(report.longrepr)[-2000:] if report.longrepr else ""
    if report.when == "teardown":
        del _state["phases"][report.nodeid]
        out.write(json.dumps({"test": report.nodeid, **phases}) + "\n")
        _sample(out)


def _sample(out: Any) -> None:
    _state["done"] += 1
    every = _state["every"]
    if every and _state["done"] % every == 0:
        out.write(json.dumps({"sample": _state["done"], **_memory()}) + "\n")
