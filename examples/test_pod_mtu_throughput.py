"""MTU on the pod network: TCP throughput between two pods at MTU 1500, 9000 and 1280.

A common belief is that a higher MTU lowers throughput.  Rather than argue,
this example measures it: the same two pods on two nodes, the same path
(pod veth, ``cni0``, node routing, node network bridge, the other node,
its ``cni0``, the other pod's veth), and only the MTU of every link of the
cluster changes (``cluster.set_mtu``).  It runs several rounds in rotating
order and reports the median throughput per MTU together with what the MTU
changes on the wire: the connection's MSS and the number of TCP segments
the sender's kernel counted.  The table is printed and attached to the test
report (``record_property("pod_mtu_throughput", ...)``, e.g. in JUnit XML).

It asserts only what cannot depend on the machine's load: every MTU moved
data, and each connection's MSS follows the MTU.  Speeds are reported,
never judged: a shared machine makes any threshold flaky.
"""

from __future__ import annotations

import socket
import statistics
import threading
import time

import pytest

MTUS = (1500, 9000, 1280)
ROUNDS = 3
SECONDS = 0.4  # per measurement
PORT = 5201
CHUNK = 1 << 20
IPV4_TCP_HEADERS = 40  # 20 bytes IPv4 + 20 bytes TCP; options (timestamps: 12) come off the MSS too


def tcp_out_segments(ns) -> int:
    """The namespace's TCP OutSegs counter (/proc/net/snmp, read from inside it)."""
    with ns, open("/proc/thread-self/net/snmp") as snmp:
        header, values = [line.split() for line in snmp if line.startswith("Tcp:")]
    return int(values[header.index("OutSegs")])


def transfer(sender, receiver, seconds: float) -> dict[str, float]:
    """Send as fast as possible for ``seconds`` over one new connection; what arrived and how."""
    with receiver:
        listener = socket.create_server((str(receiver.ip), PORT))
    received: list[int] = []

    def drain() -> None:
        conn, _ = listener.accept()
        buffer = bytearray(CHUNK)
        total = 0
        with conn:
            while count := conn.recv_into(buffer):
                total += count
        received.append(total)

    thread = threading.Thread(target=drain)
    thread.start()
    try:
        with sender:
            sock = socket.socket()
        with sock:
            sock.connect((str(receiver.ip), PORT))
            mss = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
            segments_before = tcp_out_segments(sender)
            payload = bytes(CHUNK)
            start = time.perf_counter()
            while time.perf_counter() - start < seconds:
                sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            thread.join()
            elapsed = time.perf_counter() - start
            segments = tcp_out_segments(sender) - segments_before
    finally:
        thread.join()
        listener.close()
    return {"bytes": received[0], "seconds": elapsed, "mss": mss, "segments": segments}


@pytest.mark.slow
def test_pod_to_pod_throughput_at_three_mtus(netns_cluster, record_property, capsys):
    cluster = netns_cluster
    a = cluster.pod("sender", node=cluster.node("node1"))
    b = cluster.pod("receiver", node=cluster.node("node2"))
    runs: dict[int, list[dict[str, float]]] = {mtu: [] for mtu in MTUS}
    for round_number in range(ROUNDS):
        order = MTUS[round_number % len(MTUS):] + MTUS[:round_number % len(MTUS)]  # rotate: spread the noise
        for mtu in order:
            cluster.set_mtu(mtu)
            runs[mtu].append(transfer(a, b, SECONDS))

    rows = []
    for mtu in MTUS:
        rates = [r["bytes"] * 8 / r["seconds"] / 1e6 for r in runs[mtu]]
        total_bytes = sum(r["bytes"] for r in runs[mtu])
        total_segments = sum(r["segments"] for r in runs[mtu])
        rows.append({
            "mtu": mtu,
            "mss": runs[mtu][0]["mss"],
            "median_mbit_s": round(statistics.median(rates)),
            "rounds_mbit_s": [round(rate) for rate in rates],
            "bytes_per_segment": round(total_bytes / max(total_segments, 1)),
            "segments_per_mib": round(total_segments / (total_bytes / 2**20)) if total_bytes else 0,
        })
    table = [f"TCP throughput pod {a.name} ({a.node.name}) -> pod {b.name} ({b.node.name}), "
             f"{ROUNDS} rounds of {SECONDS} s per MTU",
             f"{'MTU':>6} {'MSS':>6} {'median Mbit/s':>14} {'rounds':>24} {'bytes/segment':>14} {'segments/MiB':>13}"]
    for row in rows:
        rounds = " ".join(str(rate) for rate in row["rounds_mbit_s"])
        table.append(f"{row['mtu']:>6} {row['mss']:>6} {row['median_mbit_s']:>14} {rounds:>24} "
                     f"{row['bytes_per_segment']:>14} {row['segments_per_mib']:>13}")
    record_property("pod_mtu_throughput", rows)
    with capsys.disabled():
        print("\n" + "\n".join(table))

    for row, mtu in zip(rows, MTUS, strict=True):
        assert all(r["bytes"] > 0 for r in runs[mtu]), f"nothing arrived at MTU {mtu}"
        assert mtu - IPV4_TCP_HEADERS - 40 <= row["mss"] <= mtu - IPV4_TCP_HEADERS, row
