"""nftables rules for test namespaces, spoken directly over netlink.

Everything here acts on the network namespace of the *calling thread*: each
public function opens a ``NETLINK_NETFILTER`` socket on that thread, sends
one nftables transaction (a netlink batch) and closes the socket before it
returns.  No ``nft`` binary is involved.

Messages are encoded with pyroute2's nf_tables message classes
(``nft_table_msg``, ``nft_chain_msg``, ``nft_rule_msg``); the expressions
pyroute2 has no helper for (meta, payload, numgen, fib, nat, ...) are written
out here, in the same register-level form that ``nft --debug=netlink``
prints.  We do not use ``pyroute2.nftables.main.NFTables`` to *write*:
its ``begin()``/``commit()`` transactions send without ``NLM_F_ACK`` and never
read the answer, so a rejected rule would go unnoticed, and each of its
one-shot calls is a transaction of its own.  Here every function is exactly
one atomic transaction whose acknowledgements are all read and checked.

Every function puts its rules in a table of its own (or in one shared NAT
table for :func:`masquerade`) and returns an :class:`NftTable` handle;
``handle.remove()`` deletes the table, which removes the rules.  Calling a
function again with the same identity (service name, published port,
interface) replaces its table atomically: "add table; delete table; add
table + chains + rules" in a single transaction, so traffic never sees a
moment without rules.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import math
import re
import socket
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from pyroute2.netlink.nfnetlink import nfgen_msg
from pyroute2.netlink.nfnetlink.nftsocket import (
    NFT_MSG_DELTABLE,
    NFT_MSG_GETCHAIN,
    NFT_MSG_GETTABLE,
    NFT_MSG_NEWCHAIN,
    NFT_MSG_NEWRULE,
    NFT_MSG_NEWTABLE,
    nft_chain_msg,
    nft_contains_expr,
    nft_rule_msg,
    nft_table_msg,
)

from ..errors import KernelError

__all__ = [
    "NAT_TABLE",
    "TABLE_PREFIX",
    "Backend",
    "NftError",
    "NftTable",
    "delete_table",
    "dnat_service",
    "drop_ingress",
    "list_tables",
    "masquerade",
    "port_forward",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Backend = tuple[str | IPAddress, int]

#: Every table this module creates starts with this prefix.
TABLE_PREFIX = "pytest_netns"
#: The shared ``inet`` table that holds the masquerade rules.
NAT_TABLE = f"{TABLE_PREFIX}_nat"

# --- netlink / nf_tables constants (linux/netlink.h, linux/netfilter/*) ----
_NETLINK_NETFILTER = 12
_SOL_NETLINK = 270
_NETLINK_CAP_ACK = 10  # errors carry only the header of the failed request
_NETLINK_EXT_ACK = 11  # errors carry the kernel's text ("extack")
_NLM_F_REQUEST = 0x1
_NLM_F_MULTI = 0x2
_NLM_F_ACK = 0x4
_NLM_F_DUMP = 0x300
_NLM_F_CREATE = 0x400
_NLM_F_APPEND = 0x800
_NLM_F_CAPPED = 0x100
_NLM_F_ACK_TLVS = 0x200
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_NLMSGERR_ATTR_MSG = 1
_NFNL_SUBSYS_NFTABLES = 10
_NFNL_MSG_BATCH_BEGIN = 0x10
_NFNL_MSG_BATCH_END = 0x11

_FAMILIES = {"inet": 1, "ip": 2, "netdev": 5, "ip6": 10}
_FAMILY_NAMES = {v: k for k, v in _FAMILIES.items()}
_NFPROTO_IPV4 = 2
_NFPROTO_IPV6 = 10

_HOOK_PREROUTING = 0  # NF_INET_PRE_ROUTING; NF_NETDEV_INGRESS is 0 as well
_HOOK_OUTPUT = 3
_HOOK_POSTROUTING = 4
_HOOK_INGRESS = 0
_PRIO_DSTNAT = -100  # nft's "dstnat"
_PRIO_SRCNAT = 100  # nft's "srcnat"

_REG_VERDICT = 0
_REG_1 = 1  # the 16-byte registers: an IPv6 address fits in one
_REG_2 = 2

_META_OIFNAME = 7
_META_NFPROTO = 15
_META_L4PROTO = 16

_CMP_EQ = 0
_CMP_NEQ = 1
_CMP_LT = 2

_PAYLOAD_NETWORK = 1
_PAYLOAD_TRANSPORT = 2

_NG_INCREMENTAL = 0
_NG_RANDOM = 1
_BYTEORDER_HTON = 1

_NAT_DNAT = 1
_FIB_F_DADDR = 1 << 1
_FIB_RESULT_ADDRTYPE = 3
_RTN_LOCAL = 2

_NF_DROP = 0
_NFT_GOTO = -4

_CT_STATE = 0  # NFT_CT_STATE: a host-endian u32 of NF_CT_STATE_*_BIT
_CT_STATE_NEW = 1 << 3  # NF_CT_STATE_BIT(IP_CT_NEW)

_REJECT_TCP_RST = 1
_REJECT_ICMPX_UNREACH = 2
_REJECT_ICMPX_PORT_UNREACH = 1

_IPPROTO = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}

#: numgen's modulus is a u32, so "mod 2**32" cannot be expressed; this is
#: the largest modulus, and draws are uniform over [0, _NG_MAX_MOD - 1].
_NG_MAX_MOD = 2**32 - 1

_IFNAMSIZ = 16
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_RECV_TIMEOUT = 5.0


class NftError(KernelError):
    """The kernel refused an nftables request, or did not answer it.

    A :class:`~pytest_netns.errors.KernelError`: ``errno`` is the kernel's
    error (ETIMEDOUT when no answer came), ``request`` names the refused
    message, ``detail`` holds the kernel's extended-ack text ("" if none),
    and ``operation`` what the public function was doing.
    """

    def __init__(self, err: int, request: str, detail: str | None = None, operation: str | None = None) -> None:
        doing = f"nftables: {request}" if operation is None else f"{operation} (nftables: {request})"
        super().__init__(err, doing, detail or "")
        self.request = request
        self.operation = operation

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.errno, self.request, self.detail, self.operation))


@dataclass(frozen=True)
class NftTable:
    """Handle on a table created by this module.

    ``remove()`` deletes the table (and with it every chain and rule in it)
    from the network namespace of the calling thread, which must be the one
    the table was created in.  Removing a table that is already gone is not
    an error.
    """

    family: str
    name: str

    def remove(self) -> None:
        """Delete the table; a missing table is silently accepted."""
        delete_table(self.family, self.name, missing_ok=True)


# --------------------------------------------------------------------------
# Transport: one batch = one atomic nf_tables transaction.
# --------------------------------------------------------------------------


class _Batch:
    """Collects nf_tables requests and commits them as one transaction."""

    def __init__(self) -> None:
        self._requests: list[tuple[type, int, int, int, list, str]] = []

    def add(
        self,
        msg_class: type,
        msg_type: int,
        flags: int,
        family: str,
        attrs: list,
        what: str,
    ) -> None:
        """Queue one request; ``what`` names it in error messages."""
        self._requests.append((msg_class, msg_type, flags, _FAMILIES[family], attrs, what))

    def add_table(self, family: str, name: str) -> None:
        """Create ``name`` if missing (an existing table is kept)."""
        self.add(
            nft_table_msg,
            NFT_MSG_NEWTABLE,
            _NLM_F_CREATE,
            family,
            [["NFTA_TABLE_NAME", name]],
            f"add table {family} {name}",
        )

    def delete_table(self, family: str, name: str) -> None:
        """Delete ``name`` (the kernel answers ENOENT if it is missing)."""
        self.add(
            nft_table_msg,
            NFT_MSG_DELTABLE,
            0,
            family,
            [["NFTA_TABLE_NAME", name]],
            f"delete table {family} {name}",
        )

    def fresh_table(self, sock: socket.socket, family: str, name: str) -> None:
        """Start ``name`` empty, replacing it if it exists.

        Replacing is nft's own idiom, "add (so that the delete cannot
        fail), delete, add", which the kernel applies atomically together
        with whatever follows in the batch.
        """
        if _exists(sock, family, name):
            self.add_table(family, name)
            self.delete_table(family, name)
        self.add_table(family, name)

    def add_chain(
        self,
        family: str,
        table: str,
        name: str,
        *,
        hook: int | None = None,
        priority: int = 0,
        kind: str = "filter",
        device: str | None = None,
    ) -> None:
        """Create a chain; with ``hook`` it is a base chain of type ``kind``."""
        attrs: list = [
            ["NFTA_CHAIN_TABLE", table],
            ["NFTA_CHAIN_NAME", name],
        ]
        if hook is not None:
            hook_attrs = [
                ["NFTA_HOOK_HOOKNUM", hook],
                ["NFTA_HOOK_PRIORITY", priority],
            ]
            if device is not None:
                hook_attrs.append(["NFTA_HOOK_DEV", device])
            attrs += [
                ["NFTA_CHAIN_HOOK", {"attrs": hook_attrs}],
                ["NFTA_CHAIN_TYPE", kind],
            ]
        self.add(
            nft_chain_msg,
            NFT_MSG_NEWCHAIN,
            _NLM_F_CREATE,
            family,
            attrs,
            f"add chain {family} {table} {name}",
        )

    def add_rule(self, family: str, table: str, chain: str, exprs: Iterable[dict]) -> None:
        """Append a rule made of ``exprs`` to ``chain``."""
        self.add(
            nft_rule_msg,
            NFT_MSG_NEWRULE,
            _NLM_F_CREATE | _NLM_F_APPEND,
            family,
            [
                ["NFTA_RULE_TABLE", table],
                ["NFTA_RULE_CHAIN", chain],
                ["NFTA_RULE_EXPRESSIONS", list(exprs)],
            ],
            f"add rule {family} {table} {chain}",
        )

    def commit(self, sock: socket.socket | None = None) -> None:
        """Send the batch and check every acknowledgement.

        Uses ``sock`` or a fresh socket on the calling thread.  nfnetlink
        processes a batch synchronously inside ``send()`` and queues one
        answer per ``NLM_F_ACK`` request (on failure the whole batch is
        aborted and every request still gets its answer), so all answers
        are already waiting when ``send()`` returns.
        """
        if not self._requests:
            return
        if sock is None:
            with _netlink_socket() as own:
                return self.commit(own)
        data, names = self._encode()
        _send(sock, data, names[min(names)])
        first_error = None
        pending = set(names)
        while pending:
            for seq, err, detail in _read_acks(_recv(sock, names[min(pending)])):
                pending.discard(seq)
                if err and first_error is None:
                    first_error = (err, names.get(seq, "batch"), detail)
                if seq not in names:  # the batch itself was refused
                    pending.clear()
        if first_error is not None:
            raise NftError(*first_error)

    def _encode(self) -> tuple[bytes, dict[int, str]]:
        """Encode begin + requests + end; return bytes and seq -> name."""
        chunks = [_batch_marker(_NFNL_MSG_BATCH_BEGIN, 1)]
        names: dict[int, str] = {}
        for seq, request in enumerate(self._requests, start=2):
            msg_class, msg_type, flags, family, attrs, what = request
            msg = msg_class()
            msg["nfgen_family"] = family
            msg["attrs"] = attrs
            msg["header"]["type"] = (_NFNL_SUBSYS_NFTABLES << 8) | msg_type
            msg["header"]["flags"] = _NLM_F_REQUEST | _NLM_F_ACK | flags
            msg["header"]["sequence_number"] = seq
            msg.encode()
            chunks.append(msg.data)
            names[seq] = what
        chunks.append(_batch_marker(_NFNL_MSG_BATCH_END, len(names) + 2))
        return b"".join(chunks), names


def _batch_marker(msg_type: int, seq: int) -> bytes:
    """The NFNL_MSG_BATCH_BEGIN/END message framing a transaction."""
    msg = nfgen_msg()
    msg["res_id"] = _NFNL_SUBSYS_NFTABLES
    msg["header"]["type"] = msg_type
    msg["header"]["flags"] = _NLM_F_REQUEST
    msg["header"]["sequence_number"] = seq
    msg.encode()
    return bytes(msg.data)


class _netlink_socket:
    """Context manager: a NETLINK_NETFILTER socket in the thread's netns."""

    def __enter__(self) -> socket.socket:
        try:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_NETFILTER)
        except OSError as exc:
            raise NftError(exc.errno or errno.EIO, "opening a netlink socket to nf_tables") from None
        try:
            self.sock.setsockopt(_SOL_NETLINK, _NETLINK_CAP_ACK, 1)
            self.sock.setsockopt(_SOL_NETLINK, _NETLINK_EXT_ACK, 1)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            self.sock.settimeout(_RECV_TIMEOUT)
            self.sock.bind((0, 0))
        except OSError as exc:
            self.sock.close()
            raise NftError(exc.errno or errno.EIO, "setting up a netlink socket to nf_tables") from None
        except BaseException:
            self.sock.close()
            raise
        return self.sock

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


@contextlib.contextmanager
def _operation(doing: str) -> Iterator[socket.socket]:
    """A netfilter socket for one public operation; its errors say what the operation was."""
    try:
        with _netlink_socket() as sock:
            yield sock
    except NftError as exc:
        if exc.operation is not None:
            raise
        raise NftError(exc.errno or errno.EIO, exc.request, exc.detail, doing) from None


def _send(sock: socket.socket, data: bytes, request: str) -> None:
    try:
        sock.sendall(data)
    except OSError as exc:
        raise NftError(exc.errno or errno.EIO, request, "sending the request") from None


def _recv(sock: socket.socket, request: str) -> bytes:
    """The next answers from nf_tables; a silent kernel is ETIMEDOUT naming the request waited for."""
    try:
        return sock.recv(1 << 20)
    except TimeoutError:
        raise NftError(errno.ETIMEDOUT, request, f"no answer within {_RECV_TIMEOUT:g} s") from None
    except OSError as exc:
        raise NftError(exc.errno or errno.EIO, request, "reading the answer") from None


def _iter_messages(data: bytes) -> Iterable[tuple[int, int, int, int, int]]:
    """Yield (offset, length, type, flags, seq) for each netlink message."""
    offset = 0
    while offset + 16 <= len(data):
        length, msg_type, flags, seq, _pid = struct.unpack_from("=IHHII", data, offset)
        if length < 16:
            break
        yield offset, length, msg_type, flags, seq
        offset += (length + 3) & ~3


def _read_acks(data: bytes) -> list[tuple[int, int, str | None]]:
    """Decode NLMSG_ERROR answers into (seq, -errno or 0, extack text)."""
    acks = []
    for offset, length, msg_type, flags, seq in _iter_messages(data):
        if msg_type != _NLMSG_ERROR:
            continue
        (err,) = struct.unpack_from("=i", data, offset + 16)
        detail = None
        if err and flags & _NLM_F_ACK_TLVS:
            # nlmsgerr = error code + the request's header (capped).
            orig_len = 16
            if not flags & _NLM_F_CAPPED:
                (orig_len,) = struct.unpack_from("=I", data, offset + 20)
            detail = _extack_message(data[offset + 20 + orig_len : offset + length])
        acks.append((seq, -err, detail))
    return acks


def _extack_message(tlvs: bytes) -> str | None:
    """Find NLMSGERR_ATTR_MSG in the extended-ack attributes."""
    offset = 0
    while offset + 4 <= len(tlvs):
        nla_len, nla_type = struct.unpack_from("=HH", tlvs, offset)
        if nla_len < 4:
            break
        if nla_type & 0x3FFF == _NLMSGERR_ATTR_MSG:
            raw = tlvs[offset + 4 : offset + nla_len]
            return raw.split(b"\0", 1)[0].decode(errors="replace")
        offset += (nla_len + 3) & ~3
    return None


def _exists(sock: socket.socket, family: str, table: str, chain: str | None = None) -> bool:
    """Whether ``table`` (or ``chain`` in it) exists: one GET round trip.

    Worth it because the kernel makes any transaction that deletes
    something, or re-adds an existing base chain, wait for an RCU grace
    period (8-24 ms here), while one that only adds takes ~0.3 ms.
    """
    if chain is None:
        msg = nft_table_msg()
        msg["attrs"] = [["NFTA_TABLE_NAME", table]]
        msg_type = NFT_MSG_GETTABLE
    else:
        msg = nft_chain_msg()
        msg["attrs"] = [["NFTA_CHAIN_TABLE", table], ["NFTA_CHAIN_NAME", chain]]
        msg_type = NFT_MSG_GETCHAIN
    msg["nfgen_family"] = _FAMILIES[family]
    msg["header"]["type"] = (_NFNL_SUBSYS_NFTABLES << 8) | msg_type
    msg["header"]["flags"] = _NLM_F_REQUEST
    msg["header"]["sequence_number"] = 1
    msg.encode()
    request = f"get {family} {table} {chain or ''}".rstrip()
    _send(sock, msg.data, request)
    data = _recv(sock, request)
    for _seq, err, detail in _read_acks(data):
        if err == errno.ENOENT:
            return False
        if err:
            raise NftError(err, request, detail)
    return True


def delete_table(family: str, name: str, *, missing_ok: bool = True) -> None:
    """Delete table ``family``/``name`` in the calling thread's namespace.

    With ``missing_ok`` a table that does not exist is not an error.
    """
    _check_family(family)
    _check_table_name(name)
    with _operation(f"deleting nftables table {family} {name}") as sock:
        if missing_ok and not _exists(sock, family, name):
            return
        batch = _Batch()
        batch.delete_table(family, name)
        batch.commit(sock)


def list_tables() -> list[tuple[str, str]]:
    """(family, name) of every nftables table in the calling thread's netns."""
    msg = nfgen_msg()
    msg["nfgen_family"] = 0  # NFPROTO_UNSPEC: all families
    msg["header"]["type"] = (_NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE
    msg["header"]["flags"] = _NLM_F_REQUEST | _NLM_F_DUMP
    msg["header"]["sequence_number"] = 1
    msg.encode()
    tables = []
    with _operation("listing nftables tables") as sock:
        _send(sock, msg.data, "list tables")
        done = False
        while not done:
            data = _recv(sock, "list tables")
            for offset, length, msg_type, _flags, _seq in _iter_messages(data):
                if msg_type == _NLMSG_DONE:
                    done = True
                elif msg_type == _NLMSG_ERROR:
                    (err,) = struct.unpack_from("=i", data, offset + 16)
                    if err:
                        raise NftError(-err, "list tables")
                    done = True
                else:
                    table = nft_table_msg(data[offset : offset + length])
                    table.decode()
                    family = _FAMILY_NAMES.get(table["nfgen_family"], str(table["nfgen_family"]))
                    tables.append((family, table.get_attr("NFTA_TABLE_NAME")))
    return tables


# --------------------------------------------------------------------------
# Expressions, in the register form ``nft --debug=netlink`` prints.
# --------------------------------------------------------------------------


def _expr(name: str, prefix: str, **data: object) -> dict:
    """One rule expression: NFTA_EXPR_NAME + NFTA_EXPR_DATA{NFTA_<prefix>_*}."""
    attrs = [(f"NFTA_{prefix}_{key.upper()}", value) for key, value in data.items()]
    return {
        "attrs": [
            ("NFTA_EXPR_NAME", name),
            ("NFTA_EXPR_DATA", {"attrs": attrs}),
        ]
    }


def _value(raw: bytes) -> dict:
    return {"attrs": [("NFTA_DATA_VALUE", raw)]}


def _meta(key: int, dreg: int = _REG_1) -> dict:
    return _expr("meta", "META", dreg=dreg, key=key)


def _cmp(op: int, raw: bytes, sreg: int = _REG_1) -> dict:
    return _expr("cmp", "CMP", sreg=sreg, op=op, data=_value(raw))


def _payload(base: int, offset: int, length: int) -> dict:
    return _expr("payload", "PAYLOAD", dreg=_REG_1, base=base, offset=offset, len=length)


def _bitwise_and(mask: bytes) -> dict:
    return _expr(
        "bitwise",
        "BITWISE",
        sreg=_REG_1,
        dreg=_REG_1,
        len=len(mask),
        mask=_value(mask),
        xor=_value(bytes(len(mask))),
    )


def _numgen(modulus: int, kind: int) -> dict:
    return _expr("numgen", "NG", dreg=_REG_1, modulus=modulus, type=kind, offset=0)


def _hton32() -> dict:
    # numgen stores a host-endian u32, while cmp's </> compare bytes
    # (memcmp): convert to network order first, as nft itself does.
    return _expr(
        "byteorder",
        "BYTEORDER",
        sreg=_REG_1,
        dreg=_REG_1,
        op=_BYTEORDER_HTON,
        len=4,
        size=4,
    )


def _immediate(dreg: int, raw: bytes) -> dict:
    return _expr("immediate", "IMMEDIATE", dreg=dreg, data=_value(raw))


def _verdict(code: int, chain: str | None = None) -> dict:
    verdict: list = [("NFTA_VERDICT_CODE", code)]
    if chain is not None:
        verdict.append(("NFTA_VERDICT_CHAIN", chain))
    data = {"attrs": [("NFTA_DATA_VERDICT", {"attrs": verdict})]}
    return _expr("immediate", "IMMEDIATE", dreg=_REG_VERDICT, data=data)


def _fib_result_addrtype() -> object:
    """NFT_FIB_RESULT_ADDRTYPE as pyroute2's attribute class wants it.

    pyroute2 0.9.7 declares NFTA_FIB_RESULT as a bit set (a set of names
    encoded as bits), while the kernel reads an enum.  ADDRTYPE (3) is bits
    0 and 1, i.e. the names of its first two entries.  If a later pyroute2
    makes it a plain integer, pass the integer.
    """
    result_cls = nft_contains_expr.nft_expr.nft_fib.fib_result
    ops = getattr(result_cls, "ops", None)
    if isinstance(ops, tuple):
        return {ops[i] for i in range(len(ops)) if _FIB_RESULT_ADDRTYPE >> i & 1}
    return _FIB_RESULT_ADDRTYPE


def _daddr_is_local() -> list[dict]:
    """``fib daddr type local``."""
    return [
        _expr(
            "fib",
            "FIB",
            dreg=_REG_1,
            result=_fib_result_addrtype(),
            flags=_FIB_F_DADDR,
        ),
        _cmp(_CMP_EQ, struct.pack("=I", _RTN_LOCAL)),
    ]


def _nfproto(version: int) -> list[dict]:
    """``meta nfproto ipv4|ipv6``: needed before any IP payload in inet."""
    proto = _NFPROTO_IPV4 if version == 4 else _NFPROTO_IPV6
    return [_meta(_META_NFPROTO), _cmp(_CMP_EQ, bytes([proto]))]


def _addr_match(network: IPNetwork, field: str, op: int = _CMP_EQ) -> list[dict]:
    """``ip[6] saddr|daddr [!=] network`` (after the nfproto match)."""
    if network.version == 4:
        offset = 12 if field == "saddr" else 16
    else:
        offset = 8 if field == "saddr" else 24
    size = network.max_prefixlen // 8
    exprs = [_payload(_PAYLOAD_NETWORK, offset, size)]
    if network.prefixlen < network.max_prefixlen:
        exprs.append(_bitwise_and(network.netmask.packed))
    exprs.append(_cmp(op, network.network_address.packed))
    return exprs


def _l4_dport(proto: str, port: int) -> list[dict]:
    """``meta l4proto tcp|udp th dport port``."""
    return [
        _meta(_META_L4PROTO),
        _cmp(_CMP_EQ, bytes([_IPPROTO[proto]])),
        _payload(_PAYLOAD_TRANSPORT, 2, 2),
        _cmp(_CMP_EQ, struct.pack("!H", port)),
    ]


def _dnat_to(addr: IPAddress, port: int) -> list[dict]:
    """``dnat ip[6] to addr:port``: address in reg 1, port in reg 2."""
    family = _NFPROTO_IPV4 if addr.version == 4 else _NFPROTO_IPV6
    return [
        _immediate(_REG_1, addr.packed),
        _immediate(_REG_2, struct.pack("!H", port)),
        _expr(
            "nat",
            "NAT",
            type=_NAT_DNAT,
            family=family,
            reg_addr_min=_REG_1,
            reg_proto_min=_REG_2,
            flags={"NF_NAT_RANGE_PROTO_SPECIFIED"},
        ),
    ]


def _ct_state_new() -> list[dict]:
    """``ct state new``.

    Besides matching, a ct expression makes the kernel enable conntrack in
    the namespace.  That matters: nat chains only ever see packets that
    have a conntrack entry, and only nat/masq/ct expressions switch
    conntrack on; a nat table holding nothing but a reject would be
    silently skipped.
    """
    return [
        _expr("ct", "CT", dreg=_REG_1, key=_CT_STATE),
        _bitwise_and(struct.pack("=I", _CT_STATE_NEW)),
        _cmp(_CMP_NEQ, bytes(4)),
    ]


def _reject(proto: str) -> list[dict]:
    """New connections: TCP reset or ICMP(v6) port unreachable (kube-proxy)."""
    if proto == "tcp":
        reject = _expr("reject", "REJECT", type=_REJECT_TCP_RST)
    else:
        reject = _expr(
            "reject",
            "REJECT",
            type=_REJECT_ICMPX_UNREACH,
            icmp_code=_REJECT_ICMPX_PORT_UNREACH,
        )
    return [*_ct_state_new(), reject]


# --------------------------------------------------------------------------
# Validation: everything is checked before the kernel is touched.
# --------------------------------------------------------------------------


def _check_family(family: str) -> None:
    if family not in _FAMILIES:
        raise ValueError(f"family {family!r} is not one of {', '.join(sorted(_FAMILIES))}")


def _check_table_name(name: object) -> None:
    if not isinstance(name, str) or not name or len(name) > 200:
        raise ValueError(f"table name {name!r} must be 1-200 characters")


def _check_ifname(ifname: object, what: str = "interface name") -> str:
    if (
        not isinstance(ifname, str)
        or not 0 < len(ifname) < _IFNAMSIZ
        or ifname in (".", "..")
        or any(c in ifname for c in "/: \t\n\0")
    ):
        raise ValueError(f"{what} {ifname!r} is not a valid interface name")
    return ifname


def _check_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValueError(f"{what} {name!r} must be 1-64 characters of letters, digits, '_', '.', '-'")
    return name


def _check_port(port: object, what: str = "port") -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"{what} {port!r} is not a port number (1-65535)")
    return port


def _check_proto(proto: object) -> str:
    if proto not in _IPPROTO:
        raise ValueError(f"protocol {proto!r} is not 'tcp' or 'udp'")
    return proto  # type: ignore[return-value]


def _to_address(value: object, what: str) -> IPAddress:
    try:
        return ipaddress.ip_address(value)  # type: ignore[arg-type]
    except ValueError:
        raise ValueError(f"{what} {value!r} is not an IP address") from None


def _to_network(value: object, what: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(value)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        raise ValueError(f"{what} {value!r} is not an IP network (host bits must be 0)") from None


def _ifname_bytes(ifname: str) -> bytes:
    """An exact interface name as meta oifname stores it: IFNAMSIZ, padded."""
    return ifname.encode().ljust(_IFNAMSIZ, b"\0")


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


def masquerade(
    oifname: str | None = None,
    *,
    src: str | IPNetwork | None = None,
    not_oifname: str | None = None,
    table: str = NAT_TABLE,
) -> NftTable:
    """Masquerade traffic leaving via ``oifname`` and/or coming from ``src``.

    Appends one rule to the ``postrouting`` chain (type nat, priority
    srcnat) of the ``inet`` table ``table``, creating both if needed; each
    call adds a rule, ``remove()`` on the returned handle removes them all.

    * ``oifname``: only packets leaving through this interface.
    * ``src``: only packets from this IPv4 or IPv6 network; without it both
      IPv4 and IPv6 are masqueraded.
    * ``not_oifname``: exclude packets leaving through this interface
      (Docker's ``-s 172.17.0.0/16 ! -o docker0``).

    With no argument at all, everything leaving the namespace is
    masqueraded.  ``oifname`` is matched by name, so the interface does not
    need to exist yet.
    """
    if oifname is not None:
        _check_ifname(oifname, "oifname")
    if not_oifname is not None:
        _check_ifname(not_oifname, "not_oifname")
    network = _to_network(src, "src") if src is not None else None
    _check_table_name(table)

    exprs: list[dict] = []
    if oifname is not None:
        exprs += [_meta(_META_OIFNAME), _cmp(_CMP_EQ, _ifname_bytes(oifname))]
    if not_oifname is not None:
        exprs += [_meta(_META_OIFNAME), _cmp(_CMP_NEQ, _ifname_bytes(not_oifname))]
    if network is not None:
        exprs += _nfproto(network.version)
        if network.prefixlen:
            exprs += _addr_match(network, "saddr")
    exprs.append(_expr("masq", "MASQ"))

    doing = "masquerading traffic" + "".join(
        f" {label} {value}"
        for label, value in (
            ("leaving through", repr(oifname) if oifname is not None else None),
            ("not leaving through", repr(not_oifname) if not_oifname is not None else None),
            ("from", network),
        )
        if value is not None
    )
    batch = _Batch()
    with _operation(doing) as sock:
        # Re-adding an existing base chain would cost a grace period.
        if not _exists(sock, "inet", table, "postrouting"):
            batch.add_table("inet", table)
            batch.add_chain(
                "inet",
                table,
                "postrouting",
                hook=_HOOK_POSTROUTING,
                priority=_PRIO_SRCNAT,
                kind="nat",
            )
        batch.add_rule("inet", table, "postrouting", exprs)
        batch.commit(sock)
    return NftTable("inet", table)


def _nat_table_with_hooks(batch: _Batch, sock: socket.socket, table: str) -> None:
    """A fresh inet table with nat chains on prerouting and output.

    prerouting catches connections arriving from other namespaces, output
    the ones this namespace opens itself.
    """
    batch.fresh_table(sock, "inet", table)
    for chain, hook in (("prerouting", _HOOK_PREROUTING), ("output", _HOOK_OUTPUT)):
        batch.add_chain("inet", table, chain, hook=hook, priority=_PRIO_DSTNAT, kind="nat")


def _backend_rules(backends: Sequence[tuple[IPAddress, int]], spread: str) -> list[list[dict]]:
    """One rule per backend so that each new connection picks one uniformly.

    Rule i fires with probability 1/(n-i) among connections that reached
    it (the kube-proxy cascade), so every backend gets 1/n: one fresh
    ``numgen random mod (n-i)`` per rule.  With ``numgen inc`` each rule's
    counter only advances for connections that reach it, which turns the
    same cascade into a strict round robin.
    """
    kind = _NG_RANDOM if spread == "random" else _NG_INCREMENTAL
    rules = []
    count = len(backends)
    for index, (addr, port) in enumerate(backends):
        remaining = count - index
        pick: list[dict] = []
        if remaining > 1:
            pick = [_numgen(remaining, kind), _cmp(_CMP_EQ, bytes(4))]
        rules.append(pick + _dnat_to(addr, port))
    return rules


def dnat_service(
    name: str,
    vip: str | IPAddress,
    port: int,
    backends: Sequence[Backend],
    *,
    proto: Literal["tcp", "udp"] = "tcp",
    spread: Literal["random", "round_robin"] = "random",
) -> NftTable:
    """A load-balanced "service": new connections to vip:port go to a backend.

    Creates (or atomically replaces) the ``inet`` table
    ``pytest_netns_svc_<name>``: nat chains on prerouting and output match
    ``vip``/``proto``/``port`` and go to a chain that DNATs to one of
    ``backends`` (``(address, port)`` pairs of the VIP's family).
    ``spread="random"`` picks uniformly at random (``numgen random``),
    ``"round_robin"`` cycles through the backends in order (``numgen inc``).

    Only new connections are affected: established ones keep their
    backend through conntrack, even after a replacement removed it.  With
    no backends, new connections are refused (TCP reset, ICMP port
    unreachable for UDP), as kube-proxy does.  For connections the
    namespace opens itself the kernel needs *some* route to the VIP
    before the output chain is reached.
    """
    _check_name(name, "service name")
    address = _to_address(vip, "vip")
    _check_port(port)
    _check_proto(proto)
    if spread not in ("random", "round_robin"):
        raise ValueError(f"spread {spread!r} is not 'random' or 'round_robin'")
    targets = _check_backends(backends, address.version)

    table = f"{TABLE_PREFIX}_svc_{name}"
    match = _nfproto(address.version)
    match += _addr_match(ipaddress.ip_network(address), "daddr")
    match += _l4_dport(proto, port)

    doing = f"installing service {name!r} ({address} {proto}/{port} to {len(targets)} backends)"
    batch = _Batch()
    with _operation(doing) as sock:
        _nat_table_with_hooks(batch, sock, table)
        batch.add_chain("inet", table, "backends")
        goto = [*match, _verdict(_NFT_GOTO, "backends")]
        batch.add_rule("inet", table, "prerouting", goto)
        batch.add_rule("inet", table, "output", goto)
        if targets:
            for rule in _backend_rules(targets, spread):
                batch.add_rule("inet", table, "backends", rule)
        else:
            batch.add_rule("inet", table, "backends", _reject(proto))
        batch.commit(sock)
    return NftTable("inet", table)


def _check_backends(backends: Sequence[Backend], version: int) -> list[tuple[IPAddress, int]]:
    if isinstance(backends, (str, bytes)) or not isinstance(backends, Sequence):
        raise ValueError(f"backends {backends!r} must be a sequence of (ip, port)")
    targets = []
    for backend in backends:
        if not isinstance(backend, (tuple, list)) or len(backend) != 2:
            raise ValueError(f"backend {backend!r} is not an (ip, port) pair")
        addr = _to_address(backend[0], "backend address")
        if addr.version != version:
            raise ValueError(f"backend address {backend[0]!r} is not IPv{version} like the vip")
        targets.append((addr, _check_port(backend[1], "backend port")))
    return targets


def port_forward(
    port: int,
    to_addr: str | IPAddress,
    to_port: int | None = None,
    *,
    proto: Literal["tcp", "udp"] = "tcp",
    host_addr: str | IPAddress | None = None,
    name: str | None = None,
) -> NftTable:
    """Publish a port: new connections to ``port`` here go to to_addr:to_port.

    Like ``docker run -p``: nat chains on prerouting (connections from
    other namespaces) and output (connections opened here) DNAT
    ``proto``/``port`` to ``to_addr``/``to_port`` (default: ``port``).
    The destination must be one of this namespace's own addresses
    (``fib daddr type local``), or exactly ``host_addr`` when given.

    Locally opened connections to loopback addresses (127.0.0.0/8, ::1)
    are left alone, as Docker does: rerouting them off ``lo`` would need
    ``route_localnet`` and a masquerade.

    The table is ``pytest_netns_fwd_<proto>_<port>`` (or
    ``pytest_netns_fwd_<name>``); publishing the same port again replaces it.
    """
    _check_port(port)
    target = _to_address(to_addr, "to_addr")
    target_port = _check_port(port if to_port is None else to_port, "to_port")
    _check_proto(proto)
    host = _to_address(host_addr, "host_addr") if host_addr is not None else None
    if host is not None and host.version != target.version:
        raise ValueError(f"host_addr {host_addr!r} is not IPv{target.version} like to_addr")
    if name is not None:
        _check_name(name, "name")
    table = f"{TABLE_PREFIX}_fwd_{name or f'{proto}_{port}'}"

    family = _nfproto(target.version)
    if host is not None:
        family += _addr_match(ipaddress.ip_network(host), "daddr")
    action = _l4_dport(proto, port) + _dnat_to(target, target_port)
    loopback = ipaddress.ip_network("127.0.0.0/8" if target.version == 4 else "::1/128")

    if host is not None:
        incoming = local = family + action
    else:
        incoming = _daddr_is_local() + family + action
        local = _daddr_is_local() + family + _addr_match(loopback, "daddr", _CMP_NEQ) + action
    to = f"[{target}]:{target_port}" if target.version == 6 else f"{target}:{target_port}"
    batch = _Batch()
    with _operation(f"forwarding {proto} port {port} to {to}") as sock:
        _nat_table_with_hooks(batch, sock, table)
        batch.add_rule("inet", table, "prerouting", incoming)
        batch.add_rule("inet", table, "output", local)
        batch.commit(sock)
    return NftTable("inet", table)


def _loss_threshold(probability: float) -> int:
    """numgen draw below which a packet is dropped (draws are 0..MOD-1)."""
    return min(_NG_MAX_MOD, round(probability * _NG_MAX_MOD))


def drop_ingress(ifname: str, probability: float) -> NftTable:
    """Silently drop each packet received on ``ifname`` with ``probability``.

    A ``netdev`` table ``pytest_netns_loss_<ifname>`` with a filter chain on
    the device's ingress hook holds one rule:
    ``numgen random mod 4294967295 < p * 4294967295 drop``.  The packet is
    dropped after the sender's device accepted it, so the sender never
    sees an error: link loss as the receiver experiences it.  Every frame
    counts (ARP and neighbour discovery too); with GRO enabled on the
    device a dropped skb may hold several segments.

    Calling it again for the same interface replaces the probability; the
    handle's ``remove()`` restores a loss-free link.  The interface must
    exist in the calling thread's namespace.
    """
    _check_ifname(ifname)
    if (
        isinstance(probability, bool)
        or not isinstance(probability, (int, float))
        or not math.isfinite(probability)
        or not 0.0 <= probability <= 1.0
    ):
        raise ValueError(f"probability {probability!r} is not between 0 and 1")
    doing = f"making {ifname!r} drop arriving packets with probability {probability:g}"
    try:
        socket.if_nametoindex(ifname)  # resolved in the calling thread's netns
    except OSError:
        raise KernelError(errno.ENODEV, doing, f"no interface {ifname!r} in this network namespace") from None

    table = f"{TABLE_PREFIX}_loss_{ifname}"
    rule = [
        _numgen(_NG_MAX_MOD, _NG_RANDOM),
        _hton32(),
        _cmp(_CMP_LT, struct.pack("!I", _loss_threshold(probability))),
        _verdict(_NF_DROP),
    ]
    batch = _Batch()
    with _operation(doing) as sock:
        batch.fresh_table(sock, "netdev", table)
        batch.add_chain(
            "netdev",
            table,
            "ingress",
            hook=_HOOK_INGRESS,
            priority=0,
            kind="filter",
            device=ifname,
        )
        batch.add_rule("netdev", table, "ingress", rule)
        batch.commit(sock)
    return NftTable("netdev", table)
