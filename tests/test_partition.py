"""partition() and block(): cuts between namespaces, measured with real traffic.

Reachability is an all-pairs matrix of UDP datagrams, every pair sent at
once: a pair counts as reachable when its datagram arrived.  Every
``sendto`` must succeed, during a cut too (a partition is silent for the
sender).  Absence is judged after 1 s of silence, while a datagram between
two namespaces of one machine arrives in well under a millisecond.
"""

from __future__ import annotations

import contextlib
import select
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence

import pytest

import pytest_netns
from pytest_netns import Namespace, NetnsError, Partition, Topology, block, partition
from pytest_netns._kernel import nft
from pytest_netns._kernel.handle import handle_of
from pytest_netns._net import partition as _partition

PORT = 9000
Pair = tuple[str, str]


def sock_in(ns: Namespace, family: int, kind: int = socket.SOCK_DGRAM) -> socket.socket:
    with ns:
        return socket.socket(family, kind)


def address(ns: Namespace, version: int) -> str:
    found = ns.ip if version == 4 else ns.ip6
    assert found is not None, f"{ns.name} has no IPv{version} address"
    return str(found)


def matrix(members: Sequence[Namespace], version: int, *, expect: set[Pair] | None = None) -> set[Pair]:
    """The (src, dst) name pairs whose datagram arrived, every ordered pair sent at once.

    Waits until ``expect`` arrived (then returns at once), else 1 s of silence.
    """
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    with contextlib.ExitStack() as stack:
        receivers = {}
        for ns in members:
            receiver = stack.enter_context(sock_in(ns, family))
            receiver.bind((address(ns, version), PORT))
            receiver.setblocking(False)
            receivers[receiver.fileno()] = receiver
        for src in members:
            sender = stack.enter_context(sock_in(src, family))
            for dst in members:
                if dst is not src:
                    sender.sendto(f"{src.name}>{dst.name}".encode(), (address(dst, version), PORT))  # never fails
        got: set[Pair] = set()
        deadline = time.monotonic() + (5.0 if expect else 1.0)
        while time.monotonic() < deadline and not (expect is not None and expect <= got):
            ready, _, _ = select.select(list(receivers), [], [], max(0.0, deadline - time.monotonic()))
            for fd in ready:
                with contextlib.suppress(BlockingIOError):
                    while True:
                        src, _, dst = receivers[fd].recv(64).decode().partition(">")
                        got.add((src, dst))
        return got


def everyone(members: Sequence[Namespace]) -> set[Pair]:
    return {(s.name, d.name) for s in members for d in members if s is not d}


def uncut(members: Sequence[Namespace], groups: Sequence[Sequence[Namespace]]) -> set[Pair]:
    """The pairs a partition of ``groups`` leaves: same group, or either side in no group."""
    side = {ns.name: number for number, group in enumerate(groups) for ns in group}
    return {(s, d) for s, d in everyone(members) if side.get(s) is None or side.get(d) is None or side[s] == side[d]}


def tables_of(ns: Namespace) -> list[tuple[str, str]]:
    with handle_of(ns).entered():
        return [t for t in nft.list_tables() if t[1].startswith(f"{nft.TABLE_PREFIX}_cut")]


def connect(src: Namespace, dst: Namespace, version: int, port: int, timeout: float) -> tuple[str, float]:
    """Connect src -> dst:port once: ("connected" | "refused" | "timeout", seconds it took)."""
    client = sock_in(src, socket.AF_INET if version == 4 else socket.AF_INET6, socket.SOCK_STREAM)
    with client:
        client.settimeout(timeout)
        start = time.monotonic()
        try:
            client.connect((address(dst, version), port))
            outcome = "connected"
        except ConnectionRefusedError:
            outcome = "refused"
        except TimeoutError:
            outcome = "timeout"
        return outcome, time.monotonic() - start


@contextlib.contextmanager
def listening(ns: Namespace, port: int) -> Iterator[None]:
    """TCP listeners on ``port`` for IPv4 and IPv6 in ``ns``."""
    with sock_in(ns, socket.AF_INET, socket.SOCK_STREAM) as v4, sock_in(ns, socket.AF_INET6, socket.SOCK_STREAM) as v6:
        v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        for server, host in ((v4, "0.0.0.0"), (v6, "::")):
            server.bind((host, port))
            server.listen(16)
        yield


# -- reachability matrices ------------------------------------------------------------------------------


@pytest.mark.netns(size=5)
@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("shape", ["2 groups", "3 groups"])
def test_matrix_before_during_and_after(netns_bridge, version: int, shape: str) -> None:
    h1, h2, h3, h4, _ = netns_bridge  # the fifth is in no group: it reaches everyone throughout
    groups = [[h1, h2], [h3, h4]] if shape == "2 groups" else [[h1], [h2, h3], [h4]]
    all_pairs = everyone(netns_bridge)
    assert matrix(netns_bridge, version, expect=all_pairs) == all_pairs
    with partition(*groups) as cut:
        assert isinstance(cut, Partition) and cut.active
        assert matrix(netns_bridge, version) == uncut(netns_bridge, groups)
    assert not cut.active
    assert matrix(netns_bridge, version, expect=all_pairs) == all_pairs


@pytest.mark.parametrize("version", [4, 6])
def test_routed_traffic_between_groups_is_cut(netns_topology: Topology, version: int) -> None:
    net = netns_topology
    a, r1, r2, b = net.add("a"), net.add("r1", router=True), net.add("r2", router=True), net.add("b")
    net.link(a, r1)
    net.link(r1, r2)
    net.link(r2, b)
    net.autoroute()
    members = [a, r1, r2, b]
    all_pairs = everyone(members)
    assert matrix(members, version, expect=all_pairs) == all_pairs
    with net.partition("a", "b"):  # the routers between are in no group
        assert matrix(members, version) == all_pairs - {("a", "b"), ("b", "a")}
    with net.partition(["a", r1], [b]):  # a router in a group: it neither forwards nor talks across
        assert matrix(members, version) == uncut(members, [[a, r1], [b]])
    assert matrix(members, version, expect=all_pairs) == all_pairs


def test_one_way_block(netns_bridge) -> None:
    h1, h2, h3 = netns_bridge
    all_pairs = everyone(netns_bridge)
    assert matrix(netns_bridge, 4, expect=all_pairs) == all_pairs
    with block(h1, [h2, h3], one_way=True) as cut:
        assert repr(cut) == "<Partition block h1 -> h2, h3 (active)>"
        assert matrix(netns_bridge, 4) == all_pairs - {("h1", "h2"), ("h1", "h3")}
        assert matrix(netns_bridge, 6) == all_pairs - {("h1", "h2"), ("h1", "h3")}
    assert repr(cut) == "<Partition block h1 -> h2, h3 (healed)>"
    with block(h1, h2):
        assert matrix(netns_bridge, 4) == all_pairs - {("h1", "h2"), ("h2", "h1")}


def test_cluster_partition_by_nodes_takes_their_pods(netns_cluster) -> None:
    cluster = netns_cluster
    n1, n2, n3 = cluster.node("n1"), cluster.node("n2"), cluster.node("n3")
    p1, p2, p3 = cluster.pod("p1", node=n1), cluster.pod("p2", node=n2), cluster.pod("p3", node=n3)
    ext = cluster.external("ext")
    members = [n1, n2, n3, p1, p2, p3]
    all_pairs = everyone(members)
    assert matrix(members, 4, expect=all_pairs) == all_pairs
    with cluster.partition(n1, ["n2", n3]) as cut:
        assert [ns.name for ns in cut.namespaces] == ["n1", "p1", "coredns", "n2", "p2", "n3", "p3"]  # DNS goes with n1
        assert matrix(members, 4) == uncut(members, [[n1, p1], [n2, p2, n3, p3]])
        assert matrix([ext, n1, n2], 4) == everyone([ext, n1, n2]) - {("n1", "n2"), ("n2", "n1")}
    assert matrix(members, 4, expect=all_pairs) == all_pairs


# -- what the sender sees --------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [4, 6])
def test_silent_drops_time_out_and_rejects_are_refused_at_once(netns_pair, version: int) -> None:
    a, b = netns_pair
    with listening(b, 8000), listening(a, 8001):
        assert connect(a, b, version, 8000, 5)[0] == "connected"
        with block(a, b):
            outcome, took = connect(a, b, version, 8000, 1.0)
            assert outcome == "timeout" and took >= 0.9  # no RST, no ICMP: the SYN vanished
        with block(a, b, reject=True):
            # A timeout of 5 s: refused well before it means the reject came back, both ways.
            for src, dst, port in ((a, b, 8000), (b, a, 8001)):
                outcome, took = connect(src, dst, version, port, 5.0)
                assert outcome == "refused" and took < 1.0, (src.name, outcome, took)
            with sock_in(a, socket.AF_INET if version == 4 else socket.AF_INET6) as udp:
                udp.connect((address(b, version), 9999))
                udp.settimeout(5)
                udp.send(b"x")
                with pytest.raises(ConnectionRefusedError):  # ICMP port unreachable
                    udp.recv(16)
        assert connect(a, b, version, 8000, 5)[0] == "connected"


def test_an_established_connection_survives_a_one_second_cut(netns_pair) -> None:
    a, b = netns_pair
    with sock_in(b, socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind((str(b.ip), 8000))
        server.listen()
        with sock_in(a, socket.AF_INET, socket.SOCK_STREAM) as client:
            client.connect((str(b.ip), 8000))
            conn, _ = server.accept()
            with conn:
                conn.settimeout(10)
                client.sendall(b"before")
                assert conn.recv(16) == b"before"
                cut = partition(a, b)
                client.sendall(b"during")  # queued and retransmitted: never an error
                readable, _, _ = select.select([conn], [], [], 1.0)
                assert readable == []  # nothing got through for a whole second
                cut.heal()
                assert conn.recv(16) == b"during"  # the retransmission after the heal
                conn.sendall(b"reply")
                client.settimeout(10)
                assert client.recv(16) == b"reply"


# -- lifetime ------------------------------------------------------------------------------------------------


def test_heal_is_idempotent_and_leaves_only_dormant_tables_until_the_end(netns_pair) -> None:
    a, b = netns_pair
    cut = partition([a], [b])
    assert cut.groups == ((a,), (b,)) and cut.namespaces == [a, b]
    assert repr(cut) == "<Partition a | b (active)>"
    assert len(tables_of(a)) == len(tables_of(b)) == 1
    cut.heal()
    cut.heal()
    assert not cut.active and repr(cut) == "<Partition a | b (healed)>"
    assert a.ping(str(b.ip)) and b.ping(str(a.ip6))
    _partition.release_all()  # what the plugin does at the end of the test
    assert tables_of(a) == tables_of(b) == []
    cut.heal()  # still harmless


@pytest.mark.skipif(shutil.which("nft") is None, reason="needs the nft command to read the rules back")
def test_the_rules_read_back_as_nft_prints_them(netns_pair) -> None:
    a, b = netns_pair

    def ruleset(ns: Namespace) -> str:
        return str(ns.run(["nft", "list", "ruleset"]).stdout)

    with block(a, b, one_way=True, reject=True):
        assert ruleset(a) == ""  # one way: only the receiving side holds rules
        text = ruleset(b)
        for line in (
            "type filter hook prerouting priority raw; policy accept;",
            'iif "lo" accept',
            "icmpv6 type 133-137 accept",
            "tcp flags rst accept",
            f"ip saddr {a.ip} goto cut",
            f"ip6 saddr {a.ip6} goto cut",
            "meta l4proto tcp reject with tcp reset",
        ):
            assert line in text, (line, text)
    assert "flags dormant" in ruleset(b)


def test_a_namespace_torn_down_first_heals_the_others() -> None:
    with Topology() as left, Topology() as right:
        a, b = left.add("a"), right.add("b")
        cut = partition(a, b)
        left.close()
        assert not cut.active  # b's rules named a's addresses, which a new namespace may get
        assert len(tables_of(b)) == 1  # dormant: deleting costs a grace period, the end of the test does it
    _partition.release_all()


TEARDOWN_SUITE = """
import pytest
from pytest_netns import Topology, partition
from pytest_netns._kernel import nft
from pytest_netns._kernel.handle import handle_of

CUTS = []


@pytest.fixture(scope="module")
def net():
    with Topology() as topology:
        a, b = topology.add("a"), topology.add("b")
        topology.link(a, b)
        yield topology


def test_cut_and_never_heal(net):
    CUTS.append(partition(net["a"], net["b"]))
    assert not net["a"].ping(str(net["b"].ip), timeout=0.2)


def test_cut_a_function_scoped_pair_and_never_heal(netns_pair):
    CUTS.append(partition(*netns_pair))


def test_the_next_test_finds_nothing_in_place(net):
    a, b = net["a"], net["b"]
    assert not any(cut.active for cut in CUTS)
    assert a.ping(str(b.ip)) and b.ping(str(a.ip6))
    for ns in (a, b):
        with handle_of(ns).entered():
            assert nft.list_tables() == []
"""


def test_teardown_removes_everything_a_test_never_healed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(TEARDOWN_SUITE)
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly").assert_outcomes(passed=3)


# -- bad input ----------------------------------------------------------------------------------------------


def test_bad_groups_raise_value_error_naming_them(netns_bridge) -> None:
    h1, h2, h3 = netns_bridge
    cases: list[tuple[tuple[object, ...], str]] = [
        ((), "at least two groups, got 0"),
        (([h1, h2],), "at least two groups, got 1"),
        (([h1], []), "group 2 is empty"),
        (([h1], "h2"), "group 2 must be a namespace or an iterable of namespaces, got 'h2'"),
        (([h1], 7), "group 2 must be .* got 7"),
        (([h1], [h2, None]), "group 2 holds None"),
        (([h1], ["h2"]), "group 2 holds 'h2'"),
        (([h1, h2], [h2, h3]), "namespace 'h2' is in group 1 and in group 2"),
        (([h1, h1], [h2]), "namespace 'h1' is twice in group 1"),
        (([h1], [h2], [h3, h1]), "namespace 'h1' is in group 1 and in group 3"),
    ]
    for groups, message in cases:
        with pytest.raises(ValueError, match=message):
            partition(*groups)  # type: ignore[arg-type]
    for kwargs, message in [
        ({"src": h1, "dst": h1}, "namespace 'h1' is in src and in dst"),
        ({"src": [h1, h2], "dst": [h2]}, "namespace 'h2' is in src and in dst"),
        ({"src": [], "dst": h2}, "src is empty"),
        ({"src": h1, "dst": "h2"}, "dst must be a namespace"),
        ({"src": h1, "dst": h2, "one_way": "yes"}, "one_way must be True or False, got 'yes'"),
        ({"src": h1, "dst": h2, "reject": 1}, "reject must be True or False, got 1"),
    ]:
        with pytest.raises(ValueError, match=message):
            block(**kwargs)  # type: ignore[arg-type]
    assert all(tables_of(ns) == [] for ns in netns_bridge)  # nothing was installed


def test_topology_and_cluster_groups_are_checked(netns_topology: Topology, netns_cluster) -> None:
    net = netns_topology
    a, b = net.add("a"), net.add("b")
    net.link(a, b)
    with pytest.raises(ValueError, match="no namespace 'nope' in this topology"):
        net.partition("a", "nope")
    with pytest.raises(ValueError, match="group 2 must be a namespace, a name or an iterable of them, got 3"):
        net.partition("a", 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least two groups, got 1"):
        net.partition(["a", "b"])
    stranger = pytest_netns.Namespace("stranger")
    try:
        with pytest.raises(ValueError, match="'stranger' is not part of this topology"):
            net.partition(a, stranger)
    finally:
        stranger.close()
    node = netns_cluster.node("n1")
    netns_cluster.pod("p1", node=node)
    with pytest.raises(ValueError, match="pod 'p1' cannot be in a group of a partition: pods follow their node"):
        netns_cluster.partition("p1", node)
    with pytest.raises(ValueError, match="node 'n9' is not a node of this cluster"):
        netns_cluster.partition("n1", "n9")


def test_a_torn_down_namespace_is_a_netns_error(netns_pair) -> None:
    a, _ = netns_pair
    gone = pytest_netns.Namespace("gone")
    gone.close()
    with pytest.raises(NetnsError, match="'gone' is already torn down"):
        partition(a, gone)
    assert tables_of(a) == []


def test_a_refused_transaction_undoes_the_namespaces_already_cut(netns_bridge, monkeypatch) -> None:
    h1, h2, h3 = netns_bridge
    real = _partition._install
    calls = []

    def fail_on_the_second(ns: Namespace, batch: nft.Batch, doing: str) -> None:
        calls.append(ns.name)
        if len(calls) == 2:
            raise pytest_netns.KernelError(1, doing, "refused for the test")
        real(ns, batch, doing)

    monkeypatch.setattr(_partition, "_install", fail_on_the_second)
    with pytest.raises(pytest_netns.KernelError, match="cutting 'h2' off from 'h1'"):
        partition(h1, [h2, h3])
    assert calls == ["h1", "h2"]
    assert all(tables_of(ns) == [] for ns in netns_bridge)
    assert matrix(netns_bridge, 4, expect=everyone(netns_bridge)) == everyone(netns_bridge)


def test_importing_the_package_loads_no_nftables() -> None:
    code = (
        "import sys, pytest_netns; assert not [m for m in sys.modules if 'nft' in m or 'partition' in m], sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert pytest_netns.partition is _partition.partition and pytest_netns.block is _partition.block
