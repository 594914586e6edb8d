"""impair(duplicate=, corrupt=, reorder=) measured with real traffic; rate units.

Every statistical check is a binomial band of 6 standard deviations around
the expected count: a false alarm has a probability of about 2e-9 per check.
Each test states what its band can tell apart (its power).

duplicate needs no netem (nftables ``dup``) and is measured everywhere;
corrupt and reorder need ``sch_netem``: where it is missing ``impair()``
raises ``FeatureUnavailable``, which the plugin turns into a skip naming
netem, and where it exists (the VM of ``dev/test kernel``) they are measured.
"""

from __future__ import annotations

import contextlib
import math
import socket
import struct
import zlib

import pytest

from pytest_netns import FeatureUnavailable, Namespace, Topology
from pytest_netns._kernel import nft
from pytest_netns._kernel import tc as _tc
from pytest_netns._kernel.handle import handle_of
from pytest_netns._kernel.units import parse_rate
from pytest_netns._net import impair as _impair
from pytest_netns.topology import Link

SO_RCVBUFFORCE = 33
SO_NO_CHECK = 11  # UDP: send without a checksum (IPv4)
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
TRIALS = 1000


@pytest.fixture
def link(netns_topology: Topology) -> Link:
    a, b = netns_topology.add("a"), netns_topology.add("b")
    link = netns_topology.link(a, b)
    assert a.ping(str(b.ip)) and b.ping(str(a.ip6))  # neighbours known before any impairment
    return link


def within_6_sigma(count: int, trials: int, p: float) -> bool:
    return abs(count - trials * p) <= 6 * math.sqrt(trials * p * (1 - p))


def datagrams_received(src: Namespace, dst: Namespace, address: str, count: int = TRIALS) -> int:
    """Send ``count`` datagrams src -> dst (each ``sendto`` must succeed); how many arrived, copies included."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with dst:
        receiver = socket.socket(family, socket.SOCK_DGRAM)
    with src:
        sender = socket.socket(family, socket.SOCK_DGRAM)
    with receiver, sender:
        receiver.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)  # an overflow must not look like loss
        receiver.bind((address, 9000))
        for index in range(count):
            sender.sendto(index.to_bytes(4, "big"), (address, 9000))
        received = 0
        receiver.settimeout(0.3)
        with contextlib.suppress(TimeoutError):
            while True:
                receiver.recv(16)
                received += 1
    return received


def dup_tables(ns: Namespace) -> list[tuple[str, str]]:
    with handle_of(ns).entered():
        return [t for t in nft.list_tables() if "_dup_" in t[1]]


def root_qdisc_is_default(ns: Namespace, ifname: str = "eth0") -> bool:
    rtnl = handle_of(ns).rtnl
    index = rtnl.link_by_name(ifname)["index"]
    for msg in rtnl.dump(38, bytes(20), "listing qdiscs"):  # RTM_GETQDISC
        if msg["index"] == index and msg["parent"] == 0xFFFFFFFF:
            return msg.get_attr("TCA_KIND") == "noqueue"
    return True


# -- duplicate (nftables dup, no netem) ------------------------------------------------------------------


def test_duplicate_on_a_link_is_measured_both_ways_ipv4_and_ipv6(link: Link) -> None:
    """duplicate=0.5 over 1,000 datagrams: ~500 copies, band +-95.

    Power: a copy probability off by 0.15 or more (copies made at both ends
    of the link would give 0.75; none, 0) lands outside the band with
    probability above 0.999.
    """
    (a, _), (b, _) = link.ends
    with link.impair(duplicate=0.5) as impairment:
        assert impairment.duplicate == 0.5 and dup_tables(a) == [
            ("ip", "pytest_netns_dup_eth0"),
            ("ip6", "pytest_netns_dup_eth0"),
        ]
        extra = {
            "a->b v4": datagrams_received(a, b, str(b.ip)) - TRIALS,
            "b->a v4": datagrams_received(b, a, str(a.ip)) - TRIALS,
            "a->b v6": datagrams_received(a, b, str(b.ip6)) - TRIALS,
        }
    for direction, copies in extra.items():
        assert within_6_sigma(copies, TRIALS, 0.5), (direction, copies)
    assert datagrams_received(a, b, str(b.ip)) == TRIALS  # reverted: no copies
    assert dup_tables(a) == dup_tables(b) == []


def test_duplicate_on_a_segment_is_measured_between_members(netns_bridge) -> None:
    """Copies are made by the sending member; 1,000 datagrams at 0.3: ~300 copies, band +-87 (power as above)."""
    h1, h2, h3 = netns_bridge
    for src, dst in ((h1, h2), (h3, h1)):
        assert src.ping(str(dst.ip))
    with netns_bridge.segment.impair(duplicate=0.3):
        copies_v4 = datagrams_received(h1, h2, str(h2.ip)) - TRIALS
        copies_v6 = datagrams_received(h3, h1, str(h1.ip6)) - TRIALS
        assert dup_tables(netns_bridge.segment.namespace) == []  # a bridge port has no IP stack to copy with
    assert within_6_sigma(copies_v4, TRIALS, 0.3), copies_v4
    assert within_6_sigma(copies_v6, TRIALS, 0.3), copies_v6


def test_duplicate_copies_routed_traffic_once(netns_topology: Topology) -> None:
    """A router forwarding over a duplicating link copies what it forwards, to its next hop, once.

    1,000 datagrams at 0.5 across two links, only the second duplicating:
    ~500 copies (band +-95); copying on both links would give ~1,250.
    """
    net = netns_topology
    a, r, b = net.add("a"), net.add("r", router=True), net.add("b")
    net.link(a, r)
    second = net.link(r, b)
    net.autoroute()
    assert a.ping(str(b.ip)) and a.ping(str(b.ip6))
    with second.impair(duplicate=0.5):
        copies = datagrams_received(a, b, str(b.ip)) - TRIALS
        copies_v6 = datagrams_received(b, a, str(a.ip6)) - TRIALS
    assert within_6_sigma(copies, TRIALS, 0.5), copies
    assert within_6_sigma(copies_v6, TRIALS, 0.5), copies_v6


def test_total_duplication_with_loss_is_silent(link: Link) -> None:
    """duplicate=1 and loss=0.5: every datagram sent twice, each copy lost independently: ~1,000 of 2,000 arrive."""
    (a, _), (b, _) = link.ends
    with link.impair(duplicate=1.0, loss=0.5):
        arrived = datagrams_received(a, b, str(b.ip))
    assert within_6_sigma(arrived, 2 * TRIALS, 0.5), arrived


# -- corrupt and reorder (netem) -----------------------------------------------------------------------------


PAYLOAD_PAD = b"\xa5" * 56


def payload(seq: int) -> bytes:
    """Sequence number, its CRC (a flipped bit cannot turn it into another valid one), a fixed pattern: 64 bytes."""
    number = struct.pack("!I", seq)
    return number + struct.pack("!I", zlib.crc32(number)) + PAYLOAD_PAD


def ipv4_header_ok(header: bytes) -> bool:
    total = sum(struct.unpack("!10H", header))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


def intact(frame: bytes, dst_mac: bytes, src_mac: bytes, src_ip: bytes, dst_ip: bytes) -> bool:
    """Whether a captured frame is exactly one of ours: one flipped bit anywhere makes one of these checks fail."""
    if frame[0:6] != dst_mac or frame[6:12] != src_mac or frame[12:14] != b"\x08\x00":
        return False
    ip, udp, data = frame[14:34], frame[34:42], frame[42:]
    if ip[0] != 0x45 or struct.unpack("!H", ip[2:4])[0] != 20 + 8 + 64 or ip[9] != socket.IPPROTO_UDP:
        return False
    if ip[12:16] != src_ip or ip[16:20] != dst_ip or not ipv4_header_ok(ip):
        return False
    if udp != struct.pack("!HHHH", 9001, 9000, 8 + 64, 0):  # checksum 0: sent without one (SO_NO_CHECK)
        return False
    return len(data) == 64 and data == payload(struct.unpack("!I", data[:4])[0])


def test_corrupt_flips_bits_in_the_asked_share_of_packets(link: Link) -> None:
    """corrupt=0.3 over 1,000 datagrams, every frame captured at the receiver: ~300 damaged, band +-87.

    netem flips one random bit of a packet's linear data, headers included,
    so a damaged frame may never reach a socket: frames are counted where
    they arrive (AF_PACKET), and one flipped bit anywhere fails a MAC, IP
    checksum, UDP header or payload comparison.  Power: a share off by 0.15
    lands outside the band with probability above 0.999.
    """
    (a, _), (b, _) = link.ends
    with link.impair(corrupt=0.3):
        with b:
            capture = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # so that no ICMP goes back
        with a:
            sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with capture, receiver, sender:
            capture.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 32 << 20)
            capture.bind(("eth0", 0))
            receiver.bind((str(b.ip), 9000))
            sender.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
            sender.bind((str(a.ip), 9001))
            for seq in range(TRIALS):
                sender.sendto(payload(seq), (str(b.ip), 9000))
            frames = []
            capture.settimeout(1.0)
            with contextlib.suppress(TimeoutError):
                while len(frames) < TRIALS:
                    frame, where = capture.recvfrom(2048)
                    if where[2] != PACKET_OUTGOING and len(frame) == 14 + 20 + 8 + 64:  # ours, damaged or not
                        frames.append(frame)
    assert len(frames) == TRIALS
    macs = (bytes.fromhex(b.mac("eth0").replace(":", "")), bytes.fromhex(a.mac("eth0").replace(":", "")))
    damaged = sum(not intact(f, *macs, a.ip.packed, b.ip.packed) for f in frames)  # type: ignore[union-attr]
    assert within_6_sigma(damaged, TRIALS, 0.3), damaged


def overtakers(arrivals: list[int]) -> int:
    """How many packets arrived before a packet sent earlier than them (sequence numbers, in arrival order)."""
    count, lowest_after = 0, math.inf
    for seq in reversed(arrivals):
        count += lowest_after < seq
        lowest_after = min(lowest_after, seq)
    return count


def test_overtakers_counts_what_arrived_before_an_earlier_packet() -> None:
    assert overtakers([0, 1, 2, 3]) == 0
    assert overtakers([2, 0, 1, 3]) == 1
    assert overtakers([3, 4, 0, 1, 2]) == 2


def test_reorder_sends_the_asked_share_ahead_of_the_delay(link: Link) -> None:
    """reorder=0.25 with a 1 s delay over 1,000 datagrams: ~250 overtake an earlier one, band +-82.

    netem sends a reordered packet at once, ahead of those waiting out the
    delay, and the delayed ones leave in the order they came: a reordered
    packet arrives before a packet sent earlier as long as one sent in the
    second before it is still waiting, which a long delay makes certain even
    where sending is slow (under emulation, as in the VM of ``dev/test
    kernel``, a 50 ms delay left most reordered packets with none).  Counted
    from the arrival order alone: no clock is compared.  Power: a share off
    by 0.15 lands outside the band with probability above 0.999.
    """
    (a, _), (b, _) = link.ends
    with link.impair(delay="1s", reorder=0.25):
        with b:
            receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with a:
            sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with receiver, sender:
            receiver.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
            receiver.bind((str(b.ip), 9000))
            for seq in range(TRIALS):
                sender.sendto(struct.pack("!I", seq), (str(b.ip), 9000))
            arrivals = []
            receiver.settimeout(5.0)
            with contextlib.suppress(TimeoutError):
                while len(arrivals) < TRIALS:
                    arrivals.append(struct.unpack("!I", receiver.recv(16))[0])
    assert sorted(arrivals) == list(range(TRIALS))  # reordered, never lost or copied
    early = overtakers(arrivals)
    assert within_6_sigma(early, TRIALS, 0.25), early


def test_without_netem_corrupt_and_reorder_name_it_and_change_nothing(link: Link) -> None:
    reason = _impair.netem_unavailable_reason()
    if reason is None:
        pytest.skip("this kernel has sch_netem: corrupt and reorder are measured above")
    (a, _), (b, _) = link.ends
    for kwargs in ({"corrupt": 0.01, "duplicate": 0.5}, {"delay": "10ms", "reorder": 0.2}):
        with pytest.raises(FeatureUnavailable, match="need the kernel's netem queue discipline") as caught:
            link.impair(**kwargs)
        assert caught.value.feature == "netem"
        assert ("corrupt=0.01" if "corrupt" in kwargs else "reorder=0.2") in str(caught.value)
    assert dup_tables(a) == [] and root_qdisc_is_default(a) and root_qdisc_is_default(b)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        (
            {"duplicate": 1.5},
            "duplicate 1.5 is not a fraction between 0 and 1 (0.1 means 10 % of packets arrive twice)",
        ),
        ({"duplicate": -0.1}, "duplicate -0.1"),
        ({"duplicate": "10%"}, "duplicate '10%'"),
        ({"duplicate": True}, "duplicate True"),
        ({"duplicate": float("nan")}, "duplicate nan"),
        ({"corrupt": 2}, "corrupt 2 is not a fraction between 0 and 1 (0.1 means 10 % of packets get a flipped bit)"),
        ({"reorder": 0.2}, "reorder 0.2 needs a delay: netem sends the reordered packets at once"),
        ({"reorder": 0.2, "jitter": "1ms"}, "jitter '1ms' needs a delay"),
        ({"delay": "10ms", "reorder": "a lot"}, "reorder 'a lot'"),
        ({"rate": "8 Mbps"}, "rate '8 Mbps': 'Mbps' is ambiguous, tc reads it as bytes per second"),
    ],
)
def test_bad_values_raise_value_error_naming_them(link: Link, kwargs: dict[str, object], named: str) -> None:
    (a, _), _ = link.ends
    with pytest.raises(ValueError, match=named.replace("(", r"\(").replace(")", r"\)")):
        link.impair(**kwargs)  # type: ignore[arg-type]
    assert dup_tables(a) == [] and root_qdisc_is_default(a)


#: iproute2's options for `tc qdisc replace dev lo root netem delay 10ms reorder 25% corrupt 1%`
#: (strace): latency 156250 ticks, limit 1000, gap 1; TCA_NETEM_REORDER 25 %, TCA_NETEM_CORRUPT 1 %.
_TC_REORDER_CORRUPT = (
    "34000200 5a620200 e8030000 00000000 01000000 00000000 00000000"
    "0c000300 00000040 00000000 0c000400 295c8f02 00000000"
)


def test_netem_corrupt_and_reorder_encode_as_iproute2_does() -> None:
    from pyroute2.netlink.rtnl.tcmsg import common

    if common.tick_in_usec != 15.625:
        pytest.skip("psched ticks differ from the recorded request")
    options = _tc._netem_options("10ms", None, None, None, 1000, 0.01, 0.25)
    body = _tc._netem_request(1, options, "netem").body
    expected = bytearray.fromhex(_TC_REORDER_CORRUPT.replace(" ", ""))
    # pyroute2 rounds probabilities down where tc rounds to nearest: 1 in 2**32 apart.
    expected[32:36] = (0x3FFFFFFF).to_bytes(4, "little")
    expected[44:48] = (0x028F5C28).to_bytes(4, "little")
    assert body[32:].hex() == expected.hex()


# -- rate units -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "bits"),
    [
        ("8mbit", 8_000_000),
        ("8Mbit", 8_000_000),
        ("512kbit", 512_000),
        ("1gbit", 10**9),
        ("2mibit", 2 * 1024**2),
        ("3gibit", 3 * 1024**3),
        ("4kibit", 4096),
        ("9600bit", 9600),
        ("9600", 9600),
        (1_000_000, 1_000_000),
    ],
)
def test_bit_units_are_taken(text: str | int, bits: int) -> None:
    assert parse_rate(text) == bits


@pytest.mark.parametrize(
    ("text", "instead"),
    [
        ("8 Mbps", "'8 Mbps' would be 64mbit); write bits per second, e.g. '8mbit'"),
        ("100kbps", "would be 800kbit"),
        ("1MBps", "e.g. '1mbit'"),
        ("5bps", "e.g. '5bit'"),
        ("2gbps", "e.g. '2gbit'"),
        ("1mibps", "e.g. '1mibit'"),
        ("10Kibps", "e.g. '10kibit'"),
        ("3GiBps", "e.g. '3gibit'"),
    ],
)
def test_byte_units_are_refused_saying_why(text: str, instead: str) -> None:
    with pytest.raises(ValueError, match="ambiguous, tc reads it as bytes per second") as caught:
        parse_rate(text)
    assert repr(text) in str(caught.value) and instead in str(caught.value)


@pytest.mark.parametrize("text", ["1tbit", "8 mbits", "fast", "8mb", "8m"])
def test_other_units_are_refused_naming_the_bit_units(text: str) -> None:
    with pytest.raises(ValueError, match=f"rate '{text}' is not a number with a bit unit"):
        parse_rate(text)
