"""A private ``/etc/hosts`` for processes started in a topology's namespaces.

Names of a topology must resolve through the normal resolver (``getaddrinfo``,
``curl``, ``ssh``...) inside processes started with ``Namespace.run`` and
``popen``, without touching the host's files.  As ``ip netns exec`` does with
``/etc/netns/<name>/``, the processes get a mount namespace of their own in
which private files are bind-mounted over the host's:

* ``/etc/hosts``: ``localhost`` and one line per address of each namespace
  (its first IPv4 and first IPv6 address);
* ``/etc/resolv.conf``: no ``nameserver`` line (glibc then asks 127.0.0.1,
  which inside a test namespace answers at once with "connection refused",
  so nothing waits for a server that cannot be reached);
* ``/etc/nsswitch.conf``: the host's, with ``hosts: files``.

A model with a DNS server gives its own resolv.conf instead (a cluster's pods:
kubelet's, naming the cluster DNS, one ``HostsFile`` per pod since the search
path depends on the pod's namespace), and nsswitch asks ``files dns``.

How: one long-lived thread per ``HostsFile`` calls ``unshare(CLONE_NEWNS)``
for itself (the kernel gives it a private copy of the mount table and of its
working directory), marks every mount as a slave (``mount --make-rslave /``:
mounts made inside stay inside, or they would propagate to the host where
``/`` is shared), then bind-mounts the files.  Children inherit the mount
namespace of the thread that starts them, so ``Namespace`` hands the start of
each process to that thread (``handle_of(ns).spawner = hosts.spawn_via``); starting stays a plain
``vfork``+``exec`` (no ``preexec_fn``, which would cost a ``fork``).

The hosts file is rewritten in place when names or addresses are added (a
bind mount pins the inode, so it is never replaced by a rename); a process
reads it at each lookup, so a later name resolves in a process started
earlier too.  Nothing is written before the first process is started: most
tests start none, and a cluster of 2 nodes and 4 pods would otherwise create
8 files and rewrite them 11 times (~0.1 ms each on ext4) for nobody.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import ipaddress
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .._kernel.netns import CLONE_NEWNS
from ..errors import FeatureUnavailable
from ..namespace import Namespace

MS_BIND = 0x1000
MS_REC = 0x4000
MS_SLAVE = 1 << 19

HOSTS, RESOLV_CONF, NSSWITCH_CONF = "/etc/hosts", "/etc/resolv.conf", "/etc/nsswitch.conf"

_HOSTS_HEADER = (
    "# Private hosts file of a pytest-netns topology, bind-mounted over /etc/hosts\n"
    "# for processes started with Namespace.run/popen (the host's file is untouched).\n"
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
)
_RESOLV_CONF = (
    "# pytest-netns: no DNS server is reachable from a test network; names of the\n"
    "# topology come from /etc/hosts.  Without a nameserver line glibc asks 127.0.0.1,\n"
    "# which fails at once inside the namespace.\n"
    "options timeout:1 attempts:1\n"
)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p)
_libc.unshare.argtypes = (ctypes.c_int,)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Start = Callable[[dict[str, Any]], Any]


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _bind(source: str, target: str) -> None:
    _check(_libc.mount(source.encode(), target.encode(), None, MS_BIND, None), f"bind-mounting {source} on {target}")


def nsswitch_text(host_text: str | None, *, dns: bool = False) -> str:
    """The host's nsswitch.conf with the ``hosts:`` database resolved from files only (``dns``: then DNS)."""
    lines = [] if host_text is None else host_text.splitlines()
    out = [line for line in lines if not line.lstrip().startswith("hosts:")]
    if dns:
        out.append("hosts: files dns  # pytest-netns: the model's DNS server, as in resolv.conf")
    else:
        out.append("hosts: files  # pytest-netns: names of the topology come from /etc/hosts")
    return "\n".join(out) + "\n"


def kubelet_resolv_conf(nameserver: Address, namespace: str, domain: str) -> str:
    """A pod's resolv.conf as kubelet writes it (dnsPolicy ClusterFirst)."""
    return f"search {namespace}.svc.{domain} svc.{domain} {domain}\nnameserver {nameserver}\noptions ndots:5\n"


def hosts_text(entries: Mapping[str, Sequence[Address]]) -> str:
    """The hosts file for ``{name: [addresses]}`` (addresses in the order given)."""
    lines = [f"{address}\t{name}\n" for name, addresses in entries.items() for address in addresses]
    return _HOSTS_HEADER + "".join(lines)


class FileSet:
    """One directory for the private files of several ``HostsFile``s (a cluster's pods): files with the
    same text (resolv.conf, nsswitch.conf) are written once.  ``close()`` removes the directory.

    Creating a file costs ~0.1 ms on ext4 (a directory more): one per pod instead of a directory and three.
    """

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="pytest-netns-hosts-")
        self._shared: dict[tuple[str, str], str] = {}
        self._texts: dict[str, str] = {}  # shared path -> its text, until written
        self._lock = threading.Lock()
        self._count = 0
        self._closed = False

    def shared(self, name: str, text: str) -> str:
        """The path of a file ``name`` that will hold ``text`` (``write_shared`` writes it; never changed)."""
        path = self._shared.get((name, text))
        if path is None:
            path = self._shared[name, text] = os.path.join(self.dir, f"{len(self._shared)}-{name}")
            self._texts[path] = text
        return path

    def write_shared(self, path: str) -> None:
        """Write a file ``shared`` named, once."""
        with self._lock:  # another HostsFile of the set may be about to bind it
            text = self._texts.pop(path, None)
            if text is not None:
                HostsFile._write_new(path, text)

    def new_path(self, name: str) -> str:
        """A path for a file of one ``HostsFile`` alone."""
        self._count += 1
        return os.path.join(self.dir, f"{name}-{self._count}")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.dir)


def _host_nsswitch() -> str | None:
    try:
        with open(NSSWITCH_CONF) as handle:
            return handle.read()
    except FileNotFoundError:
        return None


class HostsFile:
    """Private hosts/resolv.conf/nsswitch.conf files and the thread that starts processes under them.

    ``update({name: [addresses]})`` rewrites the hosts file;
    ``spawn_via(start, kwargs)`` runs ``start(kwargs)`` (which calls
    ``subprocess.Popen`` inside the right network namespace) on the thread
    whose mount namespace has the files.
    ``close()`` stops the thread and removes the files.
    """

    def __init__(self, *, resolv_conf: str | None = None, files: FileSet | None = None) -> None:
        """``resolv_conf``: the text of a resolv.conf naming a DNS server (then nsswitch asks DNS after files).

        ``files``: put the files in that set's directory (the set removes them), sharing
        resolv.conf and nsswitch.conf with other ``HostsFile``s of the set; else a directory of its own.
        """
        resolv_text = _RESOLV_CONF if resolv_conf is None else resolv_conf
        nsswitch = nsswitch_text(_host_nsswitch(), dns=resolv_conf is not None)
        self._files = files
        if files is not None:
            self._dir = ""
            self.hosts_path = files.new_path("hosts")
            self._resolv_path = files.shared("resolv.conf", resolv_text)
            self._nsswitch_path = files.shared("nsswitch.conf", nsswitch)
            self._own_texts: list[tuple[str, str]] = []
        else:
            self._dir = tempfile.mkdtemp(prefix="pytest-netns-hosts-")
            self.hosts_path = os.path.join(self._dir, "hosts")
            self._resolv_path = os.path.join(self._dir, "resolv.conf")
            self._nsswitch_path = os.path.join(self._dir, "nsswitch.conf")
            self._own_texts = [(self._resolv_path, resolv_text), (self._nsswitch_path, nsswitch)]
        #: The hosts file's text; on disk only once a process is started (``_write_files``).
        self._text = _HOSTS_HEADER
        self._on_disk = False
        self._entries: dict[str, list[Address]] = {}
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], list[Any], threading.Event] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._lock = threading.Lock()
        self._closed = False

    @staticmethod
    def _write_new(path: str, text: str) -> None:
        with open(path, "w") as handle:
            handle.write(text)

    def update(self, entries: Mapping[str, Sequence[Address]]) -> None:
        """Rewrite the hosts file in place (same inode: the bind mount keeps showing it)."""
        self._write(hosts_text(entries))
        self._entries = {name.lower(): list(addresses) for name, addresses in entries.items()}

    def add(self, name: str, addresses: Sequence[Address]) -> None:
        """Add one name's lines at the end (cheaper than ``update`` for a growing topology)."""
        self._write(self._text + hosts_text({name: addresses})[len(_HOSTS_HEADER) :])
        self._entries.setdefault(name.lower(), []).extend(addresses)

    def lookup_v4(self, name: str) -> list[ipaddress.IPv4Address]:
        """The IPv4 addresses of ``name`` in the file (as a resolver reading it finds them), [] if none."""
        found = self._entries.get(name.rstrip(".").lower(), [])
        return [address for address in found if isinstance(address, ipaddress.IPv4Address)]

    @property
    def text(self) -> str:
        """What the hosts file holds (or will hold, once a process is started)."""
        return self._text

    def _write(self, text: str) -> None:
        with self._lock:
            if text == self._text:
                return
            self._text = text
            if not self._on_disk:
                return
            data = text.encode()
            fd = os.open(self.hosts_path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                # Write over the old content, then cut: lines are only ever added,
                # so a concurrent reader sees the old file or the old file plus part of a line.
                os.pwrite(fd, data, 0)
                os.ftruncate(fd, len(data))
            finally:
                os.close(fd)

    def _write_files(self) -> None:
        """Put the files on disk (before the first process starts; later changes follow at once).  Lock held."""
        if self._on_disk or self._closed:
            return
        if self._files is not None:
            self._files.write_shared(self._resolv_path)
            self._files.write_shared(self._nsswitch_path)
        for path, text in self._own_texts:
            self._write_new(path, text)
        self._write_new(self.hosts_path, self._text)
        self._on_disk = True

    # -- the thread inside the private mount namespace ----------------------------------

    def spawn_via(self, start: Start, kwargs: dict[str, Any]) -> Any:
        """Run ``start(kwargs)`` (a ``Popen`` inside a network namespace) under the private files.

        ``cwd`` defaults to the caller's working directory (the thread that
        starts the process has a copy of its own, taken when it was made).
        """
        if kwargs.get("cwd") is None:
            kwargs = {**kwargs, "cwd": os.getcwd()}
        return self.call(start, kwargs)

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the thread that sees the private files; return or re-raise."""
        self._ensure_thread()
        done = threading.Event()
        box: list[Any] = []
        self._jobs.put((lambda: fn(*args), box, done))
        done.wait()
        ok, value = box
        if ok:
            return value
        raise value

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._closed:
                raise FeatureUnavailable(
                    "the topology's private hosts file is closed (the topology was torn down)", feature=None
                )
            if self._thread is None:
                self._write_files()  # the thread binds them over the host's
                ready = threading.Event()
                self._thread = threading.Thread(target=self._serve, args=(ready,), name="netns-hosts", daemon=True)
                self._thread.start()
                ready.wait()
            if self._failure is not None:
                raise FeatureUnavailable(
                    "a private /etc/hosts for processes in the topology needs a mount namespace of their own, "
                    f"which this machine refused: {self._failure}",
                    feature="mountns",
                )

    def _serve(self, ready: threading.Event) -> None:
        try:
            self._enter_private_mounts()
        except OSError as exc:
            self._failure = exc
            ready.set()
            return
        ready.set()
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, box, done = job
            try:
                box[:] = [True, fn()]
            except BaseException as exc:  # handed to the caller
                box[:] = [False, exc]
            done.set()

    def _enter_private_mounts(self) -> None:
        """On this thread only: a new mount namespace whose mounts do not reach the host, plus the binds."""
        _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
        # Where / is shared (systemd makes it so), a bind mount made now would
        # propagate to the host's mount namespace: make every mount a slave first.
        _check(
            _libc.mount(b"none", b"/", None, MS_REC | MS_SLAVE, None), "making mounts private (mount --make-rslave /)"
        )
        if not os.path.exists(HOSTS):
            # Binding needs an existing target, and creating the host's file is not ours to do.
            raise OSError(errno.ENOENT, f"{HOSTS} does not exist on this machine, so there is nothing to bind over")
        _bind(self.hosts_path, HOSTS)
        if os.path.exists(RESOLV_CONF):
            _bind(self._resolv_path, RESOLV_CONF)
        if os.path.exists(NSSWITCH_CONF):
            _bind(self._nsswitch_path, NSSWITCH_CONF)

    def close(self) -> None:
        """Stop the thread (its mount namespace goes with it and its children) and remove the files."""
        with self._lock:
            self._closed = True
            thread, self._thread = self._thread, None
        if thread is not None:
            self._jobs.put(None)
            thread.join()
        try:
            if self._files is not None:
                os.unlink(self.hosts_path)  # the shared files go with the set
            else:
                shutil.rmtree(self._dir)
        except FileNotFoundError:
            pass


def release(owned: list[Namespace], hosts: HostsFile, label: str) -> None:
    """Tear down a group's namespaces (last made, first), then its hosts file.

    Every step is attempted; one ``TeardownError`` names every failed one.
    """
    from ..errors import TeardownError
    from ..namespace import close_all

    problems: list[BaseException] = []
    try:
        close_all(owned)
    except TeardownError as exc:
        problems.extend(exc.problems)
    try:
        hosts.close()
    except OSError as exc:
        problems.append(exc)
    if problems:
        raise TeardownError(", ".join(ns.name for ns in owned) or label, problems)
