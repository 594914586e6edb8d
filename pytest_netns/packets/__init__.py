"""scapy packets in a namespace: send, sr1, sniff and a race-free capture (also ``Namespace`` methods).

Importing this package does not import scapy: the first call does.
"""

from __future__ import annotations

from .api import Capture, capture, send, sendp, sniff, sr1

__all__ = ["Capture", "capture", "send", "sendp", "sniff", "sr1"]
