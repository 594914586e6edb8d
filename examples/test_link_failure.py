"""What a client sees when a link on its path goes down, and when it comes back.

client -- router -- server, with a line-based TCP echo server.  Pulling the
router-server cable does not close the client's connection: its request is
retransmitted in the dark and the client's read times out.  Once the cable
is back, TCP's next retransmission gets through and the very same
connection answers; a UDP request sent during the outage is simply lost.
"""

from __future__ import annotations

import socket
import threading

import pytest


@pytest.fixture
def service(netns_topology):
    client = netns_topology.add("client")
    router = netns_topology.add("router", router=True)
    server = netns_topology.add("server")
    netns_topology.link(client, router)
    uplink = netns_topology.link(router, server)
    netns_topology.autoroute()

    with server:
        listener = socket.create_server((str(server.ip), 7000))
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((str(server.ip), 7000))
    stop = threading.Event()

    def echo_tcp() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=lambda c=conn: _echo_lines(c), daemon=True).start()

    def echo_udp() -> None:
        udp.settimeout(0.1)
        while not stop.is_set():
            try:
                data, peer = udp.recvfrom(2048)
            except TimeoutError:
                continue
            udp.sendto(data.upper(), peer)

    threads = [threading.Thread(target=echo_tcp), threading.Thread(target=echo_udp)]
    for thread in threads:
        thread.start()
    yield client, server, uplink
    stop.set()
    for thread in threads:
        thread.join()
    listener.close()
    udp.close()


def _echo_lines(conn: socket.socket) -> None:
    with conn, conn.makefile("rwb") as stream:
        for line in stream:
            stream.write(line.upper())
            stream.flush()


def test_tcp_client_times_out_then_the_same_connection_recovers(service):
    client, server, uplink = service
    with client:
        conn = socket.create_connection((str(server.ip), 7000), timeout=0.5)
    with conn:
        conn.sendall(b"before\n")
        assert conn.recv(100) == b"BEFORE\n"

        uplink.down()  # the cable between router and server is pulled
        conn.sendall(b"during\n")  # accepted by the kernel: nothing tells the client yet
        with pytest.raises(TimeoutError):
            conn.recv(100)  # the client's own timeout is all it gets

        uplink.up()  # plugged back: TCP's next retransmission gets through
        conn.settimeout(5)
        assert conn.recv(100) == b"DURING\n"


def test_udp_request_during_the_outage_is_lost(service):
    client, server, uplink = service
    with client:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.settimeout(0.5)
        sock.connect((str(server.ip), 7000))
        sock.send(b"one")
        assert sock.recv(100) == b"ONE"
        uplink.down()
        sock.send(b"two")  # no error: the datagram leaves the client and is dropped on the way
        with pytest.raises(TimeoutError):
            sock.recv(100)
        uplink.up()
        sock.send(b"three")  # a new request works at once; "two" is gone for good
        assert sock.recv(100) == b"THREE"
