"""Docker's networks: names, subnets from the default address pools, and the host's rules for each bridge.

A ``Network`` is a bridge in the Docker host's namespace with the gateway
address (``.1``).  Each network gets, in one nftables transaction on the host:

* ``ip saddr <subnet> oifname != <bridge> masquerade`` (Docker's POSTROUTING rule);
* the hairpin masquerade of DNAT-ed connections going back onto the bridge;
* Docker's isolation (``DOCKER-ISOLATION-STAGE-1/2``): ``forward`` has
  ``iifname <bridge> oifname != <bridge> goto stage2`` and ``stage2`` has
  ``oifname <bridge> drop`` for every bridge, the default one included, so
  nothing is routed from one bridge to another.  Rules are only ever appended
  (a transaction that deletes waits for an RCU grace period).  Traffic between
  bridges is routed, not bridged: no ``br_netfilter`` is involved.

What each network's DNS knows (``_records``, ``_reverse``) is a snapshot rebuilt
after every change and read without locks by the DNS server thread.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from ..._kernel import nft as _nft
from ..._kernel.handle import handle_of
from ..._kernel.nft import expr as _expr
from ..._kernel.nft import statements as _words
from ..._net import rules as _rules
from ..._net.bridge import Bridge
from ...namespace import Namespace

IPv4 = ipaddress.IPv4Address
IPv4Network = ipaddress.IPv4Network

DEFAULT_NETWORK = "bridge"
#: Docker's own networks: ``bridge`` is the default bridge, ``host`` and ``none`` are not modelled.
RESERVED_NETWORKS = ("bridge", "host", "none")
#: Docker's rule for network names.
NAME_RULE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
#: The host's table holding the isolation chains.
ISOLATION_TABLE = f"{_nft.TABLE_PREFIX}_docker_isolation"
#: ``meta iifname`` (NFT_META_IIFNAME in linux/netfilter/nf_tables.h).
META_IIFNAME = 6


def default_pools() -> Iterator[IPv4Network]:
    """Docker's default address pools in order: 172.17-31.0.0/16, then 192.168.0.0/16 cut into /20s."""
    for second in range(17, 32):
        yield IPv4Network(f"172.{second}.0.0/16")
    yield from IPv4Network("192.168.0.0/16").subnets(new_prefix=20)


@dataclass(eq=False)
class Network:
    """A Docker network: ``name``, ``subnet``, ``gateway`` (``.1``, the bridge's address), ``bridge`` (its device).

    ``id`` is a 64-hex identifier as Docker shows (here derived from the name);
    a user-defined network's bridge is ``br-<id[:12]>``, the default one's ``docker0``.
    """

    name: str
    subnet: IPv4Network
    bridge: str
    id: str
    _device: Bridge = field(repr=False)
    #: The next host number to hand out.
    _next: int = field(default=2, repr=False)
    #: Name (lower case) -> addresses, and address -> name, for the embedded DNS (snapshots).
    _records: Mapping[str, tuple[IPv4, ...]] = field(default_factory=dict, repr=False)
    _reverse: Mapping[IPv4, str] = field(default_factory=dict, repr=False)
    _members: list[tuple[str, tuple[str, ...], IPv4]] = field(default_factory=list, repr=False)

    @property
    def gateway(self) -> IPv4:
        return self.subnet[1]

    @property
    def user_defined(self) -> bool:
        """False for the default bridge, which has no embedded DNS."""
        return self.name != DEFAULT_NETWORK

    def _allocate(self) -> IPv4:
        """The next free address (ValueError when the subnet is full)."""
        if self._next >= self.subnet.num_addresses - 1:
            raise ValueError(f"no free address left in network {self.name!r} ({self.subnet})")
        address = self.subnet[self._next]
        self._next += 1
        return address

    def _join(self, name: str, aliases: Sequence[str], address: IPv4) -> None:
        """A container joined with ``aliases`` at ``address``: new DNS snapshots (the next answer sees it)."""
        self._members.append((name, tuple(aliases), address))
        if not self.user_defined:
            return  # the default bridge resolves no container names
        records: dict[str, tuple[IPv4, ...]] = {}
        reverse: dict[IPv4, str] = {}
        for member, names, ip in self._members:
            for key in dict.fromkeys(n.lower() for n in (member, *names)):
                records[key] = (*records.get(key, ()), ip)
            reverse[ip] = f"{member.lower()}.{self.name.lower()}"
        self._records = MappingProxyType(records)
        self._reverse = MappingProxyType(reverse)


def network_id(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def check_network_name(name: object, taken: Mapping[str, Network]) -> str:
    """A new network's name: Docker's rule, not reserved, not taken (ValueError naming it)."""
    if not isinstance(name, str) or not NAME_RULE.fullmatch(name):
        raise ValueError(f"network name {name!r} is invalid: Docker's rule is [a-zA-Z0-9][a-zA-Z0-9_.-]*")
    if name in taken or name in RESERVED_NETWORKS:
        raise ValueError(f"network name {name!r} is already used (Docker's own: {', '.join(RESERVED_NETWORKS)})")
    return name


def choose_subnet(subnet: object, used: Mapping[str, IPv4Network]) -> IPv4Network:
    """``subnet`` checked, or the first of Docker's default pools overlapping nothing in ``used`` (name -> subnet)."""
    if subnet is None:
        for candidate in default_pools():
            if not any(candidate.overlaps(other) for other in used.values()):
                return candidate
        raise ValueError("no free subnet left in Docker's default address pools")
    try:
        network = IPv4Network(subnet)
    except (ValueError, TypeError):
        raise ValueError(f"subnet {subnet!r} is not an IPv4 network (host bits must be 0)") from None
    if network.prefixlen > 30:
        raise ValueError(f"subnet {subnet!r} is too small: a network needs a gateway and a container (/30 at most)")
    if network.is_loopback or network.is_multicast or network.is_link_local or network.is_unspecified:
        raise ValueError(f"subnet {subnet!r} is not a unicast network a bridge can use")
    for owner, other in used.items():
        if network.overlaps(other):
            raise ValueError(f"subnet {subnet!r} overlaps {other} ({owner})")
    return network


def _iifname(name: str, op: int = _expr.CMP_EQ) -> list[_expr.Expr]:
    return [_expr.Meta(META_IIFNAME), _expr.Cmp(op, name.encode().ljust(_words.IFNAMSIZ, b"\0"))]


def isolation_rules(bridge: str) -> tuple[_nft.Rule, _nft.Rule]:
    """``forward``: ``iifname B oifname != B goto stage2``; ``stage2``: ``oifname B drop``."""
    forward = [*_iifname(bridge), *_words.oifname(bridge, _expr.CMP_NEQ), _expr.Verdict(_expr.NFT_GOTO, "stage2")]
    stage2 = [*_words.oifname(bridge), _expr.Verdict(_expr.NF_DROP)]
    return forward, stage2


def install_bridge_rules(
    host: Namespace, network: Network, *, hairpin_table: str, first_isolated: Sequence[Network] = ()
) -> None:
    """Masquerade, hairpin and isolation rules for ``network``, in one transaction in ``host``.

    ``first_isolated``: the networks that exist but have no isolation rules yet (the table is made then).
    """
    batch = _nft.Batch()
    subnet = network.subnet
    if network.user_defined:
        masquerade = _rules.masquerade_rule(not_oifname=network.bridge, src=subnet)
        batch.add_rule("inet", _rules.NAT_TABLE, "postrouting", masquerade)
        batch.add_rule("inet", hairpin_table, "postrouting", _rules.hairpin_masquerade_rule(subnet, network.bridge))
    if first_isolated:
        batch.add_table("inet", ISOLATION_TABLE)
        batch.add_chain("inet", ISOLATION_TABLE, "forward", hook=_nft.HOOK_FORWARD, priority=_nft.PRIO_FILTER)
        batch.add_chain("inet", ISOLATION_TABLE, "stage2")
    for each in [*first_isolated, network]:
        forward, stage2 = isolation_rules(each.bridge)
        batch.add_rule("inet", ISOLATION_TABLE, "forward", forward)
        batch.add_rule("inet", ISOLATION_TABLE, "stage2", stage2)
    with handle_of(host).entered(), _nft.operation(f"isolating Docker network {network.name!r} ({subnet})") as sock:
        batch.commit(sock)


def install_nat_tables(host: Namespace, subnet: IPv4Network, bridge: str, *, hairpin_table: str) -> None:
    """A fresh host's masquerade and hairpin tables with the default bridge's rules, in one transaction."""
    batch = _nft.Batch()
    rules = (
        (_rules.NAT_TABLE, _rules.masquerade_rule(not_oifname=bridge, src=subnet)),
        (hairpin_table, _rules.hairpin_masquerade_rule(subnet, bridge)),
    )
    for table, rule in rules:
        batch.add_table("inet", table)
        batch.add_chain("inet", table, "postrouting", hook=_nft.HOOK_POSTROUTING, priority=_nft.PRIO_SRCNAT, kind="nat")
        batch.add_rule("inet", table, "postrouting", rule)
    with handle_of(host).entered(), _nft.operation(f"masquerading {subnet} leaving {bridge!r}") as sock:
        batch.commit(sock)


def install_loopback_masquerade(host: Namespace, bridge: str) -> None:
    """``ip saddr 127.0.0.0/8 oifname <bridge> masquerade``: the host's own connections DNAT-ed from 127.0.0.1."""
    rule = _rules.masquerade_rule(oifname=bridge, src=IPv4Network("127.0.0.0/8"))
    batch = _nft.Batch()
    batch.add_rule("inet", _rules.NAT_TABLE, "postrouting", rule)
    with handle_of(host).entered(), _nft.operation(f"masquerading 127.0.0.0/8 onto {bridge!r}") as sock:
        batch.commit(sock)
