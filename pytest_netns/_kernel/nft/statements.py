"""nft's words as expression lists: ``ip saddr 10.0.0.0/24`` is ``addr(net, "saddr")``.

Each function returns the expressions ``nft --debug=netlink`` shows for the
words in its docstring; a rule is the concatenation of some of them.  In an
``inet`` table an IP header field needs ``nfproto(...)`` before it.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Literal

from .expr import (
    BYTEORDER_HTON,
    CMP_EQ,
    CMP_GTE,
    CMP_LT,
    CMP_LTE,
    CMP_NEQ,
    CT_STATE,
    CT_STATE_NEW,
    CT_STATUS,
    CT_STATUS_DNAT,
    FIB_F_DADDR,
    FIB_RESULT_ADDRTYPE,
    META_IIF,
    META_L4PROTO,
    META_MARK,
    META_NFPROTO,
    META_OIF,
    META_OIFNAME,
    NAT_DNAT,
    NG_RANDOM,
    PAYLOAD_NETWORK,
    PAYLOAD_TRANSPORT,
    REG32_00,
    REG_1,
    REG_2,
    REG_VERDICT,
    REJECT_ICMP_UNREACH,
    REJECT_ICMPX_UNREACH,
    REJECT_TCP_RST,
    REJECTX_PORT_UNREACH,
    RT_NEXTHOP4,
    RT_NEXTHOP6,
    Bitwise,
    Byteorder,
    Cmp,
    Ct,
    Dup,
    Dynset,
    Expr,
    Fib,
    Immediate,
    Lookup,
    Meta,
    MetaSet,
    Nat,
    Numgen,
    Payload,
    Reject,
    Rt,
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

NFPROTO_IPV4 = 2
NFPROTO_IPV6 = 10
RTN_UNICAST = 1
RTN_LOCAL = 2
LOOPBACK_IFINDEX = 1  # lo is interface 1 in every namespace
IFNAMSIZ = 16
IPPROTO = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}
ICMP_DEST_UNREACH = 3
ICMP_PORT_UNREACH = 3  # the code, with ICMP_DEST_UNREACH
ICMPV6_DEST_UNREACH = 1
#: Neighbour discovery: router solicitation (133) to redirect (137).
ICMPV6_ND_FIRST, ICMPV6_ND_LAST = 133, 137
TCP_FLAG_RST = 0x04
#: numgen's modulus is a u32, so "mod 2**32" cannot be expressed: the largest
#: modulus is this, and draws are uniform over [0, NG_MAX_MOD - 1].
NG_MAX_MOD = 2**32 - 1


def nfproto(version: int) -> list[Expr]:
    """``meta nfproto ipv4|ipv6``."""
    proto = NFPROTO_IPV4 if version == 4 else NFPROTO_IPV6
    return [Meta(META_NFPROTO), Cmp(CMP_EQ, bytes([proto]))]


def addr(network: IPNetwork, field: Literal["saddr", "daddr"], op: int = CMP_EQ) -> list[Expr]:
    """``ip[6] saddr|daddr [!=] <network>`` (after ``nfproto``)."""
    if network.version == 4:
        offset = 12 if field == "saddr" else 16
    else:
        offset = 8 if field == "saddr" else 24
    exprs: list[Expr] = [Payload(PAYLOAD_NETWORK, offset, network.max_prefixlen // 8)]
    if network.prefixlen < network.max_prefixlen:
        exprs.append(Bitwise(network.netmask.packed))
    exprs.append(Cmp(op, network.network_address.packed))
    return exprs


def oifname(name: str, op: int = CMP_EQ) -> list[Expr]:
    """``oifname [!=] "<name>"`` (an exact name: the interface need not exist yet)."""
    return [Meta(META_OIFNAME), Cmp(op, name.encode().ljust(IFNAMSIZ, b"\0"))]


def l4_dport(proto: Literal["tcp", "udp"], port: int) -> list[Expr]:
    """``meta l4proto tcp|udp th dport <port>``."""
    return [
        Meta(META_L4PROTO),
        Cmp(CMP_EQ, bytes([IPPROTO[proto]])),
        Payload(PAYLOAD_TRANSPORT, 2, 2),
        Cmp(CMP_EQ, struct.pack("!H", port)),
    ]


def daddr_is_local() -> list[Expr]:
    """``fib daddr type local``: the destination is one of this namespace's addresses."""
    return [Fib(FIB_RESULT_ADDRTYPE, FIB_F_DADDR), Cmp(CMP_EQ, struct.pack("=I", RTN_LOCAL))]


def ct_state_new() -> list[Expr]:
    """``ct state new``.

    Besides matching, a ct expression makes the kernel enable conntrack in
    the namespace.  That matters: nat chains only ever see packets that
    have a conntrack entry, and only nat/masq/ct expressions switch
    conntrack on; a nat table holding nothing but a reject would be
    silently skipped.
    """
    return [Ct(CT_STATE), Bitwise(struct.pack("=I", CT_STATE_NEW)), Cmp(CMP_NEQ, bytes(4))]


def ct_status_dnat() -> list[Expr]:
    """``ct status dnat``: the connection's destination was translated (by this namespace's DNAT)."""
    return [Ct(CT_STATUS), Bitwise(struct.pack("=I", CT_STATUS_DNAT)), Cmp(CMP_NEQ, bytes(4))]


def numgen_is(modulus: int, value: int = 0, kind: int = NG_RANDOM) -> list[Expr]:
    """``numgen random|inc mod <modulus> <value>``."""
    return [Numgen(modulus, kind), Cmp(CMP_EQ, struct.pack("=I", value))]


def random_below(threshold: int) -> list[Expr]:
    """``numgen random mod 4294967295 < <threshold>``.

    numgen stores a host-endian u32, while cmp's ``<`` compares bytes
    (memcmp): the number is turned to network order first, as nft does.
    """
    return [
        Numgen(NG_MAX_MOD, NG_RANDOM),
        Byteorder(BYTEORDER_HTON, 4, 4),
        Cmp(CMP_LT, struct.pack("!I", threshold)),
    ]


def dnat_to(address: IPAddress, port: int) -> list[Expr]:
    """``dnat ip[6] to <address>:<port>``: the address in register 1, the port in register 2."""
    family = NFPROTO_IPV4 if address.version == 4 else NFPROTO_IPV6
    return [
        Immediate(REG_1, address.packed),
        Immediate(REG_2, struct.pack("!H", port)),
        Nat(NAT_DNAT, family, reg_addr=REG_1, reg_proto=REG_2),
    ]


def reject_new(proto: Literal["tcp", "udp"], family: Literal["inet", "ip"] = "inet") -> list[Expr]:
    """``ct state new reject with tcp reset`` (TCP) or ``... with icmpx port-unreachable`` (UDP), as kube-proxy.

    An ``ip`` table's reject knows only ICMP: it drops without an error for an icmpx type.
    """
    if proto == "tcp":
        return [*ct_state_new(), Reject(REJECT_TCP_RST)]
    if family == "ip":
        return [*ct_state_new(), Reject(REJECT_ICMP_UNREACH, ICMP_PORT_UNREACH)]
    return [*ct_state_new(), Reject(REJECT_ICMPX_UNREACH, REJECTX_PORT_UNREACH)]


def iif_is_loopback() -> list[Expr]:
    """``iif "lo"``: the packet came in on loopback (the namespace talking to itself)."""
    return [Meta(META_IIF), Cmp(CMP_EQ, struct.pack("=I", LOOPBACK_IFINDEX))]


def l4proto(number: int) -> list[Expr]:
    """``meta l4proto <number>``."""
    return [Meta(META_L4PROTO), Cmp(CMP_EQ, bytes([number]))]


def icmpv6_neighbour_discovery() -> list[Expr]:
    """``icmpv6 type nd-router-solicit-nd-redirect``: router and neighbour solicitations, adverts, redirects."""
    return [
        *nfproto(6),
        *l4proto(socket.IPPROTO_ICMPV6),
        Payload(PAYLOAD_TRANSPORT, 0, 1),
        Cmp(CMP_GTE, bytes([ICMPV6_ND_FIRST])),
        Cmp(CMP_LTE, bytes([ICMPV6_ND_LAST])),
    ]


def tcp_reset() -> list[Expr]:
    """``tcp flags & rst == rst``: a TCP reset."""
    return [
        *l4proto(socket.IPPROTO_TCP),
        Payload(PAYLOAD_TRANSPORT, 13, 1),
        Bitwise(bytes([TCP_FLAG_RST])),
        Cmp(CMP_NEQ, b"\0"),
    ]


def destination_unreachable(version: int) -> list[Expr]:
    """``icmp type destination-unreachable`` (IPv4) or ``icmpv6 type destination-unreachable`` (IPv6)."""
    proto, kind = (
        (socket.IPPROTO_ICMP, ICMP_DEST_UNREACH) if version == 4 else (socket.IPPROTO_ICMPV6, ICMPV6_DEST_UNREACH)
    )
    return [*nfproto(version), *l4proto(proto), Payload(PAYLOAD_TRANSPORT, 0, 1), Cmp(CMP_EQ, bytes([kind]))]


def saddr_is(address: IPAddress) -> list[Expr]:
    """``ip[6] saddr <address>`` (with its ``nfproto``)."""
    return [*nfproto(address.version), *addr(ipaddress.ip_network(address), "saddr")]


def reject_refused() -> list[list[Expr]]:
    """``meta l4proto tcp reject with tcp reset`` then ``reject with icmpx port-unreachable``: two rules.

    What a host whose ports are all closed answers: a connect is refused at once.
    """
    return [
        [*l4proto(socket.IPPROTO_TCP), Reject(REJECT_TCP_RST)],
        [Reject(REJECT_ICMPX_UNREACH, REJECTX_PORT_UNREACH)],
    ]


def daddr_is_unicast() -> list[Expr]:
    """``fib daddr type unicast``: not to a broadcast, multicast or local address."""
    return [Fib(FIB_RESULT_ADDRTYPE, FIB_F_DADDR), Cmp(CMP_EQ, struct.pack("=I", RTN_UNICAST))]


def dup_to_nexthop(version: int) -> list[Expr]:
    """``dup to rt ip[6] nexthop device meta oif``: a copy to the packet's own next hop, out of its own device.

    In an ``ip``/``ip6`` table only (the kernel has no ``dup`` for ``inet``),
    on a hook where the packet has a route (postrouting).
    """
    key = RT_NEXTHOP4 if version == 4 else RT_NEXTHOP6
    return [Rt(key, REG_1), Meta(META_OIF, REG_2), Dup(REG_1, REG_2)]


# -- sets and maps --------------------------------------------------------------------------


def daddr_proto_dport_vmap(name: str) -> list[Expr]:
    """``ip daddr . meta l4proto . th dport vmap @<name>``: each field in the next 4-byte register."""
    return [
        Payload(PAYLOAD_NETWORK, 16, 4, dreg=REG32_00),
        Meta(META_L4PROTO, dreg=REG32_00 + 1),
        Payload(PAYLOAD_TRANSPORT, 2, 2, dreg=REG32_00 + 2),
        Lookup(name, sreg=REG32_00, dreg=REG_VERDICT),
    ]


def daddr_proto_dport_key(address: ipaddress.IPv4Address, proto: Literal["tcp", "udp"], port: int) -> bytes:
    """The key of ``daddr_proto_dport_vmap``'s map: ``<address> . <proto> . <port>``, each field padded to 4 bytes."""
    return address.packed + bytes([IPPROTO[proto], 0, 0, 0]) + struct.pack("!H", port) + bytes(2)


def numgen_vmap(modulus: int, kind: int, name: str, set_id: int) -> list[Expr]:
    """``numgen random|inc mod <modulus> vmap <anonymous map>`` (keys: host-endian u32, ``numgen_key``)."""
    return [Numgen(modulus, kind), Lookup(name, sreg=REG_1, dreg=REG_VERDICT, set_id=set_id)]


def numgen_key(value: int) -> bytes:
    return struct.pack("=I", value)


def saddr_in(name: str, set_id: int | None = None) -> list[Expr]:
    """``ip saddr @<name>``."""
    return [Payload(PAYLOAD_NETWORK, 12, 4), Lookup(name, set_id=set_id)]


def update_saddr(name: str, set_id: int | None = None) -> list[Expr]:
    """``update @<name> { ip saddr }``: add the source address, or restart its timeout."""
    return [Payload(PAYLOAD_NETWORK, 12, 4), Dynset(name, set_id=set_id)]


def mark_or(bits: int) -> list[Expr]:
    """``meta mark set meta mark or <bits>``."""
    return [
        Meta(META_MARK),
        Bitwise(struct.pack("=I", ~bits & 0xFFFFFFFF), struct.pack("=I", bits)),
        MetaSet(META_MARK),
    ]


def mark_xor(bits: int) -> list[Expr]:
    """``meta mark set meta mark xor <bits>``."""
    return [Meta(META_MARK), Bitwise(struct.pack("=I", 0xFFFFFFFF), struct.pack("=I", bits)), MetaSet(META_MARK)]


def mark_and_is(bits: int, value: int) -> list[Expr]:
    """``meta mark & <bits> == <value>``."""
    return [Meta(META_MARK), Bitwise(struct.pack("=I", bits)), Cmp(CMP_EQ, struct.pack("=I", value))]
