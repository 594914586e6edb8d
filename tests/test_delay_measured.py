"""Delay and jitter from ``impair()``, measured with real packets and printed.

Where the kernel has ``sch_netem`` (Debian's and Ubuntu's do, as a module;
``dev/test kernel`` runs these under Debian's kernel), each test measures
round trips with ICMP echo (the kernel answers, so no Python server sits on
the path) and prints its figures, which ``dev/test kernel`` shows (``-s``).
Where netem is missing every test is skipped by the plugin with a reason
naming ``sch_netem``.

Bounds: netem holds each packet at least ``delay`` (no jitter) or
``delay - jitter`` per direction, so those lower bounds are exact.  Upper
bounds allow 10 % for the time the measuring process takes: the *minimum*
of 20 round trips, which load on the machine can only delay, must be
within 10 % of twice the delay.  Jitter is uniform in +-jitter per direction
(netem without a distribution table), so a round trip with 40 ms +- 10 ms
each way has a triangular distribution on 60..100 ms: median 80 ms,
standard deviation sqrt(2 * 20**2 / 12) = 8.2 ms (the sample standard
deviation of 60 round trips varies by about 0.6 ms, so the bound of 4 ms is
7 of those below it), and about a quarter of round trips faster than the
80 ms that netem never beats without jitter.
"""

from __future__ import annotations

import os
import select
import socket
import statistics
import struct
import time

import pytest
from test_topology_impair import tcp_rate  # bulk TCP, read from the receiving interface

from pytest_netns import Namespace
from pytest_netns._kernel.ping import _checksum
from pytest_netns.topology import Link, Topology


def round_trips(src: Namespace, dst: str, count: int, *, timeout: float = 2.0) -> list[float]:
    """``count`` ICMP echo round trips src -> dst, one at a time, in milliseconds (a lost one fails)."""
    with src:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident = os.getpid() & 0xFFFF
    times = []
    with sock:
        for seq in range(1, count + 1):
            header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
            packet = struct.pack("!BBHHH", 8, 0, _checksum(header + b"rtt"), ident, seq) + b"rtt"
            start = time.perf_counter()
            sock.sendto(packet, (dst, 0))
            deadline = start + timeout
            while True:
                left = deadline - time.perf_counter()
                assert left > 0, f"echo {seq} to {dst} was not answered within {timeout} s"
                if not select.select([sock], [], [], left)[0]:
                    continue
                reply = sock.recv(1500)
                kind, _, _, r_ident, r_seq = struct.unpack("!BBHHH", reply[20:28])
                if kind == 0 and (r_ident, r_seq) == (ident, seq):
                    times.append((time.perf_counter() - start) * 1000)
                    break
    return times


def report(what: str, rtts: list[float]) -> None:
    """One line for the CI log (shown with -s)."""
    print(
        f"\nmeasured {what}: {len(rtts)} round trips, min {min(rtts):.1f} ms, median {statistics.median(rtts):.1f} ms,"
        f" mean {statistics.fmean(rtts):.1f} ms, max {max(rtts):.1f} ms, stdev {statistics.stdev(rtts):.2f} ms"
    )


@pytest.fixture
def link(netns_topology: Topology) -> Link:
    a, b = netns_topology.add("a"), netns_topology.add("b")
    link = netns_topology.link(a, b)
    assert a.ping(str(b.ip)) and b.ping(str(a.ip))  # neighbours resolved before any delay
    return link


def ends(link: Link) -> tuple[Namespace, Namespace]:
    (a, _), (b, _) = link.ends
    return a, b


def test_delay_40ms_makes_a_round_trip_of_80ms(link: Link) -> None:
    a, b = ends(link)
    with link.impair(delay="40ms"):
        rtts = round_trips(a, str(b.ip), 20)
    report("delay=40ms on a link", rtts)
    assert min(rtts) >= 80.0, rtts  # 40 ms each way, never less
    assert min(rtts) <= 88.0, rtts  # within 10 %
    clean = round_trips(a, str(b.ip), 20)
    report("the same link after revert", clean)
    assert min(clean) < 8.0, clean  # the delay is gone


def test_jitter_spreads_the_round_trips(link: Link) -> None:
    a, b = ends(link)
    with link.impair(delay="40ms"):
        steady = round_trips(a, str(b.ip), 20)
    with link.impair(delay="40ms", jitter="10ms"):
        jittery = round_trips(a, str(b.ip), 60)
    report("delay=40ms on a link", steady)
    report("delay=40ms jitter=10ms on a link", jittery)
    assert min(steady) >= 80.0, steady  # without jitter, never faster than the delay
    assert min(jittery) >= 60.0, jittery  # 30 ms each way at least
    # Faster than the delay alone allows: P(RTT < 75 ms) >= 0.21 even with 2 ms of measuring
    # overhead, so fewer than 2 of 60 happens with probability 1.2e-5.
    assert sum(rtt < 75.0 for rtt in jittery) >= 2, jittery
    assert statistics.stdev(jittery) >= 4.0, jittery  # 8.2 ms expected; load can only add to it


def test_delay_on_a_segment_applies_once_each_way(netns_bridge) -> None:
    h1, h2, _ = netns_bridge
    assert h1.ping(str(h2.ip)) and h2.ping(str(h1.ip))
    with netns_bridge.segment.impair(delay="40ms"):
        rtts = round_trips(h1, str(h2.ip), 20)
    report("delay=40ms on a bridge segment", rtts)
    assert 80.0 <= min(rtts) <= 88.0, rtts


def test_delay_with_a_rate_keeps_both(link: Link) -> None:
    """rate= together with delay= is netem's own rate: both apply."""
    a, b = ends(link)
    wanted = 4_000_000
    with link.impair(delay="20ms", rate="4mbit"):
        rtts = round_trips(a, str(b.ip), 20)
        rate = tcp_rate(a, b, str(b.ip), warmup=1.5)
    report("delay=20ms rate=4mbit on a link", rtts)
    print(f"measured rate with delay=20ms rate=4mbit: {rate / 1e6:.2f} Mbit/s on the wire")
    assert 40.0 <= min(rtts) <= 44.0, rtts
    assert abs(rate - wanted) <= 0.10 * wanted, rate

