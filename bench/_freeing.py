"""How long after teardown the kernel has really freed the namespaces.

Closing the last reference to a network namespace only queues it: the
kernel's ``cleanup_net`` work removes its devices, runs every subsystem's
exit handler, then uncharges the namespace from its user namespace's
``max_net_namespaces`` count, just before freeing ``struct net``.  Nothing in
``/proc`` shows that count, but the limit makes it observable:

1. this module runs in a fresh user namespace with its own network namespace
   (``unshare --user --map-root-user --net``), so the count is ours alone and
   starts at 1 (the process's own namespace);
2. it builds the shape with pytest-netns (the same code the fixtures run),
   lowers ``/proc/sys/user/max_net_namespaces`` of that user namespace to 2,
   tears the shape down and starts the clock;
3. it probes with ``unshare(CLONE_NEWNET)`` every 0.2 ms: the kernel refuses
   (ENOSPC) while any namespace of the shape is still counted, and the first
   success means all of them went through ``cleanup_net``.

Each successful probe leaves one namespace of its own to free.  The kernel
frees namespaces in batches on an ordered workqueue, so a probe namespace
released earlier is never freed after a later shape's namespaces; and each
measurement starts 200 ms after the previous probe (longer than one batch
takes here), so it is not queued behind that batch.  Run as
``python -m bench._freeing`` (it prints JSON); ``bench`` does that for you.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import json
import os
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_netns import Namespace

CLONE_NEWNET = 0x40000000
LIMIT = "/proc/sys/user/max_net_namespaces"
POLL = 0.0002
_libc = ctypes.CDLL(None, use_errno=True)


def _set_limit(value: int) -> None:
    with open(LIMIT, "w") as handle:
        handle.write(str(value))


def probe(home: int) -> bool:
    """Try to create a namespace; True (and it is released at once) if the kernel allowed it."""
    if _libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        if err != errno.ENOSPC:
            raise OSError(err, f"unshare: {os.strerror(err)}")
        return False
    if _libc.setns(home, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns back: {os.strerror(err)}")
    return True


def wait_freed(home: int, timeout: float = 30.0) -> float:
    """Seconds until a probe succeeds (the limit must already be set)."""
    start = time.perf_counter()
    while not probe(home):
        if time.perf_counter() - start > timeout:
            raise TimeoutError("namespaces not freed within {timeout} s")
        time.sleep(POLL)
    return time.perf_counter() - start


def _builders() -> dict[str, Callable[[int], Callable[[], None]]]:
    """shape -> (size -> build the shape and return its teardown)."""
    from pytest_netns import Namespace, presets

    def many(size: int) -> Callable[[], None]:
        spaces = [Namespace() for _ in range(size)]
        return lambda: close(spaces)

    def pair(size: int) -> Callable[[], None]:
        stack = ExitStack()
        stack.enter_context(presets.pair())
        return stack.close

    def burst(size: int) -> Callable[[], None]:
        # ``size`` pairs built and torn down back to back, as a suite does; the
        # clock starts after the last teardown.
        for _ in range(size - 1):
            with presets.pair():
                pass
        return pair(2)

    return {"netns": many, "many": many, "pair": pair, "burst": burst}


def close(spaces: list[Namespace]) -> None:
    """Tear down namespaces, last made first (as a fixture's teardown does)."""
    for ns in reversed(spaces):
        ns.close()


def measure(shape: str, size: int, repetitions: int) -> list[float]:
    build = _builders()[shape]
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    times = []
    for _ in range(repetitions):
        _set_limit(2)
        wait_freed(home)  # idle: only our own namespace (and this probe's) counted
        time.sleep(0.2)
        _set_limit(1 << 20)
        teardown = build(size)
        _set_limit(2)  # lowering below the current count is allowed; it only refuses new ones
        teardown()
        times.append(wait_freed(home))
    os.close(home)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("shape", choices=sorted(_builders()))
    parser.add_argument("size", type=int)
    parser.add_argument("repetitions", type=int)
    args = parser.parse_args()
    print(json.dumps(measure(args.shape, args.size, args.repetitions)))


if __name__ == "__main__":
    main()
