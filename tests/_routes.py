"""The IPv4 main-table routes of a namespace, read back over rtnetlink, for the cluster tests."""

from __future__ import annotations

import socket

from pytest_netns import Namespace
from pytest_netns._kernel import rtnl as _rtnl
from pytest_netns._kernel.handle import handle_of


def scoped_routes(ns: Namespace) -> set[tuple[str, str | None, int, int]]:
    """(destination, gateway, scope, output ifindex) of the IPv4 main-table routes of ``ns``."""
    body = _rtnl.RTMSG.pack(socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)
    found = set()
    for msg in handle_of(ns).rtnl.dump(_rtnl.RTM_GETROUTE, body, "listing routes"):
        if msg.get_attr("RTA_TABLE") == _rtnl.RT_TABLE_MAIN:
            dst = f"{msg.get_attr('RTA_DST') or '0.0.0.0'}/{msg['dst_len']}"
            found.add((dst, msg.get_attr("RTA_GATEWAY"), msg["scope"], msg.get_attr("RTA_OIF")))
    return found


def routes(ns: Namespace) -> set[tuple[str, str | None]]:
    """(destination, gateway) of the IPv4 main-table routes of ``ns``."""
    return {(dst, gateway) for dst, gateway, _, _ in scoped_routes(ns)}
