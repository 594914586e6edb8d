"""scapy packets in a namespace: send, sendp, sr1, sniff and a race-free capture.

These functions are also ``Namespace`` methods (``ns.send(pkt)``, ...).
scapy keeps global tables (``conf.ifaces``, ``conf.route``, ``conf.route6``)
built from the namespace it was imported in, and falls back to them for
every field left empty: an ``IP()`` without ``src`` would get the host's
address, an ``Ether()`` without ``dst`` would send an ARP request through a
host interface.  So scapy here only builds and dissects bytes:

* sockets are made inside the target namespace (its kernel routes them);
* before a packet is built, every field scapy would look up in its tables
  is filled from the namespace's own kernel (routes, link addresses,
  neighbour table) -- or, if it cannot be, a ``ValueError`` asks for it;
* scapy's interface cache is never consulted, so it is never reloaded.

``send``/``sr1`` go through a raw IP socket of the namespace, so the kernel
routes the packet and resolves the next hop; for IPv4 the kernel rewrites
the header checksum and total length (send byte-exact headers with
``sendp``).  A link-scope IPv6 destination (``fe80::/10``, ``ff02::/16``)
leaves through the interface the namespace's route lookup picks: scapy's
``"fe80::1%eth0"`` form cannot be used, as scapy resolves that name in its
own table when the packet is made (with several links, use ``sendp``).

Captures read an ``AF_PACKET`` socket that sees every interface of the
namespace in both directions: each packet appears once per interface it
crosses, like ``tcpdump -i any``; ``pkt.sniffed_on`` names the interface
and ``pkt.direction`` is 1 (received) or 2 (sent).

``filter=`` takes BPF syntax, compiled by libpcap: where libpcap is not
installed it raises ``FeatureUnavailable`` (the value is fine, the machine
lacks the compiler); ``lfilter=`` (a Python predicate) always works.
Importing this package does not import scapy: the first call does.

Modules, one job each: ``sockets`` (the per-namespace socket pool),
``lookup`` (interfaces, routes and neighbours from the namespace's
rtnetlink), ``fill`` (empty scapy fields filled from those), ``decode``
(scapy on first use, frames to packets), ``send`` (send, sendp, sr1),
``capture`` (capture, sniff, ``Capture``), ``recorder`` (the pcap ring of
failed tests), ``handle`` (what packets needs from a namespace).
"""

from __future__ import annotations

from .capture import Capture, capture, sniff
from .send import send, sendp, sr1

__all__ = ["Capture", "capture", "send", "sendp", "sniff", "sr1"]
