"""Run a downstream suite in a subprocess, end it some way, then prove nothing of it is left.

The inner suite (``inner_conftest.py`` + ``inner_child.py``, copied next to
the test file the fault test writes) appends one line per event to a log
file, flushed by the kernel at once so it survives a SIGKILL:

    pytest <pid> <starttime> <role>        a pytest process (controller or xdist worker)
    ns <inode> <cookie> <name>             a namespace a fixture made
    proc <pid> <starttime> <label>         a process started inside one, or the watchdog
    ready <pid>                            the test is where it should be killed

A process whose label starts with ``unowned`` is the test's own business
(not in any namespace of the run): it is not a leftover, and the namespace
file descriptors it inherited by ``fork`` do not count (it may keep those
namespaces, empty, alive while it lives); it is killed after the check.

"What is left of the run" is then, scanned from ``/proc`` until it is empty
or the bound expires: a live process among those logged (matched by pid
*and* start time, so a reused pid is not mistaken for ours); any process
or thread whose network namespace is one of ours; any file descriptor or
bind mount that references one.  Namespace inodes are recycled by the
kernel, so a reference found by inode is confirmed by the namespace's
cookie (64 bits, never reused) before it counts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from _timescale import scaled

HERE = Path(__file__).parent
SO_NETNS_COOKIE = 71
#: How long the kernel and the watchdog may take to make everything disappear.
SETTLE = scaled(10.0)
#: xdist workers whose controller died wait 5 s before interrupting themselves (execnet).
SETTLE_ORPHANED_WORKERS = scaled(25.0)


@dataclass(frozen=True)
class Proc:
    pid: int
    start: int
    label: str


@dataclass
class Events:
    """What the inner suite logged."""

    pytest: list[Proc] = field(default_factory=list)
    namespaces: dict[int, tuple[int, str]] = field(default_factory=dict)  # inode -> (cookie, name)
    processes: list[Proc] = field(default_factory=list)
    ready: list[int] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> Events:
        events = cls()
        if not path.exists():
            return events
        for line in path.read_text().splitlines():
            kind, *words = line.split()
            if kind == "pytest":
                events.pytest.append(Proc(int(words[0]), int(words[1]), words[2]))
            elif kind == "ns":
                events.namespaces[int(words[0])] = (int(words[1]), words[2])
            elif kind == "proc":
                events.processes.append(Proc(int(words[0]), int(words[1]), words[2]))
            elif kind == "ready":
                events.ready.append(int(words[0]))
        return events


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks) of a process, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            data = handle.read()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2:].split()
    return fields[0], int(fields[19])


def starttime(pid: int) -> int:
    stat = proc_stat(pid)
    return stat[1] if stat else -1


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def alive(proc: Proc) -> bool:
    """The very process logged (not a reuse of its pid) still exists and is not a zombie."""
    stat = proc_stat(proc.pid)
    return stat is not None and stat[1] == proc.start and stat[0] not in ("Z", "X")


def netns_cookie(path: str) -> int | None:
    """The cookie of the network namespace behind ``path`` (``/proc/P/ns/net``, an fd link, a bind mount)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    result: list[int | None] = [None]

    def probe() -> None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, 0x40000000) != 0:
            return
        # This thread now lives in that namespace and ends right after: it
        # never switches back, so no other code can run inside by mistake.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            result[0] = int.from_bytes(sock.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8), "little")

    try:
        thread = threading.Thread(target=probe, name="netns-cookie-probe")
        thread.start()
        thread.join()
    finally:
        os.close(fd)
    return result[0]


def _net_inode(path: str) -> int | None:
    try:
        target = os.readlink(path)
    except OSError:
        return None
    if target.startswith("net:["):
        return int(target[5:-1])
    return None


def references(namespaces: dict[int, tuple[int, str]], ignore: frozenset[int] = frozenset()) -> list[str]:
    """Everything in the process table and mount table that still references one of ``namespaces``.

    Processes in ``ignore`` (the test's own, outside the run's namespaces) may hold fds.
    """
    found = []
    me = os.getpid()

    def check(path: str, what: str) -> None:
        inode = _net_inode(path)
        if inode in namespaces:
            cookie, name = namespaces[inode]
            if netns_cookie(path) == cookie:
                found.append(f"{what} is in namespace {name!r} (net:[{inode}])")

    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        pid = int(entry)
        comm = _comm(pid)
        check(f"/proc/{pid}/ns/net", f"process {pid} ({comm})")
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                if tid != entry:
                    check(f"/proc/{pid}/task/{tid}/ns/net", f"thread {tid} of process {pid} ({comm})")
        if pid in ignore:
            continue
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                check(f"/proc/{pid}/fd/{fd}", f"fd {fd} of process {pid} ({comm})")
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            root, mountpoint = fields[3], fields[4]
            if root.startswith("net:[") and int(root[5:-1]) in namespaces:
                check(mountpoint, f"bind mount {mountpoint}")
    return found


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as handle:
            return handle.read().strip()
    except OSError:
        return "?"


def leftovers(events: Events) -> list[str]:
    """Processes of the run that are still alive, and references to its namespaces."""
    found = [f"pytest process {p.pid} ({p.label})" for p in events.pytest if alive(p)]
    unowned = [p for p in events.processes if p.label.startswith("unowned")]
    found += [f"process {p.pid} ({p.label})" for p in events.processes if alive(p) and p not in unowned]
    return found + references(events.namespaces, frozenset(p.pid for p in unowned if alive(p)))


def kill_leftovers(events: Events) -> None:
    """SIGKILL whatever of the run survived (by pid and start time, or by namespace), so a failure leaves no junk."""
    for proc in [*events.processes, *events.pytest]:
        if alive(proc):
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
    for _ in range(100):
        victims = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != os.getpid():
                inode = _net_inode(f"/proc/{entry}/ns/net")
                if inode in events.namespaces and netns_cookie(f"/proc/{entry}/ns/net") == events.namespaces[inode][0]:
                    victims.append(int(entry))
        if not victims:
            return
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


class InnerRun:
    """One downstream pytest session in a subprocess of its own session (process group)."""

    def __init__(self, pytester: pytest.Pytester, test_source: str, *, ini: str = "") -> None:
        self.pytester = pytester
        self.path = pytester.path
        self.log = self.path / "events.log"
        shutil.copy(HERE / "inner_conftest.py", self.path / "conftest.py")
        shutil.copy(HERE / "inner_child.py", self.path / "inner_child.py")
        pytester.makeini(f"[pytest]\nnetns_require = true\n{ini}")
        pytester.makepyfile(test_inner=test_source)
        self.proc: subprocess.Popen[bytes] | None = None
        self.links_before = socket.if_nameindex()

    def start(self, *args: str, env: dict[str, str] | None = None) -> InnerRun:
        """Start ``pytest ARGS`` (a kill grace of 0.3 s unless ARGS say otherwise)."""
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_XDIST", "PYTEST_ADDOPTS"))}
        env = inherited | (env or {})
        env["NETNS_FAULT_LOG"] = str(self.log)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.path), env.get("PYTHONPATH")]))
        self._out = open(self.path / "stdout", "wb")
        self._err = open(self.path / "stderr", "wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--basetemp={self.path / 'tmp'}",
             "--netns-kill-grace=0.3", *args],
            cwd=self.path, env=env, stdin=subprocess.DEVNULL, stdout=self._out, stderr=self._err,
            start_new_session=True,
            # A shell without job control starts background commands with SIGINT
            # ignored, and the ignoring is inherited: Python then never installs
            # its KeyboardInterrupt handler, so a Ctrl-C test would see nothing.
            preexec_fn=_default_sigint,
        )
        return self

    def events(self) -> Events:
        return Events.read(self.log)

    def wait_ready(self, count: int = 1, timeout: float = 60) -> Events:
        """Wait until ``count`` tests said ``ready`` (the inner run must still be going; ``timeout`` is scaled)."""
        assert self.proc is not None
        deadline = time.monotonic() + scaled(timeout)
        while time.monotonic() < deadline:
            events = self.events()
            if len(events.ready) >= count:
                return events
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.proc.kill()
        result = self.finish()
        pytest.fail(f"the inner run never got ready (exit {result.ret}):\n" + "\n".join(result.outlines[-40:]))

    def send(self, sig: int, *, group: bool = False) -> None:
        assert self.proc is not None
        if group:
            os.killpg(self.proc.pid, sig)
        else:
            os.kill(self.proc.pid, sig)

    def finish(self, timeout: float = 120) -> pytest.RunResult:
        """Wait for the inner run to end (``timeout``, scaled; then it is killed) and read its output."""
        assert self.proc is not None
        try:
            ret = self.proc.wait(scaled(timeout))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            ret = self.proc.wait()
        self._out.close()
        self._err.close()
        out = (self.path / "stdout").read_text(errors="replace").splitlines()
        err = (self.path / "stderr").read_text(errors="replace").splitlines()
        print("\n".join(out))
        print("\n".join(err), file=sys.stderr)
        return pytest.RunResult(ret, out, err, time.monotonic() - self.started)

    def assert_nothing_left(self, settle: float = SETTLE) -> Events:
        """Poll until no process, namespace reference or interface of the run is left; fail after ``settle`` s."""
        events = self.events()
        assert events.namespaces, "the inner run logged no namespace: the scenario did not run"
        deadline = time.monotonic() + settle
        while True:
            # Read again: a forked child logs itself on its own schedule, maybe after the run ended.
            events = self.events()
            found = leftovers(events)
            links = socket.if_nameindex()
            if links != self.links_before:
                found.append(f"interfaces of the test process's namespace changed: {self.links_before} -> {links}")
            if not found:
                return events
            if time.monotonic() > deadline:
                kill_leftovers(events)
                pytest.fail(f"left {settle:g} s after the inner run ended:\n  " + "\n  ".join(found), pytrace=False)
            time.sleep(0.05)

    def cleanup(self) -> None:
        """Whatever happened, leave nothing running (used as a finalizer)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        kill_leftovers(self.events())
