"""The floor: the kernel work of each shape alone, with no framework around it.

Written here on purpose instead of reusing ``pytest_netns``: the floor must
not get slower (or faster) when the plugin changes.  Each namespace is an
anonymous one made with ``unshare(CLONE_NEWNET)`` on the calling thread and
held by one fd; while the thread is inside, we open the one rtnetlink socket
we need there (subscribed to link events, so waiting for operstate UP is a
read, not a poll) and, for IPv6, ``/proc/thread-self/net/igmp6`` (re-read
with ``pread``: the file stays bound to its namespace).  Every object is one
netlink message; all messages for one namespace go out in one ``send``.

Readiness is the plugin's: every veth end operationally UP and every IPv6
address's solicited-node multicast group joined.  Teardown closes the fds;
the kernel removes the devices with the namespaces.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

CLONE_NEWNET = 0x40000000
THREAD_NETNS = "/proc/thread-self/ns/net"
SO_RCVBUFFORCE = 33

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = (ctypes.c_int, ctypes.c_int)
_libc.unshare.argtypes = (ctypes.c_int,)

# rtnetlink
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE, NLM_F_APPEND = 0x1, 0x4, 0x200, 0x400, 0x800
NLMSG_ERROR = 2
RTM_NEWLINK, RTM_GETLINK, RTM_NEWADDR, RTM_NEWROUTE = 16, 18, 20, 24
RTMGRP_LINK = 1
IFF_UP = 1
IFLA_IFNAME, IFLA_MTU, IFLA_MASTER, IFLA_OPERSTATE, IFLA_LINKINFO, IFLA_NET_NS_FD = 3, 4, 10, 16, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFLA_BR_FORWARD_DELAY, IFLA_BR_STP_STATE = 1, 5
IF_OPER_UP = 6
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS, IFA_F_NODAD = 1, 2, 8, 0x02
RTA_DST, RTA_GATEWAY = 1, 5

# nf_tables (for the NAT shape)
NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
NFT_MSG_NEWTABLE, NFT_MSG_NEWCHAIN, NFT_MSG_NEWRULE = 0, 3, 6
NLA_F_NESTED = 0x8000

_HDR = struct.Struct("=IHHII")
_IFI = struct.Struct("=BxHiII")
_IFA = struct.Struct("=BBBBI")
_RTM = struct.Struct("=BBBBBBBBI")


def _attr(kind: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * (-n & 3)


def _u32(kind: int, value: int) -> bytes:
    return _attr(kind, struct.pack("=I", value))


def _be32(kind: int, value: int) -> bytes:
    return _attr(kind, struct.pack("!I", value))


def _str(kind: int, value: str) -> bytes:
    return _attr(kind, value.encode() + b"\0")


def _nest(kind: int, payload: bytes) -> bytes:
    return _attr(kind | NLA_F_NESTED, payload)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


# -- messages (type, flags, body) ----------------------------------------------

Msg = tuple[int, int, bytes]


def link_up(index: int, master: int | None = None) -> Msg:
    body = _IFI.pack(0, 0, index, IFF_UP, IFF_UP)
    if master is not None:
        body += _u32(IFLA_MASTER, master)
    return RTM_NEWLINK, 0, body


def veth(name: str, index: int, peer: str, peer_index: int, peer_fd: int, mtu: int = 1500) -> Msg:
    """A veth whose local end is up here and whose peer is born in ``peer_fd``'s namespace."""
    peer_body = (
        _IFI.pack(0, 0, peer_index, 0, 0)
        + _str(IFLA_IFNAME, peer)
        + _u32(IFLA_MTU, mtu)
        + _u32(IFLA_NET_NS_FD, peer_fd)
    )
    info = _attr(IFLA_INFO_KIND, b"veth\0") + _attr(IFLA_INFO_DATA, _attr(VETH_INFO_PEER, peer_body))
    body = (
        _IFI.pack(0, 0, index, IFF_UP, IFF_UP)
        + _str(IFLA_IFNAME, name)
        + _u32(IFLA_MTU, mtu)
        + _attr(IFLA_LINKINFO, info)
    )
    return RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body


def bridge(name: str, index: int) -> Msg:
    data = _u32(IFLA_BR_STP_STATE, 0) + _u32(IFLA_BR_FORWARD_DELAY, 0)
    info = _attr(IFLA_INFO_KIND, b"bridge\0") + _attr(IFLA_INFO_DATA, data)
    body = _IFI.pack(0, 0, index, IFF_UP, IFF_UP) + _str(IFLA_IFNAME, name) + _attr(IFLA_LINKINFO, info)
    return RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body


def address(index: int, addr: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> Msg:
    family = socket.AF_INET if addr.version == 4 else socket.AF_INET6
    flags = IFA_F_NODAD if addr.version == 6 else 0
    packed = addr.ip.packed
    body = _IFA.pack(family, addr.network.prefixlen, flags, 0, index)
    body += _attr(IFA_LOCAL, packed) + _attr(IFA_ADDRESS, packed) + _u32(IFA_FLAGS, flags)
    return RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body


def default_route(via: ipaddress.IPv4Address) -> Msg:
    body = _RTM.pack(socket.AF_INET, 0, 0, 0, 254, 4, 0, 1, 0) + _attr(RTA_GATEWAY, via.packed)
    return RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body


# -- one namespace -------------------------------------------------------------


@dataclass
class Netns:
    """An anonymous namespace with its rtnetlink socket (and igmp6 file when asked)."""

    fd: int
    sock: socket.socket
    igmp6: int = -1
    seq: int = 0
    pending: list[bytes] = field(default_factory=list)
    waiting: int = 0  # acks still to read
    oper: dict[int, int] = field(default_factory=dict)  # last operstate seen per ifindex

    def queue(self, *msgs: Msg) -> None:
        for kind, flags, body in msgs:
            self.seq += 1
            self.pending.append(_HDR.pack(16 + len(body), kind, NLM_F_REQUEST | NLM_F_ACK | flags, self.seq, 0) + body)

    def flush(self) -> None:
        """Send everything queued in one write (acks are read by ``collect``)."""
        if self.pending:
            self.sock.sendall(b"".join(self.pending))
            self.waiting += len(self.pending)
            self.pending = []

    def collect(self, up: set[int] | None = None) -> None:
        """Read acks (raising on error) and link events until nothing is awaited.

        ``up``: ifindexes to see operationally UP here; removed as they come.
        """
        up = {i for i in up if self.oper.get(i) != IF_OPER_UP} if up else set()
        while self.waiting or up:
            try:
                data = self.sock.recv(1 << 16)
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                # Events were dropped (a bridge port flood): ask for the state instead.
                for index in up:
                    self.sock.send(_HDR.pack(32, RTM_GETLINK, NLM_F_REQUEST, 0, 0) + _IFI.pack(0, 0, index, 0, 0))
                continue
            offset = 0
            while offset + 16 <= len(data):
                length, kind, _flags, _seq, _pid = _HDR.unpack_from(data, offset)
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", data, offset + 16)[0]
                    if code:
                        raise OSError(code, f"floor: netlink request failed: {os.strerror(code)}")
                    self.waiting -= 1
                elif kind == RTM_NEWLINK:
                    index = _IFI.unpack_from(data, offset + 16)[2]
                    state = self.oper[index] = _operstate(data, offset + 16 + _IFI.size, offset + length)
                    if state == IF_OPER_UP:
                        up.discard(index)
                offset += (length + 3) & ~3

    def wait_groups(self, index: int, groups: set[str]) -> None:
        """Poll (pread) igmp6 until ``index`` has joined every group."""
        delay = 0.00005
        while True:
            text = os.pread(self.igmp6, 1 << 16, 0).decode()
            joined = {f[2] for f in map(str.split, text.splitlines()) if int(f[0]) == index}
            if groups <= joined:
                return
            time.sleep(delay)
            delay = min(delay * 2, 0.002)

    def close(self) -> None:
        self.sock.close()
        if self.igmp6 >= 0:
            os.close(self.igmp6)
        os.close(self.fd)


def _operstate(data: bytes, offset: int, end: int) -> int:
    while offset + 4 <= end:
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            break
        if kind == IFLA_OPERSTATE:
            return data[offset + 4]
        offset += (length + 3) & ~3
    return 0


class Home:
    """The calling thread's namespace, to come back to after each ``unshare``."""

    def __init__(self) -> None:
        self.fd = os.open(THREAD_NETNS, os.O_RDONLY | os.O_CLOEXEC)

    def new(self, *, ipv6: bool = False, sysctls: Sequence[str] = ()) -> Netns:
        """unshare, open the fd and the socket (and igmp6) inside, write sysctls, come back."""
        _check(_libc.unshare(CLONE_NEWNET), "unshare")
        try:
            fd = os.open(THREAD_NETNS, os.O_RDONLY | os.O_CLOEXEC)
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 1 << 22)
            sock.bind((0, RTMGRP_LINK))
            igmp6 = os.open("/proc/thread-self/net/igmp6", os.O_RDONLY | os.O_CLOEXEC) if ipv6 else -1
            for path in sysctls:
                sfd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
                os.write(sfd, b"1")
                os.close(sfd)
        finally:
            _check(_libc.setns(self.fd, CLONE_NEWNET), "setns")
        return Netns(fd, sock, igmp6)

    def close(self) -> None:
        os.close(self.fd)


def solicited(addr: ipaddress.IPv6Interface) -> str:
    return "ff0200000000000000000001ff" + addr.ip.packed[-3:].hex()


FORWARDING = ("/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding")

# -- shapes: each returns the list of namespaces to close ------------------------


def shape_netns(home: Home) -> list[Netns]:
    ns = home.new()
    ns.queue(link_up(1))
    ns.flush()
    ns.collect()
    return [ns]


def shape_many(home: Home, count: int) -> list[Netns]:
    spaces = [home.new() for _ in range(count)]
    for ns in spaces:
        ns.queue(link_up(1))
        ns.flush()
    for ns in spaces:
        ns.collect()
    return spaces


def _v4(net: str, host: int) -> ipaddress.IPv4Interface:
    n = ipaddress.IPv4Network(net)
    return ipaddress.IPv4Interface(f"{n.network_address + host}/{n.prefixlen}")


def _v6(net: str, host: int) -> ipaddress.IPv6Interface:
    n = ipaddress.IPv6Network(net)
    return ipaddress.IPv6Interface(f"{n.network_address + host}/{n.prefixlen}")


def _ready(ends: Sequence[tuple[Netns, int, Sequence[ipaddress.IPv6Interface]]]) -> None:
    """Wait for operstate UP on every end, then for each end's solicited-node groups."""
    by_ns: dict[int, tuple[Netns, set[int]]] = {}
    for ns, index, _ in ends:
        by_ns.setdefault(id(ns), (ns, set()))[1].add(index)
    for ns, indexes in by_ns.values():
        ns.collect(indexes)
    for ns, index, v6 in ends:
        if v6:
            ns.wait_groups(index, {solicited(a) for a in v6})


def shape_pair(home: Home) -> list[Netns]:
    a = home.new(ipv6=True)
    b = home.new(ipv6=True)
    a4, b4 = _v4("10.0.0.0/24", 1), _v4("10.0.0.0/24", 2)
    a6, b6 = _v6("fd00::/64", 1), _v6("fd00::/64", 2)
    a.queue(link_up(1), veth("eth0", 10, "eth0", 11, b.fd), address(10, a4), address(10, a6))
    a.flush()
    a.collect()
    b.queue(link_up(1), link_up(11), address(11, b4), address(11, b6))
    b.flush()
    _ready([(a, 10, [a6]), (b, 11, [b6])])
    return [a, b]


def shape_bridge(home: Home, members: int) -> list[Netns]:
    br = home.new()
    hosts = [home.new(ipv6=True) for _ in range(members)]
    br.queue(link_up(1), bridge("br0", 10))
    br.flush()
    br.collect()
    ends = []
    for i, host in enumerate(hosts):
        v6 = _v6("fd00::/64", i + 1)
        host.queue(
            link_up(1),
            veth("eth0", 1000 + 2 * i, f"p{i}", 1001 + 2 * i, br.fd),
            address(1000 + 2 * i, _v4("10.0.0.0/24", i + 1)),
            address(1000 + 2 * i, v6),
        )
        host.flush()
        ends.append((host, 1000 + 2 * i, [v6]))
    for host in hosts:
        host.collect()
    br.queue(*(link_up(1001 + 2 * i, master=10) for i in range(members)))
    br.flush()
    ends += [(br, 1001 + 2 * i, []) for i in range(members)]
    _ready(ends)
    return [br, *hosts]


def shape_chain(home: Home, routers: int) -> list[Netns]:
    """Routers r0..rN-1 (forwarding on), r_i linked to r_i+1 on a /24 and a /64 of its own."""
    spaces = [home.new(ipv6=True, sysctls=FORWARDING) for _ in range(routers)]
    for ns in spaces:
        ns.queue(link_up(1))
    links = []
    for k in range(routers - 1):
        a, b = spaces[k], spaces[k + 1]
        ia, ib = 1000 + 2 * k, 1001 + 2 * k
        net4, net6 = f"10.{k >> 8}.{k & 255}.0/24", f"fd00:0:0:{k:x}::/64"
        a6, b6 = _v6(net6, 1), _v6(net6, 2)
        name_a = "eth1" if k else "eth0"
        a.queue(veth(name_a, ia, "eth0", ib, b.fd), address(ia, _v4(net4, 1)), address(ia, a6))
        links.append((a, ia, a6, b, ib, _v4(net4, 2), b6))
    for ns in spaces:
        ns.flush()
    for ns in spaces:
        ns.collect()
    for _a, _ia, _a6, b, ib, b4, b6 in links:
        b.queue(link_up(ib), address(ib, b4), address(ib, b6))
    for ns in spaces:
        ns.flush()
    _ready([end for a, ia, a6, b, ib, _b4, b6 in links for end in ((a, ia, [a6]), (b, ib, [b6]))])
    return spaces


def _nft_msg(kind: int, flags: int, family: int, attrs: bytes, seq: int, subsys: bool = True) -> bytes:
    msg_type = (NFNL_SUBSYS_NFTABLES << 8 | kind) if subsys else kind
    res_id = socket.htons(NFNL_SUBSYS_NFTABLES) if not subsys else 0
    body = struct.pack("=BBH", family, 0, res_id) + attrs
    return _HDR.pack(16 + len(body), msg_type, NLM_F_REQUEST | flags, seq, 0) + body


def masquerade(router_fd: int, oif: int) -> None:
    """One nf_tables transaction in the router: table, nat postrouting chain, ``oif == X masquerade``."""
    home = os.open(THREAD_NETNS, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc.setns(router_fd, CLONE_NEWNET), "setns")
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER)
        finally:
            _check(_libc.setns(home, CLONE_NEWNET), "setns")
    finally:
        os.close(home)
    with sock:
        sock.bind((0, 0))
        ack = NLM_F_ACK
        ipv4 = 2  # NFPROTO_IPV4
        hook = _nest(4, _be32(1, 4) + _be32(2, 100))  # NFTA_CHAIN_HOOK: POSTROUTING, priority srcnat
        meta = _nest(1, _str(1, "meta") + _nest(2, _be32(1, 1) + _be32(2, 5)))  # reg1 = meta oif
        cmp = _nest(1, _str(1, "cmp") + _nest(2, _be32(1, 1) + _be32(2, 0) + _nest(3, _u32(1, oif))))
        masq = _nest(1, _str(1, "masq"))
        msgs = [
            _nft_msg(NFNL_MSG_BATCH_BEGIN, 0, 0, b"", 1, subsys=False),
            _nft_msg(NFT_MSG_NEWTABLE, NLM_F_CREATE | ack, ipv4, _str(1, "nat"), 2),
            _nft_msg(
                NFT_MSG_NEWCHAIN, NLM_F_CREATE | ack, ipv4, _str(1, "nat") + _str(3, "post") + hook + _str(7, "nat"), 3
            ),
            _nft_msg(
                NFT_MSG_NEWRULE,
                NLM_F_CREATE | NLM_F_APPEND | ack,
                ipv4,
                _str(1, "nat") + _str(2, "post") + _nest(4, meta + cmp + masq),
                4,
            ),
            _nft_msg(NFNL_MSG_BATCH_END, 0, 0, b"", 5, subsys=False),
        ]
        sock.sendall(b"".join(msgs))
        acks = 3
        while acks:
            data = sock.recv(1 << 16)
            offset = 0
            while offset + 16 <= len(data):
                length, kind, _f, _s, _p = _HDR.unpack_from(data, offset)
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", data, offset + 16)[0]
                    if code:
                        raise OSError(code, f"floor: nf_tables transaction failed: {os.strerror(code)}")
                    acks -= 1
                offset += (length + 3) & ~3


def shape_nat(home: Home) -> list[Netns]:
    """client 192.168.0.2 -> router (192.168.0.1 | 203.0.113.1, forwarding, masquerade) -> server 203.0.113.2."""
    client, server = home.new(), home.new()
    router = home.new(sysctls=FORWARDING[:1])
    router.queue(
        link_up(1),
        veth("eth0", 10, "eth0", 11, client.fd),
        address(10, _v4("192.168.0.0/24", 1)),
        veth("eth1", 12, "eth0", 13, server.fd),
        address(12, _v4("203.0.113.0/24", 1)),
    )
    router.flush()
    router.collect()
    client.queue(link_up(1), link_up(11), address(11, _v4("192.168.0.0/24", 2)))
    server.queue(link_up(1), link_up(13), address(13, _v4("203.0.113.0/24", 2)))
    client.flush()
    server.flush()
    client.collect()
    client.queue(default_route(ipaddress.IPv4Address("192.168.0.1")))
    client.flush()
    masquerade(router.fd, 12)
    _ready([(router, 10, []), (router, 12, []), (client, 11, []), (server, 13, [])])
    return [client, router, server]


def build(shape: str, size: int) -> Callable[[Home], list[Netns]]:
    """The floor builder for a shape key (see ``bench._shapes``)."""
    builders: dict[str, Callable[[Home], list[Netns]]] = {
        "netns": shape_netns,
        "pair": shape_pair,
        "bridge": lambda home: shape_bridge(home, size),
        "chain": lambda home: shape_chain(home, size),
        "nat": shape_nat,
        "many": lambda home: shape_many(home, size),
    }
    return builders[shape]


def measure(shape: str, size: int, repetitions: int, warmup: int = 1) -> list[float]:
    """Setup + teardown seconds of the shape, ``repetitions`` times (after ``warmup`` unmeasured runs)."""
    builder = build(shape, size)
    home = Home()
    try:
        times = []
        for i in range(warmup + repetitions):
            start = time.perf_counter()
            spaces = builder(home)
            for ns in reversed(spaces):
                ns.close()
            elapsed = time.perf_counter() - start
            if i >= warmup:
                times.append(elapsed)
        return times
    finally:
        home.close()
