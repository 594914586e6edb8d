"""Shared configuration of pytest-netns's own tests.

``_rootguard`` (tests/_rootguard.py) fails the run if the network namespace
the tests started in (a private one: the tests run inside ``unshare --net``)
is not exactly the same at the end; see its docstring.  ``servers`` holds
the ``Responder``s (tests/_servers.py) a test starts.
"""

from __future__ import annotations

import ctypes
import errno
import os
import time
from collections.abc import Iterator

import pytest
from _servers import Responder

# pytester is also in pyproject's addopts (-p pytester); naming it here keeps
# `pytest tests/...` working under any ini file.
pytest_plugins = ["pytester", "_rootguard"]

CLONE_NEWNS = 0x00020000
MS_REC, MS_PRIVATE = 0x4000, 1 << 18


@pytest.fixture
def private_run_dir() -> Iterator[None]:
    """Run the test (and every process it starts) with a /run of its own, in a private mount namespace.

    Kept namespaces are bind mounts under /run/netns: tests of
    --netns-keep-on-failure and of the cleanup command make them here, where
    no other program (and no other test) can see them, and whatever a test
    leaves mounted disappears with the mount namespace.  Only the calling
    thread moves (the kernel lets a single thread unshare its mount
    namespace) and it moves back at teardown.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p)

    def check(result: int, what: str) -> None:
        if result != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")

    saved = os.open("/proc/thread-self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    try:
        check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
        try:
            check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "making / private")
            check(libc.mount(b"tmpfs", b"/run", b"tmpfs", 0, b"mode=755"), "mounting a tmpfs on /run")
            yield
        finally:
            # setns(CLONE_NEWNS) needs a thread whose filesystem context is
            # not shared: a helper thread this thread started (they share it)
            # may still be exiting, for a moment, after its join().
            for _ in range(1000):
                result = libc.setns(saved, CLONE_NEWNS)
                if result == 0 or ctypes.get_errno() != errno.EINVAL:
                    break
                time.sleep(0.002)
            check(result, "returning to the original mount namespace")
    finally:
        os.close(saved)


@pytest.fixture
def servers() -> Iterator[list[Responder]]:
    """A list the test appends the Responders it starts to; each is closed at teardown.

    Requested after the fixtures that make the namespaces (as its parameter
    comes after theirs), it is torn down first: the servers close before
    their namespaces go.
    """
    started: list[Responder] = []
    yield started
    for responder in started:
        responder.close()
