"""Kubernetes and Docker network models as fixtures: ``netns_cluster``, ``netns_docker``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from .fixtures import require_namespaces, run_settings, teardown, track
from .settings import cluster_cni, network_settings

if TYPE_CHECKING:
    from ..presets.cluster import Cluster
    from ..presets.docker import DockerHost

__all__ = ["netns_cluster", "netns_docker"]


@pytest.fixture
def netns_cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """An empty Kubernetes-style ``Cluster``: add ``node``s, ``pod``s, ``service``s and ``external`` hosts.

    Pods are flat across nodes (10.244.<k>.0/24 per node), services get a
    ClusterIP from 10.96.0.0/12 that every node DNATs to a pod, names resolve
    for processes started with ``run``/``popen`` (in-process code uses
    ``cluster.resolve(name)``).  ``@pytest.mark.netns(cni="ptp"|"bridge")``
    picks the CNI mode (default ptp; bridge needs br_netfilter).  Everything
    is torn down after the test (processes stopped, namespaces released).
    Outside a test, use ``pytest_netns.cluster.Cluster()`` as a context manager.
    """
    require_namespaces(request)
    from ..presets.cluster import Cluster

    network_settings(request.node)  # the whole marker checked: a bad argument is a UsageError naming it
    cluster = Cluster(
        kill_grace=run_settings(request.config).kill_grace,
        cni=cluster_cni(request.node),
        _namespace_created=lambda ns: track(request, [ns]),
    )
    yield cluster
    teardown(request, cluster.close)


@pytest.fixture
def netns_docker(request: pytest.FixtureRequest) -> Iterator[DockerHost]:
    """A ``DockerHost``: ``host`` with ``docker0`` 172.17.0.1/16, an ``external`` host outside, no containers yet.

    ``container(name)`` adds one on ``docker0`` (172.17.0.2, .3, ...);
    ``network(name)`` a user-defined network (172.18.0.0/16, ...) with
    Docker's embedded DNS and isolation, ``container(name, network=,
    aliases=)`` and ``connect`` put containers on it;
    ``publish(container, host_port=, container_port=)`` makes it reachable
    from ``external`` at ``host.ip:host_port`` (a host port already taken
    raises ``ValueError``; ``host_ip="127.0.0.1"``: the host's own processes
    only).  Outbound traffic is masqueraded to ``host.ip``.
    Everything is torn down after the test.
    """
    require_namespaces(request)
    from ..presets.docker import DockerHost

    docker = DockerHost(
        kill_grace=run_settings(request.config).kill_grace, _namespace_created=lambda ns: track(request, [ns])
    )
    yield docker
    teardown(request, docker.close)
