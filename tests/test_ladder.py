"""The failure ladder: one line per packet, whatever order equal timestamps come in (issue 16, item 10)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest

from pytest_netns._kernel import afpacket as _afpacket
from pytest_netns._plugin import story as _story
from pytest_netns._plugin.pcap import RECORDERS

OUT, IN = _afpacket.PACKET_OUTGOING, _afpacket.PACKET_HOST


@dataclass
class Recorded:
    """What ladder_rows reads of a recorder: a label and its frames in queue order."""

    label: str
    frames: list[_afpacket.Frame] = field(default_factory=list)

    def add(self, time: float, pkttype: int, data: bytes, ifname: str = "eth0") -> None:
        self.frames.append(_afpacket.Frame(time, ifname, pkttype, _afpacket.ARPHRD_ETHER, _afpacket.ETH_P_IP, data))


def test_a_packet_received_at_the_same_timestamp_it_was_sent_is_one_line() -> None:
    # An ICMP error is sent from the softirq that received the datagram: its
    # receiving end is stamped well under a microsecond after its sending end,
    # and a float of seconds since the epoch resolves 0.24 us.  a's recorder
    # is listed first and holds fewer frames: a key of (time, index) put a's
    # incoming copy before b's outgoing one, and the packet became two lines.
    a, b = Recorded("a"), Recorded("b")
    t = 1_700_000_000.25
    b.add(t - 1.0, IN, b"earlier")  # b has seen more packets: its index is higher
    a.add(t - 0.5, OUT, b"udp")
    b.add(t - 0.5 + 1e-6, IN, b"udp")
    b.add(t, OUT, b"icmp port unreachable")
    a.add(t, IN, b"icmp port unreachable")
    rows = _story.ladder_rows([a, b])  # type: ignore[list-item]
    assert [(row.path, row.data) for row in rows] == [
        ("-> b:eth0", b"earlier"),
        ("a:eth0 -> b:eth0", b"udp"),
        ("b:eth0 -> a:eth0", b"icmp port unreachable"),
    ]


def test_a_bridge_passing_a_frame_up_to_its_own_interface_is_the_same_line() -> None:
    # A promiscuous bridge sees a frame on its port and then on its own device (br0).
    h1, switch, h2 = Recorded("h1"), Recorded("bridge1"), Recorded("h2")
    t = 1_700_000_000.0
    h1.add(t, OUT, b"frame")
    switch.add(t + 1e-6, IN, b"frame", "h1")
    switch.add(t + 2e-6, IN, b"frame", "br0")
    switch.add(t + 3e-6, OUT, b"frame", "h2")
    h2.add(t + 4e-6, IN, b"frame")
    rows = _story.ladder_rows([h1, switch, h2])  # type: ignore[list-item]
    assert [row.path for row in rows] == ["h1:eth0 -> bridge1:h1, bridge1:br0", "bridge1:h2 -> h2:eth0"]


def test_a_bridge_flooding_a_multicast_frame_before_passing_it_up_is_one_line_per_hop() -> None:
    # Seen on a Segment: an MLD report from c is flooded out of the bridge's other ports
    # first, then passed up to br0.  br0's copy was taken as the far end of the port
    # bridge1:a sending it ("bridge1:a -> bridge1:br0"), and a's copy became a line of its own.
    a, b, c, switch = Recorded("a"), Recorded("b"), Recorded("c"), Recorded("bridge1")
    t = 1_700_000_000.0
    c.add(t, OUT, b"mld", "eth1")
    switch.add(t + 1e-6, IN, b"mld", "c")
    switch.add(t + 2e-6, OUT, b"mld", "b")
    b.add(t + 3e-6, IN, b"mld", "eth1")
    switch.add(t + 4e-6, OUT, b"mld", "a")
    switch.add(t + 5e-6, IN, b"mld", "br0")
    a.add(t + 6e-6, IN, b"mld", "eth1")
    rows = _story.ladder_rows([a, b, c, switch])  # type: ignore[list-item]
    assert [row.path for row in rows] == [
        "c:eth1 -> bridge1:c, bridge1:br0",
        "bridge1:b -> b:eth1",
        "bridge1:a -> a:eth1",
    ]


def test_the_same_bytes_received_twice_in_one_namespace_much_later_are_two_packets() -> None:
    a, b = Recorded("a"), Recorded("b")
    t = 1_700_000_000.0
    a.add(t, OUT, b"arp")
    b.add(t + 1e-6, IN, b"arp")
    b.add(t + 2 * _story.HOP_WINDOW, IN, b"arp")
    rows = _story.ladder_rows([a, b])  # type: ignore[list-item]
    assert [row.path for row in rows] == ["a:eth0 -> b:eth0", "-> b:eth0"]


def test_icmp_port_unreachable_is_one_line_in_a_real_pair(netns_pair, request: pytest.FixtureRequest) -> None:
    """The first recorded test of a process too: timestamping switched on late stamped frames when read."""
    from scapy.all import IP, UDP

    a, _b = netns_pair
    assert a.sr1(IP(dst="10.0.0.2") / UDP(sport=40001, dport=9), timeout=2) is not None
    recorders = request.node.stash.get(RECORDERS, [])
    if not recorders:
        pytest.skip("this run records nothing (--netns-pcap=never)")
    before = time.time()
    for recorder in recorders:
        recorder.collect()
    assert all(frame.time < before for recorder in recorders for frame in recorder.frames)
    rows = _story.ladder_rows(recorders)
    lines = [(row.path, _story.summarise(row.data, row.hatype, row.proto)) for row in rows]
    assert [path for path, text in lines if "port-unreachable" in text] == ["b:eth0 -> a:eth0"], lines
    assert all(row.sender and row.receivers for row in rows), lines  # both ends of a veth are recorded
