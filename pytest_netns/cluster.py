"""The Kubernetes network model; the code lives in ``pytest_netns.presets.cluster``.

This module keeps ``import pytest_netns.cluster`` (the 0.1 spelling) working.
"""

from __future__ import annotations

from .presets.cluster import (
    CLUSTER_CIDR,
    CLUSTER_DOMAIN,
    NODE_NETWORK,
    SERVICE_CIDR,
    Cluster,
    External,
    NetworkPolicy,
    Node,
    Pod,
    Service,
    ServicePort,
)

__all__ = [
    "CLUSTER_CIDR",
    "CLUSTER_DOMAIN",
    "NODE_NETWORK",
    "SERVICE_CIDR",
    "Cluster",
    "External",
    "NetworkPolicy",
    "Node",
    "Pod",
    "Service",
    "ServicePort",
]
