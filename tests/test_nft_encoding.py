"""nftables as data: each expression and object encodes to what the kernel expects.

Two oracles: pyroute2's nf_tables message classes (given the attributes by
name, they write the bytes the hand encoder must match, apart from the
NLA_F_NESTED flag, which pyroute2 leaves out and libnftnl sets), and ``nft
list`` reading back the rules the recipes installed in a namespace.
"""

from __future__ import annotations

import ipaddress
import shutil
import struct
from collections.abc import Callable

import pytest
from pyroute2.netlink.nfnetlink.nftsocket import nft_chain_msg, nft_rule_msg, nft_set_elem_list_msg, nft_set_msg

from pytest_netns import Namespace
from pytest_netns._kernel import netlink
from pytest_netns._kernel.nft import Chain, expr, objects
from pytest_netns._kernel.nft import statements as words
from pytest_netns._net import rules

NET4 = ipaddress.ip_network("10.0.1.0/24")
NET6 = ipaddress.ip_network("fd00::/64")


def _e(name: str, prefix: str, **data: object) -> dict[str, object]:
    """An expression as pyroute2 takes it: NFTA_EXPR_NAME + NFTA_EXPR_DATA{NFTA_<prefix>_*}."""
    attrs = [(f"NFTA_{prefix}_{key.upper()}", value) for key, value in data.items()]
    return {"attrs": [("NFTA_EXPR_NAME", name), ("NFTA_EXPR_DATA", {"attrs": attrs})]}


def _v(raw: bytes) -> dict[str, object]:
    return {"attrs": [("NFTA_DATA_VALUE", raw)]}


def _cmp(op: int, raw: bytes) -> dict[str, object]:
    return _e("cmp", "CMP", sreg=1, op=op, data=_v(raw))


def _verdict(code: int, chain: str | None = None) -> dict[str, object]:
    verdict: list[tuple[str, object]] = [("NFTA_VERDICT_CODE", code)]
    if chain is not None:
        verdict.append(("NFTA_VERDICT_CHAIN", chain))
    return _e("immediate", "IMMEDIATE", dreg=0, data={"attrs": [("NFTA_DATA_VERDICT", {"attrs": verdict})]})


def _fib_addrtype() -> object:
    # pyroute2 0.9.7 declares NFTA_FIB_RESULT a bit set: ADDRTYPE (3) is its first two names.
    from pyroute2.netlink.nfnetlink.nftsocket import nft_contains_expr

    ops = getattr(nft_contains_expr.nft_expr.nft_fib.fib_result, "ops", None)
    return {ops[0], ops[1]} if isinstance(ops, tuple) else 3


def _without_nested_flag(data: bytes) -> bytes:
    """The attributes with NLA_F_NESTED cleared, at every depth."""
    out, offset = b"", 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        payload = data[offset + 4 : offset + length]
        if kind & netlink.NLA_F_NESTED:
            payload = _without_nested_flag(payload)
        out += netlink.attr(kind & ~netlink.NLA_F_NESTED, payload)
        offset += (length + 3) & ~3
    return out


def _pyroute2(msg_class: type, attrs: list[object], family: int = 1) -> bytes:
    msg = msg_class()
    msg["nfgen_family"] = family
    msg["attrs"] = attrs
    msg.encode()
    return bytes(msg.data)[16 + 4 :]  # past nlmsghdr and nfgenmsg


def _ours(rule: list[expr.Expr]) -> bytes:
    return _without_nested_flag(objects.new_rule("inet", "t", "c", rule).body[4:])


def _theirs(exprs: list[dict[str, object]]) -> bytes:
    attrs = [["NFTA_RULE_TABLE", "t"], ["NFTA_RULE_CHAIN", "c"], ["NFTA_RULE_EXPRESSIONS", exprs]]
    return _pyroute2(nft_rule_msg, attrs)


def _payload(base: int, offset: int, length: int) -> dict[str, object]:
    return _e("payload", "PAYLOAD", dreg=1, base=base, offset=offset, len=length)


def _bitwise(mask: bytes) -> dict[str, object]:
    return _e("bitwise", "BITWISE", sreg=1, dreg=1, len=len(mask), mask=_v(mask), xor=_v(bytes(len(mask))))


def _immediate(dreg: int, raw: bytes) -> dict[str, object]:
    return _e("immediate", "IMMEDIATE", dreg=dreg, data=_v(raw))


def _nat(family: int) -> dict[str, object]:
    flags = {"NF_NAT_RANGE_PROTO_SPECIFIED"}
    return _e("nat", "NAT", type=1, family=family, reg_addr_min=1, reg_proto_min=2, flags=flags)


CT_NEW = [
    _e("ct", "CT", dreg=1, key=0),
    _bitwise(struct.pack("=I", 8)),
    _cmp(1, bytes(4)),
]

CASES: dict[str, tuple[Callable[[], list[expr.Expr]], Callable[[], list[dict[str, object]]]]] = {
    "meta nfproto ipv4": (
        lambda: words.nfproto(4),
        lambda: [_e("meta", "META", dreg=1, key=15), _cmp(0, b"\x02")],
    ),
    "ip saddr 10.0.1.0/24": (
        lambda: words.addr(NET4, "saddr"),
        lambda: [_payload(1, 12, 4), _bitwise(NET4.netmask.packed), _cmp(0, NET4.network_address.packed)],
    ),
    "ip6 daddr != fd00::/64": (
        lambda: words.addr(NET6, "daddr", expr.CMP_NEQ),
        lambda: [_payload(1, 24, 16), _bitwise(NET6.netmask.packed), _cmp(1, NET6.network_address.packed)],
    ),
    "oifname eth0": (
        lambda: words.oifname("eth0"),
        lambda: [_e("meta", "META", dreg=1, key=7), _cmp(0, b"eth0".ljust(16, b"\0"))],
    ),
    "udp dport 53": (
        lambda: words.l4_dport("udp", 53),
        lambda: [
            _e("meta", "META", dreg=1, key=16),
            _cmp(0, b"\x11"),
            _payload(2, 2, 2),
            _cmp(0, b"\x00\x35"),
        ],
    ),
    "fib daddr type local": (
        lambda: words.daddr_is_local(),
        lambda: [_e("fib", "FIB", dreg=1, result=_fib_addrtype(), flags=2), _cmp(0, struct.pack("=I", 2))],
    ),
    "dnat to 10.0.0.2:80": (
        lambda: words.dnat_to(ipaddress.ip_address("10.0.0.2"), 80),
        lambda: [_immediate(1, bytes([10, 0, 0, 2])), _immediate(2, b"\x00\x50"), _nat(2)],
    ),
    "dnat ip6 to [fd00::2]:80": (
        lambda: words.dnat_to(ipaddress.ip_address("fd00::2"), 80),
        lambda: [_immediate(1, ipaddress.ip_address("fd00::2").packed), _immediate(2, b"\x00\x50"), _nat(10)],
    ),
    "ct state new reject with tcp reset": (
        lambda: words.reject_new("tcp"),
        lambda: [*CT_NEW, _e("reject", "REJECT", type=1)],
    ),
    "ct state new reject with icmpx port-unreachable": (
        lambda: words.reject_new("udp"),
        lambda: [*CT_NEW, _e("reject", "REJECT", type=2, icmp_code=1)],
    ),
    "numgen inc mod 3 0 goto backends": (
        lambda: [*words.numgen_is(3, 0, expr.NG_INCREMENTAL), expr.Verdict(expr.NFT_GOTO, "backends")],
        lambda: [
            _e("numgen", "NG", dreg=1, modulus=3, type=0, offset=0),
            _cmp(0, bytes(4)),
            _verdict(-4, "backends"),
        ],
    ),
    "numgen random mod 4294967295 < 1234 drop": (
        lambda: [*words.random_below(1234), expr.Verdict(expr.NF_DROP)],
        lambda: [
            _e("numgen", "NG", dreg=1, modulus=2**32 - 1, type=1, offset=0),
            _e("byteorder", "BYTEORDER", sreg=1, dreg=1, op=1, len=4, size=4),
            _cmp(2, struct.pack("!I", 1234)),
            _verdict(0),
        ],
    ),
    "ip daddr . meta l4proto . th dport vmap @service-ips": (
        lambda: words.daddr_proto_dport_vmap("service-ips"),
        lambda: [
            _e("payload", "PAYLOAD", dreg=8, base=1, offset=16, len=4),
            _e("meta", "META", dreg=9, key=16),
            _e("payload", "PAYLOAD", dreg=10, base=2, offset=2, len=2),
            _e("lookup", "LOOKUP", set="service-ips", sreg=8, dreg=0),
        ],
    ),
    "numgen random mod 3 vmap { ... } (anonymous map 7 of the batch)": (
        lambda: words.numgen_vmap(3, expr.NG_RANDOM, "__map%d", 7),
        lambda: [
            _e("numgen", "NG", dreg=1, modulus=3, type=1, offset=0),
            _e("lookup", "LOOKUP", set="__map%d", sreg=1, dreg=0, set_id=7),
        ],
    ),
    "ip saddr @affinity": (
        lambda: words.saddr_in("affinity"),
        lambda: [_payload(1, 12, 4), _e("lookup", "LOOKUP", set="affinity", sreg=1)],
    ),
    "update @affinity { ip saddr }": (
        lambda: words.update_saddr("affinity"),
        lambda: [_payload(1, 12, 4), _e("dynset", "DYNSET", set_name="affinity", op=1, sreg_key=1)],
    ),
    "meta mark set meta mark | 0x4000": (
        lambda: words.mark_or(0x4000),
        lambda: [
            _e("meta", "META", dreg=1, key=3),
            _e(
                "bitwise",
                "BITWISE",
                sreg=1,
                dreg=1,
                len=4,
                mask=_v(struct.pack("=I", 0xFFFFBFFF)),
                xor=_v(struct.pack("=I", 0x4000)),
            ),
            _e("meta", "META", key=3, sreg=1),
        ],
    ),
    "dup to 10.0.0.9 device 2": (
        lambda: [expr.Dup(sreg_addr=1, sreg_dev=2)],
        lambda: [_e("dup", "DUP", sreg_addr=1, sreg_dev=2)],
    ),
}


@pytest.mark.parametrize("words_", sorted(CASES))
def test_expressions_encode_as_pyroute2_would(words_: str) -> None:
    ours, theirs = CASES[words_]
    assert _ours(ours()).hex() == _theirs(theirs()).hex()


def test_masquerade_has_no_data_attribute() -> None:
    """``masq`` without options: just the name (nft sends no NFTA_EXPR_DATA either)."""
    assert expr.Masq().encode() == netlink.attr_str(1, "masq")


@pytest.mark.parametrize(
    ("chain", "attrs"),
    [
        (
            Chain("in", hook=0, priority=0, type="filter", device="vb"),
            [("NFTA_HOOK_HOOKNUM", 0), ("NFTA_HOOK_PRIORITY", 0), ("NFTA_HOOK_DEV", "vb")],
        ),
        (Chain("post", hook=4, priority=100, type="nat"), [("NFTA_HOOK_HOOKNUM", 4), ("NFTA_HOOK_PRIORITY", 100)]),
        (Chain("pre", hook=0, priority=-100, type="nat"), [("NFTA_HOOK_HOOKNUM", 0), ("NFTA_HOOK_PRIORITY", -100)]),
    ],
    ids=["netdev ingress", "srcnat", "dstnat"],
)
def test_base_chains_encode_as_pyroute2_would(chain: Chain, attrs: list[tuple[str, object]]) -> None:
    body = objects.new_chain("netdev" if chain.device else "inet", "t", chain).body
    theirs = [
        ["NFTA_CHAIN_TABLE", "t"],
        ["NFTA_CHAIN_NAME", chain.name],
        ["NFTA_CHAIN_HOOK", {"attrs": attrs}],
        ["NFTA_CHAIN_TYPE", chain.type],
    ]
    family = 5 if chain.device else 1
    assert _without_nested_flag(body[4:]).hex() == _pyroute2(nft_chain_msg, theirs, family).hex()
    assert body[0] == family


def test_a_verdict_map_keyed_on_a_concatenation_encodes_as_pyroute2_would() -> None:
    kind = objects.concat_type(objects.TYPE_IPADDR, objects.TYPE_INET_PROTOCOL, objects.TYPE_INET_SERVICE)
    assert kind == (7 << 12) | (12 << 6) | 13  # ipv4_addr . inet_proto . inet_service, as nft numbers it
    value = objects.Set("m", kind, 12, objects.SET_MAP, data_type=objects.DATA_VERDICT, id=3)
    theirs = [
        ["NFTA_SET_TABLE", "t"],
        ["NFTA_SET_NAME", "m"],
        ["NFTA_SET_FLAGS", {"NFT_SET_MAP"}],
        ["NFTA_SET_KEY_TYPE", kind],
        ["NFTA_SET_KEY_LEN", 12],
        ["NFTA_SET_DATA_TYPE", 0xFFFFFF00],
        ["NFTA_SET_ID", 3],
    ]
    assert objects.new_set("ip", "t", value).body[4:].hex() == _pyroute2(nft_set_msg, theirs, 2).hex()


def test_a_dynamic_set_with_a_timeout_encodes_as_pyroute2_would() -> None:
    flags = objects.SET_TIMEOUT | objects.SET_EVAL
    value = objects.Set("a", objects.TYPE_IPADDR, 4, flags, timeout_ms=10_800_000)
    theirs = [
        ["NFTA_SET_TABLE", "t"],
        ["NFTA_SET_NAME", "a"],
        ["NFTA_SET_FLAGS", {"NFT_SET_TIMEOUT", "NFT_SET_EVAL"}],
        ["NFTA_SET_KEY_TYPE", 7],
        ["NFTA_SET_KEY_LEN", 4],
        ["NFTA_SET_ID", 0],
        ["NFTA_SET_TIMEOUT", 10_800_000],
    ]
    assert objects.new_set("ip", "t", value).body[4:].hex() == _pyroute2(nft_set_msg, theirs, 2).hex()


def test_map_elements_encode_as_pyroute2_would() -> None:
    key = words.daddr_proto_dport_key(ipaddress.IPv4Address("10.96.0.1"), "tcp", 80)
    assert key == bytes([10, 96, 0, 1, 6, 0, 0, 0, 0, 80, 0, 0])  # each field padded to 4 bytes
    goto = expr.Verdict(expr.NFT_GOTO, "svc")
    ours = objects.new_elements("ip", "t", "__map%d", [(key, goto)], set_id=5).body[4:]
    verdict = {"attrs": [("NFTA_VERDICT_CODE", expr.NFT_GOTO), ("NFTA_VERDICT_CHAIN", "svc")]}
    element = {
        "attrs": [
            ("NFTA_SET_ELEM_KEY", {"attrs": [("NFTA_DATA_VALUE", key)]}),
            ("NFTA_SET_ELEM_DATA", {"attrs": [("NFTA_DATA_VERDICT", verdict)]}),
        ]
    }
    theirs = [
        ["NFTA_SET_ELEM_LIST_TABLE", "t"],
        ["NFTA_SET_ELEM_LIST_SET", "__map%d"],
        ["NFTA_SET_ELEM_LIST_ELEMENTS", [element]],
        ["NFTA_SET_ELEM_LIST_SET_ID", 5],
    ]
    assert _without_nested_flag(ours).hex() == _pyroute2(nft_set_elem_list_msg, theirs, 2).hex()


def test_batch_frame_names_the_nftables_subsystem() -> None:
    begin, end = objects.batch_frame()
    assert (begin.kind, end.kind) == (0x10, 0x11)
    assert begin.body == end.body == bytes([0, 0, 0, 10])  # AF_UNSPEC, version 0, res_id 10 big-endian


# -- the kernel reads the rules back as nft would write them ------------------------------------------------


def _ruleset(ns: Namespace) -> str:
    output: str = ns.run(["nft", "list", "ruleset"]).stdout
    return output


@pytest.mark.skipif(shutil.which("nft") is None, reason="needs the nft binary to read rules back")
def test_recipes_read_back_as_nft_words(netns_pair: tuple[Namespace, Namespace]) -> None:
    a, _ = netns_pair
    a.call(rules.masquerade, "eth0", src="10.244.0.0/16", not_dst="10.244.0.0/16", table="t_masq")
    a.call(rules.dnat_service, "web", "10.96.0.10", 80, [("10.0.0.2", 8080), ("10.0.0.3", 8080)])
    a.call(rules.dnat_service, "none", "10.96.0.11", 53, [], proto="udp")
    a.call(rules.dnat_service, "gone", "10.96.0.12", 80, [])
    a.call(rules.port_forward, 8080, "fd00::2", 80)
    a.call(rules.drop_ingress, "eth0", 0.25)
    text = " ".join(_ruleset(a).split())
    expected = [
        'oifname "eth0" ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 masquerade',
        "type nat hook postrouting priority srcnat",
        "ip daddr 10.96.0.10 tcp dport 80 goto backends",
        "numgen random mod 2 0 dnat ip to 10.0.0.2:8080",
        "dnat ip to 10.0.0.3:8080",
        "ct state new reject }",  # icmpx port-unreachable: inet's default
        "ct state new reject with tcp reset",
        "fib daddr type local meta nfproto ipv6 tcp dport 8080 dnat ip6 to [fd00::2]:80",
        "fib daddr type local ip6 daddr != ::1 tcp dport 8080 dnat ip6 to [fd00::2]:80",
        'type filter hook ingress device "eth0" priority filter',
        f"numgen random mod 4294967295 < {rules.loss_threshold(0.25)} drop",
    ]
    missing = [words for words in expected if words not in text]
    assert not missing, f"{missing} not in:\n{_ruleset(a)}"
