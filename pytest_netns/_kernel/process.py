"""Processes inside a namespace: environment rules, ``run`` and termination.

A child inherits the network namespace of the thread that starts it, so the
namespace's ``with`` block around ``subprocess.Popen`` is all it takes (no
``preexec_fn``: spawning stays ~0.5 ms instead of ~3 ms).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

PROXY_VARIABLES = frozenset(
    name for base in ("http_proxy", "https_proxy", "all_proxy", "no_proxy") for name in (base, base.upper())
)

Command = str | Sequence[str]


def child_environment(extra: Mapping[str, str] | None) -> dict[str, str]:
    """The current environment without proxy variables (no proxy is reachable inside), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARIABLES}
    if extra:
        env.update(extra)
    return env


def validate_command(cmd: object) -> Command:
    if isinstance(cmd, str):
        if not cmd.strip():
            raise ValueError("command must not be empty")
        return cmd
    if isinstance(cmd, (list, tuple)) and cmd and all(isinstance(a, (str, os.PathLike)) for a in cmd):
        return [os.fspath(a) for a in cmd]
    raise ValueError(f"command must be a string or a non-empty list of strings, got {cmd!r}")


def popen_arguments(cmd: Command, env: Mapping[str, str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for ``subprocess.Popen``: a string runs through ``/bin/sh -c``."""
    kwargs = dict(kwargs)
    kwargs.setdefault("shell", isinstance(cmd, str))
    kwargs["env"] = child_environment(env)
    return kwargs


def terminate(processes: Iterable[subprocess.Popen[Any]], grace: float) -> list[subprocess.Popen[Any]]:
    """SIGTERM every live process, SIGKILL whatever is left after ``grace`` seconds, reap all.

    Returns the processes that had to be killed.
    """
    alive = [p for p in processes if p.poll() is None]
    for proc in alive:
        _signal(proc, signal.SIGTERM)
    deadline = time.monotonic() + grace
    killed = []
    for proc in alive:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal(proc, signal.SIGKILL)
            proc.wait()
            killed.append(proc)
    return killed


def killed_after_grace(proc: subprocess.Popen[Any], grace: float, namespace: str) -> str:
    """What to tell about a process ``terminate`` had to kill."""
    return (
        f"pid {proc.pid} ({describe(proc.args)}) in namespace {namespace!r} was still running {grace:g}s "
        "after SIGTERM and was killed with SIGKILL (--netns-kill-grace or kill_grace= gives it longer to stop)"
    )


def _signal(proc: subprocess.Popen[Any], sig: int) -> None:
    try:
        proc.send_signal(sig)
    except ProcessLookupError:  # pragma: no cover - exited between poll and kill
        pass


SPLICE_F_NONBLOCK = 2
F_SETPIPE_SZ, F_GETPIPE_SZ = 1031, 1032


def peek_pipe(fd: int) -> bytes | None:
    """What is queued in the pipe ``fd`` reads from, without taking it out; None if ``fd`` is no pipe.

    ``tee(2)`` copies a pipe's contents into another pipe and leaves them in
    place: the owner of ``fd`` (a ``Popen``'s ``stderr``) still reads all of
    it.  Never blocks, even while a writer is alive.
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.tee.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint)
    libc.tee.restype = ctypes.c_ssize_t
    try:
        size = fcntl.fcntl(fd, F_GETPIPE_SZ)
    except OSError:
        return None
    read_end, write_end = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        with contextlib.suppress(OSError):  # over pipe-max-size without CAP_SYS_RESOURCE: the start is copied
            fcntl.fcntl(write_end, F_SETPIPE_SZ, size)
        copied = libc.tee(fd, write_end, size, SPLICE_F_NONBLOCK)
        if copied <= 0:
            return b"" if copied == 0 or ctypes.get_errno() == errno.EAGAIN else None
        chunks = []
        while copied > 0:
            chunk = os.read(read_end, copied)
            chunks.append(chunk)
            copied -= len(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(read_end)
        os.close(write_end)


def tail(data: bytes, lines: int = 10) -> str:
    """The last ``lines`` lines of a process's output, as text."""
    return "\n".join(data.decode(errors="replace").rstrip().splitlines()[-lines:])


def describe(args: object) -> str:
    if isinstance(args, (list, tuple)):
        return " ".join(map(str, args))
    return str(args)


# -- finding what user code left inside ---------------------------------------------

PR_SET_CHILD_SUBREAPER, PR_GET_CHILD_SUBREAPER = 36, 37
_children_listable: bool | None = None  # whether /proc/<pid>/task/<tid>/children exists (CONFIG_PROC_CHILDREN)
#: pid -> start time of processes ``kill_in_netns`` killed, still to be reaped if they turn out to be our
#: zombies: ``_adopted`` were not our children when killed (nobody here can wait for them);
#: ``_maybe_ours`` were (a ``Popen`` of the caller's may still wait for them).
_adopted: dict[int, int] = {}
_maybe_ours: dict[int, int] = {}
_reap_lock = threading.Lock()


class _Subreaper:
    """This process's child-subreaper flag, on while at least one namespace may host processes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid = 0  # the process the fields below describe (a fork starts afresh: the flag is not inherited)
        self.users = 0
        self.preset = False  # the process was a subreaper before we looked: never switch it off

    def _prctl(self, option: int, value: int = 0) -> int:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if option == PR_GET_CHILD_SUBREAPER:
            flag = ctypes.c_int(0)
            libc.prctl(option, ctypes.byref(flag), 0, 0, 0)
            return flag.value
        return int(libc.prctl(option, value, 0, 0, 0))

    def acquire(self) -> bool:
        global _children_listable
        if _children_listable is None:
            _children_listable = os.path.exists("/proc/thread-self/children")
        if not _children_listable:
            return False
        with self.lock:
            if self.pid != os.getpid():
                self.pid, self.users = os.getpid(), 0
                self.preset = bool(self._prctl(PR_GET_CHILD_SUBREAPER))
            if self.users == 0 and not self.preset and self._prctl(PR_SET_CHILD_SUBREAPER, 1) != 0:
                return False  # pragma: no cover - Linux >= 3.4 has it
            self.users += 1
            return True

    def release(self) -> None:
        with self.lock:
            if self.pid != os.getpid() or self.users == 0:
                return
            self.users -= 1
            if self.users == 0 and not self.preset:
                self._prctl(PR_SET_CHILD_SUBREAPER, 0)


_subreaper = _Subreaper()


def keep_descendants() -> bool:
    """A namespace may host processes from now on: keep what this process starts among its descendants.

    A process started inside a namespace is a descendant of this process; as
    a child subreaper, this process adopts it when its parent dies (a daemon
    that double-forks and calls ``setsid``), so it stays one.  The flag is on
    while at least one such namespace lives (``release_descendants`` when it is
    released): orphans elsewhere in this process's tree are adopted only then.
    Returns False where descendants cannot be listed (a kernel without
    ``CONFIG_PROC_CHILDREN``): then teardown must scan all of ``/proc``.
    """
    return _subreaper.acquire()


def release_descendants() -> None:
    """A namespace ``keep_descendants`` was called for is released (after ``kill_in_netns``)."""
    _subreaper.release()


def _read(path: str) -> bytes | None:
    """A small /proc file (os-level calls: this runs at every teardown), or None if it cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks = [os.read(fd, 4096)]
        while len(chunks[-1]) == 4096:
            chunks.append(os.read(fd, 4096))
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time) of a process, or None when there is no such process."""
    data = _read(f"/proc/{pid}/stat")
    if not data:
        return None
    fields = data[data.rindex(b")") + 2 :].split()
    return fields[0].decode(), int(fields[1]), int(fields[19])


def _children(pid: int | str) -> list[int]:
    """The children of every thread of ``pid`` (``"self"``: of this process)."""
    found: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        data = _read(f"/proc/{pid}/task/{tid}/children")
        if data:
            found.extend(map(int, data.split()))
    return found


def _descendants_in_netns(inodes: set[int]) -> tuple[list[int], list[int]]:
    """Descendants of this process in the namespaces, and descendants busy exiting.

    An exiting process has left its namespace but may not yet have handed its
    children to a reaper: until it is a zombie, a child of it can be in
    neither its list nor ours.
    """
    inside: list[int] = []
    exiting: list[int] = []
    todo = _children("self")
    while todo:
        pid = todo.pop()
        try:
            inode = os.stat(f"/proc/{pid}/ns/net").st_ino
        except FileNotFoundError:  # a zombie, gone, or exiting
            stat = _stat(pid)
            if stat is not None and stat[0] not in ("Z", "X"):
                exiting.append(pid)
        except OSError:  # not ours to read
            pass
        else:
            if inode in inodes:
                inside.append(pid)
        todo.extend(_children(pid))
    return inside, exiting


def kill_in_netns(inodes: set[int], *, everywhere: bool, timeout: float = 5.0) -> list[int]:
    """SIGKILL every process in the namespaces ``inodes`` until none is left; the pids still there after ``timeout``.

    Only descendants of this process are looked for (the processes that code
    run inside can have started, kept in the tree by ``keep_descendants``),
    unless ``everywhere``: then every process in ``/proc`` is checked
    (``ns.fd``/``ns.path`` were handed out and anything may have entered, or
    descendants cannot be listed).  What was killed is reaped if it turns out
    to be an orphan this process adopted; one that was a child of this
    process is left to whoever holds its ``Popen`` until the next namespace
    is created (``reap_killed``).
    """
    me = os.getpid()
    if everywhere:
        from .watchdog import pids_in_netns

        def scan() -> tuple[list[int], list[int]]:
            return pids_in_netns(inodes, {me}), []
    else:
        scan = functools.partial(_descendants_in_netns, inodes)
    deadline = time.monotonic() + timeout
    killed: dict[int, tuple[bool, int]] = {}  # pid -> (was our child before we killed anything, start time)
    while True:
        inside, exiting = scan()
        # A process killed earlier hands its children over only once it is a zombie.
        dying = [pid for pid, (_, start) in killed.items() if _running(pid, start)]
        if not inside and not exiting and not dying:
            break
        if time.monotonic() > deadline:
            return inside
        # Read before killing: once we killed its parent, a process becomes our child by adoption.
        stats = {pid: _stat(pid) for pid in inside}
        first = not killed
        for pid, stat in stats.items():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            if stat is not None and pid not in killed:
                killed[pid] = (first and stat[1] == me, stat[2])
        time.sleep(0.0005)
    if killed:
        with _reap_lock:
            for pid, (ours, start) in killed.items():
                (_maybe_ours if ours else _adopted)[pid] = start
        reap_killed(adopted_only=True)
    return []


def _running(pid: int, start: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[2] == start and stat[0] not in ("Z", "X")


def reap_killed(*, adopted_only: bool = False) -> None:
    """Reap processes ``kill_in_netns`` killed that are now zombie children of this process.

    ``adopted_only``: only those that were not our children when killed.  The
    others may belong to a ``Popen`` (or ``multiprocessing.Process``) of the
    caller, whose ``wait`` would get no status if we reaped first; they are
    reaped when the next namespace is made (the test that started them is over).
    """
    if not _adopted and (adopted_only or not _maybe_ours):
        return
    if not adopted_only and "multiprocessing" in sys.modules:
        import multiprocessing

        multiprocessing.active_children()  # lets multiprocessing reap (and record) its own children
    me = os.getpid()
    with _reap_lock:
        for table in (_adopted,) if adopted_only else (_adopted, _maybe_ours):
            for pid, start in list(table.items()):
                stat = _stat(pid)
                if stat is None or stat[2] != start:
                    del table[pid]  # reaped by someone else (and its pid perhaps reused)
                elif stat[0] == "Z" and stat[1] == me:
                    try:
                        os.waitpid(pid, os.WNOHANG)
                    except ChildProcessError:
                        pass
                    del table[pid]
