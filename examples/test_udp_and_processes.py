"""Everyday patterns: a UDP exchange, commands inside namespaces, sysctls."""

from __future__ import annotations

import socket

import pytest

IP_MTU_DISCOVER, IP_PMTUDISC_DO = 10, 2  # <linux/in.h>; not exported by Python's socket module


def test_udp_request_reply(netns_pair):
    a, b = netns_pair
    with b:
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("10.0.0.2", 5000))
    with a:
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.settimeout(2)
    with server, client:
        client.sendto(b"question", ("10.0.0.2", 5000))
        question, peer = server.recvfrom(100)
        assert question == b"question"
        server.sendto(b"answer", peer)
        assert client.recvfrom(100) == (b"answer", ("10.0.0.2", 5000))
    assert peer[0] == "10.0.0.1"


def test_commands_see_only_their_namespace(netns_pair):
    a, _ = netns_pair
    devices = a.run(["cat", "/proc/net/dev"]).stdout
    assert "eth0" in devices and "eth1" not in devices


@pytest.mark.netns(mtu=9000)
def test_jumbo_frames(netns_pair):
    a, b = netns_pair
    assert a.mtu("eth0") == b.mtu("eth0") == 9000
    with b:
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("10.0.0.2", 5001))
    with a:
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # Don't fragment: an 8,900-byte datagram fits one 9000-byte frame.
    client.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
    with server, client:
        client.sendto(b"x" * 8900, ("10.0.0.2", 5001))
        assert len(server.recv(10000)) == 8900


def test_a_namespace_can_be_made_a_router(netns):
    assert netns.sysctl("net.ipv4.ip_forward") == "0"
    netns.sysctl("net.ipv4.ip_forward", 1)
    assert netns.sysctl("net.ipv4.ip_forward") == "1"
