"""The fixture path without pytest: timing and cProfile of what the fixtures call.

Each cycle makes the same library calls as the fixture (``Namespace``,
``pytest_netns.presets.pair``/``bridge``/``nat``, ``Topology`` or ``Cluster``, then the
teardown), so the difference to the pytest-measured figure is pytest's own fixture machinery plus the plugin's
hooks (tracking, pcap recording).  ``python -m bench --profile pair`` (or
``bridge:100``, ``chain:100``, ``nat``, ``netns``, ``cluster``) prints where the time goes.
"""

from __future__ import annotations

import cProfile
import io
import itertools
import pstats
import time
from collections.abc import Callable

SHAPES = ("netns", "pair", "bridge", "chain", "nat", "cluster")


def _cycle(shape: str, size: int = 3) -> Callable[[], None]:
    """One setup + teardown of ``shape`` through the library calls its fixture makes."""
    from pytest_netns import Namespace, Topology, presets

    def netns() -> None:
        Namespace("netns").close()

    def pair() -> None:
        with presets.pair():
            pass

    def bridge() -> None:
        with presets.bridge(size=size):
            pass

    def chain() -> None:  # as bench._plugin_shapes.bench_chain does it
        with Topology() as topology:
            routers = [topology.add(f"r{i}", router=True) for i in range(size)]
            for a, b in itertools.pairwise(routers):
                topology.link(a, b)

    def nat() -> None:
        with presets.nat():
            pass

    def cluster() -> None:  # as bench._plugin_shapes.bench_cluster does it (size: pods)
        from pytest_netns.presets.cluster import Cluster

        with Cluster() as made:
            nodes = [made.node("n1"), made.node("n2")]
            pods = [made.pod(f"p{i}", node=nodes[i % 2]) for i in range(size)]
            made.service("web", port=80, pods=pods)

    cycles = {"netns": netns, "pair": pair, "bridge": bridge, "chain": chain, "nat": nat, "cluster": cluster}
    if shape not in cycles:
        raise ValueError(f"no library path for shape {shape!r} (choose one of {', '.join(SHAPES)})")
    return cycles[shape]


def library_times(shape: str, repetitions: int, warmup: int = 5, size: int = 3) -> list[float]:
    """Setup + teardown seconds of the library calls behind the fixture."""
    cycle = _cycle(shape, size)
    times = []
    for i in range(warmup + repetitions):
        start = time.perf_counter()
        cycle()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def profile(shape: str, repetitions: int, top: int = 30, size: int = 3) -> str:
    """cProfile of ``repetitions`` cycles; the ``top`` functions by own time and by cumulative time."""
    cycle = _cycle(shape, size)
    for _ in range(5):
        cycle()
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    for _ in range(repetitions):
        cycle()
    profiler.disable()
    elapsed = time.perf_counter() - start
    out = io.StringIO()
    out.write(f"{repetitions} cycles of {shape}: {elapsed / repetitions * 1e3:.2f} ms each under the profiler\n")
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()
