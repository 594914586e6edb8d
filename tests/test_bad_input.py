"""Malformed values at every public entry point: a ValueError (or UsageError) naming the value, nothing left.

"Nothing left" is checked around each call: this process holds no new
namespace file descriptor, no thread changed namespace, no child process
appeared, and the namespaces the call was aimed at (interfaces, addresses,
routes, queue disciplines, nftables tables) are exactly as before.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from scapy.layers.l2 import Ether

from pytest_netns import Namespace
from pytest_netns._kernel import nft as _nft
from pytest_netns._kernel.handle import handle_of
from pytest_netns.topology import Topology

RTM_GETQDISC = 38


def process_state() -> tuple[set[str], set[int], set[int]]:
    """What a call could leak into this process: namespace fds, thread namespaces, live children."""
    fds = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("net:["):
            fds.add(target)
    threads = set()
    for tid in os.listdir("/proc/self/task"):
        try:
            threads.add(os.stat(f"/proc/self/task/{tid}/ns/net").st_ino)
        except OSError:
            continue
    children = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as handle:
                    data = handle.read()
            except OSError:
                continue
            state, ppid = data[data.rindex(")") + 2:].split()[:2]
            if int(ppid) == os.getpid() and state != "Z":
                children.add(int(pid))
    return fds, threads, children


def namespace_state(ns: Namespace) -> tuple[object, ...]:
    """Configuration, not the kernel's own bookkeeping (use counts, link-local and multicast state)."""

    def inside() -> tuple[object, ...]:
        with open("/proc/thread-self/net/route") as handle:
            v4 = sorted(tuple(f[i] for i in (0, 1, 2, 3, 6, 7)) for f in map(str.split, list(handle)[1:]))
        with open("/proc/thread-self/net/ipv6_route") as handle:
            v6 = sorted(tuple(f[i] for i in (0, 1, 2, 3, 4, 5, 8, 9)) for f in map(str.split, handle)
                        if not f[0].startswith(("fe80", "ff")))
        return socket.if_nameindex(), v4, v6, _nft.list_tables()

    qdiscs = sorted((m["index"], m["handle"], m["parent"], m.get_attr("TCA_KIND"))
                    for m in handle_of(ns).rtnl.dump(RTM_GETQDISC, bytes(20), "listing qdiscs"))
    mtus = [(name, ns.mtu(name)) for name in ns.interfaces()]
    addresses = sorted(str(a) for a in ns.addresses() if not a.ip.is_link_local)
    return ns.call(inside), qdiscs, mtus, addresses


@pytest.fixture
def unchanged() -> Iterator[Callable[..., None]]:
    """``unchanged(fn, *namespaces)``: fn raises ValueError; afterwards nothing differs."""

    def check(call: Callable[[], Any], expected: str, *namespaces: Namespace) -> None:
        states = [namespace_state(ns) for ns in namespaces]  # may start the watchdog: before the process state
        before = process_state()
        with pytest.raises(ValueError) as excinfo:
            call()
        assert expected in str(excinfo.value), f"{excinfo.value!s} does not name {expected!r}"
        after = process_state()
        # Something earlier may finish meanwhile (a child reaped): only what is new counts.
        new = [now - then for now, then in zip(after, before, strict=True)]
        assert new == [set(), set(), set()], "new namespace fds, thread namespaces, children"
        assert [namespace_state(ns) for ns in namespaces] == states

    yield check


# -- Namespace and netns_factory ------------------------------------------------------------------

CONSTRUCTOR = [
    ({"name": ""}, "''"),
    ({"name": "a/b"}, "'a/b'"),
    ({"name": "x" * 65}, "'" + "x" * 65 + "'"),
    ({"name": 7}, "7"),
    ({"kill_grace": -1}, "-1"),
    ({"kill_grace": "1"}, "'1'"),
    ({"kill_grace": float("nan")}, "nan"),
    ({"kill_grace": True}, "True"),
]


@pytest.mark.parametrize(("kwargs", "named"), CONSTRUCTOR, ids=[repr(c[0]) for c in CONSTRUCTOR])
def test_namespace_constructor(unchanged, kwargs: dict[str, Any], named: str) -> None:  # type: ignore[no-untyped-def]
    unchanged(lambda: Namespace(**kwargs), named)


def test_netns_factory(unchanged, netns_factory: Callable[..., Namespace]) -> None:  # type: ignore[no-untyped-def]
    unchanged(lambda: netns_factory("a/b"), "'a/b'")


# -- Namespace methods, aimed at a real pair ------------------------------------------------------------

LONG = "x" * 16
METHODS: list[tuple[str, Callable[[Namespace], object], str]] = [
    ("set_mtu below 68", lambda a: a.set_mtu("eth0", 67), "67"),
    ("set_mtu above 65535", lambda a: a.set_mtu("eth0", 65536), "65536"),
    ("set_mtu string", lambda a: a.set_mtu("eth0", "1500"), "'1500'"),
    ("set_mtu bool", lambda a: a.set_mtu("eth0", True), "True"),
    ("set_mtu float", lambda a: a.set_mtu("eth0", 1500.5), "1500.5"),
    ("set_mtu bad interface", lambda a: a.set_mtu(LONG, 1500), repr(LONG)),
    ("mtu slash", lambda a: a.mtu("eth0/1"), "'eth0/1'"),
    ("mtu too long", lambda a: a.mtu(LONG), repr(LONG)),
    ("mtu empty", lambda a: a.mtu(""), "''"),
    ("up space", lambda a: a.up("a b"), "'a b'"),
    ("down None", lambda a: a.down(None), "None"),
    ("down colon", lambda a: a.down("eth0:1"), "'eth0:1'"),
    ("add_address octet", lambda a: a.add_address("eth0", "10.0.0.300/24"), "'10.0.0.300/24'"),
    ("add_address v6", lambda a: a.add_address("eth0", "fd00::zz/64"), "'fd00::zz/64'"),
    ("add_address prefix", lambda a: a.add_address("eth0", "10.0.0.5/33"), "'10.0.0.5/33'"),
    ("add_address empty", lambda a: a.add_address("eth0", ""), "''"),
    ("add_address None", lambda a: a.add_address("eth0", None), "None"),
    ("add_address interface", lambda a: a.add_address("bad/if", "10.0.0.5/24"), "'bad/if'"),
    ("add_route prefix", lambda a: a.add_route("10.0.0.0/33", dev="eth0"), "'10.0.0.0/33'"),
    ("add_route nonsense", lambda a: a.add_route("nonsense", dev="eth0"), "'nonsense'"),
    ("add_route host bits", lambda a: a.add_route("10.9.0.1/24", dev="eth0"), "'10.9.0.1/24'"),
    ("add_route gateway", lambda a: a.add_route("10.9.0.0/24", via="10.0.0.300"), "'10.0.0.300'"),
    ("add_route families", lambda a: a.add_route("10.9.0.0/24", via="fd00::2"), "fd00::2"),
    ("add_route default without via", lambda a: a.add_route("default"), "default"),
    ("add_route neither via nor dev", lambda a: a.add_route("10.9.0.0/24"), "10.9.0.0/24"),
    ("add_route device", lambda a: a.add_route("10.9.0.0/24", dev=LONG), repr(LONG)),
    ("sysctl outside net", lambda a: a.sysctl("kernel.hostname"), "'kernel.hostname'"),
    ("sysctl escaping", lambda a: a.sysctl("net/ipv4/../../kernel/hostname", 1), "'net/ipv4/../../kernel/hostname'"),
    ("sysctl empty", lambda a: a.sysctl(""), "''"),
    ("sysctl not a string", lambda a: a.sysctl(5), "5"),
    ("ping address", lambda a: a.ping("not-an-ip"), "'not-an-ip'"),
    ("ping count zero", lambda a: a.ping("10.0.0.2", count=0), "0"),
    ("ping count bool", lambda a: a.ping("10.0.0.2", count=True), "True"),
    ("ping timeout", lambda a: a.ping("10.0.0.2", timeout=-1), "-1"),
    ("run empty", lambda a: a.run(""), "empty"),
    ("run empty list", lambda a: a.run([]), "[]"),
    ("run not strings", lambda a: a.run([1, 2]), "[1, 2]"),
    ("run None", lambda a: a.run(None), "None"),
    ("run timeout", lambda a: a.run("true", timeout=-1), "-1"),
    ("popen blank", lambda a: a.popen("   "), "empty"),
    ("popen empty list", lambda a: a.popen([]), "[]"),
    ("popen None", lambda a: a.popen(None), "None"),
]


@pytest.mark.parametrize(("call", "named"), [m[1:] for m in METHODS], ids=[m[0] for m in METHODS])
def test_namespace_methods(unchanged, netns_pair, call: Callable[[Namespace], object], named: str) -> None:  # type: ignore[no-untyped-def]
    a, b = netns_pair
    unchanged(lambda: call(a), named, a, b)


PACKETS: list[tuple[str, Callable[[Namespace], object], str]] = [
    ("sniff interface", lambda a: a.sniff("bad/name", timeout=0.1), "'bad/name'"),
    ("sniff timeout", lambda a: a.sniff("eth0", timeout=-1), "-1"),
    ("capture interface", lambda a: a.capture(LONG).__enter__(), repr(LONG)),
    ("sendp interface", lambda a: a.sendp(_ether(), LONG), repr(LONG)),
]


def _ether() -> object:
    return Ether()


@pytest.mark.parametrize(("call", "named"), [m[1:] for m in PACKETS], ids=[m[0] for m in PACKETS])
def test_packet_methods(unchanged, netns_pair, call: Callable[[Namespace], object], named: str) -> None:  # type: ignore[no-untyped-def]
    a, b = netns_pair
    unchanged(lambda: call(a), named, a, b)


# -- Topology and impairments ------------------------------------------------------------------------------


@pytest.fixture
def topology() -> Iterator[Any]:
    with Topology() as topology:
        topology.add("a")
        topology.add("b")
        topology.link("a", "b")
        yield topology


TOPOLOGY: list[tuple[str, Callable[[Any], object], str]] = [
    ("constructor ipv6", lambda t: Topology(ipv6="yes"), "'yes'"),
    ("constructor kill_grace", lambda t: Topology(kill_grace=-2), "-2"),
    ("add name with space", lambda t: t.add("bad name"), "'bad name'"),
    ("add name all digits", lambda t: t.add("123"), "'123'"),
    ("add duplicate", lambda t: t.add("a"), "'a'"),
    ("add router flag", lambda t: t.add("c", router="yes"), "'yes'"),
    ("link to itself", lambda t: t.link("a", "a"), "'a'"),
    ("link unknown member", lambda t: t.link("a", "nope"), "'nope'"),
    ("link subnet malformed", lambda t: t.link("a", "b", subnet="10.0.0.0/33"), "'10.0.0.0/33'"),
    ("link subnet too small", lambda t: t.link("a", "b", subnet="10.0.0.0/32"), "10.0.0.0/32"),
    ("link subnet IPv6", lambda t: t.link("a", "b", subnet="fd01::/64"), "'fd01::/64'"),
    ("link mtu", lambda t: t.link("a", "b", mtu=10), "10"),
    ("link mtu below IPv6 minimum", lambda t: t.link("a", "b", mtu=1000), "1000"),
    ("segment mtu", lambda t: t.segment(["a", "b"], mtu=99999), "99999"),
    ("segment member", lambda t: t.segment(["a", 5]), "5"),
    ("segment subnet", lambda t: t.segment(["a", "b"], subnet="10.1.0.0/32"), "10.1.0.0/32"),
    ("impair nothing", lambda t: t.links[0].impair(), "rate=, delay=, jitter=, loss="),
    ("impair rate word", lambda t: t.links[0].impair(rate="fast"), "'fast'"),
    ("impair rate zero", lambda t: t.links[0].impair(rate=0), "0"),
    ("impair rate huge", lambda t: t.links[0].impair(rate="100gbit"), "'100gbit'"),
    ("impair delay negative", lambda t: t.links[0].impair(delay="-5ms"), "'-5ms'"),
    ("impair delay unit", lambda t: t.links[0].impair(delay="5 fortnights"), "'5 fortnights'"),
    ("impair jitter alone", lambda t: t.links[0].impair(jitter="5ms"), "'5ms'"),
    ("impair jitter above delay", lambda t: t.links[0].impair(delay="5ms", jitter="10ms"), "'10ms'"),
    ("impair loss above 1", lambda t: t.links[0].impair(loss=1.5), "1.5"),
    ("impair loss string", lambda t: t.links[0].impair(loss="10%"), "'10%'"),
]


@pytest.mark.parametrize(("call", "named"), [m[1:] for m in TOPOLOGY], ids=[m[0] for m in TOPOLOGY])
def test_topology_and_impairments(unchanged, topology, call: Callable[[Any], object], named: str) -> None:  # type: ignore[no-untyped-def]
    before = sorted(ns.name for ns in topology._owned), topology.describe()
    unchanged(lambda: call(topology), named, *topology._owned)
    assert (sorted(ns.name for ns in topology._owned), topology.describe()) == before


# -- marker arguments and options (inner runs) ------------------------------------------------------------

MARKERS = [
    ("mtu='1500'", "netns_pair", "mtu must be an integer*got '1500'"),
    ("mtu=True", "netns_pair", "mtu must be an integer*got True"),
    ("mtu=67, ipv6=False", "netns_pair", "mtu 67 is outside 68..65535"),
    ("subnet='fd00::/64'", "netns_pair", "subnet 'fd00::/64' is not an IPv4 network*"),
    ("subnet='10.0.0.1/24'", "netns_pair", "subnet '10.0.0.1/24' is malformed*host bits set*"),
    ("subnet=24", "netns_pair", "subnet 24 is not a network*"),
    ("ipv6=1", "netns_pair", "ipv6 must be True or False, got 1"),
    ("size=0", "netns_bridge", "size must be a positive integer, got 0"),
    ("size=True", "netns_bridge", "size must be a positive integer, got True"),
    ("size=300", "netns_bridge", "*10.0.0.0/24 has room for 254 host addresses, 300 needed*"),
    ("sizes=3", "netns_bridge", "unknown argument 'sizes'*"),
]


def test_marker_arguments(pytester: pytest.Pytester) -> None:
    """Every bad marker is a UsageError naming it, raised before any namespace is made."""
    tests = []
    for number, (args, fixture, _) in enumerate(MARKERS):
        tests.append(f"@pytest.mark.netns({args})\ndef test_{number}({fixture}):\n    pass\n")
    pytester.makeconftest(
        """
        def pytest_netns_namespace_created(item, namespace):
            with open("created.txt", "a") as handle:
                handle.write(f"{item.nodeid} {namespace.name}\\n")
        """
    )
    pytester.makepyfile("import pytest\n\n" + "\n".join(tests))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=len(MARKERS))
    for number, (_, _, message) in enumerate(MARKERS):
        result.stdout.fnmatch_lines([f"*UsageError: @pytest.mark.netns on *test_{number}: {message}"])
    assert not (pytester.path / "created.txt").exists()


OPTIONS = [
    (["--netns-kill-grace=abc"], {}, "", "*--netns-kill-grace*invalid float value*'abc'*"),
    (["--netns-kill-grace=-1"], {}, "", "*--netns-kill-grace: -1.0 is not a non-negative number of seconds*"),
    (["--netns-kill-grace=nan"], {}, "", "*--netns-kill-grace: nan is not a non-negative number of seconds*"),
    ([], {"PYTEST_NETNS_KILL_GRACE": "soon"}, "", "*environment variable PYTEST_NETNS_KILL_GRACE: 'soon'*"),
    ([], {}, "netns_kill_grace = forever", "*ini option netns_kill_grace: 'forever'*"),
    ([], {"PYTEST_NETNS_REQUIRE": "maybe"}, "", "*variable PYTEST_NETNS_REQUIRE: 'maybe' is not a boolean*"),
    ([], {"PYTEST_NETNS_KEEP_ON_FAILURE": "2"}, "", "*KEEP_ON_FAILURE: '2' is neither a boolean*nor processes*"),
]


@pytest.mark.parametrize(("args", "env", "ini", "message"), OPTIONS, ids=[str(o[:3]) for o in OPTIONS])
def test_options(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str], ini: str,
    message: str,
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile("def test_x(netns):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
