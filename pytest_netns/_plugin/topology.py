"""Topology fixtures (``netns_bridge``, ``netns_nat``, ``netns_topology``) and the skip for missing features.

``FeatureUnavailable`` raised while a test is set up or runs (for example
``impair(delay=...)`` on a kernel without ``sch_netem``, ``filter=`` without
libpcap) makes the test *skipped*, naming the feature, instead of failed: a
missing feature says nothing about the code under test.  Unless
``--netns-require-features`` names that feature: then the test fails,
naming it (a CI runner that must test latency cannot silently skip it).
This is the one place that decides; it happens in
``pytest_runtest_makereport`` (setup and call phases only; a teardown error
stays an error), so the same exception works outside pytest, where it is
simply raised.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING

import pytest

from ..errors import FeatureUnavailable
from ..presets.simple import BridgeMembers, NatNetwork
from . import settings as _settings
from .fixtures import provide, require_namespaces, run_settings, teardown, track

if TYPE_CHECKING:
    from ..topology import Topology

__all__ = ["BridgeMembers", "NatNetwork", "netns_bridge", "netns_nat", "netns_topology"]


@pytest.fixture
def netns_topology(request: pytest.FixtureRequest) -> Iterator[Topology]:
    """An empty ``Topology`` to build on: ``add``, ``link``, ``bridge``, ``autoroute``, ``nat``.

    Everything it makes is torn down after the test (processes stopped,
    namespaces released).  Outside a test, use ``pytest_netns.Topology()``
    as a context manager.
    """
    require_namespaces(request)
    from ..topology import Topology

    topology = Topology(
        kill_grace=run_settings(request.config).kill_grace, _namespace_created=lambda ns: track(request, [ns])
    )
    yield topology
    teardown(request, topology.close)


@pytest.fixture
def netns_bridge(request: pytest.FixtureRequest) -> Iterator[BridgeMembers]:
    """N namespaces (default 3) with ``eth0`` on one Linux bridge: a list, ``.segment`` is the segment.

    Addresses 10.0.0.1..N/24 and fd00::1..N/64, in list order; every member
    reaches every other at once (the bridge has STP off, no forwarding
    delay).  ``@pytest.mark.netns(size=..., mtu=..., subnet=..., ipv6=...,
    offloads=...)`` configures it.  Torn down after the test.
    """
    settings = _settings.network_settings(request.node, fixture="netns_bridge")
    require_namespaces(request)
    from ..presets.simple import bridge_network

    yield from provide(request, bridge_network(settings, kill_grace=run_settings(request.config).kill_grace))


@pytest.fixture
def netns_nat(request: pytest.FixtureRequest) -> Iterator[NatNetwork]:
    """``(client, router, server)``: a client behind a router that masquerades, and a server outside.

    client 192.168.0.2/24, default route via the router's 192.168.0.1;
    router 203.0.113.1/24 outside, forwarding on, MASQUERADE of what leaves
    its outside interface; server 203.0.113.2/24 with no route back to
    192.168.0.0/24, so only NAT makes replies work: the server sees
    connections from 203.0.113.1.  IPv4 only.  Torn down after the test.
    """
    require_namespaces(request)
    from ..presets.simple import nat_network

    yield from provide(request, nat_network(kill_grace=run_settings(request.config).kill_grace))


def missing_feature(call: pytest.CallInfo[None], report: pytest.TestReport) -> FeatureUnavailable | None:
    """The ``FeatureUnavailable`` that made a test's setup or call fail, or None."""
    if call.when not in ("setup", "call") or not report.failed or call.excinfo is None:
        return None
    exc = call.excinfo.value
    return exc if isinstance(exc, FeatureUnavailable) else None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A test that hit ``FeatureUnavailable``: skipped naming the feature, or failed if it is required."""
    report = yield
    exc = missing_feature(call, report)
    if exc is None:
        return report
    if exc.feature is not None and exc.feature in run_settings(item.config).require_features:
        path, line = _where(item, call)
        report.longrepr = f"{path}:{line}: {exc.feature} is missing, and --netns-require-features requires it:\n{exc}"
        return report
    test_path, test_line = item.reportinfo()[:2]
    report.outcome = "skipped"
    reason = f"{exc.feature} missing: {exc}" if exc.feature else str(exc)
    report.longrepr = (os.fspath(test_path), (test_line or 0) + 1, f"Skipped: {reason}")
    return report


def _where(item: pytest.Item, call: pytest.CallInfo[None]) -> tuple[str, int]:
    """The test's own line that led to the exception (its innermost frame in the test's file), else the test."""
    assert call.excinfo is not None
    here = item.config.invocation_params.dir
    for entry in reversed(call.excinfo.traceback):
        if os.fspath(entry.path) == os.fspath(item.path):
            return os.path.relpath(entry.path, here), entry.lineno + 1
    path, line = item.reportinfo()[:2]
    return os.path.relpath(path, here), (line or 0) + 1
