"""Fixtures for the shapes the plugin has no ready-made fixture for (``-p bench._plugin_shapes``).

Both are thin recipes over the plugin's public fixtures, as a user would
write them in a conftest.py: a chain of routers over ``netns_topology`` and
many namespaces at once over ``netns_factory``.  The size comes from the
``bench(size=N)`` marker of the generated test module.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest


def _size(request: pytest.FixtureRequest, default: int) -> int:
    mark = request.node.get_closest_marker("bench")
    return int(mark.kwargs.get("size", default)) if mark else default


@pytest.fixture
def bench_chain(request: pytest.FixtureRequest, netns_topology: Any) -> list[Any]:
    """Routers r0..rN-1 (forwarding on), each linked to the next (connected routes only)."""
    routers = [netns_topology.add(f"r{i}", router=True) for i in range(_size(request, 100))]
    for a, b in itertools.pairwise(routers):
        netns_topology.link(a, b)
    return routers


@pytest.fixture
def bench_many(request: pytest.FixtureRequest, netns_factory: Any) -> list[Any]:
    """N namespaces (lo up) at once, torn down with the test."""
    return [netns_factory() for _ in range(_size(request, 1000))]


@pytest.fixture
def bench_cluster(netns_cluster: Any) -> Any:
    """Issue 13's shape: 2 nodes, 4 pods, 1 service (the cluster DNS comes with the first node)."""
    nodes = [netns_cluster.node("n1"), netns_cluster.node("n2")]
    pods = [netns_cluster.pod(f"p{i}", node=nodes[i % 2]) for i in range(4)]
    netns_cluster.service("web", port=80, pods=pods)
    return netns_cluster
