"""Netlink, written once: sockets, framing, attributes, acknowledgements, batches and dumps.

The message modules only declare their layouts and send :class:`Request`
values through a :class:`NetlinkSocket`: ``rtnl`` (links, addresses, routes),
``nft`` (nf_tables transactions), ``tc`` (netem) and ``probes``.  A socket
lives in the network namespace of the thread that created it, for good, and
can then be used from any thread.

Every request carries ``doing``, the words for what it does: a refusal, a
socket error or a silent kernel raises ``KernelError`` (or the socket's own
subclass) naming it, with the kernel's extended-ack text when it sent one.
"""

from __future__ import annotations

import errno
import socket
import struct
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from ..errors import KernelError

NETLINK_ROUTE = 0
NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10  # errors carry only the header of the refused request
NETLINK_EXT_ACK = 11  # errors carry the kernel's text ("extack")

NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_ROOT = 0x100
NLM_F_MATCH = 0x200
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_APPEND = 0x800
NLM_F_CAPPED = 0x100  # in an error: the request was cut to its header
NLM_F_ACK_TLVS = 0x200  # in an error: extended-ack attributes follow
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSGERR_ATTR_MSG = 1
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF

HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, seq, pid
_ATTR = struct.Struct("=HH")
_U32 = struct.Struct("=I")
_BE32 = struct.Struct(">I")
_ERRNO = struct.Struct("=i")

#: Bytes read per ``recv``: enough for a write's worth of acks; dumps read more at once.
RECV_SIZE = 65536
DUMP_RECV_SIZE = 1 << 20


# -- attributes -------------------------------------------------------------------------------------


def attr(kind: int, payload: bytes) -> bytes:
    """One netlink attribute (type-length-value), padded to 4 bytes."""
    length = 4 + len(payload)
    return _ATTR.pack(length, kind) + payload + b"\0" * (-length & 3)


def nested(kind: int, payload: bytes) -> bytes:
    """An attribute holding attributes, flagged NLA_F_NESTED (as libmnl does)."""
    return attr(kind | NLA_F_NESTED, payload)


def attr_u8(kind: int, value: int) -> bytes:
    return attr(kind, bytes((value,)))


def attr_u16(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("=H", value))


def attr_u32(kind: int, value: int) -> bytes:
    return attr(kind, _U32.pack(value))


def attr_be32(kind: int, value: int) -> bytes:
    """A big-endian 32-bit attribute (nf_tables' integers); negative values as two's complement."""
    return attr(kind, _BE32.pack(value & 0xFFFFFFFF))


def attr_str(kind: int, value: str) -> bytes:
    return attr(kind, value.encode() + b"\0")


def parse_attrs(data: bytes, offset: int, end: int) -> dict[int, bytes]:
    """Flat attributes of a message as {type: payload} (first one of each type wins)."""
    found: dict[int, bytes] = {}
    while offset + 4 <= end:
        length, kind = _ATTR.unpack_from(data, offset)
        if length < 4:
            break
        found.setdefault(kind & NLA_TYPE_MASK, data[offset + 4 : offset + length])
        offset += (length + 3) & ~3
    return found


# -- messages ---------------------------------------------------------------------------------------


@dataclass
class Request:
    """One request: its message type, flags (beyond NLM_F_REQUEST/ACK), encoded body, and what it does."""

    kind: int
    flags: int
    body: bytes
    doing: str


def messages(data: bytes) -> Iterator[tuple[int, int, int, int, int]]:
    """(type, flags, seq, payload offset, end) of each message in a buffer."""
    offset = 0
    while offset + 16 <= len(data):
        length, kind, flags, seq, _pid = HEADER.unpack_from(data, offset)
        if length < 16:
            return
        yield kind, flags, seq, offset + 16, offset + length
        offset += (length + 3) & ~3


def error_code(data: bytes, offset: int) -> int:
    """The positive errno of an NLMSG_ERROR whose payload starts at ``offset`` (0: an ack)."""
    value: int = _ERRNO.unpack_from(data, offset)[0]
    return -value


def extack(data: bytes, flags: int, offset: int, end: int) -> str:
    """The kernel's extended-ack text in an NLMSG_ERROR, if it sent one."""
    if not flags & NLM_F_ACK_TLVS:
        return ""
    # nlmsgerr: the error code, then the request (only its header if capped), then attributes.
    inner_len = _U32.unpack_from(data, offset + 4)[0]
    start = offset + 4 + (16 if flags & NLM_F_CAPPED else (inner_len + 3) & ~3)
    msg = parse_attrs(data, start, end).get(NLMSGERR_ATTR_MSG)
    return msg.split(b"\0", 1)[0].decode(errors="replace") if msg else ""


_Socket = TypeVar("_Socket", bound="NetlinkSocket")


# -- the socket -------------------------------------------------------------------------------------


class NetlinkSocket:
    """A netlink socket of one protocol, bound inside the calling thread's network namespace.

    Requests are serialised with a lock.  ``timeout`` (seconds) bounds every
    wait for an answer (None: wait as long as it takes); ``rcvbuf`` sets the
    receive buffer.  Subclasses name themselves (``what``) and may raise
    their own ``KernelError`` subclass (:meth:`error`).
    """

    #: How errors name the socket: "opening <what>".
    what = "a netlink socket"
    #: The detail of an ETIMEDOUT error.
    silence = "no answer within {timeout:g} s"
    #: Requests per write: one write of thousands of requests fails with EMSGSIZE.
    CHUNK = 128

    def __init__(self, protocol: int, *, timeout: float | None = None, rcvbuf: int | None = None) -> None:
        try:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, protocol)
        except OSError as exc:
            raise self.error(exc.errno or errno.EIO, f"opening {self.what}") from None
        try:
            self.sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
            self.sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
            if rcvbuf is not None:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            if timeout is not None:
                self.sock.settimeout(timeout)
            self.sock.bind((0, 0))
        except OSError as exc:
            self.sock.close()
            raise self.error(exc.errno or errno.EIO, f"setting up {self.what}") from None
        self.timeout = timeout
        self._seq = 0
        self._lock = threading.Lock()

    def error(self, code: int, doing: str, detail: str = "") -> KernelError:
        """The exception for a failure of ``doing``."""
        return KernelError(code, doing, detail)

    def close(self) -> None:
        self.sock.close()

    def fileno(self) -> int:
        return self.sock.fileno()

    def __enter__(self: _Socket) -> _Socket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0x7FFFFFFF or 1
        return self._seq

    def _pack(self, request: Request, extra_flags: int) -> tuple[int, bytes]:
        seq = self._next_seq()
        flags = NLM_F_REQUEST | request.flags | extra_flags
        return seq, HEADER.pack(16 + len(request.body), request.kind, flags, seq, 0) + request.body

    def _send(self, data: bytes, doing: str) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise self.error(exc.errno or errno.EIO, doing, "sending the request") from None

    def _recv(self, size: int, doing: str) -> bytes:
        """The next answers; a socket error (ENOBUFS when answers were lost) or silence names the request."""
        try:
            return self.sock.recv(size)
        except TimeoutError:
            raise self.error(errno.ETIMEDOUT, doing, self.silence.format(timeout=self.timeout)) from None
        except OSError as exc:
            raise self.error(exc.errno or errno.EIO, doing, "reading the answer") from None

    def execute(
        self, requests: Sequence[Request], *, ignore: Iterable[int] = (), frame: tuple[Request, Request] | None = None
    ) -> None:
        """Send the requests in as few writes as possible, wait for every ack, raise the first error.

        ``ignore`` lists errno values that count as success (``ENODEV`` when
        deleting something that may be gone already).  Every request is sent
        even when an early one fails.  ``frame`` (a begin and an end message,
        not acknowledged) wraps all requests in one write: an nfnetlink batch,
        one transaction.  An error answering the begin message means the
        batch was refused as a whole and nothing else will be answered.
        """
        ignored = set(ignore)
        failure: KernelError | None = None
        with self._lock:
            if frame is not None:
                failure = self._round_trip(requests, ignored, frame)
            else:
                for start in range(0, len(requests), self.CHUNK):
                    error = self._round_trip(requests[start : start + self.CHUNK], ignored, None)
                    failure = failure or error
        if failure is not None:
            raise failure

    def _round_trip(
        self, requests: Sequence[Request], ignored: set[int], frame: tuple[Request, Request] | None
    ) -> KernelError | None:
        pending: dict[int, Request] = {}
        chunks = []
        begin = -1
        if frame is not None:
            begin, data = self._pack(frame[0], 0)
            chunks.append(data)
        for request in requests:
            seq, data = self._pack(request, NLM_F_ACK)
            pending[seq] = request
            chunks.append(data)
        if frame is not None:
            chunks.append(self._pack(frame[1], 0)[1])
        self._send(b"".join(chunks), requests[0].doing)
        failure: KernelError | None = None
        while pending:
            data = self._recv(RECV_SIZE, pending[min(pending)].doing)
            for kind, flags, seq, offset, end in messages(data):
                if kind != NLMSG_ERROR:
                    continue
                answered = pending.pop(seq, None)
                if answered is None:
                    if seq == begin and frame is not None:
                        code = error_code(data, offset)
                        failure = failure or self.error(code, frame[0].doing, extack(data, flags, offset, end))
                        pending.clear()
                    continue
                code = error_code(data, offset)
                if code and code not in ignored and failure is None:
                    failure = self.error(code, answered.doing, extack(data, flags, offset, end))
        return failure

    def query(self, request: Request) -> bytes:
        """Send one request that has a single reply and return that reply message (header included)."""
        with self._lock:
            seq, data = self._pack(request, 0)
            self._send(data, request.doing)
            while True:
                reply = self._recv(RECV_SIZE, request.doing)
                for kind, flags, rseq, offset, end in messages(reply):
                    if rseq != seq:
                        continue
                    if kind == NLMSG_ERROR:
                        code = error_code(reply, offset)
                        raise self.error(code, request.doing, extack(reply, flags, offset, end))
                    return reply[offset - 16 : end]

    def dump_raw(self, request: Request) -> list[bytes]:
        """Run a dump request; its reply messages (header included) until NLMSG_DONE."""
        found: list[bytes] = []
        with self._lock:
            seq, data = self._pack(request, NLM_F_DUMP)
            self._send(data, request.doing)
            while True:
                reply = self._recv(DUMP_RECV_SIZE, request.doing)
                done = False
                for kind, flags, rseq, offset, end in messages(reply):
                    if rseq != seq:
                        continue
                    if kind == NLMSG_DONE:
                        done = True
                    elif kind == NLMSG_ERROR:
                        code = error_code(reply, offset)
                        if code:
                            raise self.error(code, request.doing, extack(reply, flags, offset, end))
                        done = True
                    else:
                        found.append(reply[offset - 16 : end])
                if done:
                    return found
