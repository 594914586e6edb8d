"""Kernel primitives: create, enter and identify network namespaces.

This is the only module that calls ``setns``/``unshare``.  Python 3.11 has no
``os.setns``/``os.unshare`` (3.12 has), so they are called through ``ctypes``.
Every switch is per *thread*: the kernel keeps the network namespace in the
thread, not the process, so saving and restoring always goes through
``/proc/thread-self/ns/net`` (``/proc/self`` is the main thread).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import socket
import threading
from collections.abc import Callable, Iterator

#: unshare/setns flags (linux/sched.h), defined here only.
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
#: ``SO_NETNS_COOKIE`` (Linux 5.14): a 64-bit id of the namespace a socket lives in.
SO_NETNS_COOKIE = 71
THREAD_NETNS = "/proc/thread-self/ns/net"

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = (ctypes.c_int, ctypes.c_int)
_libc.unshare.argtypes = (ctypes.c_int,)


def _open_initial() -> int:
    return os.open(THREAD_NETNS, os.O_RDONLY | os.O_CLOEXEC)


#: The namespace the importing thread was in: where helper processes that must
#: not pin a test namespace (the watchdog) are started from.
INITIAL_NETNS_FD = _open_initial()


def reset_after_session_move() -> None:
    """Forget what was learnt before the session moved namespaces (``--netns-sandbox``, ``--netns-rootless``).

    Call it on the thread that moved: the initial namespace becomes the one
    that thread is in now, so helper processes start there, and the
    availability probe runs again there.
    """
    global INITIAL_NETNS_FD, _probe_result
    with _probe_lock:
        old, INITIAL_NETNS_FD = INITIAL_NETNS_FD, _open_initial()
        os.close(old)
        _probe_result = False


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    """Move the calling thread into new namespaces (``CLONE_NEW*`` flags); OSError on failure."""
    _check(_libc.unshare(flags), f"unshare({flags:#x})")


def setns(fd: int) -> None:
    """Move the calling thread into the network namespace behind ``fd``."""
    _check(_libc.setns(fd, CLONE_NEWNET), "setns(CLONE_NEWNET)")


def open_thread_netns() -> int:
    """Open the calling thread's current network namespace (an O_CLOEXEC fd)."""
    return os.open(THREAD_NETNS, os.O_RDONLY | os.O_CLOEXEC)


def create_netns(setup: Callable[[], object] | None = None) -> int:
    """Create an anonymous network namespace and return the fd that holds it.

    ``setup`` runs on the calling thread while it is still inside the new
    namespace (saving a switch back in).  The namespace lives exactly as long
    as something pins it (this fd, a socket made inside, a process or thread
    inside).  The calling thread is back in its previous namespace when this
    returns, also on error.
    """
    saved = open_thread_netns()
    try:
        _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        try:
            fd = open_thread_netns()
            if setup is not None:
                try:
                    setup()
                except BaseException:
                    os.close(fd)
                    raise
            return fd
        finally:
            setns(saved)
    finally:
        os.close(saved)


@contextlib.contextmanager
def entered(fd: int) -> Iterator[None]:
    """Run the body with the calling thread inside the namespace ``fd``."""
    saved = open_thread_netns()
    try:
        setns(fd)
        try:
            yield
        finally:
            setns(saved)
    finally:
        os.close(saved)


def netns_inode(fd: int) -> int:
    """The inode number that identifies a namespace (as in ``net:[inode]``)."""
    return os.fstat(fd).st_ino


def thread_netns_inode() -> int:
    """The namespace inode of the calling thread."""
    return os.stat(THREAD_NETNS).st_ino


def socket_netns_cookie(sock: socket.socket) -> int:
    """The namespace cookie of the namespace ``sock`` was created in."""
    raw = sock.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8)
    return int.from_bytes(raw, "little")


class Capabilities:
    """What the calling process may do, read from ``/proc/self/status``."""

    CAP_NET_ADMIN = 12
    CAP_SYS_ADMIN = 21

    def __init__(self, effective: int) -> None:
        self.effective = effective

    @classmethod
    def current(cls) -> Capabilities:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return cls(int(line.split()[1], 16))
        return cls(0)  # pragma: no cover - every Linux has CapEff

    def has(self, cap: int) -> bool:
        return bool(self.effective >> cap & 1)

    def missing(self) -> list[str]:
        """Names of the capabilities network namespaces need and we lack."""
        names = {"CAP_SYS_ADMIN": self.CAP_SYS_ADMIN, "CAP_NET_ADMIN": self.CAP_NET_ADMIN}
        return [name for name, cap in names.items() if not self.has(cap)]


_probe_lock = threading.Lock()
_probe_result: str | bool | None = False  # False: not probed yet


def unavailable_reason() -> str | None:
    """Why network namespaces cannot be made here, or None when they can.

    Checks the capabilities first (for a message that says what is missing),
    then really creates and drops one namespace, once per process.
    """
    global _probe_result
    with _probe_lock:
        if _probe_result is not False:
            return _probe_result  # type: ignore[return-value]
        missing = Capabilities.current().missing()
        if missing:
            _probe_result = (
                "network namespaces need "
                + " and ".join(missing)
                + f" (running as uid {os.getuid()}); run as root or in a privileged container"
            )
            return _probe_result
        try:
            os.close(create_netns())
        except OSError as exc:
            reason = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            _probe_result = (
                f"cannot create a network namespace: unshare(CLONE_NEWNET) failed with {reason} ({exc.strerror})"
            )
        else:
            _probe_result = None
        return _probe_result
