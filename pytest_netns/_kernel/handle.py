"""``NetnsHandle``: one network namespace as the package's own code uses it.

A ``Namespace`` (the object tests hold) owns exactly one handle; every other
module reaches it through ``handle_of(ns)``, the one accessor, and never
through private attributes of ``Namespace``.  The handle holds what the
kernel side of a namespace is made of:

- ``fd``: the file descriptor that holds the namespace, for the plugin's own
  kernel calls (``entered()``, ``IFLA_NET_NS_FD``, ...).  Unlike the public
  ``Namespace.fd``/``path`` it does not mark the namespace as hosting
  processes: nothing can enter through it.
- ``rtnl`` and ``execute(requests)``: the namespace's rtnetlink socket, made
  inside it at creation; ``execute`` sends a batch (after any deferred setup).
- ``allocate_index()``: interface indexes for links the plugin creates.
- ``add_cleanup(fn, doing)``: the cleanup stack, run at teardown before the
  namespace is released (last added, first run).
- ``host_processes()``: code is about to run inside (``with ns:``, ``call``,
  ``run``/``popen``): register with the watchdog and find processes at
  teardown.  The plugin's own kernel calls use ``entered()`` instead, which
  never registers.
- ``spawner``: how ``run``/``popen`` start a process (a hosts file's thread).

It lives in ``_kernel`` so that ``packets``, which sits below ``namespace``,
takes it too (docs/architecture.md).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from ..errors import NetnsError
from . import netns as _netns
from . import process as _process
from . import rtnl as _rtnl
from .watchdog import client as _watchdog

#: Explicit interface indexes start here, far above the fallback tunnel devices
#: (tunl0, sit0, gre0, ...) that hosts with tunnel modules put in every namespace.
FIRST_INDEX = 1000

#: ``spawner(start, popen_kwargs)`` calls ``start(popen_kwargs)`` (which starts the process inside) where it must run.
Spawner = Callable[[Callable[[dict[str, Any]], Any], dict[str, Any]], Any]


class Handled(Protocol):
    """An object that owns a ``NetnsHandle`` (``Namespace``): its name, and the handle ``handle_of`` returns."""

    _handle: NetnsHandle

    @property
    def name(self) -> str: ...


def handle_of(owner: Handled | NetnsHandle) -> NetnsHandle:
    """The handle of a ``Namespace`` (a handle is its own): the one way other modules reach one."""
    if isinstance(owner, NetnsHandle):
        return owner
    return owner._handle


class NetnsHandle:
    """A new anonymous network namespace, held by an fd, with a netlink socket inside and ``lo`` up.

    ``setup`` runs on the creating thread while it is inside the new
    namespace.  With ``defer_setup`` bringing ``lo`` up waits for the first
    ``execute`` (one batch instead of two).
    """

    def __init__(self, name: str, *, setup: Callable[[], object] | None = None, defer_setup: bool = False) -> None:
        self.name = name
        #: How ``run``/``popen`` start a process; None: directly on the calling thread.
        self.spawner: Spawner | None = None
        self._closed = False
        self._cleanups: list[tuple[Callable[[], object], str]] = []
        self._next_index = FIRST_INDEX
        self._lock = threading.Lock()
        self._hosting = False  # code may have run inside: processes may live there
        self._foreign = False  # fd or path handed out: processes we did not start may be inside
        self._walkable = False  # processes inside are found among this process's descendants
        self._watched = False  # registered with the watchdog
        self._spared = False  # teardown leaves the processes inside running (kept for debugging)
        _process.reap_killed()  # what earlier teardowns killed and nobody waited for

        def inside() -> None:
            if setup is not None:
                setup()
            self._rtnl = _rtnl.RtnlSocket()

        self._fd = _netns.create_netns(inside)
        try:
            self.inode = _netns.netns_inode(self._fd)
            self.cookie = _netns.socket_netns_cookie(self._rtnl.sock)
            self._setup_requests = [_rtnl.set_link(1, up=True, doing=f"bringing lo up in {name!r}")]
            if not defer_setup:
                self.execute([])
        except BaseException:
            self._rtnl.close()
            os.close(self._fd)
            raise

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"net:[{self.inode}]"
        return f"<NetnsHandle {self.name!r} {state}>"

    # -- the kernel side ----------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def check_open(self) -> None:
        """Raise ``NetnsError`` if the namespace is torn down."""
        if self._closed:
            raise NetnsError(f"namespace {self.name!r} is already torn down")

    @property
    def fd(self) -> int:
        """The fd holding the namespace, for the plugin's own kernel calls (never registers with the watchdog)."""
        self.check_open()
        return self._fd

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """The calling thread inside, for the plugin's own kernel calls: no process may be started here."""
        with _netns.entered(self.fd):
            yield

    @property
    def rtnl(self) -> _rtnl.RtnlSocket:
        """The namespace's rtnetlink socket (requests are serialised; any thread may use it)."""
        self.check_open()
        return self._rtnl

    def execute(self, requests: list[_rtnl.Request]) -> None:
        """Send rtnetlink requests in one batch (after any deferred setup of this namespace)."""
        self.check_open()
        if self._setup_requests:
            requests = self._setup_requests + requests
            self._setup_requests = []
        self._rtnl.execute(requests)

    def allocate_index(self) -> int:
        """A fresh interface index for a link the plugin creates in this namespace."""
        with self._lock:
            index = self._next_index
            self._next_index += 1
        return index

    def add_cleanup(self, fn: Callable[[], object], doing: str) -> None:
        """Run ``fn`` at teardown, before the namespace is released (last added, first run)."""
        self._cleanups.append((fn, doing))

    def links(self) -> list[tuple[int, str]]:
        """(index, name) of every interface, in index order."""
        msgs = self.rtnl.dump(_rtnl.RTM_GETLINK, _rtnl.ifinfo(), f"listing interfaces in {self.name!r}")
        return sorted((m["index"], m.get_attr("IFLA_IFNAME")) for m in msgs)

    def interfaces(self) -> list[str]:
        """Names of all interfaces, ``lo`` included, in index order."""
        return [name for _, name in self.links()]

    # -- processes ---------------------------------------------------------------

    def host_processes(self, *, foreign: bool = False) -> None:
        """Code is about to run inside (``with``, ``call``, ``run``, ``popen``; ``foreign``: ``fd``/``path`` given out).

        Registers the namespace with the watchdog (once) and has teardown look
        for processes inside: among the descendants of this process (a child
        subreaper, so orphans stay among them), or in all of ``/proc`` once
        ``foreign`` (anything may enter through the fd or path).  Until then
        no process can be inside, so a namespace only the plugin used pays
        nothing for this.
        """
        with self._lock:
            if not self._hosting:
                # Before anything runs inside: an orphan must find the subreaper flag set.
                self._walkable = _process.keep_descendants()
                self._hosting = True
            self._foreign = self._foreign or foreign
        if not self._watched:
            _watchdog.register(self.inode)
            self._watched = True

    def spare_processes(self) -> None:
        """At teardown, leave the processes inside running: stop nothing, kill nothing, and the watchdog forgets
        the namespace (``--netns-keep-on-failure=processes``: a bind mount keeps the namespace after release)."""
        self._spared = True

    # -- teardown ------------------------------------------------------------------

    def release(self, problems: list[BaseException], stop: Callable[[], object] | None = None) -> None:
        """Tear down, collecting failures in ``problems``: ``stop()`` (the owner stops the processes it
        started), kill what is left inside, run the cleanups, release the namespace.  Only the first call acts.
        """
        release_all([(self, stop, problems)])

    def _begin_release(self, stop: Callable[[], object] | None, problems: list[BaseException]) -> bool:
        if self._closed:
            return False
        self._closed = True
        if stop is not None and not self._spared:
            try:
                stop()
            except Exception as exc:  # pragma: no cover - defensive
                problems.append(exc)
        return True

    def _finish_release(self, problems: list[BaseException]) -> None:
        for fn, doing in reversed(self._cleanups):
            try:
                fn()
            except OSError as exc:
                if exc.errno not in (errno.ENODEV, errno.ENOENT, errno.ESRCH):
                    problems.append(NetnsError(f"{doing}: {exc}"))
            except Exception as exc:
                problems.append(NetnsError(f"{doing}: {type(exc).__name__}: {exc}"))
        self._cleanups.clear()
        self._rtnl.close()
        os.close(self._fd)
        if self._watched:
            try:
                _watchdog.unregister(self.inode)
            except NetnsError as exc:
                problems.append(exc)


#: One namespace's part of a teardown: its handle, what stops its owner's processes, where failures go.
Step = tuple[NetnsHandle, Callable[[], object] | None, list[BaseException]]


def release_all(steps: list[Step]) -> None:
    """Tear namespaces down in the order given (see ``NetnsHandle.release``); already released ones are skipped.

    Every owner first stops its processes; then what user code left inside is
    killed in one pass for all of them (one walk of this process's
    descendants, not one per namespace); then each runs its cleanups and is
    released.
    """
    started = [(handle, problems) for handle, stop, problems in steps if handle._begin_release(stop, problems)]
    hosting = [handle for handle, _ in started if handle._hosting and not handle._spared]
    spared = [handle for handle, _ in started if handle._spared and handle._hosting and handle._walkable]
    for _handle in spared:  # their processes stay, on their own: no subreaper needed for them
        _process.release_descendants()
    if hosting:
        first = next(problems for handle, problems in started if handle is hosting[0])
        everywhere = any(handle._foreign or not handle._walkable for handle in hosting)
        try:
            left = _process.kill_in_netns({handle.inode for handle in hosting}, everywhere=everywhere)
            if left:
                names = ", ".join(repr(handle.name) for handle in hosting)
                first.append(NetnsError(f"processes {left} in namespace {names} survived SIGKILL for 5 s"))
        except Exception as exc:  # pragma: no cover - defensive: the namespaces must still be released
            first.append(NetnsError(f"killing what was left in the namespaces: {type(exc).__name__}: {exc}"))
        finally:
            for handle in hosting:
                if handle._walkable:
                    _process.release_descendants()
    for handle, problems in started:
        handle._finish_release(problems)


def holders(handles: list[NetnsHandle]) -> dict[str, list[str]]:
    """What in this process still pins released namespaces: ``{name: ["thread 12", "fd 7", ...]}``."""
    by_inode = {h.inode: h for h in handles}
    by_cookie = {h.cookie: h for h in handles}
    found: dict[str, list[str]] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            inode = os.stat(f"/proc/self/task/{tid}/ns/net").st_ino
        except OSError:
            continue
        if inode in by_inode:
            found.setdefault(by_inode[inode].name, []).append(f"thread {tid}")
    for entry in os.listdir("/proc/self/fd"):
        fd = int(entry)
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("net:["):
            inode = int(target[5:-1])
            if inode in by_inode:
                found.setdefault(by_inode[inode].name, []).append(f"fd {fd}")
        elif target.startswith("socket:["):
            cookie = _socket_cookie(fd)
            if cookie is not None and cookie in by_cookie:
                found.setdefault(by_cookie[cookie].name, []).append(f"socket fd {fd}")
    return found


def _socket_cookie(fd: int) -> int | None:
    """The namespace cookie of the socket behind ``fd``, read through a duplicate."""
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return None
    try:
        return _netns.socket_netns_cookie(sock)
    except OSError:
        return None
    finally:
        sock.close()
