"""The readable story of a failed test: a packet ladder and the topology, as text.

Rendering is the slow path (it imports scapy to summarise packets and
decodes netlink dumps with pyroute2) and only runs for failed tests.
"""

from __future__ import annotations

import heapq
import ipaddress
import socket
import struct
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .._kernel import afpacket as _afpacket
from .._kernel import rtnl as _rtnl
from .._kernel.handle import handle_of

if TYPE_CHECKING:
    from ..namespace import Namespace
    from ..packets.recorder import Recorder

#: An outgoing packet and an identical incoming one this close in time are one hop of the ladder.
HOP_WINDOW = 0.5
ARROW = "->"


@dataclass
class Row:
    """One line of the ladder: a packet leaving and/or arriving somewhere."""

    time: float
    data: bytes
    hatype: int
    proto: int
    sender: str | None = None
    receivers: list[str] = field(default_factory=list)

    @property
    def path(self) -> str:
        return f"{self.sender or ''} {ARROW} {', '.join(self.receivers)}".strip()


def ladder_rows(recorders: list[Recorder]) -> list[Row]:
    """Every recorded packet in time order; a packet sent on one interface and received on
    another (a veth hop) is one row ``a:eth0 -> b:eth0``, and a bridge's own device seeing
    what its port received joins that row (``a:eth0 -> s:a, s:br0``)."""
    # Each recorder's frames stay in the kernel's queue order; between recorders, at
    # equal timestamps, the sending end goes first: an ICMP error is sent from the
    # softirq that received the datagram, and its receiving end is stamped well under
    # a microsecond later, below what a float of epoch seconds resolves (0.24 us).
    seen = heapq.merge(
        *(
            [(frame.time, not frame.outgoing, recorder.label, frame) for frame in recorder.frames]
            for recorder in recorders
        ),
        key=lambda item: item[:2],
    )
    rows: list[Row] = []
    # Sent, not yet matched to a receiver, with the sending namespace's label.
    waiting: dict[bytes, deque[tuple[Row, str]]] = defaultdict(deque)
    received: dict[tuple[str, bytes], Row] = {}  # the last row each namespace received these bytes in
    for stamp, _incoming, label, frame in seen:
        where = f"{label}:{frame.ifname or '?'}"
        if frame.outgoing:
            row = Row(stamp, frame.data, frame.hatype, frame.proto, sender=where)
            rows.append(row)
            waiting[frame.data].append((row, label))
            continue
        queue = waiting.get(frame.data, deque())
        while queue and stamp - queue[0][0].time > HOP_WINDOW:
            queue.popleft()
        earlier = received.get((label, frame.data))  # passed up from a port to the bridge device
        if earlier is not None and (stamp - earlier.time > HOP_WINDOW or where in earlier.receivers):
            earlier = None
        # A bridge floods a multicast frame out of its other ports before passing it up to
        # its own device: br0's copy is not the far end of the bridge's own port sending it.
        match = next(
            (entry for entry in queue if entry[0].sender != where and (earlier is None or entry[1] != label)), None
        )
        if match is not None:
            queue.remove(match)
            row = match[0]
            row.receivers.append(where)
        elif earlier is not None:
            row = earlier
            row.receivers.append(where)
        else:
            row = Row(stamp, frame.data, frame.hatype, frame.proto, receivers=[where])
            rows.append(row)
        received[(label, frame.data)] = row
    return rows


def summarise(data: bytes, hatype: int, proto: int) -> str:
    """scapy's one-line summary of a frame (without the leading ``Ether /``)."""
    try:
        from ..packets.decode import decode, short_summary

        return short_summary(decode(_afpacket.Frame(0.0, "", 0, hatype, proto, data)))
    except Exception as exc:  # a summary must never hide the failure it explains
        ethertype = struct.unpack_from("!H", data, 12)[0] if len(data) >= 14 else proto
        return f"{len(data)} bytes, ethertype 0x{ethertype:04x} (not decoded: {type(exc).__name__})"


def render_ladder(rows: list[Row], start: float, limit: int | None = None) -> str:
    shown = rows if limit is None else rows[-limit:]
    if not shown:
        return "(no packets)"
    width = max(len(row.path) for row in shown)
    lines = [f"{'time':>11}  {'where':<{width}}  packet"]
    if len(shown) < len(rows):
        lines.append(f"{'':>11}  ({len(rows) - len(shown)} earlier packets: see packets.txt and the pcap files)")
    for row in shown:
        lines.append(f"{row.time - start:+11.6f}  {row.path:<{width}}  {summarise(row.data, row.hatype, row.proto)}")
    return "\n".join(lines)


# -- topology ---------------------------------------------------------------------

RTM_GETNSID = 90
NETNSA_NSID = 1
NETNSA_FD = 3
RT_TABLE_MAIN = 254


def _nsid(ns: Namespace, other: Namespace) -> int | None:
    """The id under which ``ns`` knows ``other`` (what its links report as IFLA_LINK_NETNSID)."""
    body = struct.pack("=Bxxx", socket.AF_UNSPEC) + _rtnl.attr_u32(NETNSA_FD, handle_of(other).fd)
    request = _rtnl.Request(RTM_GETNSID, 0, body, f"reading the id of {other.name!r} in {ns.name!r}")
    reply = handle_of(ns).rtnl.query(request)
    raw = _rtnl.parse_attrs(reply, 20, len(reply)).get(NETNSA_NSID)
    value = struct.unpack("=i", raw)[0] if raw else -1
    return value if value >= 0 else None


def _links(ns: Namespace) -> list:  # type: ignore[type-arg]
    return handle_of(ns).rtnl.dump(_rtnl.RTM_GETLINK, _rtnl.ifinfo(), f"listing interfaces of {ns.name!r}")


def render_topology(namespaces: list[tuple[str, Namespace]]) -> str:
    """Namespaces, their interfaces (kind, state, MTU, MAC, peer or master), addresses and routes."""
    links = {label: _links(ns) for label, ns in namespaces if not ns.closed}
    names = {label: {m["index"]: m.get_attr("IFLA_IFNAME") for m in msgs} for label, msgs in links.items()}
    lines = []
    for label, ns in namespaces:
        if ns.closed:
            lines.append(f"{label}: already torn down")
            continue
        ids = {}
        for other_label, other in namespaces:
            if other is not ns and not other.closed:
                nsid = _nsid(ns, other)
                if nsid is not None:
                    ids[nsid] = other_label
        addresses = defaultdict(list)
        for msg in handle_of(ns).rtnl.dump(_rtnl.RTM_GETADDR, bytes(8), f"listing addresses of {ns.name!r}"):
            addr = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
            if addr:
                addresses[msg["index"]].append(f"{addr}/{msg['prefixlen']}")
        lines.append(f"{label} (net:[{ns.inode}])")
        for msg in sorted(links[label], key=lambda m: m["index"]):
            lines.append("  " + _describe_link(msg, label, names, ids))
            if addresses[msg["index"]]:
                lines.append("      " + " ".join(addresses[msg["index"]]))
        routes = _routes(ns, names[label])
        if routes:
            lines.append("  routes: " + " | ".join(routes))
    return "\n".join(lines)


def _describe_link(msg, label: str, names: dict[str, dict[int, str]], ids: dict[int, str]) -> str:  # type: ignore[no-untyped-def]
    name = msg.get_attr("IFLA_IFNAME")
    info = msg.get_attr("IFLA_LINKINFO")
    kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
    if kind is None:
        kind = "loopback" if msg["flags"] & 0x8 else "device"
    state = str(msg.get_attr("IFLA_OPERSTATE") or "?").lower()
    if not msg["flags"] & _rtnl.IFF_UP:
        state = "down"
    elif state == "unknown":
        state = "up"  # loopback and friends never report an operational state
    parts = [f"{name:<10}", f"{kind:<8}", f"{state:<7}", f"mtu {msg.get_attr('IFLA_MTU')}"]
    mac = msg.get_attr("IFLA_ADDRESS")
    if mac and mac != "00:00:00:00:00:00":
        parts.append(mac)
    master = msg.get_attr("IFLA_MASTER")
    if master:
        parts.append(f"master {names[label].get(master, master)}")
    peer_index = msg.get_attr("IFLA_LINK")
    nsid = msg.get_attr("IFLA_LINK_NETNSID")
    if kind == "veth" and peer_index:
        if nsid is None:
            parts.append(f"peer {names[label].get(peer_index, peer_index)} (same namespace)")
        elif nsid in ids:
            other = ids[nsid]
            parts.append(f"peer {other}:{names.get(other, {}).get(peer_index, peer_index)}")
        else:
            parts.append(f"peer ifindex {peer_index} in a namespace outside this test")
    return "  ".join(parts)


def _routes(ns: Namespace, names: dict[int, str]) -> list[str]:
    result = []
    body = _rtnl.RTMSG.pack(0, 0, 0, 0, 0, 0, 0, 0, 0)
    for msg in handle_of(ns).rtnl.dump(_rtnl.RTM_GETROUTE, body, f"listing routes of {ns.name!r}"):
        table = msg.get_attr("RTA_TABLE") or msg["table"]
        if table != RT_TABLE_MAIN:
            continue
        dst = msg.get_attr("RTA_DST")
        family_any = "0.0.0.0/0" if msg["family"] == socket.AF_INET else "::/0"
        text = f"{dst}/{msg['dst_len']}" if dst else family_any
        if text in ("0.0.0.0/0", "::/0"):
            text = "default" + ("" if msg["family"] == socket.AF_INET else " (v6)")
        else:
            text = str(ipaddress.ip_network(text, strict=False))
        gateway = msg.get_attr("RTA_GATEWAY")
        if gateway:
            text += f" via {gateway}"
        oif = msg.get_attr("RTA_OIF")
        if oif:
            text += f" dev {names.get(oif, oif)}"
        result.append(text)
    return result
