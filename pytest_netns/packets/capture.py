"""Capturing: ``capture`` (a ``Capture``, listening before its block starts) and ``sniff`` (blocking).

A capture reads an ``AF_PACKET`` socket of the namespace's pool that sees every interface in both directions; its
BPF program (``filter=``, compiled by libpcap through scapy, limited to one interface with ``iface=``) is attached
in the kernel, ``lfilter=`` is applied here.
"""

from __future__ import annotations

import inspect
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._kernel import afpacket as _afpacket
from .._kernel import validate as _validate
from ..errors import FeatureUnavailable, NetnsTimeout
from . import lookup
from .decode import decode, load_scapy, packet_list, short_summary
from .handle import handle_of
from .sockets import Sockets, pool, wait_readable

if TYPE_CHECKING:
    from scapy.packet import Packet
    from scapy.plist import PacketList

    from .handle import NamespaceHandle as Namespace  # not ..namespace: packets sits below it

#: How many captured packets a ``TimeoutError`` message lists.
SHOWN_IN_ERRORS = 10


def _bpf(expression: str, where: str) -> list[_afpacket.Instruction]:
    """Compile a BPF expression with libpcap (through scapy) for Ethernet frames."""
    if not isinstance(expression, str) or not expression.strip():
        raise ValueError(f"filter must be a non-empty BPF expression string, got {expression!r}")
    load_scapy()
    try:
        import scapy.libs.winpcapy  # noqa: F401  (loads libpcap)
    except (ImportError, OSError) as exc:
        raise FeatureUnavailable(
            f"filter={expression!r} needs libpcap to compile BPF syntax, and it is not available here ({exc}); "
            "install libpcap (Debian/Ubuntu: libpcap0.8) or use lfilter=lambda pkt: ... instead",
            feature="libpcap",
        ) from None
    from scapy.arch.common import compile_filter
    from scapy.error import Scapy_Exception

    try:
        program = compile_filter(expression, linktype=1)  # DLT_EN10MB: veth, bridges and lo
    except (Scapy_Exception, OSError) as exc:
        raise ValueError(f"filter={expression!r} ({where}) is not a valid BPF expression: {exc}") from None
    result = []
    for i in range(program.bf_len):
        insn = program.bf_insns[i]
        k = insn.k
        if insn.code == _afpacket.BPF_RET_K and k:
            k = _afpacket.MAX_FRAME  # libpcap's snap length would cut GSO packets
        result.append((insn.code, insn.jt, insn.jf, k))
    return result


def _describe(fn: Callable[..., Any] | None) -> str:
    if fn is None:
        return "any"
    name = getattr(fn, "__name__", None)
    if name and name != "<lambda>":
        return str(name)
    try:
        source = inspect.getsource(fn).strip()
    except (OSError, TypeError):
        return repr(fn)
    start = source.find("lambda")
    if start < 0:
        return repr(fn)
    depth = 0
    end = len(source)
    for i in range(start, len(source)):  # the lambda ends where its enclosing call or argument does
        char = source[i]
        if char in "([{":
            depth += 1
        elif char in ")]}":
            if depth == 0:
                end = i
                break
            depth -= 1
        elif (char == "," and depth == 0) or char == "\n":
            end = i
            break
    text = " ".join(source[start:end].split())
    return text if len(text) <= 100 else text[:97] + "..."


def _summary_lines(packets: list[Packet], ns_name: str, start: float | None, limit: int = SHOWN_IN_ERRORS) -> list[str]:
    """One line per packet: time since the capture started, where, direction (> sent, < received), summary."""
    shown = packets[-limit:]
    lines = []
    if len(packets) > len(shown):
        lines.append(f"  ... {len(packets) - len(shown)} earlier packets not shown")
    for pkt in shown:
        offset = float(pkt.time) - start if start is not None else 0.0
        arrow = ">" if getattr(pkt, "direction", 1) == 2 else "<"
        lines.append(f"  +{offset:.6f} {ns_name}:{pkt.sniffed_on or '?'} {arrow} {short_summary(pkt)}")
    return lines


class Capture:
    """Packets seen in one namespace while a ``with ns.capture(...)`` block runs.

    The socket is listening before the block starts: a packet sent on the
    block's first line is captured.  ``packets`` is what arrived so far
    (complete once the block is left); ``wait`` blocks until enough
    matching packets have arrived.  Each packet is seen once per interface
    it crosses (twice in a router: in and out).
    """

    def __init__(
        self,
        ns: Namespace,
        iface: str | None,
        lfilter: Callable[[Any], bool] | None,
        program: list[_afpacket.Instruction],
    ) -> None:
        self.namespace = ns
        self.iface = iface
        self.lfilter = lfilter
        self._program = program
        self._packets: list[Packet] = []
        self._sock: socket.socket | None = None
        self._reader: _afpacket.Reader | None = None
        self._state: Sockets | None = None
        self._entered = False
        self._started: float | None = None
        #: Packets the kernel dropped because the capture buffer was full.
        self.dropped = 0

    @property
    def where(self) -> str:
        return f"{self.namespace.name}:{self.iface or '*'}"

    def __repr__(self) -> str:
        state = "listening" if self._sock is not None else ("done" if self._entered else "not started")
        return f"<Capture {self.where} {state}, {len(self._packets)} packets>"

    def __enter__(self) -> Capture:
        if self._entered:
            raise RuntimeError(f"{self!r} was already used; call ns.capture() again for a new capture")
        self._entered = True
        self._state = pool(self.namespace)
        sock = self._state.take_listener()
        try:
            _afpacket.attach(sock, self._program)
            reader = _afpacket.Reader(sock)
            reader.start()  # nothing from before this point
            _afpacket.statistics(sock)  # resets the kernel's counters
        except BaseException:
            self._state.give_back(sock)
            raise
        self._sock, self._reader = sock, reader
        self._started = reader.not_before
        return self

    def __exit__(self, *exc_info: object) -> None:
        sock, state = self._sock, self._state
        if sock is None or state is None:
            return
        try:
            if not state.closed:
                _afpacket.attach(sock, _afpacket.REJECT)
                self._pull()
                self.dropped += _afpacket.statistics(sock)[1]
        finally:
            self._sock = self._reader = None
            state.give_back(sock)

    def _pull(self) -> int:
        """Read what is queued; return how many packets were added."""
        if self._reader is None:
            return 0
        added = 0
        for frame in self._reader.frames():
            pkt = decode(frame)
            if self.lfilter is None or self.lfilter(pkt):
                self._packets.append(pkt)
                added += 1
        return added

    def _check_entered(self) -> None:
        if not self._entered:
            raise RuntimeError("use the capture as a context manager: `with ns.capture() as cap:`")

    @property
    def packets(self) -> PacketList:
        """A scapy ``PacketList`` of the packets captured so far."""
        self._check_entered()
        self._pull()
        return packet_list(self._packets, f"capture {self.where}")

    def wait(self, count: int = 1, timeout: float = 2.0, lfilter: Callable[[Any], bool] | None = None) -> PacketList:
        """Return the captured packets matching ``lfilter`` as soon as there are ``count`` of them.

        Packets captured before the call count too.  Raises ``NetnsTimeout``
        (a ``TimeoutError``, naming what it waited for and listing what it did
        capture) when ``timeout`` seconds pass first, or at once when the
        capture is over.
        """
        __tracebackhide__ = True
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be a positive integer, got {count!r}")
        _validate.duration(timeout, "timeout")
        if lfilter is not None and not callable(lfilter):
            raise ValueError(f"lfilter must be a callable taking a packet, got {lfilter!r}")
        self._check_entered()
        deadline = time.monotonic() + timeout
        matching: list[Packet] = []
        checked = 0
        while True:
            self._pull()
            for pkt in self._packets[checked:]:
                if lfilter is None or lfilter(pkt):
                    matching.append(pkt)
            checked = len(self._packets)
            if len(matching) >= count:
                return packet_list(matching, f"capture {self.where}")
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._sock is None:
                raise NetnsTimeout(self._timeout_message(count, timeout, lfilter, len(matching)))
            wait_readable(self._sock, remaining)

    def _timeout_message(self, count: int, timeout: float, lfilter: Callable[[Any], bool] | None, found: int) -> str:
        what = f"{count} packet{'s' if count != 1 else ''}"
        if lfilter is not None:
            what += f" matching {_describe(lfilter)}"
        scope = f"on {self.where}"
        if self.lfilter is not None:
            scope += f" (capture lfilter {_describe(self.lfilter)})"
        head = (
            f"waited {timeout:g} s for {what} {scope}"
            if self._sock is not None
            else f"the capture {scope} is over and does not hold {what}"
        )
        tally = f"captured {len(self._packets)} packet{'s' if len(self._packets) != 1 else ''}"
        if lfilter is not None:
            tally += f", {found} matching"
        if self.dropped:
            tally += f", {self.dropped} dropped (capture buffer full)"
        lines = [f"{head}; {tally}" + (":" if self._packets else "")]
        lines += _summary_lines(self._packets, self.namespace.name, self._started)
        return "\n".join(lines)


def capture(
    ns: Namespace,
    iface: str | None = None,
    *,
    lfilter: Callable[[Any], bool] | None = None,
    filter: str | None = None,
) -> Capture:
    """A ``Capture`` of ``ns`` (every interface, or ``iface``); use it as a context manager.

    Arguments are checked here, before anything listens: an unknown
    interface is a ``KernelError`` naming the interfaces there are, a bad
    ``filter`` a ``ValueError``, a missing libpcap ``FeatureUnavailable``.
    """
    if iface is not None:
        _validate.ifname(iface)
    if lfilter is not None and not callable(lfilter):
        raise ValueError(f"lfilter must be a callable taking a packet, got {lfilter!r}")
    # Without filter= scapy is not needed to listen, only to decode: its first import (~0.4 s) then
    # happens while the socket already queues packets, so nothing sent meanwhile is missed.
    program = _bpf(filter, f"capture on {ns.name}") if filter is not None else list(_afpacket.ACCEPT)
    if iface is not None:
        program = _afpacket.only_interface(lookup.interface(ns, name=iface).index, program)
    else:
        handle_of(ns).check_open()
    return Capture(ns, iface, lfilter, program)


def sniff(
    ns: Namespace,
    iface: str | None = None,
    *,
    count: int = 0,
    timeout: float | None = None,
    lfilter: Callable[[Any], bool] | None = None,
    filter: str | None = None,
) -> PacketList:
    """Capture until ``count`` packets (0: no limit) or ``timeout`` seconds, whichever comes first.

    With neither, it runs until interrupted, as scapy's ``sniff`` does.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be a non-negative integer, got {count!r}")
    if timeout is not None:
        _validate.duration(timeout, "timeout")
    with capture(ns, iface, lfilter=lfilter, filter=filter) as cap:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not count or len(cap._packets) < count:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            if not cap._pull():
                assert cap._sock is not None
                wait_readable(cap._sock, 1.0 if remaining is None else min(remaining, 1.0))
    packets = cap._packets[:count] if count else cap._packets
    return packet_list(packets, f"sniff {cap.where}")
