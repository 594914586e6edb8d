"""rtnetlink messages (links, addresses, routes) and the socket that sends them inside one namespace.

The hot path (creating a ready veth pair in ~1 ms) cannot afford pyroute2's
generic encoder, which costs 0.1-0.3 ms per message, more than the kernel
work itself.  The few messages the hot path needs are fixed-layout structs
plus flat attributes, so they are packed here with ``struct``; replies to
dumps (the paths that are not hot) are decoded with pyroute2's message
classes.  The transport is ``netlink.NetlinkSocket``: several requests go
out in one ``send`` and their acks are read back together.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
import time
from collections.abc import Iterable
from typing import Any

from ..errors import KernelError, NetnsTimeout
from .netlink import NETLINK_ROUTE, NetlinkSocket

# Re-exported: the encoders elsewhere build their requests from these.
from .netlink import NLM_F_CREATE as NLM_F_CREATE
from .netlink import NLM_F_EXCL as NLM_F_EXCL
from .netlink import NLM_F_REPLACE as NLM_F_REPLACE
from .netlink import Request as Request
from .netlink import attr as attr
from .netlink import attr_str as attr_str
from .netlink import attr_u32 as attr_u32
from .netlink import parse_attrs as parse_attrs

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_GETMULTICAST = 58

IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_NOARP = 0x80
IFF_PROMISC = 0x100

IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_MASTER = 10
IFLA_OPERSTATE = 16
IFLA_CARRIER = 33
IFLA_LINK = 5
IFLA_LINK_NETNSID = 37
IFLA_TARGET_NETNSID = 46
IFLA_LINKINFO = 18
IFLA_AF_SPEC = 26
IFLA_NET_NS_FD = 28
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
IFLA_INFO_SLAVE_DATA = 5
VETH_INFO_PEER = 1
IFLA_BR_FORWARD_DELAY = 1
IFLA_BR_STP_STATE = 5
IFLA_BR_MCAST_SNOOPING = 23
IFLA_BR_NF_CALL_IPTABLES = 36
IFLA_BR_NF_CALL_IP6TABLES = 37
IFLA_BR_NF_CALL_ARPTABLES = 38
IFLA_BRPORT_MODE = 4  # hairpin
IFLA_MACVLAN_MODE = 1
MACVLAN_MODE_BRIDGE = 4
IFLA_INET6_ADDR_GEN_MODE = 8
IN6_ADDR_GEN_MODE_NONE = 1
IF_OPER_UNKNOWN = 0
IF_OPER_UP = 6

IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_MULTICAST = 7
IFA_FLAGS = 8
IFA_F_NODAD = 0x02
IFA_F_DADFAILED = 0x08
IFA_F_TENTATIVE = 0x40
#: No prefix route for the address's network (IFA_FLAGS only: it does not fit ifa_flags' byte).
IFA_F_NOPREFIXROUTE = 0x200

RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RT_TABLE_MAIN = 254
RTPROT_STATIC = 4
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RTN_UNICAST = 1
RTN_LOCAL = 2

#: The fixed headers of link, address and route messages (ifinfomsg, ifaddrmsg, rtmsg).
IFINFO = struct.Struct("=BxHiII")
IFADDR = struct.Struct("=BBBBI")
RTMSG = struct.Struct("=BBBBBBBBI")


def ifinfo(index: int = 0, flags: int = 0, change: int = 0, family: int = 0) -> bytes:
    return IFINFO.pack(family, 0, index, flags, change)


# -- encoders for the requests the plugin needs -------------------------------


def new_veth(
    name: str,
    peer_name: str,
    peer_netns_fd: int,
    *,
    index: int,
    peer_index: int,
    mtu: int,
    up: bool = True,
) -> Request:
    """Create a veth whose local end is here and whose peer is born in another namespace."""
    peer = (
        ifinfo(peer_index)
        + attr_str(IFLA_IFNAME, peer_name)
        + attr_u32(IFLA_MTU, mtu)
        + attr_u32(IFLA_NET_NS_FD, peer_netns_fd)
    )
    linkinfo = attr(IFLA_INFO_KIND, b"veth\0") + attr(IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer))
    flag = IFF_UP if up else 0
    body = (
        ifinfo(index, flag, flag)
        + attr_str(IFLA_IFNAME, name)
        + attr_u32(IFLA_MTU, mtu)
        + attr(IFLA_LINKINFO, linkinfo)
    )
    return Request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, f"creating veth {name} <-> {peer_name}")


def new_bridge(
    name: str,
    *,
    index: int = 0,
    mtu: int | None = None,
    up: bool = True,
    promisc: bool = False,
    mcast_snooping: bool | None = None,
    nf_call_iptables: bool | None = None,
    nf_call_ip6tables: bool | None = None,
    nf_call_arptables: bool | None = None,
) -> Request:
    """Create a bridge that forwards at once: STP off, no forwarding delay.

    ``promisc``: a capture on the bridge sees the frames between its ports.
    ``mcast_snooping`` and the bridge's own ``nf_call_*`` switches (whether
    bridged IPv4, IPv6 and ARP frames pass netfilter) keep the kernel's
    defaults where None.
    """
    data = attr_u32(IFLA_BR_STP_STATE, 0) + attr_u32(IFLA_BR_FORWARD_DELAY, 0)
    for kind, value in (
        (IFLA_BR_MCAST_SNOOPING, mcast_snooping),
        (IFLA_BR_NF_CALL_IPTABLES, nf_call_iptables),
        (IFLA_BR_NF_CALL_IP6TABLES, nf_call_ip6tables),
        (IFLA_BR_NF_CALL_ARPTABLES, nf_call_arptables),
    ):
        if value is not None:
            data += attr(kind, b"\1" if value else b"\0")
    linkinfo = attr(IFLA_INFO_KIND, b"bridge\0") + attr(IFLA_INFO_DATA, data)
    flags = (IFF_UP if up else 0) | (IFF_PROMISC if promisc else 0)
    body = ifinfo(index, flags, flags) + attr_str(IFLA_IFNAME, name)
    if mtu is not None:
        body += attr_u32(IFLA_MTU, mtu)
    body += attr(IFLA_LINKINFO, linkinfo)
    return Request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, f"creating bridge {name}")


def new_macvlan(name: str, *, lower: int, netns_fd: int, index: int, mtu: int) -> Request:
    """Create a macvlan in bridge mode on the link ``lower`` (here), born down in the namespace behind ``netns_fd``.

    Macvlans of one lower device in bridge mode reach each other directly,
    as ports of one switch do; ``index`` is the new link's ifindex there.
    """
    linkinfo = attr(IFLA_INFO_KIND, b"macvlan\0") + attr(
        IFLA_INFO_DATA, attr_u32(IFLA_MACVLAN_MODE, MACVLAN_MODE_BRIDGE)
    )
    body = (
        ifinfo(index)
        + attr_str(IFLA_IFNAME, name)
        + attr_u32(IFLA_MTU, mtu)
        + attr_u32(IFLA_LINK, lower)
        + attr_u32(IFLA_NET_NS_FD, netns_fd)
        + attr(IFLA_LINKINFO, linkinfo)
    )
    return Request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, f"creating macvlan {name}")


def set_bridge_port(index: int, *, hairpin: bool, doing: str) -> Request:
    """Change a bridge port: ``hairpin`` lets it send a frame back out where it came in."""
    slave = attr(IFLA_INFO_SLAVE_DATA, attr(IFLA_BRPORT_MODE, b"\1" if hairpin else b"\0"))
    return Request(RTM_NEWLINK, 0, ifinfo(index) + attr(IFLA_LINKINFO, slave), doing)


def set_link(
    index: int,
    *,
    up: bool | None = None,
    mtu: int | None = None,
    master: int | None = None,
    doing: str = "",
) -> Request:
    """Change a link's state, MTU or bridge master."""
    flags = change = 0
    if up is not None:
        change = IFF_UP
        flags = IFF_UP if up else 0
    body = ifinfo(index, flags, change)
    if mtu is not None:
        body += attr_u32(IFLA_MTU, mtu)
    if master is not None:
        body += attr_u32(IFLA_MASTER, master)
    return Request(RTM_NEWLINK, 0, body, doing or f"changing link {index}")


def no_ipv6_link_local(index: int, doing: str = "", *, up: bool = False) -> Request:
    """Stop the kernel from giving a link an IPv6 link-local address (before it goes up).

    The kernel refuses this attribute while creating a link (EAFNOSUPPORT: the
    IPv6 part of the device does not exist yet), so it is a separate change.
    ``up`` brings the link up in the same message: only for a veth end whose
    peer is still down (the kernel brings it up before it reads the mode, and
    adds the link-local address when the carrier comes, which needs the peer).
    """
    mode = attr(IFLA_INET6_ADDR_GEN_MODE, bytes([IN6_ADDR_GEN_MODE_NONE]))
    flags = IFF_UP if up else 0
    body = ifinfo(index, flags, flags) + attr(IFLA_AF_SPEC, attr(socket.AF_INET6, mode))
    return Request(RTM_NEWLINK, 0, body, doing or f"disabling IPv6 link-local on link {index}")


def del_link(index: int, doing: str = "") -> Request:
    return Request(RTM_DELLINK, 0, ifinfo(index), doing or f"deleting link {index}")


def new_address(
    index: int,
    address: ipaddress.IPv4Interface | ipaddress.IPv6Interface,
    doing: str = "",
    *,
    noprefixroute: bool = False,
) -> Request:
    """Add an address; IPv6 ones skip duplicate address detection (usable at once).

    ``noprefixroute``: the kernel adds no route to the address's network (``ip addr add ... noprefixroute``).
    """
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    flags = IFA_F_NODAD if address.version == 6 else 0
    if noprefixroute:
        flags |= IFA_F_NOPREFIXROUTE
    packed = address.ip.packed
    body = IFADDR.pack(family, address.network.prefixlen, flags & 0xFF, RT_SCOPE_UNIVERSE, index)
    body += attr(IFA_LOCAL, packed) + attr(IFA_ADDRESS, packed) + attr_u32(IFA_FLAGS, flags)
    return Request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body, doing or f"adding address {address}")


def new_route(
    dst: ipaddress.IPv4Network | ipaddress.IPv6Network,
    *,
    via: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None,
    oif: int | None = None,
    replace: bool = False,
    doing: str = "",
) -> Request:
    """Add a static route in the main table."""
    family = socket.AF_INET if dst.version == 4 else socket.AF_INET6
    scope = RT_SCOPE_UNIVERSE if via is not None else RT_SCOPE_LINK
    if dst.version == 6:
        scope = RT_SCOPE_UNIVERSE  # IPv6 routes are always universe scope
    body = RTMSG.pack(family, dst.prefixlen, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC, scope, RTN_UNICAST, 0)
    if dst.prefixlen:
        body += attr(RTA_DST, dst.network_address.packed)
    if via is not None:
        body += attr(RTA_GATEWAY, via.packed)
    if oif is not None:
        body += attr_u32(RTA_OIF, oif)
    flags = NLM_F_CREATE | (NLM_F_REPLACE if replace else NLM_F_EXCL)
    return Request(RTM_NEWROUTE, flags, body, doing or f"adding route to {dst}")


def get_link(index: int) -> Request:
    return Request(RTM_GETLINK, 0, ifinfo(index), f"reading link {index}")


def solicited_node_group(address: ipaddress.IPv6Address) -> bytes:
    """ff02::1:ffXX:XXXX, the group a neighbour solicitation for ``address`` is sent to."""
    return b"\xff\x02" + bytes(9) + b"\x01\xff" + address.packed[-3:]


def joins_solicited_node_groups(link: dict[str, int]) -> bool:
    """Whether the kernel joins the solicited-node groups of the link's IPv6 addresses now (up, carrier, ARP)."""
    return bool(link["flags"] & IFF_UP and link["carrier"] and not link["flags"] & (IFF_LOOPBACK | IFF_NOARP))


class RtnlSocket(NetlinkSocket):
    """A NETLINK_ROUTE socket bound inside the namespace it was created in.

    Create it on a thread that is inside the target namespace; afterwards it
    can be used from any thread (sockets stay in their namespace).  Requests
    are serialised with a lock.  Without ``timeout`` every wait for an answer
    is unbounded (the kernel answers rtnetlink synchronously).
    """

    what = "an rtnetlink socket"
    silence = "no answer from the kernel within {timeout:g} s"

    def __init__(self, *, timeout: float | None = None) -> None:
        super().__init__(NETLINK_ROUTE, timeout=timeout)

    def dump(self, kind: int, body: bytes, doing: str) -> list[Any]:
        """Run a dump request and decode the replies with pyroute2's message classes."""
        from pyroute2.netlink.rtnl.marshal import MarshalRtnl

        marshal = MarshalRtnl()
        found: list[Any] = []
        for message in self.dump_raw(Request(kind, 0, body, doing)):
            found.extend(marshal.parse(message))
        return found

    def link(self, request: Request) -> dict[str, int]:
        """Index, flags, MTU, operstate and carrier of one link."""
        reply = self.query(request)
        _family, _type, index, flags, _change = IFINFO.unpack_from(reply, 16)
        attrs = parse_attrs(reply, 16 + IFINFO.size, len(reply))
        mtu = attrs.get(IFLA_MTU)
        state = attrs.get(IFLA_OPERSTATE)
        carrier = attrs.get(IFLA_CARRIER)
        peer = attrs.get(IFLA_LINK)
        netnsid = attrs.get(IFLA_LINK_NETNSID)
        return {
            "index": index,
            "flags": flags,
            "mtu": struct.unpack("=I", mtu)[0] if mtu else 0,
            "operstate": state[0] if state else IF_OPER_UNKNOWN,
            "carrier": carrier[0] if carrier else 1,
            "peer": struct.unpack("=i", peer)[0] if peer else 0,
            "peer_netnsid": struct.unpack("=i", netnsid)[0] if netnsid else -1,
        }

    def link_by_name(self, name: str) -> dict[str, int]:
        return self.link(
            Request(RTM_GETLINK, 0, ifinfo() + attr_str(IFLA_IFNAME, name), f"looking up interface {name!r}")
        )

    def operstate(self, index: int) -> int:
        return self.link(get_link(index))["operstate"]

    def wait_settled(self, index: int, timeout: float, what: str) -> None:
        """Wait until a link that was just brought up is UP, or has no carrier (its peer is down).

        For a veth the peer end must be UP too: its carrier comes back with this
        end, but until the kernel's link watch has marked it operationally UP
        its queue drops packets (a lost first ARP costs a 1 s retransmit).  The
        peer is read through this namespace's id for the peer's namespace.
        """
        deadline = time.monotonic() + timeout
        delay = 0.0001
        while True:
            info = self.link(get_link(index))
            settled = info["operstate"] == IF_OPER_UP or not info["carrier"]
            if info["operstate"] == IF_OPER_UNKNOWN and info["flags"] & IFF_UP:
                settled = True  # loopback and friends never report UP
            if settled and info["operstate"] == IF_OPER_UP and info["peer"] and info["peer"] != index:
                settled = self._peer_operstate(info["peer"], info["peer_netnsid"]) in (IF_OPER_UP, None)
            if settled:
                return
            if time.monotonic() > deadline:
                raise KernelError(errno.ETIMEDOUT, f"waiting for {what} to become operationally UP")
            time.sleep(delay)
            delay = min(delay * 2, 0.005)

    def _peer_operstate(self, peer: int, netnsid: int) -> int | None:
        """The operstate of a link's peer (None when it cannot be read: nothing to wait for)."""
        body = ifinfo(peer)
        if netnsid >= 0:
            body += attr(IFLA_TARGET_NETNSID, struct.pack("=i", netnsid))
        try:
            return self.link(Request(RTM_GETLINK, 0, body, f"reading the peer of link {peer}"))["operstate"]
        except KernelError:
            return None

    def wait_operstate_up(self, indexes: Iterable[int], timeout: float, what: str) -> None:
        """Busy-wait (with short sleeps) until every link is operationally UP."""
        deadline = time.monotonic() + timeout
        remaining = list(indexes)
        delay = 0.0001
        while remaining:
            remaining = [i for i in remaining if self.operstate(i) != IF_OPER_UP]
            if not remaining:
                return
            if time.monotonic() > deadline:
                raise KernelError(errno.ETIMEDOUT, f"waiting for {what} to become operationally UP")
            time.sleep(delay)
            delay = min(delay * 2, 0.005)

    # -- IPv6 addresses usable ---------------------------------------------------------------------
    #
    # With IFA_F_NODAD the kernel still finishes an address from its addrconf work queue
    # (addrconf_dad_work): it joins the solicited-node group (a neighbour solicitation that
    # arrives before is dropped: a 1 s retransmit) and inserts the local route (a packet
    # that arrives before is forwarded, or dropped with forwarding off).  After an interface
    # comes up again the same work redoes both for every kept address, ~3 ms later here.

    def ipv6_addresses(self, index: int, doing: str) -> list[ipaddress.IPv6Address]:
        """The IPv6 addresses of a link that are usable once the kernel has finished them (not tentative)."""
        found = []
        for message in self.dump_raw(Request(RTM_GETADDR, 0, IFADDR.pack(socket.AF_INET6, 0, 0, 0, index), doing)):
            family, _prefix, flags, _scope, where = IFADDR.unpack_from(message, 16)
            if family != socket.AF_INET6 or where != index:
                continue
            attrs = parse_attrs(message, 16 + IFADDR.size, len(message))
            if IFA_FLAGS in attrs:
                flags = struct.unpack("=I", attrs[IFA_FLAGS])[0]
            packed = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
            if packed and not flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED):
                found.append(ipaddress.IPv6Address(packed))
        return found

    def multicast_groups(self, index: int, doing: str) -> set[bytes]:
        """The IPv6 multicast groups a link has joined (pyroute2 0.9 does not decode these replies)."""
        joined = set()
        for message in self.dump_raw(Request(RTM_GETMULTICAST, 0, IFADDR.pack(socket.AF_INET6, 0, 0, 0, index), doing)):
            if IFADDR.unpack_from(message, 16)[4] == index:
                group = parse_attrs(message, 16 + IFADDR.size, len(message)).get(IFA_MULTICAST)
                if group:
                    joined.add(group)
        return joined

    def is_local(self, address: ipaddress.IPv6Address, index: int, doing: str) -> bool:
        """Whether a packet to ``address`` arriving on the link would be delivered here (its local route exists)."""
        body = RTMSG.pack(socket.AF_INET6, 0, 128, 0, 0, 0, 0, 0, 0) + attr(RTA_DST, address.packed)
        body += attr_u32(RTA_OIF, index)
        try:
            reply = self.query(Request(RTM_GETROUTE, 0, body, doing))
        except KernelError:
            return False  # no route at all yet (an address without a prefix route)
        return bool(RTMSG.unpack_from(reply, 16)[7] == RTN_LOCAL)

    def wait_ipv6_usable(
        self, index: int, addresses: Iterable[ipaddress.IPv6Address], timeout: float, what: str
    ) -> None:
        """Wait until each address on the link has its local route and solicited-node group.

        Only for a link that joins groups now (``joins_solicited_node_groups``).  ``what``
        names the link; ``NetnsTimeout`` names the addresses still unfinished.
        """
        deadline = time.monotonic() + timeout
        wanted = remaining = list(addresses)
        delay = 0.0001
        doing = f"checking the IPv6 addresses of {what}"
        while remaining:
            # The route is inserted after the join (one work item): checked first, it is the usual miss.
            remaining = [x for x in remaining if not self.is_local(x, index, doing)]
            if not remaining:
                groups = self.multicast_groups(index, doing)
                remaining = [x for x in wanted if solicited_node_group(x) not in groups]
            if not remaining:
                return
            if time.monotonic() > deadline:
                shown = ", ".join(map(str, remaining))
                raise NetnsTimeout(
                    f"IPv6 address {shown} on {what} not usable after {timeout:g} s: the kernel had not "
                    "installed its local route and joined its solicited-node group (addrconf work queue stalled?)"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.005)
