"""A TCP handshake crafted packet by packet, against a real server in another namespace.

The client is a "phantom" address, 10.0.0.99, that no kernel owns: had the
test used a's own address, a's kernel (which knows no such connection)
would answer the server's SYN/ACK with a RST.  b learns where the phantom
lives from an ARP request the test sends in its name (Linux records the
sender of every ARP request addressed to it).
"""

from __future__ import annotations

import socket
import threading

from scapy.all import ARP, IP, TCP, Ether, Raw

PHANTOM = "10.0.0.99"
PORT = 8080


def start_server(b, replies: list[bytes]) -> threading.Thread:
    with b:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("10.0.0.2", PORT))
    server.listen(1)
    server.settimeout(5)

    def serve() -> None:
        with server:
            conn, peer = server.accept()
            with conn:
                replies.append(f"{peer[0]}:{peer[1]}".encode())
                replies.append(conn.recv(100))
                conn.sendall(b"world")

    thread = threading.Thread(target=serve)
    thread.start()
    return thread


def test_crafted_handshake_then_data(netns_pair):
    a, b = netns_pair
    seen_by_server: list[bytes] = []
    server = start_server(b, seen_by_server)

    a.sendp(Ether() / ARP(psrc=PHANTOM, pdst="10.0.0.2"), "eth0")  # b now knows the phantom's MAC

    syn = IP(src=PHANTOM, dst="10.0.0.2") / TCP(sport=40000, dport=PORT, flags="S", seq=1000)
    synack = a.sr1(syn, timeout=2)
    assert synack is not None and synack[TCP].flags == "SA" and synack[TCP].ack == 1001

    ack = IP(src=PHANTOM, dst="10.0.0.2") / TCP(sport=40000, dport=PORT, flags="A", seq=1001, ack=synack[TCP].seq + 1)
    from_server = lambda p: TCP in p and p[TCP].sport == PORT and Raw in p  # noqa: E731
    with a.capture("eth0", lfilter=lambda p: TCP in p and p[TCP].sport == PORT) as cap:
        a.send(ack)
        a.send(ack.copy() / Raw(b"hello"))  # same seq/ack, now with data (PSH is not needed)
        answer = cap.wait(lfilter=from_server)[0]
    assert answer[Raw].load == b"world" and answer[IP].dst == PHANTOM
    assert answer[TCP].ack == 1001 + len(b"hello")  # the server acknowledged our five bytes

    a.send(IP(src=PHANTOM, dst="10.0.0.2") / TCP(sport=40000, dport=PORT, flags="R", seq=1006))
    server.join(5)
    assert seen_by_server == [f"{PHANTOM}:40000".encode(), b"hello"]


def test_closed_port_resets(netns_pair):
    a, _ = netns_pair
    reset = a.sr1(IP(dst="10.0.0.2") / TCP(sport=40001, dport=PORT, flags="S"), timeout=2)
    assert reset is not None and reset[TCP].flags == "RA" and reset[TCP].ack == 1
