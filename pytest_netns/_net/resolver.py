"""``socket.getaddrinfo`` for code of the test process that runs inside a model's namespace.

A thread inside a pod (``with pod:``, ``pod.call``) would otherwise ask the
host's nameservers, unreachable from there: seconds of waiting, then a
failure.  Models register each namespace (by inode) with a lookup function;
the wrapper, installed when the first model is built (never at import),
looks up which namespace the calling thread is in (one ``stat`` of
``/proc/thread-self/ns/net``, only while something is registered) and, for a
registered one, resolves the name with that namespace's lookup (a pod: the
cluster DNS through its search path).  A miss is ``EAI_NONAME`` at once, as
the namespace's own libc would answer; numeric hosts, ``None`` and
``localhost`` go to the original function.  Threads elsewhere are untouched.

asyncio's ``loop.getaddrinfo`` calls ``socket.getaddrinfo`` on an executor
thread, which is not inside the namespace: see the README.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from .._kernel.netns import THREAD_NETNS

#: A namespace's lookup: the IPv4 addresses of a name, [] for a miss.
Lookup = Callable[[str], list[ipaddress.IPv4Address]]

_lookups: dict[int, Lookup] = {}
_lock = threading.Lock()
_original: Callable[..., Any] | None = None


def register(inode: int, lookup: Lookup) -> None:
    """Resolve names for threads inside the namespace ``inode`` with ``lookup`` (installs the wrapper)."""
    install()
    _lookups[inode] = lookup


def unregister(inode: int) -> None:
    _lookups.pop(inode, None)


def install() -> None:
    """Wrap ``socket.getaddrinfo`` (once)."""
    global _original
    with _lock:
        if _original is None:
            _original = socket.getaddrinfo
            socket.getaddrinfo = _getaddrinfo


def uninstall() -> None:
    """Put the original back (for tests)."""
    global _original
    with _lock:
        if _original is not None:
            socket.getaddrinfo = _original
            _original = None


def lookup_for_thread() -> Lookup | None:
    """The lookup of the namespace the calling thread is in, if a model registered it."""
    if not _lookups:
        return None
    try:
        inode = os.stat(THREAD_NETNS).st_ino
    except OSError:
        return None
    return _lookups.get(inode)


def _is_plain(host: object) -> bool:
    """What the original resolves without asking a nameserver: None, addresses, localhost."""
    if host is None or not isinstance(host, (str, bytes)):
        return True
    text = host.decode(errors="replace") if isinstance(host, bytes) else host
    if text.rstrip(".").lower() in ("localhost", "ip6-localhost", "ip6-loopback", ""):
        return True
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _getaddrinfo(host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0) -> list[Any]:
    original = _original if _original is not None else socket.getaddrinfo
    lookup = lookup_for_thread() if not _is_plain(host) else None
    if lookup is None:
        return original(host, port, family, type, proto, flags)
    name = host.decode() if isinstance(host, bytes) else host
    if family not in (0, socket.AF_INET) or flags & socket.AI_NUMERICHOST:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    addresses = lookup(name)
    if not addresses:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    results: list[Any] = []
    for address in addresses:
        results += original(str(address), port, socket.AF_INET, type, proto, flags | socket.AI_NUMERICHOST)
    return results
