"""ARP and ICMP on the wire: craft with scapy inside a namespace, watch what the other kernel answers."""

from __future__ import annotations

from scapy.all import ARP, ICMP, IP, Ether, ICMPv6EchoReply, ICMPv6EchoRequest, ICMPv6ND_NA, ICMPv6ND_NS, IPv6


def test_arp_request_is_answered_with_the_peer_mac(netns_pair):
    a, _b = netns_pair
    # Ether src/dst and ARP hwsrc/psrc are left empty: they are filled from
    # a's eth0 (its MAC, its address), never from scapy's idea of the host.
    with a.capture("eth0", lfilter=lambda p: ARP in p) as cap:
        a.sendp(Ether() / ARP(pdst="10.0.0.2"), "eth0")
        request, reply = cap.wait(count=2)
    assert request.direction == 2 and request[Ether].dst == "ff:ff:ff:ff:ff:ff"
    assert request[ARP].psrc == "10.0.0.1"
    assert reply.direction == 1 and reply[ARP].op == 2  # is-at
    assert reply[ARP].psrc == "10.0.0.2" and reply[ARP].hwdst == request[ARP].hwsrc
    assert reply[Ether].src == reply[ARP].hwsrc


def test_ping_resolves_then_echoes(netns_pair):
    a, b = netns_pair
    # Capture on b: every packet b's eth0 saw, in order, with its direction.
    with b.capture("eth0", lfilter=lambda p: ARP in p or ICMP in p) as cap:
        reply = a.sr1(IP(dst="10.0.0.2") / ICMP(id=0x42, seq=1) / b"ping", timeout=2)
        cap.wait(count=4)
    assert reply is not None and reply[ICMP].type == 0 and reply[ICMP].id == 0x42 and reply.load == b"ping"
    story = [(p.direction, p.summary()) for p in cap.packets]
    assert story == [
        (1, "Ether / ARP who has 10.0.0.2 says 10.0.0.1"),
        (2, f"Ether / ARP is at {cap.packets[1][ARP].hwsrc} says 10.0.0.2"),
        (1, "Ether / IP / ICMP 10.0.0.1 > 10.0.0.2 echo-request 0 / Raw"),
        (2, "Ether / IP / ICMP 10.0.0.2 > 10.0.0.1 echo-reply 0 / Raw"),
    ]


def test_ipv6_neighbour_discovery_then_echo(netns_pair):
    a, b = netns_pair
    with b.capture("eth0", lfilter=lambda p: ICMPv6ND_NS in p or ICMPv6ND_NA in p) as nd:
        reply = a.sr1(IPv6(dst="fd00::2") / ICMPv6EchoRequest(id=7, seq=1), timeout=2)
        solicitation, advertisement = nd.wait(count=2)
    assert reply is not None and ICMPv6EchoReply in reply and reply[ICMPv6EchoReply].id == 7
    assert solicitation[ICMPv6ND_NS].tgt == "fd00::2" and solicitation[IPv6].dst == "ff02::1:ff00:2"
    assert advertisement[ICMPv6ND_NA].tgt == "fd00::2"


def test_unreachable_host_gets_no_answer(netns_pair):
    a, _ = netns_pair
    with a.capture("eth0", lfilter=lambda p: ARP in p) as cap:
        assert a.sr1(IP(dst="10.0.0.77") / ICMP(), timeout=0.5) is None
        who_has = cap.wait()
    assert who_has[0][ARP].pdst == "10.0.0.77"  # a asked; nobody answered
