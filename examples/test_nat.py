"""A client behind NAT, as the server sees it.

``netns_nat``: client 192.168.0.2 -- router (MASQUERADE) -- server 203.0.113.2.
The server has no route back to 192.168.0.0/24: every reply finds its way
only because the router translates it.  The server's access log shows the
router's outside address, never the client's; the server cannot open a
connection to the client; UDP replies go back through the NAT mapping.
"""

from __future__ import annotations

import socket
import sys
import urllib.request

import pytest


def test_server_logs_the_router_address(netns_nat, tmp_path):
    client, _, server = netns_nat
    (tmp_path / "index.html").write_text("hello\n")
    with open(tmp_path / "access.log", "w") as log_file:  # http.server logs requests to stderr
        web = server.popen(
            [sys.executable, "-m", "http.server", "8000", "--bind", "203.0.113.2", "--directory", str(tmp_path)],
            stderr=log_file,
        )
    server.wait_for_port("203.0.113.2", 8000)  # from inside: not logged as a request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy is reachable
    with client, opener.open("http://203.0.113.2:8000/index.html", timeout=5) as response:
        assert response.read() == b"hello\n"

    web.terminate()
    web.wait()
    log = (tmp_path / "access.log").read_text()
    assert log.startswith("203.0.113.1 - - [") and '"GET /index.html HTTP/1.1" 200' in log
    assert "192.168.0.2" not in log


def test_outside_cannot_reach_the_client(netns_nat):
    client, _, server = netns_nat
    with client:
        listener = socket.create_server(("192.168.0.2", 9000))
    with server:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with listener, sock, pytest.raises(OSError):  # no route to 192.168.0.0/24 from outside
        sock.settimeout(1)
        sock.connect(("192.168.0.2", 9000))


def test_udp_replies_follow_the_nat_mapping(netns_nat):
    client, _, server = netns_nat
    with server:
        echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with client:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with echo, sock:
        echo.bind(("203.0.113.2", 5353))
        sock.bind(("192.168.0.2", 40000))
        sock.settimeout(2)
        echo.settimeout(2)
        sock.sendto(b"query", ("203.0.113.2", 5353))
        data, seen_from = echo.recvfrom(100)
        assert data == b"query" and seen_from[0] == "203.0.113.1"
        echo.sendto(b"answer", seen_from)  # to the router's address and port: the mapping
        assert sock.recvfrom(100) == (b"answer", ("203.0.113.2", 5353))
