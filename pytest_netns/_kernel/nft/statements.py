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
    CMP_LT,
    CMP_NEQ,
    CT_STATE,
    CT_STATE_NEW,
    FIB_F_DADDR,
    FIB_RESULT_ADDRTYPE,
    META_L4PROTO,
    META_NFPROTO,
    META_OIFNAME,
    NAT_DNAT,
    NG_RANDOM,
    PAYLOAD_NETWORK,
    PAYLOAD_TRANSPORT,
    REG_1,
    REG_2,
    REJECT_ICMPX_UNREACH,
    REJECT_TCP_RST,
    REJECTX_PORT_UNREACH,
    Bitwise,
    Byteorder,
    Cmp,
    Ct,
    Expr,
    Fib,
    Immediate,
    Meta,
    Nat,
    Numgen,
    Payload,
    Reject,
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

NFPROTO_IPV4 = 2
NFPROTO_IPV6 = 10
RTN_LOCAL = 2
IFNAMSIZ = 16
IPPROTO = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}
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


def reject_new(proto: Literal["tcp", "udp"]) -> list[Expr]:
    """``ct state new reject with tcp reset`` (TCP) or ``... with icmpx port-unreachable`` (UDP), as kube-proxy."""
    if proto == "tcp":
        return [*ct_state_new(), Reject(REJECT_TCP_RST)]
    return [*ct_state_new(), Reject(REJECT_ICMPX_UNREACH, REJECTX_PORT_UNREACH)]
