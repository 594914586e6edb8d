"""Packets with scapy inside a namespace: send, sendp, sr1, sniff and race-free capture.

These functions are also ``Namespace`` methods (``ns.send(pkt)``, ...).
scapy keeps global tables (``conf.ifaces``, ``conf.route``, ``conf.route6``)
built from the namespace it was imported in, and falls back to them for
every field left empty: an ``IP()`` without ``src`` would get the host's
address, an ``Ether()`` without ``dst`` would send an ARP request through a
host interface.  So scapy here only builds and dissects bytes:

* sockets are made inside the target namespace (its kernel routes them);
* before a packet is built, every field scapy would look up in its tables
  is filled from the namespace's own kernel (routes, link addresses,
  neighbour table) -- or, if it cannot be, a ``ValueError`` asks for it;
* scapy's interface cache is never consulted, so it is never reloaded.

``send``/``sr1`` go through a raw IP socket of the namespace, so the kernel
routes the packet and resolves the next hop; for IPv4 the kernel rewrites
the header checksum and total length (send byte-exact headers with
``sendp``).  A link-scope IPv6 destination (``fe80::/10``, ``ff02::/16``)
leaves through the interface the namespace's route lookup picks: scapy's
``"fe80::1%eth0"`` form cannot be used, as scapy resolves that name in its
own table when the packet is made (with several links, use ``sendp``).

Captures read an ``AF_PACKET`` socket that sees every interface of the
namespace in both directions: each packet appears once per interface it
crosses, like ``tcpdump -i any``; ``pkt.sniffed_on`` names the interface
and ``pkt.direction`` is 1 (received) or 2 (sent).

``filter=`` takes BPF syntax, compiled by libpcap: where libpcap is not
installed it raises ``FeatureUnavailable`` (the value is fine, the machine
lacks the compiler); ``lfilter=`` (a Python predicate) always works.
Importing this module does not import scapy: the first call does.
"""

from __future__ import annotations

import errno
import inspect
import ipaddress
import select
import socket
import struct
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._kernel import afpacket as _afpacket
from .._kernel import netns as _kernel
from .._kernel import rtnl as _rtnl
from .._kernel import validate as _validate
from ..errors import FeatureUnavailable, KernelError

if TYPE_CHECKING:
    from scapy.packet import Packet
    from scapy.plist import PacketList

    from .handle import NamespaceHandle as Namespace  # not ..namespace: packets sits below it

__all__ = ["Capture", "capture", "send", "sendp", "sniff", "sr1"]

#: Kernel-accounted bytes a capture may queue before packets are dropped
#: (and counted in ``Capture.dropped``): measured on a veth, ~40,000
#: minimum-size frames or ~14,000 full 1,500-byte ones.
CAPTURE_BUFFER = 16 << 20
#: How many captured packets a ``TimeoutError`` message lists.
SHOWN_IN_ERRORS = 10

RTM_GETNEIGH = 30
RTA_PREFSRC = 7
RTN_BROADCAST = 3
NUD_VALID = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80  # REACHABLE STALE DELAY PROBE NOARP PERMANENT
BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"


# -- scapy, imported on first use ---------------------------------------------------

_scapy_lock = threading.Lock()
_scapy_loaded = False


def _scapy() -> Any:
    """Import scapy (once, from the namespace the process started in) and switch promiscuous mode off."""
    global _scapy_loaded
    if not _scapy_loaded:
        with _scapy_lock:
            if not _scapy_loaded:
                # scapy reads interfaces and routes of the importing thread's
                # namespace: never let that be a test namespace.
                with _kernel.entered(_kernel.INITIAL_NETNS_FD):
                    import scapy.all
                from scapy.config import conf

                conf.sniff_promisc = False
                _scapy_loaded = True
    import scapy.all

    return scapy.all


# -- per-namespace sockets ---------------------------------------------------------


class _Sockets:
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
        sock = _afpacket.open_all_interfaces(self.ns._nsfd, rcvbuf=CAPTURE_BUFFER, program=_afpacket.REJECT)
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
                with _kernel.entered(self.ns._nsfd):
                    sock = socket.socket(family, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.IPPROTO_RAW)
                if version == 4:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                self.raw[version] = sock
            return sock

    def frame_sender(self) -> socket.socket:
        with self.lock:
            self._check()
            if self.sender is None:
                self.sender = _afpacket.open_sender(self.ns._nsfd)
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
            self.ns._check_open()
            raise KernelError(errno.EBADF, f"packet sockets of namespace {self.ns.name!r} are closed")


_all_sockets: weakref.WeakKeyDictionary[Namespace, _Sockets] = weakref.WeakKeyDictionary()
_all_sockets_lock = threading.Lock()


def _sockets(ns: Namespace) -> _Sockets:
    with _all_sockets_lock:
        state = _all_sockets.get(ns)
        if state is None:
            ns._check_open()
            state = _all_sockets[ns] = _Sockets(ns)
            ns.add_cleanup(state.close, f"closing the packet sockets of namespace {ns.name!r}")
        return state


# -- what the namespace's kernel knows -------------------------------------------------


@dataclass(frozen=True)
class _Link:
    index: int
    name: str
    mac: str | None
    hatype: int


@dataclass(frozen=True)
class _Route:
    src: str | None
    oif: int | None
    gateway: str | None
    kind: int


def _link(ns: Namespace, *, name: str | None = None, index: int | None = None) -> _Link:
    if name is not None:
        request = _rtnl.Request(
            _rtnl.RTM_GETLINK,
            0,
            _rtnl.ifinfo() + _rtnl.attr_str(_rtnl.IFLA_IFNAME, name),
            f"looking up interface {name!r} in namespace {ns.name!r}",
        )
    else:
        request = _rtnl.Request(
            _rtnl.RTM_GETLINK, 0, _rtnl.ifinfo(index or 0), f"looking up interface {index} in namespace {ns.name!r}"
        )
    try:
        reply = ns.rtnl.query(request)
    except KernelError as exc:
        if exc.errno == errno.ENODEV and name is not None:
            raise KernelError(
                errno.ENODEV, f"no interface {name!r} in namespace {ns.name!r} (it has {', '.join(ns.interfaces())})"
            ) from None
        raise
    _family, hatype, found, _flags, _change = _rtnl._IFINFO.unpack_from(reply, 16)
    attrs = _rtnl.parse_attrs(reply, 16 + _rtnl._IFINFO.size, len(reply))
    raw_mac = attrs.get(_rtnl.IFLA_ADDRESS)
    mac = ":".join(f"{b:02x}" for b in raw_mac) if raw_mac and len(raw_mac) == 6 else None
    ifname = attrs.get(_rtnl.IFLA_IFNAME, b"?\0").rstrip(b"\0").decode()
    return _Link(found, ifname, mac, hatype)


def _route(ns: Namespace, dst: str, oif: int | None = None) -> _Route:
    """Ask the namespace's kernel how it would send to ``dst`` (``ip route get``)."""
    address = ipaddress.ip_address(dst)
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    body = _rtnl._RTMSG.pack(family, address.max_prefixlen, 0, 0, 0, 0, 0, 0, 0)
    body += _rtnl.attr(_rtnl.RTA_DST, address.packed)
    if oif is not None:
        body += _rtnl.attr_u32(_rtnl.RTA_OIF, oif)
    reply = ns.rtnl.query(_rtnl.Request(_rtnl.RTM_GETROUTE, 0, body, f"routing to {dst} in namespace {ns.name!r}"))
    kind = reply[16 + 7]
    attrs = _rtnl.parse_attrs(reply, 16 + _rtnl._RTMSG.size, len(reply))

    def text(raw: bytes | None) -> str | None:
        return str(ipaddress.ip_address(raw)) if raw else None

    out = attrs.get(_rtnl.RTA_OIF)
    return _Route(
        text(attrs.get(RTA_PREFSRC)),
        struct.unpack("=I", out)[0] if out else None,
        text(attrs.get(_rtnl.RTA_GATEWAY)),
        kind,
    )


def _neighbour(ns: Namespace, address: str, index: int) -> str | None:
    """The link-layer address the namespace knows for ``address`` on interface ``index``."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    wanted = ipaddress.ip_address(address)
    body = struct.pack("=BxxxiHBB", family, 0, 0, 0, 0)
    for msg in ns.rtnl.dump(RTM_GETNEIGH, body, f"reading the neighbour table of namespace {ns.name!r}"):
        if msg["ifindex"] != index or not msg["state"] & NUD_VALID:
            continue
        dst, lladdr = msg.get_attr("NDA_DST"), msg.get_attr("NDA_LLADDR")
        if dst and lladdr and ipaddress.ip_address(dst) == wanted:
            return str(lladdr)
    return None


# -- filling what scapy would look up in its own tables -------------------------------


def _concrete_field(desc: Any, layer: Any) -> Any:
    """The field actually used for ``desc`` in ``layer`` (through Emph, conditions, multiple types)."""
    from scapy.fields import ConditionalField, MultipleTypeField, _FieldContainer

    field = desc
    while True:
        if isinstance(field, MultipleTypeField):
            field = field._find_fld_pkt_val(layer, layer.getfieldval(field.name))[0]
        elif isinstance(field, ConditionalField):
            if not field._evalcond(layer):
                return None
            field = field.fld
        elif isinstance(field, _FieldContainer):
            field = field.fld
        else:
            return field


def _fill(ns: Namespace, pkt: Packet, link: _Link | None) -> None:
    """Fill, in place, every empty field scapy would compute from its global tables.

    ``link`` is the interface a frame goes out of (``sendp``); for L3
    packets it is found per destination from the namespace's routes.
    """
    from scapy.fields import SourceIPField
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6, SourceIP6Field
    from scapy.layers.l2 import ARP, DestMACField, SourceMACField
    from scapy.packet import NoPayload

    looked_up = (SourceMACField, SourceIPField, SourceIP6Field, DestMACField)
    enclosing_l3: Any = None
    layer: Any = pkt
    while not isinstance(layer, NoPayload):
        if isinstance(layer, (IP, IPv6)) and enclosing_l3 is None:
            enclosing_l3 = layer
        for desc in layer.fields_desc:
            field = _concrete_field(desc, layer)
            if not isinstance(field, looked_up) or layer.getfieldval(field.name) is not None:
                continue
            where = f"{layer.name}.{field.name}"
            if isinstance(field, DestMACField):
                value: Any = _destination_mac(ns, layer, link, where)
            elif isinstance(field, SourceMACField):
                value = _source_mac(ns, layer, enclosing_l3, link, where)
            elif isinstance(layer, IP) and field.name == "src":
                value = _source_address(ns, layer.dst, link, where)
            elif isinstance(layer, IPv6) and field.name == "src":
                value = _source_address(ns, layer.dst, link, where)
            elif isinstance(layer, ARP) and field.name == "psrc":
                value = _source_address(ns, layer.pdst, link, where)
            else:
                raise ValueError(
                    f"{where} is empty, and scapy would fill it from its own tables (made in another "
                    f"namespace): set it explicitly"
                )
            layer.setfieldval(field.name, value)
        layer = layer.payload


def _scope_index(ns: Namespace, dst: Any, link: _Link | None) -> int | None:
    scope = getattr(dst, "scope", None)
    if scope is None or scope == "":
        return link.index if link is not None else None
    if isinstance(scope, int):
        return scope
    return _link(ns, name=str(scope)).index


def _plain(address: Any) -> str:
    """An address as text, without scapy's ``%scope`` decoration."""
    if isinstance(address, (list, tuple)) or hasattr(address, "choice"):
        raise ValueError(f"{address!r} is not a single address")
    return str(address).split("%")[0]


def _source_address(ns: Namespace, dst: Any, link: _Link | None, where: str) -> str:
    target = _plain(dst)
    try:
        route = _route(ns, target, _scope_index(ns, dst, link))
    except KernelError as exc:
        raise KernelError(exc.errno or errno.EHOSTUNREACH, f"filling {where}: {exc.doing}") from None
    if route.src is None:
        raise ValueError(
            f"{where} is empty and namespace {ns.name!r} has no source address to reach {target}: set it explicitly"
        )
    return route.src


def _source_mac(ns: Namespace, layer: Any, l3: Any, link: _Link | None, where: str) -> str:
    if link is None:
        if l3 is None:
            raise ValueError(f"{where} is empty: set it explicitly")
        route = _route(ns, _plain(l3.dst), _scope_index(ns, l3.dst, None))
        if route.oif is None:
            raise ValueError(f"{where} is empty and no route to {_plain(l3.dst)} names an interface: set it explicitly")
        link = _link(ns, index=route.oif)
    if link.mac is None:
        raise ValueError(f"{where} is empty and {ns.name}:{link.name} has no MAC address: set it explicitly")
    return link.mac


def _destination_mac(ns: Namespace, layer: Any, link: _Link | None, where: str) -> str:
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import ARP

    payload = layer.payload
    if isinstance(payload, ARP):
        if payload.op == 1:
            return BROADCAST_MAC
        raise ValueError(f"{where} is empty: an ARP reply needs an explicit destination MAC")
    if isinstance(payload, (IP, IPv6)) and link is not None:
        target = ipaddress.ip_address(_plain(payload.dst))
        if target.is_multicast:
            if target.version == 4:
                low = target.packed[1:]
                return "01:00:5e:" + ":".join(f"{b:02x}" for b in (low[0] & 0x7F, low[1], low[2]))
            return "33:33:" + ":".join(f"{b:02x}" for b in target.packed[-4:])
        if target == ipaddress.IPv4Address("255.255.255.255"):
            return BROADCAST_MAC
        route = _route(ns, str(target), link.index)
        if route.kind == RTN_BROADCAST:
            return BROADCAST_MAC
        hop = route.gateway or str(target)
        mac = _neighbour(ns, hop, link.index)
        if mac is None:
            raise ValueError(
                f"{where} is empty and namespace {ns.name!r} has no neighbour entry for {hop} on "
                f"{link.name}: set Ether(dst=...) or let the kernel resolve it first (e.g. ns.ping)"
            )
        return mac
    raise ValueError(f"{where} is empty: set the destination MAC explicitly")


# -- decoding -------------------------------------------------------------------------------


def _decode(frame: _afpacket.Frame) -> Packet:
    """A scapy packet for a frame, with time, interface and direction set."""
    scapy = _scapy()
    if frame.hatype in (_afpacket.ARPHRD_ETHER, _afpacket.ARPHRD_LOOPBACK):
        cls = scapy.Ether
    elif frame.proto == _afpacket.ETH_P_IP:
        cls = scapy.IP
    elif frame.proto == _afpacket.ETH_P_IPV6:
        cls = scapy.IPv6
    else:
        cls = scapy.conf.l2types.num2layer.get(frame.hatype, scapy.conf.raw_layer)
    pkt = cls(frame.data)
    pkt.time = frame.time
    pkt.sniffed_on = frame.ifname
    pkt.direction = 2 if frame.outgoing else 1
    return pkt


def _packets(items: Iterable[Packet], name: str) -> PacketList:
    return _scapy().PacketList(list(items), name=name)


def _each(pkt: Any, what: str) -> list[Packet]:
    """The concrete packets ``pkt`` stands for (a packet with ranges, or a list of packets)."""
    _scapy()
    from scapy.packet import Packet

    # Never list(packet): its length hint builds the packet, resolving empty fields in scapy's tables.
    if isinstance(pkt, Packet):
        return [one for one in iter(pkt)]
    if isinstance(pkt, (list, tuple)) or hasattr(pkt, "res"):
        result: list[Packet] = []
        for item in pkt:
            if not isinstance(item, Packet):
                raise ValueError(f"{what} takes scapy packets, got {item!r}")
            result += [one for one in iter(item)]
        return result
    raise ValueError(f"{what} takes a scapy packet (or a list of them), got {pkt!r}")


# -- sending --------------------------------------------------------------------------------


def _prepare_l3(ns: Namespace, pkt: Packet) -> tuple[bytes, tuple[Any, ...], int]:
    """Fill and build an L3 packet; return its bytes, the sendto address and the IP version."""
    scapy = _scapy()
    if isinstance(pkt, scapy.IP):
        version = 4
    elif isinstance(pkt, scapy.IPv6):
        version = 6
    else:
        raise ValueError(
            f"send()/sr1() take an IP or IPv6 packet, got {pkt.summary()!r}; "
            "send link-layer frames with sendp(frame, iface)"
        )
    dst = pkt.getfieldval("dst")
    if version == 4:
        _fill(ns, pkt, None)
        return bytes(pkt), (_plain(dst), 0), 4
    scope = _scope_index(ns, dst, None)
    target = ipaddress.IPv6Address(_plain(dst))
    if scope is None and (target.is_link_local or (target.is_multicast and target.packed[1] & 0x0F <= 2)):
        # A link-scope destination needs an interface.  scapy's "fe80::1%eth0"
        # looks the name up in scapy's own (wrong-namespace) table, so the
        # interface is the one this namespace's route lookup picks.
        scope = _route(ns, str(target)).oif
    _fill(ns, pkt, _link(ns, index=scope) if scope else None)
    return bytes(pkt), (str(target), 0, 0, scope or 0), 6


def send(ns: Namespace, pkt: Any) -> None:
    """Send L3 packets from inside ``ns``, routed by its kernel (see the module notes)."""
    packets = _each(pkt, "send()")
    ns._check_open()
    state = _sockets(ns)
    for one in packets:
        data, address, version = _prepare_l3(ns, one)
        _sendto(state.raw_socket(version), data, address, ns)


def _sendto(sock: socket.socket, data: bytes, address: tuple[Any, ...], ns: Namespace) -> None:
    try:
        sock.sendto(data, address)
    except OSError as exc:
        raise KernelError(
            exc.errno or errno.EIO, f"sending {len(data)} bytes to {address[0]} from namespace {ns.name!r}"
        ) from None


def sendp(ns: Namespace, frame: Any, iface: str) -> None:
    """Send link-layer frames on interface ``iface`` of ``ns``, byte for byte."""
    _validate.ifname(iface)
    frames = _each(frame, "sendp()")
    link = _link(ns, name=iface)
    sender = _sockets(ns).frame_sender()
    for one in frames:
        _fill(ns, one, link)
        data = bytes(one)
        ethernet = link.hatype == _afpacket.ARPHRD_ETHER and len(data) >= 14
        proto = struct.unpack_from("!H", data, 12)[0] if ethernet else 0
        try:
            sender.sendto(data, (link.name, proto))
        except OSError as exc:
            doing = f"sending a {len(data)}-byte frame on {ns.name}:{iface}"
            raise KernelError(exc.errno or errno.EIO, doing) from None


def sr1(ns: Namespace, pkt: Any, *, timeout: float = 2.0) -> Packet | None:
    """Send one L3 packet from ``ns`` and return the first answer (an IP/IPv6 packet), or None."""
    _validate.duration(timeout, "timeout")
    packets = _each(pkt, "sr1()")
    if len(packets) != 1:
        raise ValueError(f"sr1() sends exactly one packet, {pkt!r} stands for {len(packets)}")
    one = packets[0]
    state = _sockets(ns)
    data, address, version = _prepare_l3(ns, one)
    sent = type(one)(data)
    scapy = _scapy()
    listener = state.take_listener()
    try:
        _afpacket.attach(listener, _afpacket.not_outgoing(_afpacket.ACCEPT))
        reader = _afpacket.Reader(listener)
        reader.start()
        _sendto(state.raw_socket(version), data, address, ns)
        deadline = time.monotonic() + timeout
        while True:
            for frame in reader.frames():
                received = _decode(frame)
                layer = received.getlayer(scapy.IP if version == 4 else scapy.IPv6)
                if layer is not None and layer.answers(sent):
                    layer.time, layer.sniffed_on, layer.direction = received.time, frame.ifname, 1
                    return layer
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            _wait_readable(listener, remaining)
    finally:
        state.give_back(listener)


def _wait_readable(sock: socket.socket, timeout: float) -> None:
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    poller.poll(max(1, int(timeout * 1000 + 0.999)))


# -- capturing ------------------------------------------------------------------------------


def _bpf(expression: str, where: str) -> list[_afpacket.Instruction]:
    """Compile a BPF expression with libpcap (through scapy) for Ethernet frames."""
    if not isinstance(expression, str) or not expression.strip():
        raise ValueError(f"filter must be a non-empty BPF expression string, got {expression!r}")
    _scapy()
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
        return name
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


def short_summary(pkt: Packet) -> str:
    """scapy's one-line summary without the ``Ether /`` every captured frame starts with."""
    return str(pkt.summary()).removeprefix("Ether / ")


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
        self._state: _Sockets | None = None
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
        self._state = _sockets(self.namespace)
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
            pkt = _decode(frame)
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
        return _packets(self._packets, f"capture {self.where}")

    def wait(self, count: int = 1, timeout: float = 2.0, lfilter: Callable[[Any], bool] | None = None) -> PacketList:
        """Return the captured packets matching ``lfilter`` as soon as there are ``count`` of them.

        Packets captured before the call count too.  Raises ``TimeoutError``
        (naming what it waited for and listing what it did capture) when
        ``timeout`` seconds pass first, or at once when the capture is over.
        """
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
                return _packets(matching, f"capture {self.where}")
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._sock is None:
                raise TimeoutError(self._timeout_message(count, timeout, lfilter, len(matching)))
            _wait_readable(self._sock, remaining)

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
    program = _bpf(filter, f"capture on {ns.name}") if filter is not None else list(_afpacket.ACCEPT)
    _scapy()
    if iface is not None:
        program = _afpacket.only_interface(_link(ns, name=iface).index, program)
    else:
        ns._check_open()
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
                _wait_readable(cap._sock, 1.0 if remaining is None else min(remaining, 1.0))
    packets = cap._packets[:count] if count else cap._packets
    return _packets(packets, f"sniff {cap.where}")
