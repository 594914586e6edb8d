"""The topology builder: namespaces joined by links and segments, addressed and routed, torn down in reverse."""

from __future__ import annotations

from .builder import Topology
from .links import Link, Segment

__all__ = ["Link", "Segment", "Topology"]
