"""The per-namespace recorder, the pcap writer and the failure story, without pytest in between."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from scapy.all import ICMP, IP, UDP, Raw, rdpcap

from pytest_netns._kernel import afpacket as _afpacket
from pytest_netns._kernel.handle import handle_of
from pytest_netns._plugin import story as _story
from pytest_netns.namespace import close_all
from pytest_netns.packets import recorder as _recorder
from pytest_netns.presets.simple import NetworkSettings, build_pair


@pytest.fixture
def recorded_pair(netns_factory):
    """A pair built by the library (not the fixture, whose own recording is the plugin's), recorded here."""
    a, b = build_pair(NetworkSettings())
    recorders = [_recorder.Recorder(a, "a"), _recorder.Recorder(b, "b")]
    for ns, rec in zip((a, b), recorders, strict=False):
        handle_of(ns).add_cleanup(rec.close, "closing the test's recorder")
    yield a, b, recorders
    close_all([a, b])


def test_every_packet_once_per_interface_both_directions(recorded_pair) -> None:
    a, _b, (rec_a, rec_b) = recorded_pair
    assert a.ping("10.0.0.2") and a.ping("127.0.0.1")
    frames_a, frames_b = rec_a.collect(), rec_b.collect()
    icmp = [(f.ifname, f.outgoing) for f in frames_a if f.proto == _afpacket.ETH_P_IP]
    assert icmp == [("eth0", True), ("eth0", False), ("lo", False), ("lo", False)]
    icmp_b = [(f.ifname, f.outgoing) for f in frames_b if f.proto == _afpacket.ETH_P_IP]
    assert icmp_b == [("eth0", False), ("eth0", True)]
    assert all(rec_a.started <= f.time for f in frames_a)
    assert rec_a.dropped == rec_b.dropped == 0


def test_the_bound_keeps_the_earliest_packets_and_counts_the_rest(netns_factory) -> None:
    a, b = build_pair(NetworkSettings())
    rec = _recorder.Recorder(b, "b", buffer=64 << 10)
    try:
        for i in range(300):
            a.send(IP(dst="10.0.0.2") / UDP(sport=40000, dport=9) / Raw(i.to_bytes(4, "big") + bytes(996)))
        frames = [f for f in rec.collect() if f.proto == _afpacket.ETH_P_IP and not f.outgoing]
    finally:
        rec.close()
        close_all([a, b])
    kept = [int.from_bytes(f.data[42:46], "big") for f in frames if len(f.data) > 1000]
    assert rec.dropped > 0 and len(kept) < 300
    assert kept == list(range(len(kept)))  # the first ones, in order, none missing


def test_pcap_files_hold_the_bytes_and_times(recorded_pair, tmp_path) -> None:
    a, _b, recorders = recorded_pair
    assert a.ping("10.0.0.2") and a.ping("127.0.0.1")
    for rec in recorders:
        rec.collect()
    files = _recorder.write_recordings(recorders, str(tmp_path))
    assert sorted((f.label, f.ifname) for f in files) == [("a", "eth0"), ("a", "lo"), ("b", "eth0")]
    for pcap in files:
        rec = recorders[0] if pcap.label == "a" else recorders[1]
        frames = [f for f in rec.frames if f.ifname == pcap.ifname]
        read = rdpcap(pcap.path)
        assert [bytes(p) for p in read] == [f.data for f in frames] and pcap.count == len(frames)
        assert [round(float(p.time), 6) for p in read] == [round(f.time, 6) for f in frames]
    if shutil.which("tcpdump"):
        out = subprocess.run(["tcpdump", "-nr", str(tmp_path / "a-eth0.pcap")],
                             capture_output=True, text=True, check=True)
        assert "ICMP echo request" in out.stdout and "ICMP echo reply" in out.stdout


def test_ladder_joins_both_ends_of_a_hop(recorded_pair) -> None:
    a, _b, recorders = recorded_pair
    assert a.sr1(IP(dst="10.0.0.2") / ICMP(id=9), timeout=2) is not None
    for rec in recorders:
        rec.collect()
    rows = _story.ladder_rows(recorders)
    paths = [(row.path, _story.summarise(row.data, row.hatype, row.proto)) for row in rows]
    assert ("a:eth0 -> b:eth0", "IP / ICMP 10.0.0.1 > 10.0.0.2 echo-request 0") in paths
    assert ("b:eth0 -> a:eth0", "IP / ICMP 10.0.0.2 > 10.0.0.1 echo-reply 0") in paths
    text = _story.render_ladder(rows, recorders[0].started, limit=2)
    assert "earlier packets: see packets.txt" in text and len(text.splitlines()) == 4


def test_topology_text(recorded_pair) -> None:
    a, b, _recorders = recorded_pair
    b.set_mtu("eth0", 1400)
    a.add_route("10.9.0.0/24", via="10.0.0.2")
    text = _story.render_topology([("a", a), ("b", b)])
    assert "a (net:[" in text and "b (net:[" in text
    assert "peer b:eth0" in text and "peer a:eth0" in text and "mtu 1400" in text
    assert "10.0.0.1/24 fd00::1/64" in text
    assert "10.9.0.0/24 via 10.0.0.2 dev eth0" in text


def test_pcap_linktype_follows_the_interface() -> None:
    assert _recorder.linktype(_afpacket.ARPHRD_ETHER) == _recorder.LINKTYPE_ETHERNET
    assert _recorder.linktype(_afpacket.ARPHRD_LOOPBACK) == _recorder.LINKTYPE_ETHERNET
    assert _recorder.linktype(65534) == _recorder.LINKTYPE_RAW  # ARPHRD_NONE: tun, wireguard
    assert _recorder.safe_name("tests/x.py::t[a/b]") == "tests_x.py__t[a_b]"
