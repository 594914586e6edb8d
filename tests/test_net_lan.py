"""The segment without a bridge (pytest_netns._net.lan): the cluster's node network, on its own.

Readiness is the claim that matters: a member's macvlan carries its first
packet when ``join`` returns, with no wait.  A lost first ARP request costs
the kernel a 1 s retransmit, so each datagram must arrive within 0.5 s.
Power: a readiness bug that loses 0.5 % of first packets (an unready veth
queue lost ~1 in 200) passes 1,000 setups with probability
0.995 ** 1000 < 1 %.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import time

import pytest
from _servers import first_datagram_arrives
from _timescale import scaled

from pytest_netns._net import lan as _lan
from pytest_netns.errors import FeatureUnavailable, KernelError
from pytest_netns.namespace import Namespace, close_all

SETUPS = 1000
NET = ipaddress.IPv4Network("10.77.0.0/24")


def address(host: int) -> ipaddress.IPv4Interface:
    return ipaddress.IPv4Interface((NET[host], NET.prefixlen))


def members(count: int, *, mtu: int = 1500) -> tuple[Namespace, _lan.Lan, list[Namespace]]:
    fabric = Namespace("fabric")
    segment = _lan.make_lan(fabric, mtu=mtu)
    hosts = [Namespace(f"h{i}") for i in range(1, count + 1)]
    for i, host in enumerate(hosts, start=1):
        _lan.join(segment, host, "eth0", [address(i)], mtu=mtu)
    return fabric, segment, hosts


@pytest.mark.slow
def test_the_first_datagram_between_members_arrives_in_every_one_of_1000_setups() -> None:
    lost = []
    for i in range(SETUPS):
        fabric, _, (a, b) = members(2)
        try:
            if not first_datagram_arrives(a, b, str(NET[2])):
                lost.append(i)
        finally:
            close_all([a, b, fabric])
    assert lost == []


def test_members_have_one_macvlan_each_and_the_segment_namespace_no_address() -> None:
    fabric, _, hosts = members(3)
    try:
        assert sorted(fabric.interfaces()) == ["lan0", "lan1", "lo"]
        assert fabric.addresses("lan0") == [] and fabric.addresses("lan1") == []
        for i, host in enumerate(hosts, start=1):
            assert sorted(host.interfaces()) == ["eth0", "lo"]
            assert host.addresses("eth0") == [address(i)]  # no IPv6 link-local either
        assert len({host.mac("eth0") for host in hosts}) == 3
        assert hosts[0].ping(str(NET[3])) and hosts[2].ping(str(NET[2]))
    finally:
        close_all([*hosts, fabric])


def test_a_capture_on_the_lower_device_sees_unicast_between_members() -> None:
    fabric, _, (a, b) = members(2)
    try:
        with b:
            server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with server:
            server.bind((str(NET[2]), 9))
            with fabric.capture("lan0", lfilter=lambda p: p.haslayer("UDP") and p["UDP"].dport == 9) as seen:
                with a:
                    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                        client.sendto(b"seen", (str(NET[2]), 9))
                found = seen.wait(1)
            assert bytes(found[0]["UDP"].payload) == b"seen"
            assert found[0]["IP"].src == str(NET[1])
    finally:
        close_all([a, b, fabric])


def test_raising_the_mtu_lets_members_raise_theirs_and_lowering_it_lowers_them() -> None:
    fabric, segment, (a, b) = members(2)
    try:
        with pytest.raises(KernelError):  # a macvlan never exceeds its lower device
            a.set_mtu("eth0", 9000)
        segment.set_mtu(9000, "the test segment")
        a.set_mtu("eth0", 9000)
        b.set_mtu("eth0", 9000)
        assert {fabric.mtu("lan0"), fabric.mtu("lan1"), a.mtu("eth0"), b.mtu("eth0")} == {9000}
        with b:
            server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with a:
            client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with server, client:
            server.bind((str(NET[2]), 9))
            server.settimeout(2)
            client.setsockopt(socket.IPPROTO_IP, 10, 2)  # IP_MTU_DISCOVER = IP_PMTUDISC_DO: never fragment
            client.sendto(bytes(8000), (str(NET[2]), 9))
            assert len(server.recv(9000)) == 8000
        segment.set_mtu(1400, "the test segment")
        assert {a.mtu("eth0"), b.mtu("eth0")} == {1400}
    finally:
        close_all([a, b, fabric])


def test_the_segment_namespace_dying_takes_every_member_interface_with_it() -> None:
    fabric, _, (a, b) = members(2)
    try:
        fabric.close()
        deadline = time.monotonic() + scaled(5.0)  # the kernel frees a dead namespace's devices from a work queue
        for host in (a, b):
            while "eth0" in host.interfaces() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert host.interfaces() == ["lo"]
    finally:
        close_all([a, b, fabric])


def test_a_member_dying_removes_only_its_own_interface() -> None:
    fabric, _, (a, b, c) = members(3)
    try:
        a.close()
        assert b.ping(str(NET[3]))
    finally:
        close_all([a, b, c, fabric])


def test_a_kernel_without_macvlan_is_a_feature_unavailable_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the kernel answers for a link kind it does not know (EOPNOTSUPP), as a kernel without macvlan would."""
    fabric = Namespace("fabric")
    host = Namespace("h1")
    try:
        segment = _lan.make_lan(fabric, mtu=1500)
        real = _lan._rtnl.new_macvlan

        def unknown_kind(*args: object, **kwargs: object) -> object:
            request = real(*args, **kwargs)  # type: ignore[arg-type]
            request.body = request.body.replace(b"macvlan\0", b"nosuchk\0")
            return request

        monkeypatch.setattr(_lan._rtnl, "new_macvlan", unknown_kind)
        try:
            _lan.join(segment, host, "eth0", [address(1)], mtu=1500)
        except FeatureUnavailable as exc:
            assert exc.feature == "macvlan"
            assert "macvlan" in str(exc) and "h1:eth0" in str(exc)
            assert isinstance(exc.__cause__, KernelError) and exc.__cause__.errno == errno.EOPNOTSUPP
        else:
            pytest.fail("an unknown link kind was accepted")
    finally:
        close_all([host, fabric])


def test_a_member_index_that_is_the_segments_own_is_refused_naming_it() -> None:
    fabric, segment, hosts = members(1)
    extra = Namespace("h2")
    try:
        assert (segment.index, segment.peer_index) == (_lan.LOWER_INDEX, _lan.LOWER_PEER_INDEX)
        with pytest.raises(ValueError, match="ifindex 2 for h2:eth0"):
            _lan.join(segment, extra, "eth0", [address(2)], mtu=1500, index=segment.index)
    finally:
        close_all([extra, *hosts, fabric])
