"""Throughput under a rate limit: a download over an 8 Mbit/s link.

``link.impair(rate="8mbit")`` shapes both directions with a token bucket
(tbf), as a slow link would; the limit counts whole Ethernet frames, so an
application sees about 4 % less (headers).  After the block the link is
fast again.  An upload is shaped the same way.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

SIZE = 2_000_000  # bytes: about two seconds at 8 Mbit/s


@pytest.fixture
def pair(netns_topology):
    client, server = netns_topology.add("client"), netns_topology.add("server")
    link = netns_topology.link(client, server)
    return client, server, link


def transfer(sender_ns, receiver_ns, address: str) -> float:
    """Send SIZE bytes over a fresh TCP connection; return the receiver's payload rate in bit/s."""
    with receiver_ns:
        listener = socket.create_server((address, 0))
    with sender_ns:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)

    def send() -> None:
        sock.sendall(bytes(SIZE))
        sock.shutdown(socket.SHUT_WR)

    with listener, sock:
        sock.settimeout(30)
        sock.connect(listener.getsockname())
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(30)
            thread = threading.Thread(target=send)
            start = time.monotonic()
            thread.start()
            received = 0
            while chunk := conn.recv(1 << 20):
                received += len(chunk)
            elapsed = time.monotonic() - start
            thread.join()
    assert received == SIZE
    return received * 8 / elapsed


def test_download_runs_at_the_link_rate(pair):
    client, server, link = pair
    with link.impair(rate="8mbit"):
        download = transfer(server, client, str(client.ip))
        upload = transfer(client, server, str(server.ip))
    # About 8 Mbit/s less the headers (1448 payload bytes per 1514-byte frame,
    # 7.65 Mbit/s), plus the first milliseconds at full speed (the bucket
    # starts full); the bounds leave room for a busy machine.
    assert 7_000_000 <= download <= 8_800_000, download
    assert 7_000_000 <= upload <= 8_800_000, upload
    # The limit ends with the block: the same download is no longer held to it.
    assert transfer(server, client, str(client.ip)) > 2 * 8_000_000
