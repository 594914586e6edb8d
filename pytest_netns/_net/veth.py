"""Veth links between namespaces, created ready to carry their first packet.

One RTM_NEWLINK creates the veth with each end directly inside its namespace
(the root namespace never sees it).  Readiness, measured on Linux 6.18:

* both ends in fresh namespaces would get the same ifindex; the kernel's link
  watch then treats carrier-up as non-urgent and operstate turns UP only
  after ~1 s.  Distinct indexes make it ~2 ms;
* until operstate is UP the queue discipline drops packets (a lost first ARP
  costs a 1 s retransmit), so we wait for UP on both ends;
* IPv6 addresses are added without duplicate address detection, and we wait
  until each end has joined the solicited-node multicast group of each of
  its addresses (before that, a neighbour solicitation can be lost: 1-2 % of
  setups otherwise lose the first IPv6 packet) and has its local route (the
  same work item inserts it just after the join).

Offloads are off unless asked for (``offloads_off``): with them a veth
passes the stack's segmentation-offload packets of up to 64 KiB on whole,
and a capture shows frames no wire of that MTU carries.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Sequence

from .._kernel import ethtool as _ethtool
from .._kernel import rtnl as _rtnl
from .._kernel.handle import handle_of
from .._kernel.validate import IPInterface
from ..namespace import Namespace

READY_TIMEOUT = 5.0


def veth(
    a: Namespace,
    b: Namespace,
    *,
    name_a: str,
    name_b: str,
    mtu: int = 1500,
    addresses_a: Sequence[IPInterface] = (),
    addresses_b: Sequence[IPInterface] = (),
    ipv6: bool = True,
    up: bool = True,
    offloads: bool = False,
    indexes: tuple[int, int] | None = None,
    then_a: Sequence[_rtnl.Request] = (),
    then_b: Sequence[_rtnl.Request] = (),
    wait: bool = True,
) -> tuple[int, int]:
    """Create a veth ``a:name_a <-> b:name_b`` with addresses; return both ifindexes.

    With ``up`` the call returns once the link is ready for its first packet.
    ``ipv6=False`` keeps the ends free of any IPv6 address (no link-local one either).
    ``offloads=False`` switches segmentation and receive offloads off on both ends.
    ``indexes``: the ends' ifindexes, taken with ``allocate_index`` (distinct), so that
    ``then_a``/``then_b`` (routes, say) can name them: those requests go in the same batch
    as their end's, after its addresses.  ``wait=False`` (with ``up``): the caller does other
    work first and calls ``wait_ready`` on both ends before the first packet.
    """
    here, there = handle_of(a), handle_of(b)
    if indexes is not None:
        index_a, index_b = indexes
    else:
        index_a = here.allocate_index()
        index_b = there.allocate_index()
        if index_b == index_a:
            index_b = there.allocate_index()
    what = f"{a.name}:{name_a} <-> {b.name}:{name_b}"
    # Below 1280 the kernel gives the link no IPv6 at all (nothing to switch off).
    suppress_link_local = not ipv6 and mtu >= 1280
    create = _rtnl.new_veth(
        name_a, name_b, there.fd, index=index_a, peer_index=index_b, mtu=mtu, up=up and not suppress_link_local
    )
    create.doing = f"creating veth {what}"
    a_requests = [create]
    b_requests = []
    if suppress_link_local:
        # a's end goes up in the same message: its peer is still down (b's requests come later).
        a_requests.append(_rtnl.no_ipv6_link_local(index_a, f"bringing {a.name}:{name_a} up without IPv6", up=up))
        b_requests.append(_rtnl.no_ipv6_link_local(index_b))
    a_requests += [_rtnl.new_address(index_a, x, f"adding {x} to {a.name}:{name_a}") for x in addresses_a]
    if up:
        b_requests.append(_rtnl.set_link(index_b, up=True, doing=f"bringing {b.name}:{name_b} up"))
    b_requests += [_rtnl.new_address(index_b, x, f"adding {x} to {b.name}:{name_b}") for x in addresses_b]
    here.execute([*a_requests, *then_a])
    if not offloads:
        offloads_off(a, name_a)
        offloads_off(b, name_b)
    there.execute([*b_requests, *then_b])
    if up and wait:
        wait_ready([(a, index_a, addresses_a), (b, index_b, addresses_b)], what)
    return index_a, index_b


def offloads_off(ns: Namespace, ifname: str) -> None:
    """Segmentation and receive offloads off on ``ns:ifname``: each frame then fits the MTU, as on a wire."""
    _ethtool.offloads_off(handle_of(ns).rtnl.fileno(), ifname, f"switching offloads off on {ns.name}:{ifname}")


def wait_ready(ends: Sequence[tuple[Namespace, int, Sequence[IPInterface]]], what: str) -> None:
    """Wait until every end is operationally UP and its IPv6 addresses are usable.

    Usable: the local route is in and the solicited-node group joined
    (``RtnlSocket.wait_ipv6_usable``, as ``Namespace.add_address`` waits).
    """
    for ns, index, _ in ends:
        handle_of(ns).rtnl.wait_operstate_up([index], READY_TIMEOUT, f"{ns.name} ifindex {index} ({what})")
    deadline = time.monotonic() + READY_TIMEOUT
    for ns, index, addresses in ends:
        ipv6 = [x.ip for x in addresses if isinstance(x, ipaddress.IPv6Interface)]
        if ipv6:
            left = max(deadline - time.monotonic(), 0.0)
            handle_of(ns).rtnl.wait_ipv6_usable(index, ipv6, left, f"{ns.name} ifindex {index} ({what})")
