"""conftest.py of the downstream suite the fault tests run (copied next to its test file).

Logs what the run creates (see harness.py) and provides ``everything``: a
test holding every kind of namespace and every kind of process a test can
start inside one.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

CHILD = [sys.executable, str(Path(__file__).with_name("inner_child.py"))]
_watchdogs: set[int] = set()


def log(*words: object) -> None:
    fd = os.open(os.environ["NETNS_FAULT_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (" ".join(map(str, words)) + "\n").encode())
    finally:
        os.close(fd)


def starttime(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as handle:
        data = handle.read()
    return int(data[data.rindex(")") + 2:].split()[19])


def ready() -> None:
    """Tell the fault test this test is where it should be ended."""
    log_watchdog()
    log("ready", os.getpid())


def log_watchdog() -> None:
    """Log this process's watchdog (started when code first runs inside a namespace) once."""
    from pytest_netns._kernel.watchdog import client

    pid = client.pid
    if pid is not None and pid not in _watchdogs:
        _watchdogs.add(pid)
        log("proc", pid, starttime(pid), "watchdog")


def pytest_configure(config: pytest.Config) -> None:
    workerinput = getattr(config, "workerinput", None)
    log("pytest", os.getpid(), starttime(os.getpid()), workerinput["workerid"] if workerinput else "main")


def pytest_netns_namespace_created(item: pytest.Item, namespace: object) -> None:
    log("ns", namespace.inode, namespace.cookie, namespace.name)
    log_watchdog()


def pytest_runtest_teardown(item: pytest.Item) -> None:
    log_watchdog()


@pytest.hookimpl(optionalhook=True)
def pytest_handlecrashitem(crashitem: str, report: pytest.TestReport, sched: object) -> None:
    """(xdist controller) A worker's crash is handled: its tests went back to the others."""
    log("crash-handled", crashitem)


def wait_for_my_turn_to_crash() -> None:
    """Return once this xdist worker may SIGKILL itself: no other crash is unhandled.

    xdist cannot take two workers dying at the same moment: handling one
    crash, it hands the crashed worker's tests to the other, and writing to a
    dead worker is an INTERNALERROR.  The lock is held until this process dies.
    """
    import fcntl
    import time

    path = os.environ["NETNS_FAULT_LOG"]
    lock = os.open(path + ".lock", os.O_WRONLY | os.O_CREAT, 0o644)  # left open: released by death
    fcntl.flock(lock, fcntl.LOCK_EX)
    deadline = time.monotonic() + 60 * float(os.environ.get("PYTEST_NETNS_TIMEOUT_SCALE", "1"))
    while True:
        with open(path) as handle:
            kinds = [line.split(" ", 1)[0] for line in handle]
        if kinds.count("crashing") == kinds.count("crash-handled"):
            break
        assert time.monotonic() < deadline, "the controller never handled the last crash"
        time.sleep(0.01)
    log("crashing", os.getpid())


def start(popen, label: str, mode: str = "sleep") -> subprocess.Popen:
    proc = popen([*CHILD, mode, label], stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b"ok\n"
    return proc


@pytest.fixture
def everything(netns_pair, netns):
    """Processes started every way there is, in netns_pair and netns."""
    a, b = netns_pair
    start(a.popen, "popen-sleep")
    if os.environ.get("NETNS_FAULT_IGNORE_TERM"):
        start(b.popen, "popen-ignoring-sigterm", "ignore-term")
    with netns:
        start(subprocess.Popen, "user-popen-under-with")
    b.run([*CHILD, "daemon", "setsid-double-fork-daemon"])
    assert a.ping("10.0.0.2")
    log_watchdog()
    return a, b, netns


@pytest.fixture
def broken_setup(everything):
    raise RuntimeError("fixture setup failed on purpose")


@pytest.fixture
def broken_teardown(everything):
    yield everything
    raise RuntimeError("fixture teardown failed on purpose")
