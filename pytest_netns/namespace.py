"""``Namespace``: one network namespace, the object tests hold."""

from __future__ import annotations

import errno
import ipaddress
import itertools
import os
import socket
import subprocess
import threading
import warnings
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from ._kernel import netns as _kernel
from ._kernel import ports as _ports
from ._kernel import process as _process
from ._kernel import rtnl as _rtnl
from ._kernel import validate as _validate
from ._kernel.handle import NetnsHandle, Step, handle_of, release_all
from ._kernel.handle import holders as _holders
from .errors import (
    CommandError,
    KernelError,
    NetnsError,
    NetnsLeakWarning,
    NetnsProcessWarning,
    TeardownError,
)

if TYPE_CHECKING:
    from scapy.packet import Packet
    from scapy.plist import PacketList

    from .packets import Capture

T = TypeVar("T")

#: Settings every namespace gets explicitly, whatever the host has: a new
#: namespace copies some of the host's IPv4 ``conf/all`` values (forwarding
#: included, e.g. on a machine running Docker).  ``keep_addr_on_down`` keeps
#: IPv6 addresses across a link going down and up, as IPv4 addresses are kept.
BASELINE_SYSCTLS = (
    ("/proc/sys/net/ipv4/ip_forward", "0"),
    ("/proc/sys/net/ipv6/conf/all/forwarding", "0"),
    ("/proc/sys/net/ipv6/conf/default/forwarding", "0"),
    ("/proc/sys/net/ipv6/conf/all/keep_addr_on_down", "1"),
    # No duplicate address detection on interfaces made here: link-local
    # addresses would stay tentative for 1-2 s (a router's first forwarded
    # IPv6 packet needs one for its neighbour solicitation).
    ("/proc/sys/net/ipv6/conf/default/accept_dad", "0"),
)
#: The baseline settings a fresh namespace does not already have, learnt from
#: the first namespace of the process (what a new namespace inherits does not
#: change during a run); later namespaces write only these.
_baseline_writes: list[tuple[str, str]] | None = None

_numbers = itertools.count(1)
#: The namespace each process ``popen``/``run`` started is in (``wait_for_port(process=)`` names it).
_started_in: weakref.WeakKeyDictionary[subprocess.Popen[Any], str] = weakref.WeakKeyDictionary()
_thread_state = threading.local()


class Namespace:
    """A Linux network namespace, held by a file descriptor, with ``lo`` up.

    The namespace is anonymous: it exists only as long as this object (or a
    socket, thread or process inside it) holds it, so nothing survives the
    process, even a SIGKILL.  ``with ns:`` moves the calling thread inside;
    ``close()`` kills processes started inside and releases it.
    """

    def __init__(self, name: str | None = None, *, kill_grace: float = 1.0, _defer_setup: bool = False) -> None:
        if name is not None:
            _validate.check_name(name, what="namespace name", rule=_validate.NAMESPACE)
        self.kill_grace = _validate.duration(kill_grace, "kill_grace")
        self._name = name or f"ns{next(_numbers)}"
        self._lock = threading.Lock()
        self._processes: list[subprocess.Popen[Any]] = []
        #: The kernel side, for the package's own code: reached with ``handle_of(ns)`` (_kernel/handle.py).
        self._handle = NetnsHandle(self._name, setup=_apply_baseline, defer_setup=_defer_setup)
        self.inode = self._handle.inode
        self.cookie = self._handle.cookie

    # -- identity -----------------------------------------------------------

    @property
    def name(self) -> str:
        """The name given at creation (a label: the namespace itself is anonymous)."""
        return self._name

    @property
    def fd(self) -> int:
        """The file descriptor that holds the namespace (for ``setns`` or ``nsenter``).

        Processes that enter through it are killed at teardown too.
        """
        self._check_open()
        self._handle.host_processes(foreign=True)
        return self._handle.fd

    @property
    def path(self) -> str:
        """A path that opens this namespace while the process lives: ``nsenter --net=<path>``.

        Processes that enter this way are killed at teardown too.
        """
        self._check_open()
        self._handle.host_processes(foreign=True)
        return f"/proc/{os.getpid()}/fd/{self._handle.fd}"

    @property
    def closed(self) -> bool:
        return self._handle.closed

    def __repr__(self) -> str:
        state = "closed" if self._handle.closed else f"net:[{self.inode}]"
        return f"<Namespace {self._name!r} {state}>"

    # -- entering -----------------------------------------------------------

    def __enter__(self) -> Namespace:
        """Move the calling thread into the namespace (nestable); restored on exit."""
        self._check_open()
        # Registered first: if that fails (the watchdog died, EMFILE), the thread has not moved.
        self._handle.host_processes()
        stack = getattr(_thread_state, "saved", None)
        if stack is None:
            stack = _thread_state.saved = []
        saved = _kernel.open_thread_netns()
        try:
            _kernel.setns(self._handle.fd)
        except OSError as exc:
            os.close(saved)
            raise KernelError(exc.errno or errno.EINVAL, f"entering namespace {self._name!r}") from None
        stack.append(saved)
        return self

    def __exit__(self, *exc_info: object) -> None:
        saved = _thread_state.saved.pop()
        try:
            _kernel.setns(saved)
        finally:
            os.close(saved)

    def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` in a thread inside the namespace; return or re-raise."""
        self._check_open()
        outcome: list[Any] = []

        def target() -> None:
            try:
                with self:
                    outcome.append((True, fn(*args, **kwargs)))
            except BaseException as exc:  # re-raised in the caller
                outcome.append((False, exc))

        thread = threading.Thread(target=target, name=f"netns-call-{self._name}")
        thread.start()
        thread.join()
        ok, value = outcome[0]
        if ok:
            return value  # type: ignore[no-any-return]
        raise value

    # -- processes ----------------------------------------------------------

    def run(
        self,
        cmd: str | list[str],
        *,
        check: bool = True,
        timeout: float | None = 30,
        input: str | bytes | None = None,
        env: Mapping[str, str] | None = None,
        text: bool = True,
    ) -> subprocess.CompletedProcess[Any]:
        """Run a command inside and wait for it; output is captured.

        A list is executed directly, a string through ``/bin/sh -c``.  Proxy
        variables are not passed on.  With ``check``, a non-zero exit raises
        ``CommandError``; a timeout kills the process and raises
        ``subprocess.TimeoutExpired``.
        """
        command = _process.validate_command(cmd)
        if timeout is not None:
            _validate.duration(timeout, "timeout")
        kwargs = _process.popen_arguments(command, env, {"text": text})
        proc = self._spawn(
            command,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            **kwargs,
        )
        try:
            stdout, stderr = proc.communicate(input, timeout)
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            exc.output, exc.stderr = proc.communicate()
            raise
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            self._forget(proc)
        if check and proc.returncode:
            raise CommandError(proc.returncode, command, stdout, stderr, namespace=self._name)
        return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)

    def popen(self, cmd: str | list[str], **popen_kwargs: Any) -> subprocess.Popen[Any]:
        """Start a command inside and return its ``Popen``; it is stopped at teardown.

        Accepts ``subprocess.Popen`` keyword arguments (``env`` adds to the
        environment).  At teardown a live process gets SIGTERM, then SIGKILL
        after ``kill_grace`` seconds (with a ``NetnsProcessWarning`` naming
        it); if the test process dies, the watchdog kills it.
        """
        command = _process.validate_command(cmd)
        env = popen_kwargs.pop("env", None)
        return self._spawn(command, **_process.popen_arguments(command, env, popen_kwargs))

    def _spawn(self, command: _process.Command, **kwargs: Any) -> subprocess.Popen[Any]:
        self._check_open()
        spawner = self._handle.spawner
        if spawner is not None:
            return spawner(lambda popen_kwargs: self._spawn_here(command, popen_kwargs), kwargs)  # type: ignore[no-any-return]
        return self._spawn_here(command, kwargs)

    def _spawn_here(self, command: _process.Command, kwargs: dict[str, Any]) -> subprocess.Popen[Any]:
        """Start the process from the calling thread, moved inside for the ``fork``."""
        self._handle.host_processes()
        with self._lock, _kernel.entered(self._handle.fd):
            proc = subprocess.Popen(command, **kwargs)
            self._processes.append(proc)
        _started_in[proc] = self._name
        return proc

    def _forget(self, proc: subprocess.Popen[Any]) -> None:
        with self._lock:
            if proc in self._processes:
                self._processes.remove(proc)

    def wait_for_port(
        self,
        host: str | _validate.IPAddress,
        port: int,
        *,
        timeout: float = 10.0,
        process: subprocess.Popen[Any] | None = None,
    ) -> None:
        """Return once a TCP server at ``host:port`` accepts a connection made from inside (for ``popen``'s servers).

        ``ProcessExited`` at once, with the exit code and the end of its stderr
        if that is a pipe (read without taking it from you), when ``process``
        (a ``Popen``, from any namespace) exits, or without it, when a process
        ``popen`` started here fails before you collected its status.
        ``NetnsTimeout`` (a ``TimeoutError``) naming the address after ``timeout``.
        """
        __tracebackhide__ = True
        address, port = _validate.address(host), _validate.port(port)
        _validate.duration(timeout, "timeout")
        if process is not None and not isinstance(process, subprocess.Popen):
            raise ValueError(f"process must be the subprocess.Popen that popen returned, got {process!r}")
        self._check_open()
        with self._lock:  # without process=: those the test has not seen end (returncode is set once waited for)
            watched = [process] if process is not None else [p for p in self._processes if p.returncode is None]
        _ports.wait_for_port(
            self._handle, address, port, timeout, watched, any_exit=process is not None, homes=_started_in
        )

    # -- configuration ------------------------------------------------------

    def sysctl(self, key: str, value: str | int | None = None) -> str:
        """Read a network sysctl of this namespace, or write it and return the new value.

        ``key`` is like ``net.ipv4.ip_forward`` (or ``net/ipv4/conf/eth0.1/rp_filter``).
        """
        path = _validate.sysctl_key(key)
        self._check_open()
        try:
            with self._handle.entered():
                if value is not None:
                    _write(path, str(value))
                with open(path) as handle:
                    return handle.read().strip()
        except OSError as exc:
            doing = f"{'writing' if value is not None else 'reading'} sysctl {key} in {self._name!r}"
            raise KernelError(exc.errno or errno.EIO, doing) from None

    def interfaces(self) -> list[str]:
        """Names of all interfaces, ``lo`` included, in index order."""
        return self._handle.interfaces()

    def addresses(self, iface: str | None = None) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
        """All addresses (of ``iface``, or of every interface) as ``ipaddress`` interface objects."""
        index = self._index(iface) if iface is not None else None
        result = []
        for msg in self._handle.rtnl.dump(_rtnl.RTM_GETADDR, bytes(8), f"listing addresses in {self._name!r}"):
            if index is not None and msg["index"] != index:
                continue
            addr = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
            if addr:
                result.append(ipaddress.ip_interface(f"{addr}/{msg['prefixlen']}"))
        return result

    @property
    def ip(self) -> ipaddress.IPv4Address | None:
        """The first IPv4 address on a non-loopback interface, or None."""
        first = self._first(4)
        return first if isinstance(first, ipaddress.IPv4Address) else None

    @property
    def ip6(self) -> ipaddress.IPv6Address | None:
        """The first IPv6 address of global scope (fd00::/8 counts), or None."""
        first = self._first(6)
        return first if isinstance(first, ipaddress.IPv6Address) else None

    def _first(self, version: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        loopback = self._loopback_indexes()
        for msg in self._handle.rtnl.dump(_rtnl.RTM_GETADDR, bytes(8), f"listing addresses in {self._name!r}"):
            if msg["index"] in loopback or msg["family"] != (socket.AF_INET if version == 4 else socket.AF_INET6):
                continue
            if version == 6 and msg["scope"] != 0:
                continue
            addr = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
            if addr:
                return ipaddress.ip_address(addr)
        return None

    def add_address(self, iface: str, address: str | _validate.IPInterface | _validate.IPAddress) -> None:
        """Add an address like ``10.0.0.5/24`` or ``fd00::5/64`` (IPv6 usable at once, no DAD).

        A string or an ``ipaddress`` object; a bare address gets /32 or /128.  On an interface
        that is up, an IPv6 address is returned usable: its local route and solicited-node group
        exist (``NetnsTimeout`` if the kernel has not made them within 5 s).
        """
        addr = _validate.interface(address)
        link = self._link(iface)
        self._handle.execute([_rtnl.new_address(link["index"], addr, f"adding {addr} to {iface} in {self._name!r}")])
        if isinstance(addr, ipaddress.IPv6Interface) and _rtnl.joins_solicited_node_groups(link):
            self._handle.rtnl.wait_ipv6_usable(link["index"], [addr.ip], 5.0, f"{iface} in {self._name!r}")

    def mac(self, iface: str) -> str:
        """The link-layer address of an interface, like ``"02:42:ac:11:00:02"``."""
        index = self._index(iface)
        for msg in self._handle.rtnl.dump(_rtnl.RTM_GETLINK, _rtnl.ifinfo(), f"listing interfaces in {self._name!r}"):
            if msg["index"] == index:
                return str(msg.get_attr("IFLA_ADDRESS"))
        raise KernelError(errno.ENODEV, f"reading the address of {iface} in {self._name!r}")  # pragma: no cover

    def mtu(self, iface: str) -> int:
        """The MTU of an interface."""
        return self._link(iface)["mtu"]

    def set_mtu(self, iface: str, mtu: int) -> None:
        """Change an interface's MTU (68..65535).

        Below 1280 the kernel removes IPv6 from the interface (its addresses
        are gone for good; raising the MTU again does not bring them back).
        """
        _validate.mtu(mtu)
        index = self._index(iface)
        self._handle.execute([_rtnl.set_link(index, mtu=mtu, doing=f"setting MTU {mtu} on {iface} in {self._name!r}")])

    def down(self, iface: str) -> None:
        """Take an interface administratively down (its peer loses carrier)."""
        index = self._index(iface)
        self._handle.execute([_rtnl.set_link(index, up=False, doing=f"taking {iface} down in {self._name!r}")])

    def up(self, iface: str, *, timeout: float = 2.0) -> None:
        """Bring an interface up; returns once it is operationally UP or has no carrier.

        With carrier, its IPv6 addresses are usable again too (the kernel redoes their local
        routes and solicited-node groups a moment after the link comes up).
        """
        index = self._index(iface)
        what = f"{iface} in {self._name!r}"
        rtnl = self._handle.rtnl
        self._handle.execute([_rtnl.set_link(index, up=True, doing=f"bringing {iface} up in {self._name!r}")])
        rtnl.wait_settled(index, timeout, what)
        if _rtnl.joins_solicited_node_groups(rtnl.link(_rtnl.get_link(index))):
            rtnl.wait_ipv6_usable(index, rtnl.ipv6_addresses(index, f"listing addresses of {what}"), timeout, what)

    def link_down(self, iface: str) -> None:
        """Deprecated spelling of ``down(iface)``."""
        warnings.warn(
            "pytest-netns deprecates Namespace.link_down(iface); use Namespace.down(iface)",
            DeprecationWarning,
            stacklevel=2,
        )
        self.down(iface)

    def link_up(self, iface: str, *, timeout: float = 2.0) -> None:
        """Deprecated spelling of ``up(iface, timeout=...)``."""
        warnings.warn(
            "pytest-netns deprecates Namespace.link_up(iface); use Namespace.up(iface)",
            DeprecationWarning,
            stacklevel=2,
        )
        self.up(iface, timeout=timeout)

    def add_route(
        self,
        dst: str | _validate.IPNetwork | _validate.IPAddress,
        via: str | _validate.IPAddress | None = None,
        dev: str | None = None,
    ) -> None:
        """Add a static route (IPv4 or IPv6); ``dst`` may be ``"default"``, a network or an address (a host route)."""
        gateway = _validate.address(via) if via is not None else None
        if dev is not None:
            _validate.ifname(dev)
        if dst == "default":
            if gateway is None:
                raise ValueError("a default route needs via= (the family is taken from it)")
            net: _validate.IPNetwork = ipaddress.ip_network("0.0.0.0/0" if gateway.version == 4 else "::/0")
        else:
            net = _validate.route_destination(dst)
        if gateway is not None and gateway.version != net.version:
            raise ValueError(f"route to {net} via {gateway}: address families differ")
        if gateway is None and dev is None:
            raise ValueError(f"route to {net} needs via= or dev=")
        oif = self._index(dev) if dev is not None else None
        doing = f"adding route to {net}" + (f" via {gateway}" if gateway else "") + (f" dev {dev}" if dev else "")
        self._handle.execute([_rtnl.new_route(net, via=gateway, oif=oif, doing=f"{doing} in {self._name!r}")])

    def ping(self, dst: str | _validate.IPAddress, *, count: int = 1, timeout: float = 1.0) -> bool:
        """Send ICMP echo requests (no ping binary); True if any of them was answered.

        Each of the ``count`` requests waits up to ``timeout`` seconds for its reply.
        """
        from ._kernel.ping import ping

        target = _validate.address(dst)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be a positive integer, got {count!r}")
        _validate.duration(timeout, "timeout")
        self._check_open()
        with self._handle.entered():
            return ping(target, count, timeout)

    # -- packets (scapy; implemented in pytest_netns.packets) --------------------

    def send(self, pkt: Any) -> None:
        """Send an L3 scapy packet from inside, routed by this namespace's kernel.

        Fields left empty (source address, ...) are filled as this namespace would fill them.
        """
        from . import packets

        packets.send(self, pkt)

    def sendp(self, frame: Any, iface: str) -> None:
        """Send an L2 scapy frame on one of this namespace's interfaces."""
        from . import packets

        packets.sendp(self, frame, iface)

    def sr1(self, pkt: Any, *, timeout: float = 2.0) -> Packet | None:
        """Send an L3 packet and return the first answer, or None after ``timeout`` seconds."""
        from . import packets

        return packets.sr1(self, pkt, timeout=timeout)

    def sniff(
        self,
        iface: str | None = None,
        *,
        count: int = 0,
        timeout: float | None = None,
        lfilter: Callable[[Any], bool] | None = None,
        filter: str | None = None,
    ) -> PacketList:
        """Capture packets (blocking) and return a scapy ``PacketList``; ``iface=None`` means every interface."""
        from . import packets

        return packets.sniff(self, iface, count=count, timeout=timeout, lfilter=lfilter, filter=filter)

    def capture(
        self,
        iface: str | None = None,
        *,
        lfilter: Callable[[Any], bool] | None = None,
        filter: str | None = None,
    ) -> Capture:
        """A context manager yielding a ``Capture`` that is already listening when the body starts."""
        from . import packets

        return packets.capture(self, iface, lfilter=lfilter, filter=filter)

    def _loopback_indexes(self) -> set[int]:
        msgs = self._handle.rtnl.dump(_rtnl.RTM_GETLINK, _rtnl.ifinfo(), f"listing interfaces in {self._name!r}")
        return {m["index"] for m in msgs if m["flags"] & 0x8}  # IFF_LOOPBACK

    def _link(self, iface: str) -> dict[str, int]:
        _validate.ifname(iface)
        self._check_open()
        try:
            return self._handle.rtnl.link_by_name(iface)
        except KernelError as exc:
            if exc.errno == errno.ENODEV:
                raise KernelError(
                    errno.ENODEV,
                    f"no interface {iface!r} in namespace {self._name!r} (it has {', '.join(self.interfaces())})",
                ) from None
            raise

    def _index(self, iface: str) -> int:
        return self._link(iface)["index"]

    def _check_open(self) -> None:
        self._handle.check_open()

    # -- teardown -----------------------------------------------------------

    def close(self) -> None:
        """Tear down: stop processes, run cleanups, release the namespace.

        A process still running ``kill_grace`` seconds after SIGTERM is
        killed with a ``NetnsProcessWarning``.  Raises ``TeardownError``
        listing every step that failed (all steps are attempted).  Calling it
        again does nothing.
        """
        __tracebackhide__ = True
        killed: list[str] = []
        problems: list[BaseException] = []
        self._handle.release(problems, self._stopper(killed))
        _report(self._name, problems, killed)
        warn_if_held([self])

    def _stopper(self, killed: list[str]) -> Callable[[], None]:
        """What stops the processes ``run``/``popen`` started (and names those killed after the grace)."""

        def stop() -> None:
            for proc in _process.terminate(self._processes, self.kill_grace):
                killed.append(_process.killed_after_grace(proc, self.kill_grace, self._name))

        return stop


def close_all(namespaces: list[Namespace]) -> None:
    """Tear down several namespaces (last first), then check once for leaks.

    Processes killed after their grace are warned about (``NetnsProcessWarning``);
    raises ``TeardownError`` naming every failed step of every namespace.
    """
    __tracebackhide__ = True
    killed: list[str] = []
    steps: list[Step] = [(ns._handle, ns._stopper(killed), []) for ns in reversed(namespaces)]
    release_all(steps)
    problems: list[BaseException] = [
        problem if isinstance(problem, NetnsError) else NetnsError(f"[{handle.name}] {problem}")
        for handle, _, found in steps
        for problem in found
    ]
    _report(", ".join(ns.name for ns in namespaces), problems, killed)
    warn_if_held(namespaces)


def _report(names: str, problems: list[BaseException], killed: list[str]) -> None:
    """Warn about each process killed after its grace, then raise ``TeardownError`` for the failed steps.

    The warnings come first and from the caller's frame (under pytest: the
    test's teardown, so they are the test's); with ``-W error`` the first one
    raises, unless a teardown error takes precedence.
    """
    __tracebackhide__ = True
    try:
        for message in killed:
            warnings.warn(NetnsProcessWarning(message), stacklevel=3)
    finally:
        if problems:
            raise TeardownError(names, problems)


def warn_if_held(namespaces: list[Namespace]) -> None:
    """Warn about released namespaces the test still pins (a socket, thread or open fd inside)."""
    for name, what in _holders([handle_of(ns) for ns in namespaces]).items():
        warnings.warn(
            NetnsLeakWarning(
                f"namespace {name!r} is still alive after teardown, held by {', '.join(what)}: "
                "close sockets and stop threads made inside it before the test ends"
            ),
            stacklevel=3,
        )


def _apply_baseline() -> None:
    """Write the baseline sysctls a fresh namespace lacks (calling thread inside it)."""
    global _baseline_writes
    if _baseline_writes is None:
        needed = []
        for path, value in BASELINE_SYSCTLS:
            with open(path) as handle:
                if handle.read().strip() != value:
                    needed.append((path, value))
        _baseline_writes = needed
    for path, value in _baseline_writes:
        _write(path, value)


def _write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)
