"""Sysctls of a namespace, settled in one switch: the shared settings of every model and the one writer.

``settle(ns, settings)`` reads each ``/proc/sys`` file and writes only the
values that differ, all in one namespace switch.  A file that does not exist
is skipped (``/proc/sys/net/bridge`` exists only where br_netfilter is loaded)
unless it is ``required``: then it is a ``FeatureUnavailable`` naming the
kernel feature that provides it (a skip under pytest).

The settings below are the building blocks the models combine (``Topology``'s
nodes, routers and segments, the cluster's nodes, the Docker host).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Collection, Sequence

from .._kernel.handle import handle_of
from ..errors import FeatureUnavailable, KernelError
from ..namespace import Namespace

Setting = tuple[str, str]

IPV4_FORWARDING: tuple[Setting, ...] = (("/proc/sys/net/ipv4/ip_forward", "1"),)
IPV6_FORWARDING: tuple[Setting, ...] = (
    ("/proc/sys/net/ipv6/conf/all/forwarding", "1"),
    ("/proc/sys/net/ipv6/conf/default/forwarding", "1"),
)
#: No reverse-path filter, whatever the host has (a new namespace copies the host's IPv4
#: conf/all; with strict filtering, paths chosen differently in each direction drop packets).
NO_RP_FILTER: tuple[Setting, ...] = (
    ("/proc/sys/net/ipv4/conf/all/rp_filter", "0"),
    ("/proc/sys/net/ipv4/conf/default/rp_filter", "0"),
)
#: No duplicate address detection for link-local addresses: a router sends the neighbour
#: solicitation for a packet it forwards from its link-local address, and until DAD has
#: finished (1-2 s) it has none (global addresses are added without DAD anyway).
NO_DAD: tuple[Setting, ...] = (
    ("/proc/sys/net/ipv6/conf/all/accept_dad", "0"),
    ("/proc/sys/net/ipv6/conf/default/accept_dad", "0"),
)
#: No IPv6 on any interface of the namespace (no link-local addresses, no solicitations of its own).
NO_IPV6: tuple[Setting, ...] = (
    ("/proc/sys/net/ipv6/conf/all/disable_ipv6", "1"),
    ("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1"),
)
#: Bridged IPv4 frames pass the IP netfilter hooks (br_netfilter): only then does conntrack see
#: a DNAT-ed connection whose request and reply are bridged between two ports of one bridge.
BRIDGE_NF_CALL_IPTABLES = "/proc/sys/net/bridge/bridge-nf-call-iptables"
BRIDGED_IPV4_PASSES_NETFILTER: tuple[Setting, ...] = ((BRIDGE_NF_CALL_IPTABLES, "1"),)
#: Bridged frames pass no netfilter hook (a plain switch).  Some kernels have br_netfilter
#: built in and on by default in every namespace, others not: set explicitly, a bridge
#: behaves the same everywhere.
BRIDGED_TRAFFIC_SKIPS_NETFILTER: tuple[Setting, ...] = (
    (BRIDGE_NF_CALL_IPTABLES, "0"),
    ("/proc/sys/net/bridge/bridge-nf-call-ip6tables", "0"),
    ("/proc/sys/net/bridge/bridge-nf-call-arptables", "0"),
)

#: A namespace that routes for the members of its bridge and DNATs their connections (a cluster
#: node in bridge mode): forwarding, no reverse-path filter, bridged IPv4 through netfilter.
BRIDGE_ROUTER: tuple[Setting, ...] = IPV4_FORWARDING + NO_RP_FILTER + BRIDGED_IPV4_PASSES_NETFILTER

#: Where a missing sysctl comes from: (directory, feature name as ``doctor`` reports it, how to get it).
_PROVIDERS = (("/proc/sys/net/bridge/", "br_netfilter", "load it with `modprobe br_netfilter`"),)


#: Files whose write takes the RTNL lock with ``rtnl_trylock`` and, while another holds it, restarts
#: in a busy loop (ERESTARTNOINTR): the IPv4 and IPv6 forwarding switches, disable_ipv6 of ``all``.
_SPINNING = ("/forwarding", "/ip_forward", "/all/disable_ipv6")


def settle(ns: Namespace, settings: Sequence[Setting], *, required: Collection[str] = (), needed_for: str = "") -> None:
    """Write the settings that differ, in one namespace switch.

    A missing file in ``required`` raises ``FeatureUnavailable`` (saying what it
    is ``needed_for``); other missing files are skipped.
    """
    handle = handle_of(ns)
    with handle.entered():
        waited = False
        for path, value in settings:
            try:
                with open(path) as file:
                    if file.read().strip() == value:
                        continue
            except FileNotFoundError:
                if path in required:
                    raise _missing(path, needed_for) from None
                continue
            if not waited and path.endswith(_SPINNING):
                # A write that finds the lock taken spins, on a CPU its holder may need: the namespace's
                # deferred setup (lo up, if still pending) waits for it asleep first, and the write then
                # rarely finds it taken.
                handle.execute([])
                waited = True
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
                try:
                    os.write(fd, value.encode())
                finally:
                    os.close(fd)
            except OSError as exc:
                raise KernelError(exc.errno or errno.EIO, f"writing {value} to {path} in {ns.name!r}") from None


def _missing(path: str, needed_for: str) -> FeatureUnavailable:
    why = f"; it is needed for {needed_for}" if needed_for else ""
    for directory, feature, remedy in _PROVIDERS:
        if path.startswith(directory):
            return FeatureUnavailable(
                f"{path} does not exist: this kernel has no {feature} ({remedy}){why}", feature=feature
            )
    return FeatureUnavailable(f"{path} does not exist on this kernel{why}", feature=None)
