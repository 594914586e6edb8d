"""nf_tables objects: tables, chains and rules as values, and the messages that make them.

A :class:`Table` holds :class:`Chain` values, a chain holds rules, a rule is
a sequence of expressions (``expr``).  The functions below encode one
nfnetlink request each (an ``nfgenmsg`` header plus attributes from
``linux/netfilter/nf_tables.h``); ``batch`` sends them as one transaction.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from ..netlink import NLM_F_APPEND, NLM_F_CREATE, Request, attr, attr_be32, attr_str, nested
from .expr import NFTA_DATA_VALUE, NFTA_DATA_VERDICT, Expr, Verdict

NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
NFT_MSG_NEWTABLE, NFT_MSG_GETTABLE, NFT_MSG_DELTABLE = 0, 1, 2
NFT_MSG_NEWCHAIN, NFT_MSG_GETCHAIN, NFT_MSG_DELCHAIN = 3, 4, 5
NFT_MSG_NEWRULE, NFT_MSG_DELRULE = 6, 8
NFT_MSG_NEWSET, NFT_MSG_DELSET = 9, 11
NFT_MSG_NEWSETELEM, NFT_MSG_DELSETELEM = 12, 14

#: Every table this package makes starts with this prefix.
TABLE_PREFIX = "pytest_netns"

FAMILIES = {"inet": 1, "ip": 2, "netdev": 5, "ip6": 10}
FAMILY_NAMES = {number: name for name, number in FAMILIES.items()}

# Hooks (NF_INET_*; a netdev chain's NF_NETDEV_INGRESS is 0 as well) and nft's named priorities.
HOOK_PREROUTING = 0
HOOK_INPUT = 1
HOOK_FORWARD = 2
HOOK_OUTPUT = 3
HOOK_POSTROUTING = 4
HOOK_INGRESS = 0
PRIO_RAW = -300
PRIO_DSTNAT = -100
PRIO_FILTER = 0
PRIO_SRCNAT = 100

#: NFTA_TABLE_FLAGS: the table's chains are unhooked (it stays, inert), set or cleared on an existing table.
NFT_TABLE_F_DORMANT = 1
#: NFTA_TABLE_FLAGS: only the socket that made the table may change it (Linux 5.12).
NFT_TABLE_F_OWNER = 2

NFTA_TABLE_NAME, NFTA_TABLE_FLAGS = 1, 2
NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME, NFTA_CHAIN_HOOK, NFTA_CHAIN_TYPE = 1, 3, 4, 7
NFTA_HOOK_HOOKNUM, NFTA_HOOK_PRIORITY, NFTA_HOOK_DEV = 1, 2, 3
NFTA_RULE_TABLE, NFTA_RULE_CHAIN, NFTA_RULE_EXPRESSIONS = 1, 2, 4
NFTA_LIST_ELEM = 1
NFTA_SET_TABLE, NFTA_SET_NAME, NFTA_SET_FLAGS, NFTA_SET_KEY_TYPE, NFTA_SET_KEY_LEN = 1, 2, 3, 4, 5
NFTA_SET_DATA_TYPE, NFTA_SET_DATA_LEN, NFTA_SET_ID, NFTA_SET_TIMEOUT, NFTA_SET_USERDATA = 6, 7, 10, 11, 13
#: libnftnl's user data (type u8, length u8, value) telling ``nft list`` a key is host-endian
#: (NFTNL_UDATA_SET_KEYBYTEORDER = BYTEORDER_HOST_ENDIAN): the kernel stores it and never reads it.
UDATA_KEY_HOST_ENDIAN = bytes([0, 4]) + struct.pack("=I", 1)
NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_ELEMENTS, NFTA_SET_ELEM_LIST_SET_ID = 1, 2, 3, 4
NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_DATA = 1, 2

# Set flags (enum nft_set_flags)
SET_ANONYMOUS = 0x1
SET_CONSTANT = 0x2
SET_MAP = 0x8
SET_TIMEOUT = 0x10
#: "flags dynamic": the set may be updated from the packet path (``dynset``).
SET_EVAL = 0x20
#: A map's data are verdicts (``vmap``): NFT_DATA_VERDICT, no data length.
DATA_VERDICT = 0xFFFFFF00

# nft's data type numbers (only for ``nft list``; the kernel checks lengths): a concatenation's type
# is its fields' types, each shifted 6 bits left of the next.
TYPE_VERDICT, TYPE_INTEGER, TYPE_IPADDR, TYPE_INET_PROTOCOL, TYPE_INET_SERVICE = 1, 4, 7, 12, 13
TYPE_BITS = 6


def concat_type(*types: int) -> int:
    """The data type number nft gives a concatenation of ``types`` (``ipv4_addr . inet_proto . inet_service``)."""
    value = 0
    for kind in types:
        value = value << TYPE_BITS | kind
    return value


Rule = Sequence[Expr]


@dataclass(frozen=True)
class Chain:
    """A chain and its rules; with ``hook`` a base chain of ``type`` (filter, nat) at ``priority``.

    ``device`` is the interface of a netdev chain.
    """

    name: str
    rules: Sequence[Rule] = ()
    hook: int | None = None
    priority: int = PRIO_FILTER
    type: str = "filter"
    device: str | None = None


@dataclass(frozen=True)
class Table:
    """A table of ``family`` (inet, ip, ip6, netdev) and its chains, in the order they are made."""

    family: str
    name: str
    chains: Sequence[Chain] = ()


@dataclass(frozen=True)
class Set:
    """A named set or map of a table; ``key_len`` bytes per key (a concatenation's fields padded to 4 each).

    ``flags`` are ``SET_*``; a map has ``data_type`` (``DATA_VERDICT`` for a
    ``vmap``); ``timeout_ms`` is the default lifetime of an element (with
    ``SET_TIMEOUT``); ``id`` names the set within its batch.
    """

    name: str
    key_type: int
    key_len: int
    flags: int = 0
    data_type: int | None = None
    timeout_ms: int | None = None
    id: int = 0
    #: The key is a host-endian number (``numgen``'s): only for ``nft list``.
    host_endian_key: bool = False


#: A set element: its key bytes and, in a verdict map, the verdict it maps to.
Element = tuple[bytes, Verdict | None]


def _message(kind: int, flags: int, family: int, attrs: bytes, doing: str) -> Request:
    body = struct.pack("=BBH", family, 0, 0) + attrs  # nfgenmsg: family, version 0, res_id 0
    return Request(NFNL_SUBSYS_NFTABLES << 8 | kind, flags, body, doing)


def batch_frame() -> tuple[Request, Request]:
    """The NFNL_MSG_BATCH_BEGIN/END messages that make the requests between them one transaction."""
    header = struct.pack("!BBH", 0, 0, NFNL_SUBSYS_NFTABLES)  # res_id: the subsystem, big-endian
    return Request(NFNL_MSG_BATCH_BEGIN, 0, header, "batch"), Request(NFNL_MSG_BATCH_END, 0, header, "batch end")


def new_table(family: str, name: str, *, flags: int = 0) -> Request:
    """Create ``name`` if missing (an existing table is kept)."""
    attrs = attr_str(NFTA_TABLE_NAME, name) + (attr_be32(NFTA_TABLE_FLAGS, flags) if flags else b"")
    return _message(NFT_MSG_NEWTABLE, NLM_F_CREATE, FAMILIES[family], attrs, f"add table {family} {name}")


def del_table(family: str, name: str) -> Request:
    """Delete ``name`` and everything in it (the kernel answers ENOENT if it is missing)."""
    attrs = attr_str(NFTA_TABLE_NAME, name)
    return _message(NFT_MSG_DELTABLE, 0, FAMILIES[family], attrs, f"delete table {family} {name}")


def get(family: str, table: str, chain: str | None = None) -> Request:
    """Read a table, or a chain of it: one reply, or ENOENT."""
    if chain is None:
        attrs = attr_str(NFTA_TABLE_NAME, table)
        return _message(NFT_MSG_GETTABLE, 0, FAMILIES[family], attrs, f"get {family} {table}")
    attrs = attr_str(NFTA_CHAIN_TABLE, table) + attr_str(NFTA_CHAIN_NAME, chain)
    return _message(NFT_MSG_GETCHAIN, 0, FAMILIES[family], attrs, f"get {family} {table} {chain}")


def list_tables() -> Request:
    """A dump of every table, all families."""
    return _message(NFT_MSG_GETTABLE, 0, 0, b"", "list tables")


def new_chain(family: str, table: str, chain: Chain) -> Request:
    """Create ``chain`` (without its rules)."""
    attrs = attr_str(NFTA_CHAIN_TABLE, table) + attr_str(NFTA_CHAIN_NAME, chain.name)
    if chain.hook is not None:
        hook = attr_be32(NFTA_HOOK_HOOKNUM, chain.hook) + attr_be32(NFTA_HOOK_PRIORITY, chain.priority)
        if chain.device is not None:
            hook += attr_str(NFTA_HOOK_DEV, chain.device)
        attrs += nested(NFTA_CHAIN_HOOK, hook) + attr_str(NFTA_CHAIN_TYPE, chain.type)
    return _message(NFT_MSG_NEWCHAIN, NLM_F_CREATE, FAMILIES[family], attrs, f"add chain {family} {table} {chain.name}")


def new_rule(family: str, table: str, chain: str, rule: Rule) -> Request:
    """Append ``rule`` to ``chain``."""
    exprs = b"".join(nested(NFTA_LIST_ELEM, expr.encode()) for expr in rule)
    attrs = attr_str(NFTA_RULE_TABLE, table) + attr_str(NFTA_RULE_CHAIN, chain) + nested(NFTA_RULE_EXPRESSIONS, exprs)
    flags = NLM_F_CREATE | NLM_F_APPEND
    return _message(NFT_MSG_NEWRULE, flags, FAMILIES[family], attrs, f"add rule {family} {table} {chain}")


def del_chain(family: str, table: str, chain: str) -> Request:
    """Delete ``chain`` (empty, and referenced by no rule once the batch is applied)."""
    attrs = attr_str(NFTA_CHAIN_TABLE, table) + attr_str(NFTA_CHAIN_NAME, chain)
    return _message(NFT_MSG_DELCHAIN, 0, FAMILIES[family], attrs, f"delete chain {family} {table} {chain}")


def flush_chain(family: str, table: str, chain: str) -> Request:
    """Delete every rule of ``chain`` (``nft flush chain``); their anonymous sets go with them."""
    attrs = attr_str(NFTA_RULE_TABLE, table) + attr_str(NFTA_RULE_CHAIN, chain)
    return _message(NFT_MSG_DELRULE, 0, FAMILIES[family], attrs, f"flush chain {family} {table} {chain}")


def new_set(family: str, table: str, value: Set) -> Request:
    """Create ``value`` (an existing set of that name and type is kept)."""
    attrs = attr_str(NFTA_SET_TABLE, table) + attr_str(NFTA_SET_NAME, value.name)
    attrs += attr_be32(NFTA_SET_FLAGS, value.flags) + attr_be32(NFTA_SET_KEY_TYPE, value.key_type)
    attrs += attr_be32(NFTA_SET_KEY_LEN, value.key_len)
    if value.data_type is not None:
        attrs += attr_be32(NFTA_SET_DATA_TYPE, value.data_type)
    attrs += attr_be32(NFTA_SET_ID, value.id)
    if value.timeout_ms is not None:
        attrs += attr(NFTA_SET_TIMEOUT, value.timeout_ms.to_bytes(8, "big"))
    if value.host_endian_key:
        attrs += attr(NFTA_SET_USERDATA, UDATA_KEY_HOST_ENDIAN)
    doing = f"add set {family} {table} {value.name}"
    return _message(NFT_MSG_NEWSET, NLM_F_CREATE, FAMILIES[family], attrs, doing)


def del_set(family: str, table: str, name: str) -> Request:
    """Delete the set ``name`` (referenced by no rule once the batch is applied)."""
    attrs = attr_str(NFTA_SET_TABLE, table) + attr_str(NFTA_SET_NAME, name)
    return _message(NFT_MSG_DELSET, 0, FAMILIES[family], attrs, f"delete set {family} {table} {name}")


def _elements(table: str, name: str, elements: Sequence[Element], set_id: int | None) -> bytes:
    items = b""
    for key, verdict in elements:
        item = nested(NFTA_SET_ELEM_KEY, attr(NFTA_DATA_VALUE, key))
        if verdict is not None:
            code = attr_be32(1, verdict.code) + (attr_str(2, verdict.chain) if verdict.chain is not None else b"")
            item += nested(NFTA_SET_ELEM_DATA, nested(NFTA_DATA_VERDICT, code))
        items += nested(NFTA_LIST_ELEM, item)
    attrs = attr_str(NFTA_SET_ELEM_LIST_TABLE, table) + attr_str(NFTA_SET_ELEM_LIST_SET, name)
    attrs += nested(NFTA_SET_ELEM_LIST_ELEMENTS, items)
    return attrs + (attr_be32(NFTA_SET_ELEM_LIST_SET_ID, set_id) if set_id is not None else b"")


def new_elements(
    family: str, table: str, name: str, elements: Sequence[Element], *, set_id: int | None = None
) -> Request:
    """Add ``elements`` to the set ``name`` (or the set of ``set_id`` made in the same batch)."""
    attrs = _elements(table, name, elements, set_id)
    doing = f"add element {family} {table} {name}"
    return _message(NFT_MSG_NEWSETELEM, NLM_F_CREATE, FAMILIES[family], attrs, doing)


def del_elements(family: str, table: str, name: str, keys: Sequence[bytes]) -> Request:
    """Delete the elements of ``keys`` from the set ``name`` (a missing one is ENOENT)."""
    attrs = _elements(table, name, [(key, None) for key in keys], None)
    return _message(NFT_MSG_DELSETELEM, 0, FAMILIES[family], attrs, f"delete element {family} {table} {name}")


def list_chains(family: str, table: str) -> Request:
    """A dump of the chains of ``family`` (older kernels ignore the table: filter the answers)."""
    attrs = attr_str(NFTA_CHAIN_TABLE, table)
    return _message(NFT_MSG_GETCHAIN, 0, FAMILIES[family], attrs, f"list chains of {family} {table}")
