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

from ..netlink import NLM_F_APPEND, NLM_F_CREATE, Request, attr_be32, attr_str, nested
from .expr import Expr

NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
NFT_MSG_NEWTABLE, NFT_MSG_GETTABLE, NFT_MSG_DELTABLE = 0, 1, 2
NFT_MSG_NEWCHAIN, NFT_MSG_GETCHAIN = 3, 4
NFT_MSG_NEWRULE = 6

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
