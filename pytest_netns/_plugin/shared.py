"""Namespaces a test uses but did not make (a module- or session-scoped topology): each test gets them as it found them.

A shared topology is whatever the test's fixtures hold that the plugin's
own fixtures did not make for this test: a ``Topology`` (its links and
segments), a ``Link`` or ``Segment``, a ``NamespacePair`` or
``BridgeMembers`` from ``presets``, a ``Namespace``, or a tuple, list or dict
of these.  For each test that uses one:

* its namespaces are recorded for this test too (``--netns-pcap``), so a
  failing test gets its pcap files, packet ladder and topology dump;
* after the test's teardown, what it changed through the ``Link`` and
  ``Segment`` objects is put back: impairments made since it started are
  reverted, a link or segment (or a segment member) it took down comes back
  up (or goes down again), an MTU it changed is restored.  Partitions are
  healed and removed after every test anyway (``_plugin/partition.py``);
* what it changed around those objects (``ns.down(iface)``, ``ns.set_mtu``,
  or an impairment the fixture made and the test reverted) is left in place,
  with a warning naming it.  Routes, addresses, sysctls, nftables rules and
  processes started inside are neither checked nor put back.

The state is read per interface of the shared links and segments (one
rtnetlink query each, ~25 us) when the test starts and after its teardown; a
topology that is torn down with the test (a function-scoped one) is not
put back.  Objects made by the plugin's fixtures for this test cost nothing.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from .fixtures import test_namespaces

if TYPE_CHECKING:
    from .._net.impair import Impairment
    from ..namespace import Namespace
    from ..topology import Link, Segment

    Network = Link | Segment

Interface = tuple["Namespace", str]
State = tuple[bool, int]  # administratively up, MTU


@dataclass
class Snapshot:
    """A shared link or segment as the test found it."""

    network: Network
    is_up: bool
    impairments: list[Impairment]
    interfaces: dict[Interface, State] = field(default_factory=dict)


@dataclass
class Shared:
    """What one test uses of shared topologies."""

    namespaces: list[Namespace]
    snapshots: list[Snapshot]


SHARED = pytest.StashKey[Shared]()


# -- finding what the test uses ------------------------------------------------------------------


def find(values: list[object], owned: set[int]) -> tuple[list[Namespace], list[Network]]:
    """The namespaces and networks in fixture values, except those of namespaces in ``owned`` (ids)."""
    from ..namespace import Namespace

    topology = sys.modules.get("pytest_netns.topology.builder")
    links = sys.modules.get("pytest_netns.topology.links")
    namespaces: dict[int, Namespace] = {}
    networks: dict[int, Network] = {}

    def add_namespace(ns: Namespace) -> None:
        if id(ns) not in owned:
            namespaces.setdefault(id(ns), ns)

    def add_network(net: Network) -> None:
        members = _members(net)
        if all(id(ns) in owned for ns in members):
            return
        networks.setdefault(id(net), net)
        for ns in members:
            add_namespace(ns)

    def visit(value: object, depth: int) -> None:
        if isinstance(value, Namespace):
            add_namespace(value)
        elif topology is not None and isinstance(value, topology.Topology):
            for ns in value.namespaces:
                add_namespace(ns)
            for net in [*value.links, *value.segments]:
                add_network(net)
        elif links is not None and isinstance(value, (links.Link, links.Segment)):
            add_network(value)
        elif isinstance(value, (tuple, list)) and depth < 2:
            for part in value:
                visit(part, depth + 1)
            for attribute in ("link", "segment"):  # NamespacePair.link, BridgeMembers.segment
                visit(getattr(value, attribute, None), depth + 1)
        elif isinstance(value, dict) and depth < 2:
            for part in value.values():
                visit(part, depth + 1)

    for value in values:
        visit(value, 0)
    return list(namespaces.values()), list(networks.values())


# -- reading and putting back ---------------------------------------------------------------------


def interfaces(net: Network) -> list[Interface]:
    """The interfaces a link or segment is made of: both ends; every member's, every port, the bridge."""
    from ..topology.links import Link

    if isinstance(net, Link):
        return list(net.ends)
    found: list[Interface] = [(member, net.interface(member)) for member in net.members]
    found += [(net.namespace, net.port(member)) for member in net.members]
    return [*found, (net.namespace, net.bridge)]


def read(net: Network) -> dict[Interface, State]:
    from .._kernel import rtnl
    from .._kernel.handle import handle_of

    state = {}
    for ns, ifname in interfaces(net):
        info = handle_of(ns).rtnl.link_by_name(ifname)
        state[(ns, ifname)] = (bool(info["flags"] & rtnl.IFF_UP), info["mtu"])
    return state


def snapshot(net: Network) -> Snapshot:
    return Snapshot(net, net.is_up, net.impairments, read(net))


def alive(net: Network) -> bool:
    """Whether the link or segment outlived the test (its topology was not torn down with it)."""
    return not any(ns.closed for ns in _members(net))


def _members(net: Network) -> list[Namespace]:
    """The namespaces a link or segment is in: its members, and a segment's bridge namespace."""
    from ..topology.links import Segment

    return net.members + ([net.namespace] if isinstance(net, Segment) else [])


def put_back(item: pytest.Item, before: Snapshot) -> None:
    """Undo what the test changed through the network's object; warn about what it changed around it."""
    __tracebackhide__ = True
    from ..topology.links import Segment

    net = before.network
    for impairment in reversed(net.impairments):
        if impairment not in before.impairments:
            impairment.revert()
    if before.is_up != net.is_up:
        net.up() if before.is_up else net.down()
    if isinstance(net, Segment):
        now = read(net)
        for member in net.members:
            port = (net.namespace, net.port(member))
            if now[port][0] != before.interfaces[port][0]:
                net.up(member) if before.interfaces[port][0] else net.down(member)
    first = interfaces(net)[-1 if isinstance(net, Segment) else 0]  # the bridge, or the first end
    if read(net)[first][1] != before.interfaces[first][1]:
        net.set_mtu(before.interfaces[first][1])
    left = [
        f"{impairment!r} (made before the test) reverted" for impairment in before.impairments if not impairment.active
    ]
    now = read(net)
    for (ns, ifname), (was_up, was_mtu) in before.interfaces.items():
        is_up, mtu = now[(ns, ifname)]
        if is_up != was_up:
            left.append(f"{ns.name}:{ifname} {'up' if is_up else 'down'} (it was {'up' if was_up else 'down'})")
        if mtu != was_mtu:
            left.append(f"{ns.name}:{ifname} at MTU {mtu} (it was {was_mtu})")
    for what in left:
        warnings.warn(
            pytest.PytestWarning(
                f"{item.name} left {what} on a topology that outlives the test (a module- or session-scoped "
                "fixture): the tests after it inherit it. Only changes made through its Link and Segment objects "
                "(impair, down, up, set_mtu) are put back after each test."
            ),
            stacklevel=1,
        )


# -- hooks -------------------------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    result = yield
    funcargs: dict[str, Any] = getattr(item, "funcargs", {})
    if funcargs:
        owned = {id(ns) for ns in test_namespaces(item)}
        namespaces, networks = find(list(funcargs.values()), owned)
        if namespaces:
            from . import pcap

            item.stash[SHARED] = Shared(namespaces, [snapshot(net) for net in networks])
            pcap.record_shared(item, namespaces)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, None, None]:
    __tracebackhide__ = True
    try:
        return (yield)
    finally:
        shared = item.stash.get(SHARED, None)
        if shared is not None:
            del item.stash[SHARED]
            for before in shared.snapshots:
                if alive(before.network):
                    put_back(item, before)
