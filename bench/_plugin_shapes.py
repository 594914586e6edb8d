"""Fixtures for the shapes the plugin has no ready-made fixture for (``-p bench._plugin_shapes``).

Thin recipes over the plugin's public fixtures, as a user would write them
in a conftest.py: a chain of routers over ``netns_topology``, many
namespaces at once over ``netns_factory``, issue 13's cluster and Docker
host.  The size comes from the ``bench(size=N)`` marker of the generated
test module.
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


@pytest.fixture
def bench_docker(netns_docker: Any) -> Any:
    """Issue 13's Docker shape: 2 containers on a user-defined network (``docker network create``).

    Where the installed ``DockerHost`` has no ``network`` yet, both go on the default bridge
    (``docker0``); the report says which (``bench._plugin_shapes.docker_network``).
    """
    network = netns_docker.network("bench") if hasattr(netns_docker, "network") else None
    for name in ("c1", "c2"):
        if network is None:
            netns_docker.container(name)
        else:
            netns_docker.container(name, network=network)
    return netns_docker


def docker_network() -> bool:
    """Whether ``bench_docker`` puts its containers on a user network (the installed ``DockerHost.network``)."""
    from pytest_netns.presets.docker import DockerHost

    return hasattr(DockerHost, "network")
