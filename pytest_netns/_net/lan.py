"""A shared Ethernet segment without a bridge: macvlans in bridge mode over one idle veth.

The cluster's node network.  A Linux bridge would do, but freeing one runs
``rcu_barrier()`` with the RTNL lock held (``br_multicast_dev_del``): 16-30 ms
here, during which every link, address and route change of the next test
waits.  Freeing macvlans and a veth holds it about 1 ms (docs/kernel-facts.md).

How the segment behaves (Linux 6.1 and 6.18):

* The lower device is a veth ``lan0`` whose peer ``lan1`` idles beside it in
  the segment's namespace: a macvlan needs a lower device with carrier.
  Neither end has an IPv6 address, and neither has an IPv4 one: frames
  that reach the namespace's own stack are dropped there.
* A member's interface is a macvlan created inside the member
  (``IFLA_NET_NS_FD``).  It takes the lower device's carrier when it is
  created, so its queue is attached when it goes up: it carries its first
  packet with nothing to wait for (no link watch, unlike a veth).
* Unicast between members is handed to ``lan0``'s receive path, which passes
  it to the destination macvlan: a capture on ``lan0`` sees it, as one on a
  bridge sees its ports' frames.  Broadcasts reach every member directly and
  leave through ``lan0`` too.
* Deleting the lower device (the segment's namespace dying) deletes every
  member's macvlan; a member's namespace dying deletes its own.

Offloads are off on ``lan0``, ``lan1`` and members' interfaces unless asked
for (as on a bridge and its veths: ``_net.veth.offloads_off``).
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from dataclasses import dataclass

from .._kernel import rtnl as _rtnl
from .._kernel.handle import handle_of
from .._kernel.validate import IPInterface
from ..errors import FeatureUnavailable, KernelError
from ..namespace import Namespace
from .veth import offloads_off

__all__ = ["LOWER", "LOWER_INDEX", "LOWER_PEER", "LOWER_PEER_INDEX", "Lan", "join", "make_lan"]

#: The lower device of every member's macvlan, and its idle peer.
LOWER = "lan0"
LOWER_PEER = "lan1"
#: Their ifindexes, below any a member allocates (from 1000).  A macvlan is created
#: from the segment's namespace, and Linux 6.1 first looks the new link's ifindex up
#: there: a member's index that names a device of the segment's namespace is EEXIST.
LOWER_INDEX, LOWER_PEER_INDEX = 2, 3


@dataclass(eq=False)
class Lan:
    """A segment in ``ns``: the lower device ``lan0`` (ifindex ``index``) and its peer ``lan1``."""

    ns: Namespace
    index: int
    peer_index: int
    #: Whether members' interfaces keep their offloads (off: every frame fits the MTU).
    offloads: bool = False

    @property
    def label(self) -> str:
        return f"{self.ns.name}:{LOWER}"

    def set_mtu(self, mtu: int, what: str) -> None:
        """The MTU of ``lan0`` and ``lan1``; the kernel lowers members' interfaces that would exceed it.

        Raising it lets members raise theirs (a macvlan's MTU cannot exceed
        its lower device's): set the segment's first, then the members'.
        """
        handle_of(self.ns).execute(
            [
                _rtnl.set_link(index, mtu=mtu, doing=f"setting MTU {mtu} on {self.ns.name}:{name} ({what})")
                for index, name in ((self.index, LOWER), (self.peer_index, LOWER_PEER))
            ]
        )


def make_lan(ns: Namespace, *, mtu: int, offloads: bool = False) -> Lan:
    """A segment whose lower device lives in ``ns`` (a namespace of its own), up and ready for members."""
    handle = handle_of(ns)
    index, peer = LOWER_INDEX, LOWER_PEER_INDEX
    where, there = f"{ns.name}:{LOWER}", f"{ns.name}:{LOWER_PEER}"
    handle.execute(
        [
            _rtnl.new_veth(LOWER, LOWER_PEER, handle.fd, index=index, peer_index=peer, mtu=mtu, up=False),
            # The mode before either end goes up: the second end up brings the carrier, and
            # with it the link-local addresses.
            _rtnl.no_ipv6_link_local(index, f"switching IPv6 off on {where}"),
            _rtnl.no_ipv6_link_local(peer, f"switching IPv6 off on {there}"),
            _rtnl.set_link(index, up=True, doing=f"bringing {where} up"),
            _rtnl.set_link(peer, up=True, doing=f"bringing {there} up"),
        ]
    )
    if not offloads:  # a capture on lan0 sees frames as members sent them
        offloads_off(ns, LOWER)
        offloads_off(ns, LOWER_PEER)
    return Lan(ns, index, peer, offloads)


def join(
    lan: Lan,
    member: Namespace,
    ifname: str,
    addresses: Sequence[IPInterface],
    *,
    mtu: int,
    index: int = 0,
    then: Sequence[_rtnl.Request] = (),
) -> int:
    """Give ``member`` the interface ``ifname`` on the segment with ``addresses``, up; return its ifindex.

    It is ready for its first packet when this returns.  ``index``: the
    interface's ifindex, taken with ``allocate_index`` so that ``then`` (the
    member's requests sent after it is up, routes say) can name it.  A
    kernel without macvlan raises ``FeatureUnavailable`` (``macvlan``).
    """
    here, there = handle_of(lan.ns), handle_of(member)
    index = index or there.allocate_index()
    if index in (lan.index, lan.peer_index):
        raise ValueError(f"ifindex {index} for {member.name}:{ifname} is the segment's own (lan0 or lan1)")
    where = f"{member.name}:{ifname}"
    create = _rtnl.new_macvlan(ifname, lower=lan.index, netns_fd=there.fd, index=index, mtu=mtu)
    create.doing = f"plugging {where} into the segment {lan.label} (a macvlan)"
    try:
        here.execute([create])
    except KernelError as exc:
        if exc.errno == errno.EOPNOTSUPP:
            raise FeatureUnavailable(
                f"{create.doing}: this kernel has no macvlan (CONFIG_MACVLAN), which the segment needs",
                feature="macvlan",
            ) from exc
        raise
    if not lan.offloads:
        offloads_off(member, ifname)
    requests = [
        _rtnl.no_ipv6_link_local(index, f"switching IPv6 off on {where}"),
        _rtnl.set_link(index, up=True, doing=f"bringing {where} up"),
        *(_rtnl.new_address(index, x, f"adding {x} to {where}") for x in addresses),
        *then,
    ]
    there.execute(requests)
    return index
