"""ICMP echo without a ping binary, on a raw socket made in the calling thread's namespace.

Raw sockets need CAP_NET_RAW (which the plugin's callers have); the kernel's
unprivileged ping sockets are off in new namespaces (``ping_group_range``)
and turning them on would change the namespace behind the user's back.
"""

from __future__ import annotations

import ipaddress
import os
import select
import socket
import struct
import time

ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY = 8, 0
ICMP6_ECHO_REQUEST, ICMP6_ECHO_REPLY = 128, 129


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def ping(dst: ipaddress.IPv4Address | ipaddress.IPv6Address, count: int, timeout: float) -> bool:
    """True if any of ``count`` echo requests to ``dst`` is answered within ``timeout`` each."""
    v6 = dst.version == 6
    family, proto = (socket.AF_INET6, socket.IPPROTO_ICMPV6) if v6 else (socket.AF_INET, socket.IPPROTO_ICMP)
    request, reply = (ICMP6_ECHO_REQUEST, ICMP6_ECHO_REPLY) if v6 else (ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY)
    ident = (os.getpid() ^ id(object())) & 0xFFFF
    with socket.socket(family, socket.SOCK_RAW | socket.SOCK_CLOEXEC, proto) as sock:
        if v6:
            # Deliver only echo replies: ICMPv6 filter, 8 words of 32 bits, a set bit blocks a type.
            blocked = [0xFFFFFFFF] * 8
            blocked[ICMP6_ECHO_REPLY >> 5] &= ~(1 << (ICMP6_ECHO_REPLY & 31))
            sock.setsockopt(socket.IPPROTO_ICMPV6, 1, struct.pack("=8I", *blocked))  # ICMP6_FILTER
        payload = b"pytest-netns ping"
        for seq in range(1, count + 1):
            header = struct.pack("!BBHHH", request, 0, 0, ident, seq)
            # The kernel fills the ICMPv6 checksum itself (it needs the pseudo-header).
            packet = (
                header + payload
                if v6
                else struct.pack("!BBHHH", request, 0, _checksum(header + payload), ident, seq) + payload
            )
            try:
                sock.sendto(packet, (str(dst), 0))
            except OSError:
                # No route, unreachable network, link down: this request is lost.
                time.sleep(min(timeout, 0.01))
                continue
            if _await_reply(sock, v6, reply, ident, seq, timeout):
                return True
    return False


def _await_reply(sock: socket.socket, v6: bool, reply: int, ident: int, seq: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([sock], [], [], left)[0]:
            return False
        data = sock.recv(65535)
        if not v6:
            data = data[(data[0] & 0x0F) * 4 :]  # IPv4 raw sockets include the IP header
        if len(data) >= 8:
            kind, _code, _sum, rid, rseq = struct.unpack_from("!BBHHH", data)
            if kind == reply and rid == ident and rseq == seq:
                return True
