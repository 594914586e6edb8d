"""The sockets the packet functions keep per namespace, made inside it and closed when it is torn down.

Packet sockets (``AF_PACKET``, every interface) are pooled: a capture or an ``sr1`` takes one whose filter rejects
everything (nothing queued), attaches its own filter, and gives it back.  Raw IP sockets send what ``send``/``sr1``
build, routed by the namespace's kernel.
"""

from __future__ import annotations

import errno
import select
import socket
import threading
import weakref
from typing import TYPE_CHECKING

from .._kernel import afpacket as _afpacket
from ..errors import KernelError
from .handle import handle_of

if TYPE_CHECKING:
    from .handle import NamespaceHandle as Namespace  # not ..namespace: packets sits below it

#: Kernel-accounted bytes a capture may queue before packets are dropped
#: (and counted in ``Capture.dropped``): measured on a veth, ~40,000
#: minimum-size frames or ~14,000 full 1,500-byte ones.
CAPTURE_BUFFER = 16 << 20


class Sockets:
    """The sockets the packet functions keep in one namespace, closed when it is torn down."""

    def __init__(self, ns: Namespace) -> None:
        self.ns = ns
        self.lock = threading.Lock()
        self.idle: list[socket.socket] = []
        self.made: list[socket.socket] = []
        self.raw: dict[int, socket.socket] = {}
        self.sender: socket.socket | None = None
        self.closed = False

    def take_listener(self) -> socket.socket:
        """A packet socket seeing every interface, filter "reject all" (nothing queued)."""
        with self.lock:
            self._check()
            if self.idle:
                return self.idle.pop()
        _afpacket.keep_timestamps_on()
        sock = _afpacket.open_all_interfaces(handle_of(self.ns).fd, rcvbuf=CAPTURE_BUFFER, program=_afpacket.REJECT)
        with self.lock:
            if self.closed:
                _afpacket.close_later(sock)
                self._check()
            self.made.append(sock)
        return sock

    def give_back(self, sock: socket.socket) -> None:
        with self.lock:
            if self.closed:  # the namespace was torn down meanwhile: the socket is closed already
                return
        _afpacket.attach(sock, _afpacket.REJECT)
        _afpacket.Reader(sock).discard()
        with self.lock:
            if not self.closed:
                self.idle.append(sock)

    def raw_socket(self, version: int) -> socket.socket:
        """A raw IP socket (header included) made inside: the namespace's kernel routes what it sends."""
        with self.lock:
            self._check()
            sock = self.raw.get(version)
            if sock is None:
                family = socket.AF_INET if version == 4 else socket.AF_INET6
                with handle_of(self.ns).entered():
                    sock = socket.socket(family, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.IPPROTO_RAW)
                if version == 4:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                self.raw[version] = sock
            return sock

    def frame_sender(self) -> socket.socket:
        with self.lock:
            self._check()
            if self.sender is None:
                self.sender = _afpacket.open_sender(handle_of(self.ns).fd)
            return self.sender

    def close(self) -> None:
        with self.lock:
            self.closed = True
            packet_sockets = self.made + ([self.sender] if self.sender else [])
            raw = list(self.raw.values())
            self.made, self.idle, self.raw, self.sender = [], [], {}, None
        for sock in packet_sockets:
            _afpacket.close_later(sock)
        for sock in raw:
            sock.close()

    def _check(self) -> None:
        if self.closed:
            handle_of(self.ns).check_open()
            raise KernelError(errno.EBADF, f"packet sockets of namespace {self.ns.name!r} are closed")


_all_sockets: weakref.WeakKeyDictionary[Namespace, Sockets] = weakref.WeakKeyDictionary()
_all_sockets_lock = threading.Lock()


def pool(ns: Namespace) -> Sockets:
    """The sockets of ``ns`` (made on first use, closed with the namespace)."""
    with _all_sockets_lock:
        state = _all_sockets.get(ns)
        if state is None:
            handle_of(ns).check_open()
            state = _all_sockets[ns] = Sockets(ns)
            handle_of(ns).add_cleanup(state.close, f"closing the packet sockets of namespace {ns.name!r}")
        return state


def wait_readable(sock: socket.socket, timeout: float) -> None:
    """Return when ``sock`` has something to read, or after ``timeout`` seconds (at least 1 ms)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    poller.poll(max(1, int(timeout * 1000 + 0.999)))
