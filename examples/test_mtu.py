"""Path MTU discovery across a link with a small MTU.

client --(1500)-- r1 --(1280)-- r2 --(1500)-- server

A UDP client that forbids fragmentation sends a datagram that fits its own
link but not the next one: the router drops it and answers "fragmentation
needed" (IPv4) or "packet too big" (IPv6); from then on the kernel knows the
path MTU, and the application's next send of that size fails with EMSGSIZE
instead of vanishing.  TCP adapts by itself: its segments shrink to fit.
"""

from __future__ import annotations

import errno
import select
import socket
import threading

import pytest

# From linux/in.h and linux/in6.h; Python's socket module does not export them.
IP_MTU_DISCOVER, IP_PMTUDISC_DO, IP_MTU = 10, 2, 14
IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO, IPV6_MTU = 23, 2, 24

FAMILIES = {
    4: (socket.AF_INET, socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO, IP_MTU, 20 + 8),
    6: (socket.AF_INET6, socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO, IPV6_MTU, 40 + 8),
}


@pytest.fixture
def path(netns_topology):
    client = netns_topology.add("client")
    r1 = netns_topology.add("r1", router=True)
    r2 = netns_topology.add("r2", router=True)
    server = netns_topology.add("server")
    netns_topology.link(client, r1)  # MTU 1500
    netns_topology.link(r1, r2, mtu=1280)  # the bottleneck, in the middle of the path
    netns_topology.link(r2, server)
    netns_topology.autoroute()
    return client, server


@pytest.mark.parametrize("version", [4, 6])
def test_udp_with_dont_fragment_learns_the_path_mtu(path, version):
    client, server = path
    family, level, discover, do, mtu_option, headers = FAMILIES[version]
    server_address = str(server.ip if version == 4 else server.ip6)
    with server:
        receiver = socket.socket(family, socket.SOCK_DGRAM)
    with client:
        sender = socket.socket(family, socket.SOCK_DGRAM)
    with receiver, sender:
        receiver.bind((server_address, 9000))
        sender.setsockopt(level, discover, do)  # never fragment: learn the path MTU instead
        sender.connect((server_address, 9000))
        assert sender.getsockopt(level, mtu_option) == 1500  # all the client knows so far

        sender.send(bytes(1500 - headers))  # fits the client's link, so it leaves...
        # ...and the router answers with an ICMP error, which arrives as a socket error
        # (the next call on the socket would fail with it; reading SO_ERROR takes it).
        assert select.select([sender], [], [], 2.0)[0], "no ICMP error came back"
        assert sender.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.EMSGSIZE
        assert sender.getsockopt(level, mtu_option) == 1280

        with pytest.raises(OSError) as too_big:
            sender.send(bytes(1500 - headers))  # from now on the kernel refuses at once
        assert too_big.value.errno == errno.EMSGSIZE

        sender.send(bytes(1280 - headers))  # the largest datagram the path carries
        receiver.settimeout(2)
        assert len(receiver.recv(65535)) == 1280 - headers  # and the big one never arrived


def test_tcp_segments_shrink_to_fit_the_path(path):
    client, server = path
    payload = bytes(range(256)) * 4096  # 1 MiB
    with server:
        listener = socket.create_server((str(server.ip), 9001))
    with client:
        conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    received = bytearray()

    def serve() -> None:
        accepted, _ = listener.accept()
        with accepted:
            while chunk := accepted.recv(65536):
                received.extend(chunk)

    with listener, conn:
        thread = threading.Thread(target=serve)
        thread.start()
        conn.settimeout(10)
        conn.connect((str(server.ip), 9001))
        # Both ends have 1500-byte links: the handshake agrees on 1448-byte segments.
        assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG) == 1448
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        thread.join(10)
        # 1280 - 20 (IP) - 20 (TCP) - 12 (timestamps): what fits the narrow link.
        assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG) <= 1228
    assert bytes(received) == payload
