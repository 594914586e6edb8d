"""scapy, imported on first use, and frames decoded into scapy packets.

scapy reads the interfaces and routes of the namespace it is imported in (``conf.ifaces``, ``conf.route``), so it is
imported once, from the namespace the process started in, never from a test namespace.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .._kernel import afpacket as _afpacket
from .._kernel import netns as _kernel

if TYPE_CHECKING:
    from scapy.packet import Packet
    from scapy.plist import PacketList

_scapy_lock = threading.Lock()
_scapy_loaded = False


def load_scapy() -> Any:
    """``scapy.all``, imported (once, from the namespace the process started in) with promiscuous mode off."""
    global _scapy_loaded
    if not _scapy_loaded:
        with _scapy_lock:
            if not _scapy_loaded:
                # scapy reads interfaces and routes of the importing thread's
                # namespace: never let that be a test namespace.
                with _kernel.entered(_kernel.INITIAL_NETNS_FD):
                    import scapy.all
                from scapy.config import conf

                conf.sniff_promisc = False
                _scapy_loaded = True
    import scapy.all

    return scapy.all


def decode(frame: _afpacket.Frame) -> Packet:
    """A scapy packet for a frame, with time, interface and direction set."""
    all_ = load_scapy()
    if frame.hatype in (_afpacket.ARPHRD_ETHER, _afpacket.ARPHRD_LOOPBACK):
        cls = all_.Ether
    elif frame.proto == _afpacket.ETH_P_IP:
        cls = all_.IP
    elif frame.proto == _afpacket.ETH_P_IPV6:
        cls = all_.IPv6
    else:
        cls = all_.conf.l2types.num2layer.get(frame.hatype, all_.conf.raw_layer)
    pkt: Packet = cls(frame.data)
    pkt.time = frame.time
    pkt.sniffed_on = frame.ifname
    pkt.direction = 2 if frame.outgoing else 1
    return pkt


def packet_list(items: Iterable[Packet], name: str) -> PacketList:
    """A scapy ``PacketList`` of ``items``."""
    load_scapy()
    from scapy.plist import PacketList

    return PacketList(list(items), name=name)


def short_summary(pkt: Packet) -> str:
    """scapy's one-line summary without the ``Ether /`` every captured frame starts with."""
    return str(pkt.summary()).removeprefix("Ether / ")
