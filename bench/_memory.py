"""Peak memory per namespace: hold many at once and compare before and after.

There is no per-namespace memory counter, so the harness holds N namespaces
(N = 1,000 in the full run) and divides the change of:

* ``/proc/meminfo`` ``MemAvailable`` (everything the kernel can no longer
  hand out: slab, per-cpu areas, page tables, socket buffers, ...);
* ``Slab + Percpu + KernelStack + PageTables`` (the kernel's own
  allocations; ``struct net`` alone is a 4.3 KB slab object here, and every
  device, sysctl table and per-cpu statistics block adds to it);
* this process's ``VmRSS`` (the Python side: ``Namespace`` objects, sockets).

``/proc/meminfo`` is machine-wide, so other work on the machine adds noise:
the figure is the median of several repetitions, each starting after the
previous namespaces were freed.  The floor variant (bare ``unshare`` fds,
lo up) shows what the kernel needs anyway.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass

KERNEL_FIELDS = ("Slab", "Percpu", "KernelStack", "PageTables")


def meminfo() -> dict[str, int]:
    """/proc/meminfo in KiB."""
    values = {}
    with open("/proc/meminfo") as handle:
        for line in handle:
            name, rest = line.split(":", 1)
            values[name] = int(rest.split()[0])
    return values


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@dataclass(frozen=True)
class MemoryResult:
    """KiB per namespace (medians over the repetitions)."""

    namespaces: int
    available: float
    kernel: float
    process: float


def _holders() -> dict[str, Callable[[int], Callable[[], None]]]:
    """variant -> (count -> hold ``count`` namespaces, return their release)."""

    def plugin_netns(count: int) -> Callable[[], None]:
        from pytest_netns import Namespace

        from ._freeing import close

        spaces = [Namespace() for _ in range(count)]
        return lambda: close(spaces)

    def plugin_pair(count: int) -> Callable[[], None]:
        from pytest_netns import presets

        stack = ExitStack()
        for _ in range(count // 2):
            stack.enter_context(presets.pair())
        return stack.close

    def floor_netns(count: int) -> Callable[[], None]:
        from . import _floor

        home = _floor.Home()
        spaces = _floor.shape_many(home, count)
        home.close()

        def release() -> None:
            for ns in spaces:
                ns.close()

        return release

    return {"plugin netns": plugin_netns, "plugin netns_pair": plugin_pair, "floor netns": floor_netns}


VARIANTS = tuple(_holders())


def measure(variant: str, count: int, repetitions: int, settle: float = 1.0) -> MemoryResult:
    """Hold ``count`` namespaces ``repetitions`` times; per-namespace deltas."""
    hold = _holders()[variant]
    available, kernel, process = [], [], []
    for _ in range(repetitions):
        gc.collect()
        time.sleep(settle)  # let the previous repetition's namespaces be freed
        before, rss = meminfo(), rss_kib()
        release = hold(count)
        gc.collect()
        after, rss_after = meminfo(), rss_kib()
        release()
        available.append((before["MemAvailable"] - after["MemAvailable"]) / count)
        kernel.append(sum(after.get(f, 0) - before.get(f, 0) for f in KERNEL_FIELDS) / count)
        process.append((rss_after - rss) / count)
    time.sleep(settle)
    return MemoryResult(count, statistics.median(available), statistics.median(kernel), statistics.median(process))
