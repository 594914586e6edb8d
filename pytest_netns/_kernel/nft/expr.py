"""nf_tables expressions as values: a rule is a list of them.

Each class is one kernel expression (``meta``, ``cmp``, ``payload``, ...)
with the fields ``nft --debug=netlink`` prints; ``encode()`` gives its
``NFTA_LIST_ELEM`` payload (``NFTA_EXPR_NAME`` + ``NFTA_EXPR_DATA``).
Integers inside ``NFTA_EXPR_DATA`` are big-endian 32-bit, except where the
kernel reads a single byte (``reject``'s ICMP code, ``ct``'s direction);
register contents (``cmp``'s and ``immediate``'s data) are raw bytes in the
byte order of what they are compared with.

Attribute numbers are from ``linux/netfilter/nf_tables.h``; why these
messages are packed by hand is in ``docs/kernel-facts.md``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar

from ..netlink import attr, attr_be32, attr_str, attr_u8, nested

# Registers: the 16-byte ones (an IPv6 address fits in one); 0 holds the verdict.
REG_VERDICT = 0
REG_1 = 1
REG_2 = 2
#: The 4-byte registers (NFT_REG32_00..15), which overlay the 16-byte ones: a concatenation
#: (``ip daddr . meta l4proto . th dport``) puts each field in the next one, padded to 4 bytes.
REG32_00 = 8

# dynset operations (enum nft_dynset_ops)
DYNSET_OP_ADD = 0
DYNSET_OP_UPDATE = 1

# meta keys (enum nft_meta_keys)
META_MARK = 3
META_IIF = 4
META_OIF = 5
META_OIFNAME = 7
META_NFPROTO = 15
META_L4PROTO = 16

# cmp operators (enum nft_cmp_ops)
CMP_EQ = 0
CMP_NEQ = 1
CMP_LT = 2
CMP_LTE = 3
CMP_GT = 4
CMP_GTE = 5

# payload bases (enum nft_payload_bases)
PAYLOAD_LL = 0
PAYLOAD_NETWORK = 1
PAYLOAD_TRANSPORT = 2

# numgen types, byteorder operations
NG_INCREMENTAL = 0
NG_RANDOM = 1
BYTEORDER_NTOH = 0
BYTEORDER_HTON = 1

# ct keys; NFT_CT_STATE is a host-endian u32 of NF_CT_STATE_*_BIT, NFT_CT_STATUS one of IPS_*
CT_STATE = 0
CT_STATUS = 2
CT_STATE_NEW = 1 << 3  # NF_CT_STATE_BIT(IP_CT_NEW)
CT_STATUS_DNAT = 1 << 5  # IPS_DST_NAT: the connection's destination was translated

# nat types and range flags
NAT_SNAT = 0
NAT_DNAT = 1
NF_NAT_RANGE_MAP_IPS = 1
NF_NAT_RANGE_PROTO_SPECIFIED = 2

# fib: flags and results
FIB_F_SADDR = 1 << 0
FIB_F_DADDR = 1 << 1
FIB_RESULT_OIF = 1
FIB_RESULT_ADDRTYPE = 3

# rt keys (enum nft_rt_keys): the next hop of the packet's route, IPv4 or IPv6
RT_NEXTHOP4 = 1
RT_NEXTHOP6 = 2

# reject types; ICMPX codes work for IPv4 and IPv6 alike
REJECT_ICMP_UNREACH = 0
REJECT_TCP_RST = 1
REJECT_ICMPX_UNREACH = 2
REJECTX_NO_ROUTE = 0
REJECTX_PORT_UNREACH = 1
REJECTX_HOST_UNREACH = 2
REJECTX_ADMIN_PROHIBITED = 3

# verdicts (linux/netfilter.h and nf_tables.h)
NF_DROP = 0
NF_ACCEPT = 1
NFT_CONTINUE = -1
NFT_BREAK = -2
NFT_JUMP = -3
NFT_GOTO = -4
NFT_RETURN = -5

NFTA_EXPR_NAME, NFTA_EXPR_DATA = 1, 2
NFTA_DATA_VALUE, NFTA_DATA_VERDICT = 1, 2
NFTA_VERDICT_CODE, NFTA_VERDICT_CHAIN = 1, 2


def data_value(raw: bytes) -> bytes:
    """The payload of an ``NFTA_*_DATA`` attribute holding plain bytes."""
    return attr(NFTA_DATA_VALUE, raw)


class Expr:
    """One expression: ``name`` and the attributes of its ``NFTA_EXPR_DATA``."""

    name: ClassVar[str]

    def data(self) -> bytes:
        raise NotImplementedError

    def encode(self) -> bytes:
        return _encode(self)


@functools.lru_cache(maxsize=4096)
def _encode(expr: Expr) -> bytes:
    """An expression's bytes, kept: expressions are frozen values, and most rules repeat from test to test."""
    data = expr.data()
    return attr_str(NFTA_EXPR_NAME, expr.name) + (nested(NFTA_EXPR_DATA, data) if data else b"")


@dataclass(frozen=True)
class Meta(Expr):
    """``meta <key>``: load packet metadata (``META_*``) into ``dreg``."""

    name: ClassVar[str] = "meta"
    key: int
    dreg: int = REG_1

    def data(self) -> bytes:
        return attr_be32(1, self.dreg) + attr_be32(2, self.key)


@dataclass(frozen=True)
class MetaSet(Expr):
    """``meta <key> set <sreg>``: write packet metadata (``META_MARK``)."""

    name: ClassVar[str] = "meta"
    key: int
    sreg: int = REG_1

    def data(self) -> bytes:
        return attr_be32(2, self.key) + attr_be32(3, self.sreg)


@dataclass(frozen=True)
class Cmp(Expr):
    """Compare ``sreg`` with ``value`` (``CMP_*``); the rule stops here when false."""

    name: ClassVar[str] = "cmp"
    op: int
    value: bytes
    sreg: int = REG_1

    def data(self) -> bytes:
        return attr_be32(1, self.sreg) + attr_be32(2, self.op) + nested(3, data_value(self.value))


@dataclass(frozen=True)
class Payload(Expr):
    """Load ``length`` bytes at ``offset`` of a header (``PAYLOAD_*``) into ``dreg``."""

    name: ClassVar[str] = "payload"
    base: int
    offset: int
    length: int
    dreg: int = REG_1

    def data(self) -> bytes:
        return attr_be32(1, self.dreg) + attr_be32(2, self.base) + attr_be32(3, self.offset) + attr_be32(4, self.length)


@dataclass(frozen=True)
class Bitwise(Expr):
    """``dreg = (sreg & mask) ^ xor`` over ``len(mask)`` bytes."""

    name: ClassVar[str] = "bitwise"
    mask: bytes
    xor: bytes | None = None
    sreg: int = REG_1
    dreg: int = REG_1

    def data(self) -> bytes:
        xor = bytes(len(self.mask)) if self.xor is None else self.xor
        return (
            attr_be32(1, self.sreg)
            + attr_be32(2, self.dreg)
            + attr_be32(3, len(self.mask))
            + nested(4, data_value(self.mask))
            + nested(5, data_value(xor))
        )


@dataclass(frozen=True)
class Byteorder(Expr):
    """Convert ``length`` bytes in ``size``-byte units between host and network order."""

    name: ClassVar[str] = "byteorder"
    op: int
    length: int
    size: int
    sreg: int = REG_1
    dreg: int = REG_1

    def data(self) -> bytes:
        return (
            attr_be32(1, self.sreg)
            + attr_be32(2, self.dreg)
            + attr_be32(3, self.op)
            + attr_be32(4, self.length)
            + attr_be32(5, self.size)
        )


@dataclass(frozen=True)
class Numgen(Expr):
    """``numgen random|inc mod <modulus>``: a host-endian u32 in ``dreg`` (the modulus is a u32 too)."""

    name: ClassVar[str] = "numgen"
    modulus: int
    kind: int = NG_RANDOM
    offset: int = 0
    dreg: int = REG_1

    def data(self) -> bytes:
        return (
            attr_be32(1, self.dreg) + attr_be32(2, self.modulus) + attr_be32(3, self.kind) + attr_be32(4, self.offset)
        )


@dataclass(frozen=True)
class Immediate(Expr):
    """Put ``value`` into ``dreg``."""

    name: ClassVar[str] = "immediate"
    dreg: int
    value: bytes

    def data(self) -> bytes:
        return attr_be32(1, self.dreg) + nested(2, data_value(self.value))


@dataclass(frozen=True)
class Verdict(Expr):
    """``accept``, ``drop``, ``goto <chain>``...: an immediate into the verdict register."""

    name: ClassVar[str] = "immediate"
    code: int
    chain: str | None = None

    def data(self) -> bytes:
        verdict = attr_be32(NFTA_VERDICT_CODE, self.code)
        if self.chain is not None:
            verdict += attr_str(NFTA_VERDICT_CHAIN, self.chain)
        return attr_be32(1, REG_VERDICT) + nested(2, nested(NFTA_DATA_VERDICT, verdict))


@dataclass(frozen=True)
class Fib(Expr):
    """``fib <flags> <result>``: a routing lookup (``FIB_F_*``, ``FIB_RESULT_*``) into ``dreg``."""

    name: ClassVar[str] = "fib"
    result: int
    flags: int
    dreg: int = REG_1

    def data(self) -> bytes:
        return attr_be32(1, self.dreg) + attr_be32(2, self.result) + attr_be32(3, self.flags)


@dataclass(frozen=True)
class Rt(Expr):
    """``rt ip|ip6 nexthop``: the next hop of the route the packet took (``RT_*``) into ``dreg``.

    Only where the packet has a route: forward, output and postrouting.
    """

    name: ClassVar[str] = "rt"
    key: int
    dreg: int = REG_1

    def data(self) -> bytes:
        return attr_be32(1, self.dreg) + attr_be32(2, self.key)


@dataclass(frozen=True)
class Ct(Expr):
    """``ct <key>``: load conntrack state into ``dreg``; also switches conntrack on in the namespace."""

    name: ClassVar[str] = "ct"
    key: int
    dreg: int = REG_1

    def data(self) -> bytes:
        return attr_be32(1, self.dreg) + attr_be32(2, self.key)


@dataclass(frozen=True)
class Nat(Expr):
    """``snat|dnat to <addr in reg_addr>[:<port in reg_proto>]`` for one family (NFPROTO_IPV4/IPV6)."""

    name: ClassVar[str] = "nat"
    kind: int
    family: int
    reg_addr: int | None = REG_1
    reg_proto: int | None = None

    def data(self) -> bytes:
        data = attr_be32(1, self.kind) + attr_be32(2, self.family)
        if self.reg_addr is not None:
            data += attr_be32(3, self.reg_addr)
        if self.reg_proto is not None:
            # The kernel adds NF_NAT_RANGE_MAP_IPS itself when there is an address register.
            data += attr_be32(5, self.reg_proto) + attr_be32(7, NF_NAT_RANGE_PROTO_SPECIFIED)
        return data


@dataclass(frozen=True)
class Masq(Expr):
    """``masquerade``: source NAT to the address of the outgoing interface."""

    name: ClassVar[str] = "masq"

    def data(self) -> bytes:
        return b""


@dataclass(frozen=True)
class Reject(Expr):
    """``reject``: a TCP reset (``REJECT_TCP_RST``) or an ICMP(v6) error (``REJECT_ICMPX_UNREACH`` + code)."""

    name: ClassVar[str] = "reject"
    kind: int
    icmp_code: int | None = None

    def data(self) -> bytes:
        data = attr_be32(1, self.kind)
        return data + (attr_u8(2, self.icmp_code) if self.icmp_code is not None else b"")


@dataclass(frozen=True)
class Dup(Expr):
    """``dup to <addr in sreg_addr> [device <ifindex in sreg_dev>]``: send a copy of the packet."""

    name: ClassVar[str] = "dup"
    sreg_addr: int | None = REG_1
    sreg_dev: int | None = None

    def data(self) -> bytes:
        data = attr_be32(1, self.sreg_addr) if self.sreg_addr is not None else b""
        return data + (attr_be32(2, self.sreg_dev) if self.sreg_dev is not None else b"")


@dataclass(frozen=True)
class Lookup(Expr):
    """``<sreg> @set``: the rule stops unless the key is in the set; with ``dreg`` set, a map lookup.

    ``dreg=REG_VERDICT`` is a verdict map (``vmap``).  A set made in the same
    batch is named by ``set_id`` too (an anonymous set's name is a template,
    ``__map%d``, until the kernel commits it).
    """

    name: ClassVar[str] = "lookup"
    set: str
    sreg: int = REG_1
    dreg: int | None = None
    set_id: int | None = None

    def data(self) -> bytes:
        data = attr_str(1, self.set) + attr_be32(2, self.sreg)
        if self.dreg is not None:
            data += attr_be32(3, self.dreg)
        return data + (attr_be32(4, self.set_id) if self.set_id is not None else b"")


@dataclass(frozen=True)
class Dynset(Expr):
    """``add|update @set { <sreg> }``: the packet's key into a dynamic set (``DYNSET_OP_*``).

    With no ``timeout_ms`` an element gets the set's own timeout; ``update``
    restarts the timeout of an element that is there already.
    """

    name: ClassVar[str] = "dynset"
    set: str
    op: int = DYNSET_OP_UPDATE
    sreg_key: int = REG_1
    timeout_ms: int | None = None
    set_id: int | None = None

    def data(self) -> bytes:
        data = attr_str(1, self.set)
        if self.set_id is not None:
            data += attr_be32(2, self.set_id)
        data += attr_be32(3, self.op) + attr_be32(4, self.sreg_key)
        return data + (attr(6, self.timeout_ms.to_bytes(8, "big")) if self.timeout_ms is not None else b"")
