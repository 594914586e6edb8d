"""Asserting on what the kernel puts on the wire: DSCP, TTL / hop limit, fragment offsets."""

from __future__ import annotations

import socket

import pytest
from scapy.all import ICMP, IP, UDP, IPv6, IPv6ExtHdrFragment, Raw, fragment

DSCP_EF = 46  # expedited forwarding; the TOS byte carries it shifted left by two (0xb8)


def udp_socket(ns, family=socket.AF_INET):
    with ns:
        return socket.socket(family, socket.SOCK_DGRAM)


def test_application_marks_dscp_and_ttl(netns_pair):
    a, b = netns_pair
    client = udp_socket(a)
    client.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, DSCP_EF << 2)
    client.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 7)
    with client, b.capture("eth0", lfilter=lambda p: UDP in p and p[UDP].dport == 5000) as cap:
        client.sendto(b"voice", ("10.0.0.2", 5000))
        pkt = cap.wait()[0]
    assert pkt[IP].tos >> 2 == DSCP_EF and pkt[IP].tos & 3 == 0  # DSCP set, ECN bits untouched
    assert pkt[IP].ttl == 7


def test_ipv6_traffic_class_and_hop_limit(netns_pair):
    a, b = netns_pair
    client = udp_socket(a, socket.AF_INET6)
    client.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, DSCP_EF << 2)
    client.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 3)
    with client, b.capture("eth0", lfilter=lambda p: UDP in p and p[UDP].dport == 5000) as cap:
        client.sendto(b"voice", ("fd00::2", 5000))
        pkt = cap.wait()[0]
    assert pkt[IPv6].tc >> 2 == DSCP_EF and pkt[IPv6].hlim == 3


def test_crafted_dscp_and_ttl_are_sent_as_given(netns_pair):
    a, b = netns_pair
    with b.capture("eth0", lfilter=lambda p: UDP in p) as cap:
        a.send(IP(dst="10.0.0.2", tos=DSCP_EF << 2 | 1, ttl=1) / UDP(sport=5000, dport=5000) / b"x")
        pkt = cap.wait()[0]
    assert (pkt[IP].tos, pkt[IP].ttl) == (DSCP_EF << 2 | 1, 1)


@pytest.mark.netns(mtu=1500)
def test_kernel_fragments_a_large_datagram(netns_pair):
    a, b = netns_pair
    server = udp_socket(b)
    server.bind(("10.0.0.2", 5000))
    client = udp_socket(a)
    with server, client, b.capture("eth0", lfilter=lambda p: IP in p and p[IP].proto == 17) as cap:
        client.sendto(bytes(4000), ("10.0.0.2", 5000))
        fragments = cap.wait(count=3)
        assert len(server.recv(5000)) == 4000  # reassembled by b's kernel
    # 1500 - 20 bytes of IP header = 1480 bytes of data per fragment: offsets count 8-byte blocks
    assert [(p[IP].frag, p[IP].flags.MF, len(p[IP].payload)) for p in fragments] == [
        (0, True, 1480), (185, True, 1480), (370, False, 4008 - 2960)]
    assert len({p[IP].id for p in fragments}) == 1


@pytest.mark.netns(mtu=1280)
def test_ipv6_fragment_headers_at_minimum_mtu(netns_pair):
    a, b = netns_pair
    client = udp_socket(a, socket.AF_INET6)
    with client, b.capture("eth0", lfilter=lambda p: IPv6ExtHdrFragment in p) as cap:
        client.sendto(bytes(3000), ("fd00::2", 5000))
        fragments = cap.wait(count=3)
    # 1280 - 40 (IPv6) - 8 (fragment header) = 1232 bytes per fragment, 154 blocks of 8
    assert [(p[IPv6ExtHdrFragment].offset, p[IPv6ExtHdrFragment].m) for p in fragments] == [(0, 1), (154, 1), (308, 0)]


def test_crafted_fragments_out_of_order_are_reassembled(netns_pair):
    a, _b = netns_pair
    echo = IP(dst="10.0.0.2", id=777) / ICMP(id=5, seq=1) / Raw(bytes(range(256)) * 8)
    echo = IP(bytes(echo))  # build once: every fragment carries the same checksum
    pieces = fragment(echo, fragsize=512)
    assert [p.frag for p in pieces] == [0, 64, 128, 192, 256]
    with a.capture("eth0", lfilter=lambda p: ICMP in p and p[ICMP].type == 0) as cap:
        a.send(list(reversed(pieces)))  # last fragment first: b's kernel must reassemble
        reply = cap.wait()[0]
    # b's reply fits no single frame either: what a sees is its first fragment
    assert reply[IP].flags.MF and reply[ICMP].id == 5
