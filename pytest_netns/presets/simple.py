"""Ready-made networks behind the fixtures, usable without pytest."""

from __future__ import annotations

import ipaddress
from typing import Protocol

from .._net.veth import veth
from ..namespace import Namespace, close_all


class PairSettings(Protocol):
    """What ``build_pair`` reads from its settings; the plugin's ``NetworkSettings`` (the marker's values) is one."""

    @property
    def mtu(self) -> int: ...

    @property
    def ipv6(self) -> bool: ...

    def ipv4_hosts(self, count: int) -> list[ipaddress.IPv4Interface]: ...

    def ipv6_hosts(self, count: int) -> list[ipaddress.IPv6Interface]: ...


def build_pair(settings: PairSettings, *, kill_grace: float = 1.0) -> tuple[Namespace, Namespace]:
    """Two namespaces ``a``/``b`` joined by a veth ``eth0``, addressed per ``settings``, ready."""
    v4 = settings.ipv4_hosts(2)
    v6 = settings.ipv6_hosts(2)
    a = Namespace("a", kill_grace=kill_grace, _defer_setup=True)
    try:
        b = Namespace("b", kill_grace=kill_grace, _defer_setup=True)
    except BaseException:
        close_all([a])
        raise
    try:
        veth(
            a,
            b,
            name_a="eth0",
            name_b="eth0",
            mtu=settings.mtu,
            addresses_a=[v4[0], *v6[:1]],
            addresses_b=[v4[1], *v6[1:2]],
            ipv6=settings.ipv6,
        )
    except BaseException:
        close_all([a, b])
        raise
    return a, b
