"""AF_PACKET sockets inside a namespace: open, filter, read, and close without waiting.

Shared by the scapy layer (``packets``) and the failure recorder.  Facts
measured on Linux 6.18:

* Releasing *any* AF_PACKET socket waits for an RCU grace period
  (``synchronize_net()`` in ``packet_release``, also in ``PACKET_RX_RING``
  setup): about 16 ms per socket, whatever it did.  Closing two recorder
  sockets per test on the test's thread would cost 10 times the whole
  ``netns_pair`` budget.  :func:`close_later` hands the socket to closer
  threads instead: the caller pays ~5 us.  Grace periods are shared, so
  concurrent closes overlap (16 threads close ~900 sockets/s, 64 ~3,500/s).
* The closer threads have a private file descriptor table
  (``unshare(CLONE_FILES)``) and receive sockets over a Unix socket
  (``SCM_RIGHTS``): the socket leaves the process's table at once, so the
  leak check that runs after teardown (``warn_if_held``) never sees it,
  while the kernel finishes the release in the background.
* Swapping a socket filter (``SO_ATTACH_FILTER``) is RCU-deferred and does
  not wait: capture sockets are therefore kept open per namespace and
  switched between "reject everything" (idle) and the capture's filter.
* Timestamps: the kernel stamps packets only while someone asked for
  receive timestamps; turning that on is deferred to a workqueue, and so
  is turning it off when the last such socket closes.  One socket with
  ``SO_TIMESTAMPNS`` is kept for the life of the process
  (:func:`keep_timestamps_on`) so that the stamps are always taken when a
  packet is seen, not when it is read.
"""

from __future__ import annotations

import array
import ctypes
import errno
import itertools
import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from . import _kernel

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
CLONE_FILES = 0x400

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
_libc.unshare.argtypes = (ctypes.c_int,)
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
        return Frame(stamp if stamp is not None else time.time(), ifname, pkttype, hatype, proto,
                     bytes(buffer[:size]))

    def frames(self) -> Iterator[Frame]:
        """Every frame queued now (loopback's outgoing copies skipped: each packet once per interface)."""
        while True:
            frame = self.read()
            if frame is None:
                return
            if not is_loopback_copy(frame):
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


def keep_timestamps_on() -> None:
    """Keep the kernel's receive timestamping on for the life of the process (see module notes).

    A UDP socket that is never bound or used, made in the namespace the
    process started in; it changes nothing in that namespace.
    """
    global _timestamp_keeper
    if _timestamp_keeper is None:
        with _kernel.entered(_kernel.INITIAL_NETNS_FD):
            keeper = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        keeper.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        _timestamp_keeper = keeper


# -- closing without waiting -------------------------------------------------------

#: At most this many closer threads; each waits in the kernel, holding no CPU.
MAX_CLOSERS = 64
#: The dispatcher collects sockets for this long before handing them out, so
#: that a test's teardown never wakes a thread (which would then compete
#: with the test for the GIL): sending a descriptor costs the caller ~5 us.
BATCH_DELAY = 0.02


class _Closers:
    """A dispatcher thread with a private descriptor table, fed over a Unix socket pair,
    and the worker threads it starts (which share that table) to wait out the closes."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.send, self.recv = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.send.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.send.setblocking(False)
        self.ids = itertools.count(1)
        self.released: set[int] = set()  # ids whose sender has closed its own descriptor
        self.outstanding = 0
        self.work: list[int] = []
        self.workers = 0
        self.idle_workers = 0
        self.broken: str | None = None
        started = threading.Event()
        threading.Thread(target=self._dispatch, args=(started,), name="netns-packet-closer", daemon=True).start()
        started.wait()

    def _dispatch(self, started: threading.Event) -> None:
        try:
            # No signal may run a C handler here or in the workers (it would
            # write to a descriptor number that means something else in this table).
            signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
            # Started by whichever thread needed it, possibly inside a test namespace.
            _kernel.setns(_kernel.INITIAL_NETNS_FD)
            if _libc.unshare(CLONE_FILES) != 0:
                raise OSError(ctypes.get_errno(), "unshare(CLONE_FILES)")
            keep = self.recv.fileno()
            for name in os.listdir("/proc/thread-self/fd"):
                if int(name) != keep:
                    try:
                        os.close(int(name))
                    except OSError:
                        pass
            null = os.open(os.devnull, os.O_RDWR)  # 0, 1 and 2 never name a received socket
            for fd in (0, 1, 2):
                if fd != null:
                    os.dup2(null, fd, inheritable=False)
        except OSError as exc:
            self.broken = str(exc)
            started.set()
            return
        started.set()
        cmsg = socket.CMSG_SPACE(struct.calcsize("i"))
        waiting: list[tuple[int, int]] = []  # (id, fd) received before their sender closed its copy
        while True:
            if not waiting:
                self.recv.setblocking(True)
                received = [self.recv.recvmsg(8, cmsg)]
            else:
                received = []
            time.sleep(BATCH_DELAY)
            self.recv.setblocking(False)
            while True:
                try:
                    received.append(self.recv.recvmsg(8, cmsg))
                except BlockingIOError:
                    break
            for message, ancillary, _flags, _addr in received:
                ident = int.from_bytes(message, "little")
                for level, kind, data in ancillary:
                    if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                        fds = array.array("i")
                        fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
                        waiting += [(ident, fd) for fd in fds]
            with self.lock:
                # Ours must be the last reference: close only once the sender closed its own.
                done = {ident for ident, _ in waiting if ident in self.released}
                self.work += [fd for ident, fd in waiting if ident in done]
                waiting = [(ident, fd) for ident, fd in waiting if ident not in done]
                self.released -= done
                spawn = min(len(self.work) - self.idle_workers, MAX_CLOSERS - self.workers)
                self.workers += max(spawn, 0)
                self.changed.notify_all()
            for _ in range(spawn):
                threading.Thread(target=self._close_forever, name="netns-packet-closer", daemon=True).start()

    def _close_forever(self) -> None:
        while True:
            with self.lock:
                self.idle_workers += 1
                while not self.work:
                    self.changed.wait()
                self.idle_workers -= 1
                fd = self.work.pop()
            os.close(fd)  # waits for the grace period, here rather than in the test
            with self.lock:
                self.outstanding -= 1
                self.changed.notify_all()


_closers: _Closers | None = None
_closers_lock = threading.Lock()


def _get_closers() -> _Closers | None:
    global _closers
    with _closers_lock:
        if _closers is None or _closers.pid != os.getpid():
            _closers = _Closers()
        return None if _closers.broken else _closers


def close_later(sock: socket.socket) -> None:
    """Close an AF_PACKET socket now, without waiting ~16 ms for the kernel to release it.

    The descriptor leaves this process's table immediately; a closer thread
    holds the last reference until the kernel is done.  Where closer threads
    cannot be made (``unshare(CLONE_FILES)`` refused), the socket is closed
    here and the wait is paid here.
    """
    if sock.fileno() < 0:
        return
    closers = _get_closers()
    if closers is None:
        sock.close()
        return
    with closers.lock:
        ident = next(closers.ids)
        closers.outstanding += 1
    try:
        closers.send.sendmsg([ident.to_bytes(8, "little")],
                             [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", sock.fileno()))])
    except OSError:
        with closers.lock:
            closers.outstanding -= 1
        sock.close()
        return
    sock.close()
    with closers.lock:
        closers.released.add(ident)


def wait_closed(timeout: float = 5.0) -> bool:
    """Wait until every socket given to :func:`close_later` is released; False on timeout."""
    closers = _closers
    if closers is None:
        return True
    deadline = time.monotonic() + timeout
    with closers.lock:
        while closers.outstanding:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            closers.changed.wait(remaining)
    return True
