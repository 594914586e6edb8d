"""Offloads off by default (issue 16, item 1): every captured frame is one a wire of the link's MTU would carry.

With segmentation offloads on, a veth passes the stack's packets of up to 64 KiB on whole, and a capture shows
them: a bulk transfer over an MTU 1400 link showed TCP segments of 58,016 bytes.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from pytest_netns import Namespace, presets
from pytest_netns._kernel import ethtool
from pytest_netns._kernel import rtnl as _rtnl
from pytest_netns._kernel.handle import handle_of
from pytest_netns.cluster import Cluster
from pytest_netns.docker import DockerHost
from pytest_netns.topology import Topology

MTU = 1400
ETHERNET_HEADER = 14
#: A bulk transfer: a few MB, so that TCP's window opens far enough for the stack to build large packets.
BULK = 2_000_000
SOL_UDP = 17
UDP_SEGMENT = 103


def bulk_tcp(server: Namespace, client: Namespace, address: str) -> int:
    """Send BULK bytes from ``client`` to a server in ``server`` over TCP; return how many arrived."""
    with server:
        listener = socket.create_server((address, 5000))
    received: list[int] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(10)
            total = 0
            while chunk := conn.recv(1 << 20):
                total += len(chunk)
            received.append(total)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client:
            sender = socket.create_connection((address, 5000), timeout=10)
        with sender:
            sender.sendall(b"x" * BULK)
    finally:
        thread.join(15)
        listener.close()
    return received[0]


def frame_sizes(server: Namespace, client: Namespace, address: str) -> tuple[list[int], int]:
    """The sizes of the frames a capture on the server's eth0 saw during a bulk TCP transfer, and the drops."""
    with server.capture("eth0") as cap:
        assert bulk_tcp(server, client, address) == BULK
    return [len(pkt) for pkt in cap.packets], cap.dropped


@pytest.mark.netns(mtu=MTU)
def test_a_bulk_transfer_over_netns_pair_captures_only_frames_that_fit_the_mtu(netns_pair) -> None:
    a, b = netns_pair
    sizes, dropped = frame_sizes(a, b, str(a.ip))
    assert max(sizes) <= MTU + ETHERNET_HEADER, sorted(sizes)[-5:]
    assert len(sizes) + dropped > BULK // MTU  # a frame per segment of at most the MTU, plus the acks


@pytest.mark.netns(mtu=MTU, offloads=True)
def test_with_offloads_on_the_same_transfer_captures_larger_frames(netns_pair) -> None:
    """The control for the test above: it can fail (the kernel does build larger packets here)."""
    a, b = netns_pair
    sizes, _ = frame_sizes(a, b, str(a.ip))
    assert max(sizes) > MTU + ETHERNET_HEADER


def test_udp_segmentation_offload_is_off_too(netns_pair) -> None:
    """A UDP socket asking the stack for segmentation (UDP_SEGMENT) still puts frames of the MTU on the link."""
    a, b = netns_pair
    with a:
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        receiver.bind((str(a.ip), 5001))
    with b:
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with receiver, sender:
        sender.setsockopt(SOL_UDP, UDP_SEGMENT, 1000)
        with a.capture("eth0", lfilter=lambda pkt: pkt.haslayer("UDP")) as cap:
            sender.sendto(b"u" * 30_000, (str(a.ip), 5001))
            datagrams = cap.wait(count=30)
    assert {len(pkt) for pkt in datagrams} == {ETHERNET_HEADER + 20 + 8 + 1000}


# -- every interface the plugin creates --------------------------------------------------------------


def created_devices(ns: Namespace) -> list[str]:
    """The veths and bridges in ``ns`` (not lo, nor fallback tunnel devices a host's modules put everywhere)."""
    found = []
    for msg in handle_of(ns).rtnl.dump(_rtnl.RTM_GETLINK, _rtnl.ifinfo(), f"listing links in {ns.name}"):
        info = msg.get_attr("IFLA_LINKINFO")
        if info is not None and info.get_attr("IFLA_INFO_KIND") in ("veth", "bridge"):
            found.append(msg.get_attr("IFLA_IFNAME"))
    return found


def offloads_on(namespaces: list[Namespace]) -> dict[str, list[str]]:
    """``{"ns:iface": [offloads that are on]}`` for every veth and bridge of the namespaces."""
    result = {}
    for ns in namespaces:
        for iface in created_devices(ns):
            on = [name for name, active in ethtool.features(handle_of(ns).rtnl.fileno(), iface).items() if active]
            result[f"{ns.name}:{iface}"] = [name for name in on if ethtool.is_offload(name)]
    return result


def test_every_interface_of_a_topology_has_its_offloads_off_unless_asked_for() -> None:
    with Topology() as net:
        a, b, c, d = (net.add(name) for name in "abcd")
        net.link(a, b)
        net.segment([b, c, d])
        net.link(c, d, offloads=True)
        net.segment([a, d], offloads=True)
        found = offloads_on([*net.namespaces, *(segment.namespace for segment in net.segments)])
    kept = {"c:eth1", "d:eth1", "a:eth1", "d:eth2", "bridge2:br0", "bridge2:a", "bridge2:d"}
    assert len(found) == 16  # 9 member ends, two bridges, 5 ports
    assert {where for where, on in found.items() if on} == kept
    assert all(found[where] for where in kept)


@pytest.mark.parametrize("offloads", [False, True])
def test_presets_pair_and_bridge_take_offloads(offloads: bool) -> None:
    with presets.pair(offloads=offloads) as (a, b), presets.bridge(size=2, offloads=offloads) as members:
        found = offloads_on([a, b, *members, members.segment.namespace])
    assert len(found) == 7  # two ends, two members, the bridge and its two ports
    assert all(bool(on) == offloads for on in found.values()), found


def test_offloads_must_be_a_bool() -> None:
    with pytest.raises(ValueError, match="offloads must be True or False, got 'yes'"):
        presets.pair(offloads="yes")  # type: ignore[arg-type]
    with Topology() as net:
        a, b = net.add("a"), net.add("b")
        with pytest.raises(ValueError, match="offloads must be True or False, got 1"):
            net.link(a, b, offloads=1)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="offloads must be True or False, got None"):
            net.segment([a, b], offloads=None)  # type: ignore[arg-type]
        assert net.links == [] and net.segments == []


@pytest.fixture(params=["ptp", "bridge"])
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    # A bridge CNI node without br_netfilter raises FeatureUnavailable: the plugin skips naming it,
    # or fails the test under --netns-require-features=br_netfilter.
    with Cluster(cni=request.param) as made:
        node = made.node("node1")
        made.pod("web", node=node)
        made.external("outside")
        yield made


def test_every_interface_of_a_cluster_has_its_offloads_off(cluster: Cluster) -> None:
    found = offloads_on(cluster.namespaces)
    assert len(found) >= 5  # the fabric's lan0 and lan1, the node's and pod's ends (and cni0)
    assert not {where: on for where, on in found.items() if on}


def test_every_interface_of_a_docker_host_has_its_offloads_off() -> None:
    with DockerHost() as docker:
        docker.container("web")
        found = offloads_on(docker.namespaces)
    assert "host:docker0" in found and len(found) >= 5
    assert not {where: on for where, on in found.items() if on}
