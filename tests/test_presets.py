"""``pytest_netns.presets``: the pair, bridge and NAT networks as context managers, without the fixtures."""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import pytest

from pytest_netns import BridgeMembers, Namespace, NamespacePair, NatNetwork, Segment, Topology, presets
from pytest_netns.presets.simple import NetworkSettings


class Boom(Exception):
    pass


def released(namespaces: list[Namespace]) -> bool:
    """Every namespace closed, and this process holds none of them any more."""
    held = {os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd") if _link(fd)}
    return all(ns.closed for ns in namespaces) and not {f"net:[{ns.inode}]" for ns in namespaces} & held


def _link(fd: str) -> bool:
    try:
        os.readlink(f"/proc/self/fd/{fd}")
        return True
    except OSError:
        return False


def peer_seen_by(server: Namespace, client: Namespace, address: str) -> str:
    """The source address ``server`` sees on a UDP datagram ``client`` sends to ``address``."""
    with server:
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with client:
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with receiver, sender:
        receiver.bind((address, 9999))
        receiver.settimeout(2)
        sender.sendto(b"hello", (address, 9999))
        return str(receiver.recvfrom(16)[1][0])


def test_pair_is_what_netns_pair_yields() -> None:
    with presets.pair() as pair:
        a, b = pair
        assert isinstance(pair, NamespacePair) and (pair.a, pair.b) == (a, b)
        assert [str(x) for x in a.addresses("eth0") if not x.is_link_local] == ["10.0.0.1/24", "fd00::1/64"]
        assert [str(x) for x in b.addresses("eth0") if not x.is_link_local] == ["10.0.0.2/24", "fd00::2/64"]
        assert a.ping("10.0.0.2") and b.ping("fd00::1")
    assert released([a, b])


def test_pair_takes_the_marker_arguments() -> None:
    with presets.pair(mtu=1000, subnet="172.16.0.0/30", ipv6=False) as (a, b):
        assert a.mtu("eth0") == b.mtu("eth0") == 1000
        assert [str(x) for x in b.addresses("eth0")] == ["172.16.0.2/30"]
        assert a.ip6 is None
        assert a.ping("172.16.0.2")


def test_bridge_is_what_netns_bridge_yields() -> None:
    with presets.bridge(size=4, mtu=1400) as members:
        assert isinstance(members, BridgeMembers) and isinstance(members, list)
        assert [ns.name for ns in members] == ["h1", "h2", "h3", "h4"]
        assert isinstance(members.segment, Segment) and isinstance(members.topology, Topology)
        assert members.segment.members == list(members)
        assert [str(ns.ip) for ns in members] == ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
        assert members[0].mtu("eth0") == members.segment.mtu == 1400
        assert members[0].ping("10.0.0.4") and members[3].ping("fd00::1")
        made = [*members, members.segment.namespace]
    assert members.topology.closed and released(made)


def test_nat_is_what_netns_nat_yields() -> None:
    with presets.nat() as network:
        client, router, server = network
        assert isinstance(network, NatNetwork) and network.router is router
        assert str(client.ip) == "192.168.0.2" and str(server.ip) == "203.0.113.2"
        assert peer_seen_by(server, client, "203.0.113.2") == "203.0.113.1"
    assert released([client, router, server])


PRESETS: list[tuple[str, Callable[[], AbstractContextManager[Any]]]] = [
    ("pair", presets.pair),
    ("bridge", presets.bridge),
    ("nat", presets.nat),
]


@pytest.mark.parametrize("make", [p[1] for p in PRESETS], ids=[p[0] for p in PRESETS])
def test_an_exception_in_the_block_tears_everything_down(make: Callable[[], AbstractContextManager[Any]]) -> None:
    made: list[Namespace] = []
    with pytest.raises(Boom):
        with make() as network:
            made += list(network)
            if isinstance(network, BridgeMembers):
                made.append(network.segment.namespace)
            proc = made[0].popen(["sleep", "60"])
            raise Boom
    assert made and released(made)
    assert proc.poll() is not None


BAD = [
    ("pair mtu text", lambda: presets.pair(mtu="1500"), "mtu must be an integer between 68 and 65535, got '1500'"),  # type: ignore[arg-type]
    ("pair mtu range", lambda: presets.pair(mtu=70000), "mtu 70000 is outside 68..65535"),
    ("pair mtu for IPv6", lambda: presets.pair(mtu=1000), "mtu=1000 is below 1280, the minimum for IPv6"),
    ("pair ipv6", lambda: presets.pair(ipv6=1), "ipv6 must be True or False, got 1"),  # type: ignore[arg-type]
    ("pair subnet", lambda: presets.pair(subnet="10.0.0.1/24"), "subnet '10.0.0.1/24' is malformed"),
    ("pair subnet v6", lambda: presets.pair(subnet="fd01::/64"), "subnet 'fd01::/64' is not an IPv4 network"),
    ("pair subnet small", lambda: presets.pair(subnet="10.0.0.0/32"), "10.0.0.0/32 has room for 1 host addresses"),
    ("pair kill_grace", lambda: presets.pair(kill_grace=-1), "kill_grace must be a non-negative number"),
    ("bridge size", lambda: presets.bridge(size=0), "size must be a positive integer, got 0"),
    ("bridge size bool", lambda: presets.bridge(size=True), "size must be a positive integer, got True"),
    ("bridge size room", lambda: presets.bridge(size=5, subnet="10.0.0.0/30"), "has room for 2 host addresses, 5"),
    ("bridge subnet type", lambda: presets.bridge(subnet=24), "subnet 24 is not a network"),  # type: ignore[arg-type]
    ("nat kill_grace", lambda: presets.nat(kill_grace="1"), "kill_grace must be a non-negative number"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("call", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_a_value_error_naming_it_before_any_namespace(
    monkeypatch: pytest.MonkeyPatch, call: Callable[[], object], message: str
) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("a namespace was made before the arguments were checked")

    monkeypatch.setattr(Namespace, "__init__", forbidden)
    with pytest.raises(ValueError) as caught:
        call()  # raised by the call itself: the context manager is never entered
    assert message in str(caught.value)


def test_the_marker_and_the_presets_validate_alike() -> None:
    assert NetworkSettings.checked(mtu=9000, subnet="192.168.7.0/24", ipv6=False, size=2) == NetworkSettings(
        mtu=9000, subnet=ipaddress.IPv4Network("192.168.7.0/24"), ipv6=False, size=2
    )
    with pytest.raises(ValueError, match=re.escape("10.0.0.0/30 has room for 2 host addresses, 3 needed")):
        NetworkSettings.checked(subnet="10.0.0.0/30")
    assert NetworkSettings.checked(subnet="10.0.0.0/30", members=2).subnet.prefixlen == 30


def test_presets_work_in_a_script_without_pytest() -> None:
    script = textwrap.dedent(
        """
        import sys
        from pytest_netns import presets

        with presets.pair() as (a, b):
            pair = a.ping("10.0.0.2") and b.ping("fd00::1")
        with presets.bridge(size=2) as members:
            bridge = members[0].ping(str(members[1].ip))
        with presets.nat() as (client, router, server):
            nat = client.ping("203.0.113.2")
        print(pair, bridge, nat, "pytest" in sys.modules, "scapy" in sys.modules)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True", "True", "False", "False"]


def test_every_type_a_fixture_yields_is_exported() -> None:
    """Users annotate fixtures with these: each yield type resolves, and it is the one ``pytest_netns`` exports."""
    import collections.abc
    import importlib
    import pkgutil
    import typing

    import pytest_netns
    from pytest_netns import _plugin

    exported = {name: getattr(pytest_netns, name) for name in pytest_netns.__all__}
    fixtures = {}
    for info in pkgutil.iter_modules(_plugin.__path__):
        module = importlib.import_module(f"pytest_netns._plugin.{info.name}")
        for name, value in vars(module).items():
            # pytest >= 8.4 makes a fixture an object (_fixture_function_marker); older ones mark the function.
            if name.startswith("netns") and (
                hasattr(value, "_fixture_function_marker") or hasattr(value, "_pytestfixturefunction")
            ):
                fixtures[name] = getattr(value, "__wrapped__", value)
    assert {"netns", "netns_factory", "netns_pair", "netns_bridge", "netns_nat", "netns_topology"} <= set(fixtures)
    assert {"netns_cluster", "netns_docker"} <= set(fixtures)
    for name, function in fixtures.items():
        # Names imported only for type checking resolve through the exports, or not at all.
        hint = typing.get_type_hints(function, {**function.__globals__, **exported})["return"]
        if typing.get_origin(hint) in (collections.abc.Iterator, collections.abc.Generator):
            hint = typing.get_args(hint)[0]
        assert exported.get(hint.__name__) is hint, f"{name} yields {hint!r}, which pytest_netns does not export"
