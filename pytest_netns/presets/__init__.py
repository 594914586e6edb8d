"""Ready-made networks over the layers below, usable without pytest.

``pair()``, ``bridge()`` and ``nat()`` build the networks of the ``netns_pair``, ``netns_bridge`` and ``netns_nat``
fixtures as context managers (``with presets.pair() as (a, b): ...``).  ``cluster`` holds the Kubernetes network
model and ``docker`` Docker's default bridge network; ``pytest_netns.cluster`` and ``pytest_netns.docker``
re-export their public names.
"""

from __future__ import annotations

from .simple import BridgeMembers, NamespacePair, NatNetwork, bridge, nat, pair

__all__ = ["BridgeMembers", "NamespacePair", "NatNetwork", "bridge", "nat", "pair"]
