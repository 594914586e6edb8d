"""What the namespace's own kernel knows, asked over its rtnetlink socket: interfaces, routes, neighbours.

scapy's tables were built in another namespace; the packet functions ask these instead.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._kernel import rtnl as _rtnl
from ..errors import KernelError
from .handle import handle_of

if TYPE_CHECKING:
    from .handle import NamespaceHandle as Namespace  # not ..namespace: packets sits below it

RTM_GETNEIGH = 30
RTA_PREFSRC = 7
RTN_BROADCAST = 3
NUD_VALID = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80  # REACHABLE STALE DELAY PROBE NOARP PERMANENT


@dataclass(frozen=True)
class Interface:
    index: int
    name: str
    mac: str | None
    hatype: int


@dataclass(frozen=True)
class Route:
    src: str | None
    oif: int | None
    gateway: str | None
    kind: int


def interface(ns: Namespace, *, name: str | None = None, index: int | None = None) -> Interface:
    """The interface ``name`` (or ``index``) of ``ns``; ``KernelError(ENODEV)`` lists the ones there are."""
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
        reply = handle_of(ns).rtnl.query(request)
    except KernelError as exc:
        if exc.errno == errno.ENODEV and name is not None:
            raise KernelError(
                errno.ENODEV,
                f"no interface {name!r} in namespace {ns.name!r} (it has {', '.join(handle_of(ns).interfaces())})",
            ) from None
        raise
    _family, hatype, found, _flags, _change = _rtnl.IFINFO.unpack_from(reply, 16)
    attrs = _rtnl.parse_attrs(reply, 16 + _rtnl.IFINFO.size, len(reply))
    raw_mac = attrs.get(_rtnl.IFLA_ADDRESS)
    mac = ":".join(f"{b:02x}" for b in raw_mac) if raw_mac and len(raw_mac) == 6 else None
    ifname = attrs.get(_rtnl.IFLA_IFNAME, b"?\0").rstrip(b"\0").decode()
    return Interface(found, ifname, mac, hatype)


def route(ns: Namespace, dst: str, oif: int | None = None) -> Route:
    """Ask the namespace's kernel how it would send to ``dst`` (``ip route get``)."""
    address = ipaddress.ip_address(dst)
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    body = _rtnl.RTMSG.pack(family, address.max_prefixlen, 0, 0, 0, 0, 0, 0, 0)
    body += _rtnl.attr(_rtnl.RTA_DST, address.packed)
    if oif is not None:
        body += _rtnl.attr_u32(_rtnl.RTA_OIF, oif)
    reply = handle_of(ns).rtnl.query(
        _rtnl.Request(_rtnl.RTM_GETROUTE, 0, body, f"routing to {dst} in namespace {ns.name!r}")
    )
    kind = reply[16 + 7]
    attrs = _rtnl.parse_attrs(reply, 16 + _rtnl.RTMSG.size, len(reply))

    def text(raw: bytes | None) -> str | None:
        return str(ipaddress.ip_address(raw)) if raw else None

    out = attrs.get(_rtnl.RTA_OIF)
    return Route(
        text(attrs.get(RTA_PREFSRC)),
        struct.unpack("=I", out)[0] if out else None,
        text(attrs.get(_rtnl.RTA_GATEWAY)),
        kind,
    )


def neighbour(ns: Namespace, address: str, index: int) -> str | None:
    """The link-layer address the namespace knows for ``address`` on interface ``index``."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    wanted = ipaddress.ip_address(address)
    body = struct.pack("=BxxxiHBB", family, 0, 0, 0, 0)
    for msg in handle_of(ns).rtnl.dump(RTM_GETNEIGH, body, f"reading the neighbour table of namespace {ns.name!r}"):
        if msg["ifindex"] != index or not msg["state"] & NUD_VALID:
            continue
        dst, lladdr = msg.get_attr("NDA_DST"), msg.get_attr("NDA_LLADDR")
        if dst and lladdr and ipaddress.ip_address(dst) == wanted:
            return str(lladdr)
    return None
