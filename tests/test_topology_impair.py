"""impair() on links and segments, measured with real traffic.

Rates are measured on bulk TCP after a warm-up (the burst and slow start
are over by then) and compared with the asked rate within 10 %, counting
the payload only (tbf shapes whole frames, so the payload is ~4 % below).
Loss is checked with binomial 6-sigma bounds, so it does not flake.
"""

from __future__ import annotations

import contextlib
import math
import socket
import threading
import time

import pytest

from pytest_netns import FeatureUnavailable, Namespace
from pytest_netns._kernel.handle import handle_of
from pytest_netns._net import impair as _impair
from pytest_netns.topology import Link, Topology

SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33  # not exported by Python's socket module
RTM_GETQDISC = 38


@pytest.fixture
def link(netns_topology: Topology) -> Link:
    a, b = netns_topology.add("a"), netns_topology.add("b")
    link = netns_topology.link(a, b)
    # Resolve the neighbours first: a lossy link loses ARP too, and a lost ARP costs 1 s.
    assert a.ping(str(b.ip)) and b.ping(str(a.ip))
    return link


def ends(link: Link) -> tuple[Namespace, Namespace]:
    (a, _), (b, _) = link.ends
    return a, b


def bytes_received(conn: socket.socket) -> int:
    """``tcpi_bytes_received`` (Linux 4.6+): payload bytes the receiving kernel has taken in."""
    info = conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return int.from_bytes(info[128:136], "little")


def wire_bytes(ns: Namespace, iface: str = "eth0") -> int:
    """Bytes received on an interface, Ethernet headers included: what tbf meters."""
    with ns, open("/proc/thread-self/net/dev") as table:
        for line in table:
            name, _, fields = line.partition(":")
            if name.strip() == iface:
                return int(fields.split()[0])
    raise LookupError(iface)


def tcp_rate(src: Namespace, dst: Namespace, address: str, *, warmup: float = 1.0, window: float = 2.0) -> float:
    """Link bit/s of bulk TCP src -> dst, over ``window`` seconds after ``warmup`` (the first second).

    The rate a shaper promises is of frames on the link, headers included:
    it is read from the receiving interface's byte counter (payload alone is
    ~4.4 % less, 1448 of 1514 bytes per full frame).  Socket
    buffers of 4 MB at both ends, so that a Python thread late to write or
    read (two busy cores) neither starves the link nor distorts the figure.
    """
    with dst:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with src:
        sender = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 4 << 20)  # inherited by the accepted socket
    listener.bind((address, 0))
    listener.listen()
    sender.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 4 << 20)
    stop = threading.Event()

    def pump() -> None:
        chunk = bytes(65536)
        sender.settimeout(0.05)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                sender.send(chunk)

    def drain(conn: socket.socket) -> None:
        buffer = bytearray(1 << 20)
        conn.settimeout(0.05)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                conn.recv_into(buffer)

    with listener, sender:
        sender.connect(listener.getsockname())
        conn, _ = listener.accept()
        with conn:
            threads = [threading.Thread(target=pump, daemon=True),
                       threading.Thread(target=drain, args=(conn,), daemon=True)]
            for thread in threads:
                thread.start()
            start = time.monotonic()
            samples = []
            for mark in (start + warmup, start + warmup + window):
                time.sleep(max(0.0, mark - time.monotonic()))
                samples.append((time.monotonic(), wire_bytes(dst)))
            stop.set()
            for thread in threads:
                thread.join(5)
    (t1, n1), (t2, n2) = samples
    return (n2 - n1) * 8 / (t2 - t1)


def udp_delivered(src: Namespace, dst: Namespace, address: str, count: int) -> int:
    """Send ``count`` datagrams src -> dst; how many arrived.  ``sendto`` must never fail."""
    with dst:
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with src:
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with receiver, sender:
        receiver.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)  # overflow must not look like loss
        receiver.bind((address, 9000))
        for index in range(count):
            sender.sendto(index.to_bytes(4, "big"), (address, 9000))
        received = 0
        receiver.settimeout(0.2)
        with contextlib.suppress(TimeoutError):
            while True:
                receiver.recv(16)
                received += 1
    return received


def within_6_sigma(lost: int, trials: int, p: float) -> bool:
    return abs(lost - trials * p) <= 6 * math.sqrt(trials * p * (1 - p))


def root_qdisc(ns: Namespace, ifname: str) -> str | None:
    """The kind of the root queue discipline (None for the veth default, noqueue)."""
    index = handle_of(ns).rtnl.link_by_name(ifname)["index"]
    for msg in handle_of(ns).rtnl.dump(RTM_GETQDISC, bytes(20), "listing qdiscs"):
        if msg["index"] == index and msg["parent"] == 0xFFFFFFFF:
            kind = msg.get_attr("TCA_KIND")
            return None if kind == "noqueue" else kind
    return None


def loss_tables(ns: Namespace) -> list[tuple[str, str]]:
    from pytest_netns._kernel import nft as _nft

    with ns:
        return [t for t in _nft.list_tables() if "loss" in t[1]]


# -- rate -----------------------------------------------------------------------------


def test_rate_on_a_link_shapes_each_direction(link: Link) -> None:
    a, b = ends(link)
    wanted = 8_000_000
    with link.impair(rate="8mbit") as impairment:
        assert impairment.rate == wanted
        assert root_qdisc(a, "eth0") == root_qdisc(b, "eth0") == "tbf"
        measured = {"a->b": tcp_rate(a, b, str(b.ip)), "b->a": tcp_rate(b, a, str(a.ip))}
    for direction, rate in measured.items():
        assert abs(rate - wanted) <= 0.10 * wanted, (direction, rate)
    assert root_qdisc(a, "eth0") is None and root_qdisc(b, "eth0") is None  # reverted


def test_rate_on_a_segment_is_measured_between_members(netns_bridge) -> None:
    h1, h2, _ = netns_bridge
    wanted = 4_000_000
    segment = netns_bridge.segment
    with segment.impair(rate="4mbit"):
        # Shaped where a member sends (its interface) and where it receives (its bridge port).
        assert root_qdisc(h1, "eth0") == root_qdisc(segment.namespace, segment.port(h2)) == "tbf"
        rate = tcp_rate(h1, h2, str(h2.ip))
    assert abs(rate - wanted) <= 0.10 * wanted, rate
    assert all(root_qdisc(segment.namespace, segment.port(ns)) is None for ns in netns_bridge)
    assert all(root_qdisc(ns, "eth0") is None for ns in netns_bridge)


# -- loss ------------------------------------------------------------------------------


def test_loss_is_silent_measured_in_both_directions_and_reverted(link: Link) -> None:
    a, b = ends(link)
    trials, p = 2000, 0.25
    with link.impair(loss=p):
        lost_ab = trials - udp_delivered(a, b, str(b.ip), trials)
        lost_ba = trials - udp_delivered(b, a, str(a.ip), trials)
        assert loss_tables(a) and loss_tables(b)
    assert within_6_sigma(lost_ab, trials, p), lost_ab
    assert within_6_sigma(lost_ba, trials, p), lost_ba
    assert udp_delivered(a, b, str(b.ip), trials) == trials
    assert loss_tables(a) == [] and loss_tables(b) == []


def test_total_loss_is_never_an_error_from_send(link: Link) -> None:
    a, b = ends(link)
    with link.impair(loss=1.0):
        assert udp_delivered(a, b, str(b.ip), 200) == 0
        assert not a.ping(str(b.ip), timeout=0.2)
    assert a.ping(str(b.ip))


def test_loss_on_a_segment(netns_bridge) -> None:
    h1, h2, h3 = netns_bridge
    for src, dst in ((h1, h2), (h2, h3), (h3, h1)):  # neighbours known before the loss starts
        assert src.ping(str(dst.ip))
    trials, p = 2000, 0.3
    with netns_bridge.segment.impair(loss=p):
        lost = trials - udp_delivered(h1, h2, str(h2.ip), trials)
    assert within_6_sigma(lost, trials, p), lost
    assert udp_delivered(h3, h1, str(h1.ip), 500) == 500


# -- lifetime ---------------------------------------------------------------------------


def test_impairments_stack_and_revert_to_the_one_before(link: Link) -> None:
    a, b = ends(link)
    outer = link.impair(rate="8mbit")  # a plain call: in force until reverted (or teardown)
    with link.impair(loss=1.0) as inner:
        assert root_qdisc(a, "eth0") is None and loss_tables(b)
        assert udp_delivered(a, b, str(b.ip), 50) == 0
    assert not inner.active and "reverted" in repr(inner)
    assert root_qdisc(a, "eth0") == root_qdisc(b, "eth0") == "tbf" and loss_tables(b) == []
    outer.revert()
    outer.revert()  # idempotent
    assert root_qdisc(a, "eth0") is None
    # Reverting one that is not on top leaves the top in force.
    first, second = link.impair(rate="1mbit"), link.impair(loss=0.5)
    first.revert()
    assert root_qdisc(a, "eth0") is None and loss_tables(a)
    second.revert()
    assert loss_tables(a) == []


def test_an_impairment_left_active_goes_with_the_topology() -> None:
    with Topology() as t:
        a, b = t.add("a"), t.add("b")
        impairment = t.link(a, b).impair(rate="1mbit", loss=0.1)
    assert impairment.active and a.closed  # nothing left to revert: the namespaces are gone
    impairment.revert()


# -- delay, jitter and the kernel ------------------------------------------------------


def test_delay_is_real_or_the_missing_netem_is_named(link: Link) -> None:
    a, b = ends(link)
    reason = _impair.netem_unavailable_reason()
    if reason is not None:
        with pytest.raises(FeatureUnavailable, match="sch_netem") as caught:
            link.impair(delay="40ms", jitter="5ms")
        assert "delay='40ms'" in str(caught.value)
        assert root_qdisc(a, "eth0") is None  # nothing was changed
        return
    with link.impair(delay="40ms"):  # pragma: no cover - kernels with sch_netem
        start = time.monotonic()
        assert a.ping(str(b.ip), timeout=2)
        assert time.monotonic() - start >= 0.080  # one way each direction
    assert root_qdisc(a, "eth0") is None  # pragma: no cover


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({}, "at least one of"),
        ({"rate": "fast"}, "'fast'"),
        ({"rate": "0kbit"}, "'0kbit'"),
        ({"rate": "-1mbit"}, "'-1mbit'"),
        ({"rate": True}, "True"),
        ({"rate": "100gbit"}, "'100gbit'"),
        ({"delay": "40"}, "'40'"),
        ({"delay": "soon"}, "'soon'"),
        ({"delay": -1}, "-1"),
        ({"jitter": "5ms"}, "jitter '5ms' needs a delay"),
        ({"delay": "10ms", "jitter": "20ms"}, "jitter '20ms' is larger than delay '10ms'"),
        ({"loss": 1.5}, "1.5"),
        ({"loss": -0.1}, "-0.1"),
        ({"loss": "10%"}, "'10%'"),
        ({"loss": True}, "True"),
        ({"loss": float("nan")}, "nan"),
        ({"delay": "40ms", "loss": 2}, "loss 2"),  # validated before netem is looked for
    ],
)
def test_bad_values_raise_value_error_naming_them(link: Link, kwargs: dict, named: str) -> None:
    a, _ = ends(link)
    with pytest.raises(ValueError, match=named.replace("(", r"\(")):
        link.impair(**kwargs)
    assert root_qdisc(a, "eth0") is None and loss_tables(a) == []


def test_kernel_lacking_a_qdisc_is_named(link: Link, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel without sch_tbf answers ENOENT; impair() says which feature is missing."""
    from pytest_netns import KernelError
    from pytest_netns._kernel import tc as _tc

    def no_tbf(*args: object, **kwargs: object) -> None:
        raise KernelError(2, "limiting 'eth0' to '1mbit' (tbf)", "Specified qdisc kind is unknown")

    monkeypatch.setattr(_tc, "rate_limit", no_tbf)
    with pytest.raises(FeatureUnavailable, match="no sch_tbf"):
        link.impair(rate="1mbit")
    a, b = ends(link)
    assert root_qdisc(a, "eth0") is None and root_qdisc(b, "eth0") is None



def test_rate_limit_follows_an_mtu_change(link: Link) -> None:
    """tbf's burst must hold a whole frame: after set_mtu(9000) jumbo frames still pass."""
    a, b = ends(link)
    with link.impair(rate="512kbit"):
        link.set_mtu(9000)
        with b:
            receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with a:
            sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with receiver, sender:
            receiver.bind((str(b.ip), 9000))
            receiver.settimeout(2)
            sender.sendto(bytes(8900), (str(b.ip), 9000))
            assert len(receiver.recv(9000)) == 8900
        assert root_qdisc(a, "eth0") == "tbf"
    assert root_qdisc(a, "eth0") is None
