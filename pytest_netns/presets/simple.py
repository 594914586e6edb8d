"""Ready-made networks behind the fixtures, usable without pytest."""

from __future__ import annotations

from .._net.veth import veth
from .._plugin.settings import NetworkSettings
from ..namespace import Namespace, close_all


def build_pair(settings: NetworkSettings, *, kill_grace: float = 1.0) -> tuple[Namespace, Namespace]:
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
