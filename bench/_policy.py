"""How long a NetworkPolicy change takes to be in force, timed in a loop without pytest (issue 14: <= 5 ms).

A cluster of 3 nodes and 20 pods (public API only): 5 pods ``app=db``, the
others ``app=web``.  Each round creates a policy isolating the db pods,
ingress allowed from the web pods on TCP 5432, and deletes it again.
``Cluster.network_policy`` and ``NetworkPolicy.delete`` return once every
node's rules are replaced (one transaction per node), so the time of the
call is the time until the change is in force.
"""

from __future__ import annotations

import time

NODES = 3
PODS = 20
SELECTED = 5


class Unavailable(Exception):
    """The installed package has no ``Cluster.network_policy``, or the kernel lacks what a cluster needs."""


def measure(rounds: int, warmup: int = 3) -> tuple[list[float], list[float]]:
    """(create times, delete times) in seconds, the first ``warmup`` rounds left out."""
    from pytest_netns.errors import FeatureUnavailable
    from pytest_netns.presets.cluster import Cluster

    if not hasattr(Cluster, "network_policy"):
        raise Unavailable("this pytest-netns has no Cluster.network_policy")
    creates: list[float] = []
    deletes: list[float] = []
    try:
        with Cluster() as cluster:
            nodes = [cluster.node(f"n{i}") for i in range(1, NODES + 1)]
            for i in range(PODS):
                app = "db" if i < SELECTED else "web"
                cluster.pod(f"{app}-{i}", node=nodes[i % NODES], labels={"app": app})
            ingress = [{"from": [{"pod_selector": {"app": "web"}}], "ports": [{"port": 5432, "protocol": "TCP"}]}]
            for number in range(warmup + rounds):
                start = time.perf_counter()
                policy = cluster.network_policy("db", pod_selector={"app": "db"}, ingress=ingress)
                middle = time.perf_counter()
                policy.delete()
                end = time.perf_counter()
                if number >= warmup:
                    creates.append(middle - start)
                    deletes.append(end - middle)
    except FeatureUnavailable as exc:
        raise Unavailable(str(exc)) from None
    return creates, deletes
