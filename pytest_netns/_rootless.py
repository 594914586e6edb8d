"""Rootless mode: run the whole session in a user + network namespace of its own.

Where unprivileged user namespaces are allowed, a normal user can create a
user namespace in which it is root, with CAP_NET_ADMIN and CAP_SYS_ADMIN
over the network namespaces that namespace owns.  The kernel lets a process
enter a new user namespace only while it is single-threaded, so this runs at
configure time, before pytest-xdist or anything else starts threads or
workers (workers are children and inherit it).

Differences from running as root, stated in README:

* only the user's own uid and gid are mapped (to 0 inside): a program that
  switches to another user (a server dropping to ``www-data``) fails;
* the session's namespaces cannot reach the host's network at all (they are
  all inside the session's own network namespace);
* files created by tests belong to the invoking user outside.
"""

from __future__ import annotations

import ctypes
import os

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000


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


def enter_session_namespaces() -> None:
    """Move this (single-threaded) process into a new user + network namespace, as root inside.

    Raises RuntimeError with the reason when that is impossible.
    """
    threads = thread_count()
    if threads != 1:
        raise RuntimeError(
            f"the process already has {threads} threads; a user namespace can only be entered by a "
            "single-threaded process (a plugin loaded before pytest-netns started a thread)"
        )
    uid, gid = os.getuid(), os.getgid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise RuntimeError(
            f"unshare(CLONE_NEWUSER|CLONE_NEWNET) failed: {os.strerror(err)}; this machine does not allow "
            "unprivileged user namespaces (see `python -m pytest_netns doctor`)"
        )
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"0 {uid} 1")
    _write("/proc/self/gid_map", f"0 {gid} 1")


def _write(path: str, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)
