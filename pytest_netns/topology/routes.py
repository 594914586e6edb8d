"""Routes saved when a link goes down and put back when it comes up.

The kernel deletes the routes through an interface that goes down.
``through(ns, index)`` reads the static unicast ones first (``autoroute``'s
and ``add_route``'s; connected, router-advertised and multipath routes are
not saved); ``restore(route, index, where)`` is the request that puts one
back.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from .._kernel import rtnl as _rtnl
from .._kernel.handle import handle_of
from ..namespace import Namespace

RTPROT_KERNEL, RTPROT_RA = 2, 9
RTA_PRIORITY, RTA_TABLE, RTA_PREF = 6, 15, 20
RT_TABLE_COMPAT = 252


@dataclass(frozen=True)
class SavedRoute:
    family: int
    dst_len: int
    dst: bytes | None
    gateway: bytes | None
    table: int
    proto: int
    scope: int
    kind: int
    priority: int | None
    pref: int | None


def through(ns: Namespace, index: int) -> list[SavedRoute]:
    """The static unicast routes of ``ns`` whose output interface is ``index`` (what going down removes)."""
    saved = []
    body = _rtnl.RTMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0, 0, 0, 0, 0)
    for msg in handle_of(ns).rtnl.dump(_rtnl.RTM_GETROUTE, body, f"listing routes in {ns.name!r}"):
        if msg.get_attr("RTA_OIF") != index or msg["proto"] in (RTPROT_KERNEL, RTPROT_RA):
            continue
        if msg["type"] != _rtnl.RTN_UNICAST or msg.get_attr("RTA_MULTIPATH") or msg.get_attr("RTA_NH_ID"):
            continue
        family = msg["family"]
        dst, gateway = msg.get_attr("RTA_DST"), msg.get_attr("RTA_GATEWAY")
        saved.append(
            SavedRoute(
                family,
                msg["dst_len"],
                socket.inet_pton(family, dst) if dst else None,
                socket.inet_pton(family, gateway) if gateway else None,
                msg.get_attr("RTA_TABLE") or msg["table"],
                msg["proto"],
                msg["scope"],
                msg["type"],
                msg.get_attr("RTA_PRIORITY"),
                msg.get_attr("RTA_PREF"),
            )
        )
    return saved


def restore(route: SavedRoute, index: int, where: str) -> _rtnl.Request:
    """The request that puts ``route`` back on interface ``index`` (``where`` names it in errors)."""
    table = route.table if route.table < 256 else RT_TABLE_COMPAT  # the real one is in RTA_TABLE
    body = _rtnl.RTMSG.pack(route.family, route.dst_len, 0, 0, table, route.proto, route.scope, route.kind, 0)
    if route.dst is not None:
        body += _rtnl.attr(_rtnl.RTA_DST, route.dst)
    if route.gateway is not None:
        body += _rtnl.attr(_rtnl.RTA_GATEWAY, route.gateway)
    body += _rtnl.attr_u32(_rtnl.RTA_OIF, index)
    if route.priority is not None:
        body += _rtnl.attr_u32(RTA_PRIORITY, route.priority)
    body += _rtnl.attr_u32(RTA_TABLE, route.table)
    if route.pref is not None:
        body += _rtnl.attr(RTA_PREF, struct.pack("B", route.pref))
    dst = socket.inet_ntop(route.family, route.dst) if route.dst else "default"
    return _rtnl.Request(
        _rtnl.RTM_NEWROUTE,
        _rtnl.NLM_F_CREATE | _rtnl.NLM_F_REPLACE,
        body,
        f"restoring the route to {dst}/{route.dst_len} on {where}",
    )
