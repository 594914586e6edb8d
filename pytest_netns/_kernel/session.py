"""The session's own network namespace: ``--netns-sandbox`` and ``--netns-rootless``.

Both run at configure time, in the controller, before pytest-xdist starts its
workers (children inherit the namespace of the thread that starts them).

Sandbox: the calling thread (pytest's main thread) moves into a fresh network
namespace with only ``lo``, brought up here.  Tests then reach nothing but
loopback outside the fixtures, and no packet of theirs reaches the machine's
real network.  ``unshare(CLONE_NEWNET)`` moves only the calling thread:
threads that already exist (started by a plugin loaded earlier) stay
outside; threads and processes started later inherit the sandbox.  It can be
left again (``leave_sandbox``), for in-process runs such as ``pytester``'s.

Rootless: without CAP_SYS_ADMIN, the process first enters a user namespace of
its own in which it is root (where the machine allows unprivileged user
namespaces), with CAP_NET_ADMIN and CAP_SYS_ADMIN over the network
namespaces that user namespace owns.  The kernel lets only a single-threaded
process enter a user namespace, and there is no way back.  Differences from
running as root, stated in README:

* only the user's own uid and gid are mapped (to 0 inside): a program that
  switches to another user (a server dropping to ``www-data``) fails;
* the session's namespaces cannot reach the host's network at all;
* files created by tests belong to the invoking user outside;
* ``LOGNAME`` and ``USER`` are set to the invoking user's name: inside, the
  uid is 0 and the password database says ``root``, but pytest names its
  temporary directory after the user (``/tmp/pytest-of-<user>``) and refuses
  one that the uid it runs as does not own, as root's would be.
"""

from __future__ import annotations

import ctypes
import os
import pwd

from . import netns as _kernel
from . import rtnl as _rtnl

CLONE_NEWUSER = _kernel.CLONE_NEWUSER
CLONE_NEWNET = _kernel.CLONE_NEWNET


class SessionMoveError(RuntimeError):
    """The session could not be moved into a namespace of its own; the message says why and what to do."""


def thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


def userns_unavailable_reason() -> str | None:
    """Why this machine refuses unprivileged user namespaces, or None (checked in a child)."""
    for path, bad in (("/proc/sys/kernel/unprivileged_userns_clone", "0"), ("/proc/sys/user/max_user_namespaces", "0")):
        try:
            with open(path) as handle:
                if handle.read().strip() == bad:
                    return f"{path} is {bad}"
        except FileNotFoundError:
            continue
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        libc = ctypes.CDLL(None, use_errno=True)
        os._exit(0 if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0 else ctypes.get_errno() or 1)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code:
        return f"unshare(CLONE_NEWUSER|CLONE_NEWNET) failed: {os.strerror(code)}"
    return None


def enter_sandbox() -> int:
    """Move the calling thread into a fresh network namespace with ``lo`` up.

    Returns an fd of the namespace it was in (for ``leave_sandbox``).
    Raises SessionMoveError with the reason when that is impossible.
    """
    saved = _kernel.open_thread_netns()
    try:
        _kernel.unshare(CLONE_NEWNET)
    except OSError as exc:
        os.close(saved)
        missing = " and ".join(_kernel.Capabilities.current().missing())
        raise SessionMoveError(
            f"unshare(CLONE_NEWNET) failed: {os.strerror(exc.errno or 0)} (running as uid {os.getuid()}"
            f"{', without ' + missing if missing else ''}); run as root, or add --netns-rootless where "
            "unprivileged user namespaces are allowed"
        ) from None
    try:
        _loopback_up()
    except BaseException:
        leave_sandbox(saved)
        raise
    return saved


def leave_sandbox(saved: int) -> None:
    """Move the calling thread back into the namespace ``saved`` (from ``enter_sandbox``) and close it."""
    try:
        _kernel.setns(saved)
    finally:
        os.close(saved)


def enter_session_namespaces() -> None:
    """Move this (single-threaded) process into a new user + network namespace, as root inside, ``lo`` up.

    Raises SessionMoveError with the reason when that is impossible.
    """
    threads = thread_count()
    if threads != 1:
        raise SessionMoveError(
            f"the process already has {threads} threads; a user namespace can only be entered by a "
            "single-threaded process (a plugin loaded before pytest-netns started a thread)"
        )
    uid, gid = os.getuid(), os.getgid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:  # a uid without a passwd entry (containers): the number names the directory
        name = str(uid)
    try:
        _kernel.unshare(CLONE_NEWUSER | CLONE_NEWNET)
    except OSError as exc:
        raise SessionMoveError(
            f"unshare(CLONE_NEWUSER|CLONE_NEWNET) failed: {os.strerror(exc.errno or 0)}; this machine does not allow "
            "unprivileged user namespaces (see `python -m pytest_netns doctor`)"
        ) from None
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"0 {uid} 1")
    _write("/proc/self/gid_map", f"0 {gid} 1")
    os.environ["LOGNAME"] = os.environ["USER"] = name
    _loopback_up()


def _loopback_up() -> None:
    """Bring ``lo`` (always ifindex 1) up in the calling thread's namespace: a new one has it down."""
    rtnl = _rtnl.RtnlSocket()
    try:
        rtnl.execute([_rtnl.set_link(1, up=True, doing="bringing lo up in the session's network namespace")])
    finally:
        rtnl.close()


def _write(path: str, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)
