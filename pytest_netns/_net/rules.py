"""nftables recipes: the rules each model needs, as short functions over ``_kernel.nft``.

A recipe returns expressions (``*_rule``, ``spread``) or a table value
(``*_table``); the installers below check their arguments, build it and
install it in the calling thread's namespace in one transaction, returning
an :class:`~pytest_netns._kernel.nft.NftTable` whose ``remove()`` deletes
the rules again.  Installing again with the same identity (service name,
published port, interface) replaces the table atomically: traffic never
sees a moment without rules.  Masquerade rules are appended to one shared
table instead.
"""

from __future__ import annotations

import errno
import ipaddress
import math
import socket
from collections.abc import Sequence
from typing import Literal

from .._kernel import nft
from .._kernel import validate as _validate
from .._kernel.nft import Chain, NftTable, Rule, Table
from .._kernel.nft import expr as _expr
from .._kernel.nft import statements as _words
from .._kernel.nft.batch import check_table_name
from ..errors import KernelError

__all__ = [
    "NAT_TABLE",
    "Backend",
    "dnat_service",
    "drop_ingress",
    "duplicate_egress",
    "egress_duplicate_tables",
    "hairpin_masquerade",
    "ingress_drop_table",
    "masquerade",
    "partition_table",
    "port_forward",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Backend = tuple[str | IPAddress, int]
Proto = Literal["tcp", "udp"]

#: The shared ``inet`` table that holds the masquerade rules.
NAT_TABLE = f"{nft.TABLE_PREFIX}_nat"


def _nat_hooks(incoming: Rule, local: Rule) -> list[Chain]:
    """nat chains on prerouting (connections from other namespaces) and output (the namespace's own)."""
    return [
        Chain("prerouting", [incoming], hook=nft.HOOK_PREROUTING, priority=nft.PRIO_DSTNAT, type="nat"),
        Chain("output", [local], hook=nft.HOOK_OUTPUT, priority=nft.PRIO_DSTNAT, type="nat"),
    ]


# -- masquerade ---------------------------------------------------------------------------------------


def masquerade_rule(
    *,
    oifname: str | None = None,
    not_oifname: str | None = None,
    src: IPNetwork | None = None,
    dst: IPNetwork | None = None,
    not_dst: IPNetwork | None = None,
) -> list[_expr.Expr]:
    """``[oifname X] [oifname != Y] [ip saddr S] [ip daddr D] [ip daddr != N] masquerade``."""
    rule: list[_expr.Expr] = []
    if oifname is not None:
        rule += _words.oifname(oifname)
    if not_oifname is not None:
        rule += _words.oifname(not_oifname, _expr.CMP_NEQ)
    first = next((net for net in (src, dst, not_dst) if net is not None), None)
    if first is not None:
        rule += _words.nfproto(first.version)  # an IP header field needs it first (and a /0 only this)
    matches: list[tuple[IPNetwork | None, Literal["saddr", "daddr"], int]] = [
        (src, "saddr", _expr.CMP_EQ),
        (dst, "daddr", _expr.CMP_EQ),
        (not_dst, "daddr", _expr.CMP_NEQ),
    ]
    for network, field, op in matches:
        if network is not None and network.prefixlen:
            rule += _words.addr(network, field, op)
    return [*rule, _expr.Masq()]


def masquerade(
    oifname: str | None = None,
    *,
    src: str | IPNetwork | None = None,
    not_oifname: str | None = None,
    dst: str | IPNetwork | None = None,
    not_dst: str | IPNetwork | None = None,
    table: str = NAT_TABLE,
) -> NftTable:
    """Masquerade traffic leaving via ``oifname`` and/or coming from ``src``.

    Appends one rule to the ``postrouting`` chain (type nat, priority
    srcnat) of the ``inet`` table ``table``, creating both if needed; each
    call adds a rule, ``remove()`` on the returned handle removes them all.

    * ``oifname``: only packets leaving through this interface.
    * ``src``, ``dst``: only packets from / to this network; without any
      network both IPv4 and IPv6 are masqueraded.  ``not_dst``: not to it.
    * ``not_oifname``: exclude packets leaving through this interface
      (Docker's ``-s 172.17.0.0/16 ! -o docker0``).

    With no argument at all, everything leaving the namespace is
    masqueraded.  ``oifname`` is matched by name, so the interface does not
    need to exist yet.
    """
    if oifname is not None:
        _validate.ifname(oifname, "oifname")
    if not_oifname is not None:
        _validate.ifname(not_oifname, "not_oifname")
    nets = {key: _to_network(value, key) for key, value in (("src", src), ("dst", dst), ("not_dst", not_dst))}
    versions = {net.version for net in nets.values() if net is not None}
    if len(versions) > 1:
        raise ValueError(f"src {src!r}, dst {dst!r} and not_dst {not_dst!r} mix IPv4 and IPv6")
    check_table_name(table)
    rule = masquerade_rule(oifname=oifname, not_oifname=not_oifname, **nets)
    doing = "masquerading traffic" + "".join(
        f" {label} {value}"
        for label, value in (
            ("leaving through", repr(oifname) if oifname is not None else None),
            ("not leaving through", repr(not_oifname) if not_oifname is not None else None),
            ("from", nets["src"]),
            ("to", nets["dst"]),
            ("not to", nets["not_dst"]),
        )
        if value is not None
    )
    post = Chain("postrouting", [rule], hook=nft.HOOK_POSTROUTING, priority=nft.PRIO_SRCNAT, type="nat")
    return nft.append(Table("inet", table, [post]), doing)


def hairpin_masquerade_rule(src: IPNetwork, bridge: str) -> list[_expr.Expr]:
    """``ip saddr <src> oifname <bridge> ct status dnat masquerade``."""
    return [
        *_words.nfproto(src.version),
        *_words.addr(src, "saddr"),
        *_words.oifname(bridge),
        *_words.ct_status_dnat(),
        _expr.Masq(),
    ]


def hairpin_masquerade(src: str | IPNetwork, bridge: str, *, table: str = NAT_TABLE) -> NftTable:
    """Masquerade a DNAT-ed connection from ``src`` that goes back out onto ``bridge``.

    A member of the bridge reaching a port published to another member (or
    to itself) would get the reply bridged straight back, which only
    ``br_netfilter`` translates; seen from the bridge's own address, the
    reply returns through this namespace's conntrack (Docker's userland
    proxy shows the same peer).  Frames bridged between members never reach
    the chain where bridged frames skip netfilter.  Appended to the shared
    masquerade table, as :func:`masquerade`'s rules are.
    """
    _validate.ifname(bridge, "bridge")
    network = _to_network(src, "src")
    if network is None:
        raise ValueError("src None is not an IP network")
    check_table_name(table)
    rule = hairpin_masquerade_rule(network, bridge)
    post = Chain("postrouting", [rule], hook=nft.HOOK_POSTROUTING, priority=nft.PRIO_SRCNAT, type="nat")
    doing = f"masquerading DNAT-ed connections from {network} back onto {bridge!r}"
    return nft.append(Table("inet", table, [post]), doing)


# -- services: DNAT spread over backends --------------------------------------------------------------


def spread(backends: Sequence[tuple[IPAddress, int]], how: Literal["random", "round_robin"]) -> list[Rule]:
    """One rule per backend so that each new connection picks one uniformly.

    Rule i fires with probability 1/(n-i) among connections that reached
    it (the kube-proxy cascade), so every backend gets 1/n: one fresh
    ``numgen random mod (n-i)`` per rule.  With ``numgen inc`` each rule's
    counter only advances for connections that reach it, which turns the
    same cascade into a strict round robin.
    """
    kind = _expr.NG_RANDOM if how == "random" else _expr.NG_INCREMENTAL
    rules: list[Rule] = []
    for index, (address, port) in enumerate(backends):
        remaining = len(backends) - index
        pick = _words.numgen_is(remaining, 0, kind) if remaining > 1 else []
        rules.append(pick + _words.dnat_to(address, port))
    return rules


def service_table(
    name: str,
    vip: IPAddress,
    port: int,
    backends: Sequence[tuple[IPAddress, int]],
    proto: Proto,
    how: Literal["random", "round_robin"],
) -> Table:
    """``<vip> <proto> dport <port> goto backends``; backends spread connections, or refuse them when empty."""
    match = _words.nfproto(vip.version) + _words.addr(ipaddress.ip_network(vip), "daddr") + _words.l4_dport(proto, port)
    goto = [*match, _expr.Verdict(_expr.NFT_GOTO, "backends")]
    chosen = spread(backends, how) if backends else [_words.reject_new(proto)]
    return Table("inet", f"{nft.TABLE_PREFIX}_svc_{name}", [*_nat_hooks(goto, goto), Chain("backends", chosen)])


def dnat_service(
    name: str,
    vip: str | IPAddress,
    port: int,
    backends: Sequence[Backend],
    *,
    proto: Proto = "tcp",
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
    _validate.check_name(name, what="service name", rule=_validate.NFT)
    address = _to_address(vip, "vip")
    _check_port(port)
    _check_proto(proto)
    if spread not in ("random", "round_robin"):
        raise ValueError(f"spread {spread!r} is not 'random' or 'round_robin'")
    targets = _check_backends(backends, address.version)
    doing = f"installing service {name!r} ({address} {proto}/{port} to {len(targets)} backends)"
    return nft.replace(service_table(name, address, port, targets, proto, spread), doing)


# -- published ports ----------------------------------------------------------------------------------


def port_forward(
    port: int,
    to_addr: str | IPAddress,
    to_port: int | None = None,
    *,
    proto: Proto = "tcp",
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
        _validate.check_name(name, what="name", rule=_validate.NFT)

    family = _words.nfproto(target.version)
    if host is not None:
        family += _words.addr(ipaddress.ip_network(host), "daddr")
    action = _words.l4_dport(proto, port) + _words.dnat_to(target, target_port)
    loopback = ipaddress.ip_network("127.0.0.0/8" if target.version == 4 else "::1/128")
    if host is not None:
        incoming = local = family + action
    else:
        incoming = _words.daddr_is_local() + family + action
        local = _words.daddr_is_local() + family + _words.addr(loopback, "daddr", _expr.CMP_NEQ) + action
    table = Table("inet", f"{nft.TABLE_PREFIX}_fwd_{name or f'{proto}_{port}'}", _nat_hooks(incoming, local))
    to = f"[{target}]:{target_port}" if target.version == 6 else f"{target}:{target_port}"
    return nft.replace(table, f"forwarding {proto} port {port} to {to}")


# -- loss on a link -----------------------------------------------------------------------------------


def loss_threshold(probability: float) -> int:
    """numgen draw below which a packet is dropped (draws are 0..MOD-1)."""
    return min(_words.NG_MAX_MOD, round(probability * _words.NG_MAX_MOD))


def ingress_drop_table(ifname: str) -> NftTable:
    """The handle of :func:`drop_ingress`'s table for ``ifname`` (whether or not it exists)."""
    return NftTable("netdev", f"{nft.TABLE_PREFIX}_loss_{ifname}")


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
    _validate.ifname(ifname)
    _check_probability(probability)
    doing = f"making {ifname!r} drop arriving packets with probability {probability:g}"
    try:
        socket.if_nametoindex(ifname)  # resolved in the calling thread's netns
    except OSError:
        raise KernelError(errno.ENODEV, doing, f"no interface {ifname!r} in this network namespace") from None
    rule = [*_words.random_below(loss_threshold(probability)), _expr.Verdict(_expr.NF_DROP)]
    ingress = Chain("ingress", [rule], hook=nft.HOOK_INGRESS, device=ifname)
    return nft.replace(Table("netdev", ingress_drop_table(ifname).name, [ingress]), doing)


def egress_duplicate_tables(ifname: str) -> list[NftTable]:
    """The handles of :func:`duplicate_egress`'s tables for ``ifname`` (whether or not they exist)."""
    return [NftTable(family, f"{nft.TABLE_PREFIX}_dup_{ifname}") for family in ("ip", "ip6")]


def duplicate_egress(ifname: str, probability: float) -> list[NftTable]:
    """Send a second copy of each unicast IP packet leaving through ``ifname`` with ``probability``.

    An ``ip`` and an ``ip6`` table ``pytest_netns_dup_<ifname>`` (the
    kernel's ``dup`` exists for those families only, not ``inet``) with a
    filter chain on postrouting: ``oifname <ifname> fib daddr type unicast
    numgen random mod 4294967295 < p * 4294967295 dup to rt ip nexthop
    device meta oif``.  The copy goes to the packet's own next hop out of
    the same device, so it crosses the link as the original does, shaped
    and lost like it; it is never copied again.  Forwarded packets are
    copied too; ARP and neighbour discovery's multicast are not.

    Calling it again replaces the probability; the handles' ``remove()``
    stops it.  The interface must exist in the calling thread's namespace.
    """
    _validate.ifname(ifname)
    _check_probability(probability)
    doing = f"making {ifname!r} send copies of leaving packets with probability {probability:g}"
    try:
        socket.if_nametoindex(ifname)  # resolved in the calling thread's netns
    except OSError:
        raise KernelError(errno.ENODEV, doing, f"no interface {ifname!r} in this network namespace") from None
    handles = []
    for version, handle in zip((4, 6), egress_duplicate_tables(ifname), strict=True):
        rule = [
            *_words.oifname(ifname),
            *_words.daddr_is_unicast(),
            *_words.random_below(loss_threshold(probability)),
            *_words.dup_to_nexthop(version),
        ]
        post = Chain("postrouting", [rule], hook=nft.HOOK_POSTROUTING, priority=nft.PRIO_FILTER)
        handles.append(nft.replace(Table(handle.family, handle.name, [post]), doing))
    return handles


# -- partitions: silent (or refusing) cuts between namespaces ---------------------------------------


def partition_table(name: str, blocked: Sequence[IPAddress], *, reject: bool) -> Table:
    """What one namespace of a partition installs: nothing from ``blocked`` addresses gets in.

    An ``inet`` table with a filter chain on prerouting at raw priority
    (before conntrack, NAT and routing), so it acts on the receiving side
    only: the sender's ``sendto`` succeeds, as over a cut cable, and
    routed packets are dropped by the namespace they are routed to.

        iif "lo" accept
        icmpv6 type nd-router-solicit-nd-redirect accept
        [reject:] tcp flags rst accept; icmp(v6) type destination-unreachable accept
        ip[6] saddr <each blocked address> goto cut

    Neighbour discovery passes as ARP does (ARP is not IP), so IPv6 behaves
    as IPv4 and the heal is instant.  Chain ``cut`` drops, or with
    ``reject`` answers a TCP reset or an ICMP port unreachable (a connect
    is refused at once); those answers are let in here, so that a reject
    reaches its sender even when the sender blocks the rejecting side too.
    """
    prerouting: list[Rule] = [
        [*_words.iif_is_loopback(), _expr.Verdict(_expr.NF_ACCEPT)],
        [*_words.icmpv6_neighbour_discovery(), _expr.Verdict(_expr.NF_ACCEPT)],
    ]
    if reject:
        prerouting += [
            [*_words.tcp_reset(), _expr.Verdict(_expr.NF_ACCEPT)],
            [*_words.destination_unreachable(4), _expr.Verdict(_expr.NF_ACCEPT)],
            [*_words.destination_unreachable(6), _expr.Verdict(_expr.NF_ACCEPT)],
        ]
    prerouting += [[*_words.saddr_is(address), _expr.Verdict(_expr.NFT_GOTO, "cut")] for address in blocked]
    cut: list[Rule] = [*_words.reject_refused()] if reject else [[_expr.Verdict(_expr.NF_DROP)]]
    chains = [Chain("prerouting", prerouting, hook=nft.HOOK_PREROUTING, priority=nft.PRIO_RAW), Chain("cut", cut)]
    return Table("inet", name, chains)


# -- argument checks: everything is checked before the kernel is touched --------------------------------


def _check_probability(probability: object) -> float:
    if (
        isinstance(probability, bool)
        or not isinstance(probability, (int, float))
        or not math.isfinite(probability)
        or not 0.0 <= probability <= 1.0
    ):
        raise ValueError(f"probability {probability!r} is not between 0 and 1")
    return float(probability)


def _check_proto(proto: object) -> Proto:
    if proto not in ("tcp", "udp"):
        raise ValueError(f"protocol {proto!r} is not 'tcp' or 'udp'")
    return proto


def _check_port(port: object, what: str = "port") -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"{what} {port!r} is not a port number (1-65535)")
    return port


def _to_address(value: object, what: str) -> IPAddress:
    try:
        return ipaddress.ip_address(value)  # type: ignore[arg-type]
    except ValueError:
        raise ValueError(f"{what} {value!r} is not an IP address") from None


def _to_network(value: object, what: str) -> IPNetwork | None:
    if value is None:
        return None
    try:
        return ipaddress.ip_network(value)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        raise ValueError(f"{what} {value!r} is not an IP network (host bits must be 0)") from None


def _check_backends(backends: Sequence[Backend], version: int) -> list[tuple[IPAddress, int]]:
    if isinstance(backends, (str, bytes)) or not isinstance(backends, Sequence):
        raise ValueError(f"backends {backends!r} must be a sequence of (ip, port)")
    targets = []
    for backend in backends:
        if not isinstance(backend, (tuple, list)) or len(backend) != 2:
            raise ValueError(f"backend {backend!r} is not an (ip, port) pair")
        address = _to_address(backend[0], "backend address")
        if address.version != version:
            raise ValueError(f"backend address {backend[0]!r} is not IPv{version} like the vip")
        targets.append((address, _check_port(backend[1], "backend port")))
    return targets
