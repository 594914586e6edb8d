"""The fixture path without pytest: timing and cProfile of what the fixtures call.

``netns`` and ``netns_pair`` run the same library calls as their fixtures
(``Namespace`` / ``build_pair``, then ``close_all``), so the difference to
the pytest-measured figure is pytest's own fixture machinery plus the
plugin's hooks (tracking, pcap recording).  ``python -m bench --profile pair``
prints where the time goes.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import time
from collections.abc import Callable


def _cycle(shape: str) -> Callable[[], None]:
    from pytest_netns.namespace import Namespace, close_all

    if shape == "netns":
        return lambda: close_all([Namespace("netns")])
    if shape == "pair":
        from pytest_netns._presets import build_pair
        from pytest_netns._settings import NetworkSettings

        settings = NetworkSettings()
        return lambda: close_all(list(build_pair(settings)))
    raise ValueError(f"no library path for shape {shape!r} (choose netns or pair)")


def library_times(shape: str, repetitions: int, warmup: int = 5) -> list[float]:
    """Setup + teardown seconds of the library calls behind the fixture."""
    cycle = _cycle(shape)
    times = []
    for i in range(warmup + repetitions):
        start = time.perf_counter()
        cycle()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def profile(shape: str, repetitions: int, top: int = 30) -> str:
    """cProfile of ``repetitions`` cycles; the ``top`` functions by own time and by cumulative time."""
    cycle = _cycle(shape)
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
