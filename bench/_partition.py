"""Cutting and healing a partition, timed in a loop without pytest (issue 15's goal: <= 5 ms each).

Five namespaces on one segment (``Topology``, public API only), split 2 | 3
with ``pytest_netns.partition`` and healed, over and over.  The cut reads the
members' addresses from the kernel and installs one nftables transaction per
namespace; the heal marks the five tables dormant.  The dormant tables stay
until the topology is torn down (as in a test: the plugin removes what is
left at its end), so each round adds five tables, which the kernel keeps in
a list: the rounds are few enough for that not to matter.
"""

from __future__ import annotations

import time

SIZE = 5


def measure(rounds: int, warmup: int = 5) -> tuple[list[float], list[float]]:
    """(cut times, heal times) in seconds, the first ``warmup`` rounds left out."""
    from pytest_netns import Topology, partition

    cuts: list[float] = []
    heals: list[float] = []
    with Topology() as net:
        members = [net.add(f"h{i}") for i in range(1, SIZE + 1)]
        net.segment(members)
        for number in range(warmup + rounds):
            start = time.perf_counter()
            cut = partition(members[:2], members[2:])
            middle = time.perf_counter()
            cut.heal()
            end = time.perf_counter()
            if number >= warmup:
                cuts.append(middle - start)
                heals.append(end - middle)
    return cuts, heals
