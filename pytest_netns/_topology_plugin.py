"""Topology fixtures (``netns_bridge``, ``netns_nat``, ``netns_topology``) and the skip for missing kernel features.

``FeatureUnavailable`` raised while a test is set up or runs (for example
``impair(delay=...)`` on a kernel without ``sch_netem``) makes the test
*skipped* with the exception's message as the reason, instead of failed: a
missing kernel feature says nothing about the code under test.  The
conversion happens in ``pytest_runtest_makereport`` (setup and call phases
only; a teardown error stays an error), so the same exception works outside
pytest, where it is simply raised.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, NamedTuple

import pytest

from . import _settings
from ._fixtures import require_namespaces, run_settings, teardown, track
from .errors import FeatureUnavailable

if TYPE_CHECKING:
    from .namespace import Namespace
    from .topology import Segment, Topology

__all__ = ["BridgeMembers", "NatNetwork", "netns_bridge", "netns_nat", "netns_topology"]


class BridgeMembers(list):  # type: ignore[type-arg]
    """The namespaces of ``netns_bridge`` in address order; ``segment`` is their ``Segment``."""

    segment: Segment
    topology: Topology


class NatNetwork(NamedTuple):
    """``netns_nat``: a client behind a masquerading router, and a server outside."""

    client: Namespace
    router: Namespace
    server: Namespace


def _topology(request: pytest.FixtureRequest, *, ipv6: bool = True, track_each: bool = True) -> Topology:
    from .topology import Topology

    topology = Topology(ipv6=ipv6, kill_grace=run_settings(request.config).kill_grace)
    if track_each:
        topology._namespace_created = lambda ns: track(request, [ns])
    return topology


def _finish(request: pytest.FixtureRequest, topology: Topology) -> None:
    """Announce a preset's namespaces once its network is ready (bridges' namespaces included)."""
    try:
        track(request, list(topology._owned))
    except BaseException:
        topology.close()
        raise


@pytest.fixture
def netns_topology(request: pytest.FixtureRequest) -> Iterator[Topology]:
    """An empty ``Topology`` to build on: ``add``, ``link``, ``bridge``, ``autoroute``, ``nat``.

    Everything it makes is torn down after the test (processes stopped,
    namespaces released).  Outside a test, use ``pytest_netns.Topology()``
    as a context manager.
    """
    require_namespaces(request)
    topology = _topology(request)
    yield topology
    teardown(request, topology.close)


@pytest.fixture
def netns_bridge(request: pytest.FixtureRequest) -> Iterator[BridgeMembers]:
    """N namespaces (default 3) with ``eth0`` on one Linux bridge: a list, ``.segment`` is the segment.

    Addresses 10.0.0.1..N/24 and fd00::1..N/64, in list order; every member
    reaches every other at once (the bridge has STP off, no forwarding
    delay).  ``@pytest.mark.netns(size=..., mtu=..., subnet=..., ipv6=...)``
    configures it.  Torn down after the test.
    """
    settings = _settings.network_settings(request.node)
    require_namespaces(request)
    topology = _topology(request, ipv6=settings.ipv6, track_each=False)
    try:
        members = BridgeMembers(topology.add(f"h{i}") for i in range(1, settings.size + 1))
        members.segment = topology.bridge(members, subnet=str(settings.subnet), mtu=settings.mtu)
        members.topology = topology
    except BaseException:
        topology.close()
        raise
    _finish(request, topology)
    yield members
    teardown(request, topology.close)


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
    topology = _topology(request, ipv6=False, track_each=False)
    try:
        client, router, server = topology.add("client"), topology.add("router", router=True), topology.add("server")
        topology.link(router, client, subnet="192.168.0.0/24")
        outside = topology.link(router, server, subnet="203.0.113.0/24")
        client.add_route("default", via="192.168.0.1")
        topology.nat(router, outside=outside)
    except BaseException:
        topology.close()
        raise
    _finish(request, topology)
    yield NatNetwork(client, router, server)
    teardown(request, topology.close)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Report a test that hit ``FeatureUnavailable`` during setup or call as skipped, with its reason."""
    report = yield
    if (
        call.when in ("setup", "call")
        and report.failed
        and call.excinfo is not None
        and call.excinfo.errisinstance(FeatureUnavailable)
    ):
        path, line = item.reportinfo()[:2]
        report.outcome = "skipped"
        report.longrepr = (os.fspath(path), (line or 0) + 1, f"Skipped: {call.excinfo.value}")
    return report
