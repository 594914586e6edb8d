"""A reaper outside the test process: kills what is left in our namespaces if we die.

Nothing inside a process runs after SIGKILL, and ``PR_SET_PDEATHSIG`` fires
when the parent *thread* exits, not the process.  So each process that
creates namespaces starts one small watchdog (its own session, so a Ctrl-C
in the terminal does not reach it) and tells it, through a pipe, the inode of
every namespace it creates and drops.  When the test process ends (its pidfd
turns readable, or the pipe closes), the watchdog reads what is left in the
pipe, then kills every process whose network namespace is one of those still
registered, repeating the scan until none is left, and exits.  The namespaces themselves are held by file descriptors of
the dead process, so the kernel frees them once their processes are gone.

This file runs as a script with ``python -I -S`` (no site-packages: starts in
~10 ms) and uses nothing but the standard library.
"""

from __future__ import annotations

import atexit
import errno
import os
import select
import signal
import subprocess
import sys
import threading
import time


def pids_in_netns(inodes: set[int], exclude: set[int] = frozenset()) -> list[int]:  # type: ignore[assignment]
    """Processes whose network namespace inode is in ``inodes``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if pid in exclude:
            continue
        try:
            inode = os.stat(f"/proc/{pid}/ns/net").st_ino
        except OSError:  # gone meanwhile, a zombie, or a kernel thread we may not read
            continue
        if inode in inodes:
            found.append(pid)
    return found


def kill_all_in(inodes: set[int], exclude: set[int], deadline: float) -> list[int]:
    """SIGKILL every process in the namespaces until none is left or time runs out."""
    killed: list[int] = []
    while time.monotonic() < deadline:
        pids = pids_in_netns(inodes, exclude)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
        time.sleep(0.01)
    return killed


class WatchdogClient:
    """The test process's end of the pipe to its watchdog (started lazily, once per process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid = -1

    def _ensure(self) -> int | None:
        if self._proc is not None and self._pid == os.getpid():
            assert self._proc.stdin is not None
            return self._proc.stdin.fileno()
        from . import netns as _kernel

        # Start it from the process's initial namespace: a child inherits the
        # starting thread's namespace and would otherwise pin a test namespace.
        with _kernel.entered(_kernel.INITIAL_NETNS_FD):
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", os.path.abspath(__file__), str(os.getpid())],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._pid = os.getpid()
        atexit.register(self.stop)
        assert self._proc.stdin is not None
        return self._proc.stdin.fileno()

    def stop(self) -> None:
        """Tell the watchdog the process ends normally (EOF) and reap it."""
        with self._lock:
            if self._proc is None or self._pid != os.getpid():
                return
            proc, self._proc = self._proc, None
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:  # pragma: no cover - it only scans /proc
            pass

    def _send(self, line: str, doing: str) -> None:
        with self._lock:
            try:
                fd = self._ensure()
                if fd is not None:
                    os.write(fd, line.encode())
            except OSError as exc:  # EMFILE/EAGAIN starting it, EPIPE if it died
                from ..errors import KernelError

                where = f" (pid {self._proc.pid})" if self._proc is not None else ""
                raise KernelError(exc.errno or errno.EIO, f"{doing} with the watchdog{where}") from exc

    def register(self, inode: int) -> None:
        self._send(f"+{inode}\n", f"registering namespace net:[{inode}]")

    def unregister(self, inode: int) -> None:
        if self._proc is not None and self._pid == os.getpid():
            self._send(f"-{inode}\n", f"unregistering namespace net:[{inode}]")

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._pid == os.getpid() else None


client = WatchdogClient()


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    parent = int(sys.argv[1]) if len(sys.argv) > 1 else os.getppid()
    # The pipe alone is not enough: a child forked without exec (multiprocessing)
    # inherits its write end and keeps it open after the test process died.
    # A pidfd of the test process becomes readable the moment it exits.
    try:
        parent_fd: int | None = os.pidfd_open(parent)
    except (AttributeError, OSError):  # already gone (checked below), or Linux < 5.3
        parent_fd = None
    # The test process is our parent: if it died before pidfd_open (or its pid
    # was reused meanwhile), we have been reparented.
    parent_gone = os.getppid() != parent
    registry = Registry()
    watched = [0] + ([parent_fd] if parent_fd is not None else [])
    while not parent_gone:
        ready, _, _ = select.select(watched, [], [])
        if parent_fd is not None and parent_fd in ready:
            break  # the test process is gone (whatever still holds the pipe)
        if not registry.feed(os.read(0, 65536)):
            break  # end of file: the test process exited or died
    # The test process may have died right after writing: its last lines are
    # still in the pipe when the pidfd turns readable.  Read them all.
    os.set_blocking(0, False)
    while True:
        try:
            if not registry.feed(os.read(0, 65536)):
                break
        except BlockingIOError:
            break
    # Anything still registered was not torn down; its processes must not outlive the run.
    if registry.inodes:
        kill_all_in(registry.inodes, {os.getpid(), parent}, time.monotonic() + 10)


class Registry:
    """The namespaces the test process registered, from its ``+inode`` / ``-inode`` lines."""

    def __init__(self) -> None:
        self.inodes: set[int] = set()
        self._partial = b""

    def feed(self, chunk: bytes) -> bool:
        """Apply the complete lines in ``chunk``; False at end of file (an empty chunk)."""
        if not chunk:
            return False
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        for line in lines:
            sign, value = line[:1], line[1:].strip()
            if sign == b"+":
                self.inodes.add(int(value))
            elif sign == b"-":
                self.inodes.discard(int(value))
        return True


if __name__ == "__main__":
    main()
