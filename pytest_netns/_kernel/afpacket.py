"""AF_PACKET sockets inside a namespace: open, filter, read, and close without waiting.

Shared by the scapy layer (``packets``) and the failure recorder.  Facts
measured on Linux 6.18:

* Releasing *any* AF_PACKET socket waits for an RCU grace period
  (``synchronize_net()`` in ``packet_release``, also in ``PACKET_RX_RING``
  setup): about 16 ms per socket, whatever it did.  Closing two recorder
  sockets per test on the test's thread would cost 10 times the whole
  ``netns_pair`` budget.  :func:`close_later` passes the socket to a helper
  process over a Unix socket (``SCM_RIGHTS``) and closes its own copy:
  the caller pays ~35 us, the descriptor leaves this process at once (the
  leak check after teardown never sees it) and the helper's close, the
  last one, waits out the grace period.  Grace periods are shared, so the
  helper closes in parallel threads (16 threads: ~900 sockets/s, 64:
  ~3,500/s).  A process rather than threads here: closer threads woken in
  this process compete with the test for the GIL (measured: +0.1 ms per
  teardown on a loaded 2-core machine).
* Swapping a socket filter (``SO_ATTACH_FILTER``) is RCU-deferred and does
  not wait: capture sockets are therefore kept open per namespace and
  switched between "reject everything" (idle) and the capture's filter.
* Timestamps: the kernel stamps packets only while someone asked for
  receive timestamps; turning that on is deferred to a workqueue, and so
  is turning it off when the last such socket closes.  One socket with
  ``SO_TIMESTAMPNS`` is kept for the life of the process
  (:func:`keep_timestamps_on`) so that the stamps are always taken when a
  packet is seen, not when it is read.  Switching on is itself deferred:
  until the workqueue has run, packets are stamped when read (seen: the
  first recorded test of a process showing two namespaces' packets in the
  order they were read), so the first recorder waits for it.
"""

from __future__ import annotations

import atexit
import ctypes
import errno
import itertools
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from . import netns as _kernel

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
SOL_PACKET = 263
PACKET_STATISTICS = 6
SO_ATTACH_FILTER = 26
SO_TIMESTAMPNS = 35
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
SO_RCVBUFFORCE = 33
PACKET_HOST, PACKET_BROADCAST, PACKET_MULTICAST, PACKET_OTHERHOST, PACKET_OUTGOING = 0, 1, 2, 3, 4
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772

#: Largest packet read in one piece: veth hands GSO packets of up to 64 KiB
#: to packet sockets as a single frame.
MAX_FRAME = 262144

# Classic BPF (linux/filter.h): what we need to build and combine filters.
BPF_LD_W_ABS = 0x20
BPF_JEQ_K = 0x15
BPF_RET_K = 0x06
SKF_AD_OFF = -0x1000
SKF_AD_PKTTYPE = 4
SKF_AD_IFINDEX = 8

Instruction = tuple[int, int, int, int]  # code, jt, jf, k
REJECT: list[Instruction] = [(BPF_RET_K, 0, 0, 0)]
ACCEPT: list[Instruction] = [(BPF_RET_K, 0, 0, MAX_FRAME)]

_libc = ctypes.CDLL(None, use_errno=True)
_libc.bind.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
_SOCKADDR_LL = struct.Struct("=HHiHBB8s")
_TIMESPEC = struct.Struct("=qq")
_STATS = struct.Struct("=II")


@dataclass(frozen=True)
class Frame:
    """One packet as a packet socket saw it."""

    time: float  #: when the kernel saw it (seconds since the epoch)
    ifname: str  #: the interface ("" if it was deleted before the frame was read)
    pkttype: int  #: PACKET_HOST, ... PACKET_OUTGOING (sent from this namespace)
    hatype: int  #: ARPHRD_* link type of the interface
    proto: int  #: ethertype
    data: bytes  #: from the link-layer header on

    @property
    def outgoing(self) -> bool:
        return self.pkttype == PACKET_OUTGOING


def open_all_interfaces(ns_fd: int, *, rcvbuf: int, program: Sequence[Instruction] | None = None) -> socket.socket:
    """A non-blocking packet socket inside ``ns_fd`` that sees every interface, both directions.

    The filter (if any) is attached before the socket is bound, so no
    unfiltered packet is ever queued; ``rcvbuf`` bounds the queued bytes
    (kernel accounting, overhead included).
    """
    with _kernel.entered(ns_fd):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK, 0)
    try:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except PermissionError:  # without CAP_NET_ADMIN: capped by net.core.rmem_max
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        if program is not None:
            attach(sock, program)
        # Python's bind() for AF_PACKET needs an interface name; index 0
        # (every interface) is only reachable through the C call.
        address = _SOCKADDR_LL.pack(socket.AF_PACKET, socket.htons(ETH_P_ALL), 0, 0, 0, 0, b"")
        if _libc.bind(sock.fileno(), address, len(address)) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"binding a packet socket: {os.strerror(err)}")
    except BaseException:
        close_later(sock)
        raise
    return sock


def open_sender(ns_fd: int) -> socket.socket:
    """A packet socket inside ``ns_fd`` that only sends (protocol 0: nothing is queued to it)."""
    with _kernel.entered(ns_fd):
        return socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)


# -- filters -------------------------------------------------------------------


def attach(sock: socket.socket, program: Sequence[Instruction]) -> None:
    """Attach (or atomically replace) a classic BPF filter; does not wait for anything."""
    code = b"".join(struct.pack("=HBBI", c, jt, jf, k & 0xFFFFFFFF) for c, jt, jf, k in program)
    buffer = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("@HP", len(program), ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def only_interface(ifindex: int, program: Sequence[Instruction]) -> list[Instruction]:
    """``program``, for packets of interface ``ifindex`` only (others rejected)."""
    return [(BPF_LD_W_ABS, 0, 0, SKF_AD_OFF + SKF_AD_IFINDEX), (BPF_JEQ_K, 1, 0, ifindex), *REJECT, *program]


def not_outgoing(program: Sequence[Instruction]) -> list[Instruction]:
    """``program``, for packets this namespace did not send."""
    return [(BPF_LD_W_ABS, 0, 0, SKF_AD_OFF + SKF_AD_PKTTYPE), (BPF_JEQ_K, 0, 1, PACKET_OUTGOING), *REJECT, *program]


# -- reading -------------------------------------------------------------------


class Reader:
    """Reads frames from one packet socket (timestamps and interface names included)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._cmsg = socket.CMSG_SPACE(_TIMESPEC.size)
        #: Frames the kernel saw before this time are skipped (see :meth:`start`).
        self.not_before = 0.0

    def start(self) -> None:
        """Forget what is queued and skip anything the kernel saw before now.

        After a filter swap, a packet let through by the previous filter on
        another CPU can still be queued a moment later; its timestamp (taken
        when the kernel saw it) gives it away.
        """
        self.discard()
        self.not_before = time.time()

    def read(self) -> Frame | None:
        """The next queued frame, or None when nothing is queued."""
        buffer = _read_buffer()
        while True:
            try:
                size, ancillary, _flags, address = self.sock.recvmsg_into([buffer], self._cmsg)
            except BlockingIOError:
                return None
            except OSError as exc:
                # A bound interface went down: the error is reported once, then reading goes on.
                if exc.errno in (errno.ENETDOWN, errno.ENXIO):
                    continue
                raise
            break
        stamp = None
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
                seconds, nanoseconds = _TIMESPEC.unpack_from(data)
                stamp = seconds + nanoseconds / 1e9
        ifname, proto, pkttype, hatype, _hwaddr = address
        return Frame(stamp if stamp is not None else time.time(), ifname, pkttype, hatype, proto, bytes(buffer[:size]))

    def frames(self) -> Iterator[Frame]:
        """Every frame queued now (loopback's outgoing copies skipped: each packet once per interface)."""
        while True:
            frame = self.read()
            if frame is None:
                return
            if not is_loopback_copy(frame) and frame.time >= self.not_before:
                yield frame

    def discard(self) -> None:
        """Drop everything queued now."""
        while True:
            try:
                self.sock.recv(1)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno not in (errno.ENETDOWN, errno.ENXIO):
                    raise


_buffers = threading.local()


def _read_buffer() -> bytearray:
    """One receive buffer per thread, made on first use (a reader that never reads costs nothing)."""
    buffer = getattr(_buffers, "buffer", None)
    if buffer is None:
        buffer = _buffers.buffer = bytearray(MAX_FRAME)
    return buffer


def is_loopback_copy(frame: Frame) -> bool:
    """On loopback every packet is seen twice (going out, coming in): keep the incoming copy, as libpcap does."""
    return frame.hatype == ARPHRD_LOOPBACK and frame.pkttype == PACKET_OUTGOING


def statistics(sock: socket.socket) -> tuple[int, int]:
    """(packets queued, packets dropped because the buffer was full) since the last call."""
    return _STATS.unpack(sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _STATS.size))


# -- timestamps ------------------------------------------------------------------

_timestamp_keeper: socket.socket | None = None
_stamping_seen = False


def keep_timestamps_on(probe_ns_fd: int | None = None) -> None:
    """Keep the kernel's receive timestamping on for the life of the process (see module notes).

    A UDP socket that is never bound or used, made in the namespace the
    process started in; it changes nothing in that namespace.  With
    ``probe_ns_fd`` (a namespace nobody captures in yet), the first call also
    waits until the kernel does stamp packets: a packet seen before the
    deferred switch is stamped only when it is read, so the packets of the
    first recorded test came out in the order they were read.
    """
    global _timestamp_keeper, _stamping_seen
    if _timestamp_keeper is None:
        with _kernel.entered(_kernel.INITIAL_NETNS_FD):
            keeper = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        keeper.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        _timestamp_keeper = keeper
        atexit.register(keeper.close)
    if probe_ns_fd is not None and not _stamping_seen:
        _stamping_seen = _wait_stamping(probe_ns_fd)


def _wait_stamping(ns_fd: int, timeout: float = 1.0) -> bool:
    """Send datagrams to ourselves over ``lo`` in ``ns_fd`` until one was stamped before it was read."""
    with _kernel.entered(ns_fd):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    with sock:
        try:
            sock.bind(("127.0.0.1", 0))
        except OSError:  # lo is not up (yet): nothing to probe with
            return False
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                sock.sendto(b"t", sock.getsockname())
                before = time.time()
                _data, ancillary, _flags, _address = sock.recvmsg(1, socket.CMSG_SPACE(_TIMESPEC.size))
            except OSError:
                return False
            for level, kind, data in ancillary:
                if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
                    seconds, nanoseconds = _TIMESPEC.unpack_from(data)
                    if seconds + nanoseconds / 1e9 < before:
                        return True
            time.sleep(0.0005)
    return False


# -- closing without waiting -------------------------------------------------------


class _Closer:
    """The helper process (``packet_closer.py``) and our end of the socket pair leading to it."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.ids = itertools.count(1)
        self.link, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        self.link.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.link.settimeout(1.0)
        try:
            # Started from the namespace the process started in: it never pins a test namespace.
            with _kernel.entered(_kernel.INITIAL_NETNS_FD):
                self.process = subprocess.Popen(
                    [sys.executable, "-I", "-S", os.path.join(os.path.dirname(__file__), "packet_closer.py")],
                    stdin=theirs.fileno(),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
        finally:
            theirs.close()
        atexit.register(self.stop)

    def stop(self) -> None:
        """At exit: close our end (the helper sees it and exits) and reap the helper."""
        self.link.close()
        try:
            self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:  # pragma: no cover - still closing sockets: it ends on its own
            pass

    def send(self, kind: bytes, ident: int, fd: int | None = None) -> None:
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))] if fd is not None else []
        self.link.sendmsg([kind + ident.to_bytes(8, "little")], ancillary)


_closer: _Closer | None = None
_closer_lock = threading.Lock()


def _get_closer() -> _Closer | None:
    global _closer
    with _closer_lock:
        if _closer is None or _closer.pid != os.getpid():
            try:
                _closer = _Closer()
            except OSError:
                return None
        if _closer.process.poll() is not None:
            return None
        return _closer


def close_later(sock: socket.socket) -> None:
    """Close an AF_PACKET socket now, without waiting ~16 ms for the kernel to release it.

    The descriptor leaves this process at once; a helper process holds the
    last reference until the kernel is done.  If the helper cannot be
    reached, the socket is closed here and the wait is paid here.
    """
    if sock.fileno() < 0:
        return
    closer = _get_closer()
    if closer is None:
        sock.close()
        return
    ident = next(closer.ids)
    try:
        closer.send(b"F", ident, sock.fileno())
    except OSError:
        sock.close()
        return
    sock.close()
    try:
        closer.send(b"R", ident)
    except OSError:
        pass  # the helper is gone: it released what it held when it exited


def wait_closed(timeout: float = 5.0) -> bool:
    """Wait until the helper has released every socket given to :func:`close_later`; False on timeout."""
    closer = _closer
    if closer is None or closer.pid != os.getpid() or closer.process.poll() is not None:
        return True
    with closer.lock:
        ident = next(closer.ids)
        closer.send(b"W", ident)
        expected = b"D" + ident.to_bytes(8, "little")
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            closer.link.settimeout(remaining)
            try:
                if closer.link.recv(16) == expected:
                    return True
            except TimeoutError:
                return False
            finally:
                closer.link.settimeout(1.0)
