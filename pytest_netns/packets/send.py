"""Sending: ``send`` (L3, routed by the namespace's kernel), ``sendp`` (frames, byte for byte) and ``sr1``."""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
import time
from typing import TYPE_CHECKING, Any

from .._kernel import afpacket as _afpacket
from .._kernel import validate as _validate
from ..errors import KernelError
from . import lookup
from .decode import decode, load_scapy
from .fill import fill, plain, scope_index
from .handle import handle_of
from .sockets import pool, wait_readable

if TYPE_CHECKING:
    from scapy.packet import Packet

    from .handle import NamespaceHandle as Namespace  # not ..namespace: packets sits below it


def each(pkt: Any, what: str) -> list[Packet]:
    """The concrete packets ``pkt`` stands for (a packet with ranges, or a list of packets)."""
    load_scapy()
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


def _prepare_l3(ns: Namespace, pkt: Packet) -> tuple[bytes, tuple[Any, ...], int]:
    """Fill and build an L3 packet; return its bytes, the sendto address and the IP version."""
    all_ = load_scapy()
    if isinstance(pkt, all_.IP):
        version = 4
    elif isinstance(pkt, all_.IPv6):
        version = 6
    else:
        raise ValueError(
            f"send()/sr1() take an IP or IPv6 packet, got {pkt.summary()!r}; "
            "send link-layer frames with sendp(frame, iface)"
        )
    dst = pkt.getfieldval("dst")
    if version == 4:
        fill(ns, pkt, None)
        return bytes(pkt), (plain(dst), 0), 4
    scope = scope_index(ns, dst, None)
    target = ipaddress.IPv6Address(plain(dst))
    if scope is None and (target.is_link_local or (target.is_multicast and target.packed[1] & 0x0F <= 2)):
        # A link-scope destination needs an interface.  scapy's "fe80::1%eth0"
        # looks the name up in scapy's own (wrong-namespace) table, so the
        # interface is the one this namespace's route lookup picks.
        scope = lookup.route(ns, str(target)).oif
    fill(ns, pkt, lookup.interface(ns, index=scope) if scope else None)
    return bytes(pkt), (str(target), 0, 0, scope or 0), 6


def send(ns: Namespace, pkt: Any) -> None:
    """Send L3 packets from inside ``ns``, routed by its kernel (see the package notes)."""
    packets = each(pkt, "send()")
    handle_of(ns).check_open()
    state = pool(ns)
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
    frames = each(frame, "sendp()")
    link = lookup.interface(ns, name=iface)
    sender = pool(ns).frame_sender()
    for one in frames:
        fill(ns, one, link)
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
    packets = each(pkt, "sr1()")
    if len(packets) != 1:
        raise ValueError(f"sr1() sends exactly one packet, {pkt!r} stands for {len(packets)}")
    one = packets[0]
    state = pool(ns)
    data, address, version = _prepare_l3(ns, one)
    sent = type(one)(data)
    all_ = load_scapy()
    listener = state.take_listener()
    try:
        _afpacket.attach(listener, _afpacket.not_outgoing(_afpacket.ACCEPT))
        reader = _afpacket.Reader(listener)
        reader.start()
        _sendto(state.raw_socket(version), data, address, ns)
        deadline = time.monotonic() + timeout
        while True:
            for frame in reader.frames():
                received = decode(frame)
                layer = received.getlayer(all_.IP if version == 4 else all_.IPv6)
                if layer is not None and layer.answers(sent):
                    layer.time, layer.sniffed_on, layer.direction = received.time, frame.ifname, 1
                    return layer
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            wait_readable(listener, remaining)
    finally:
        state.give_back(listener)
