"""pytest-netns: a hermetic network per test, in Linux network namespaces.

Importing this package touches no namespace and does not import scapy.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from .errors import (
    CommandError,
    FeatureUnavailable,
    KernelError,
    NetnsError,
    NetnsLeakWarning,
    NetnsProcessWarning,
    NetnsTimeout,
    ProcessExited,
    TeardownError,
)
from .namespace import Namespace

if TYPE_CHECKING:
    from ._net.impair import Impairment
    from ._net.partition import Partition, block, partition
    from ._plugin.fixtures import NamespaceFactory
    from .packets import Capture
    from .presets import BridgeMembers, NamespacePair, NatNetwork
    from .presets.cluster import Cluster, External, NetworkPolicy, Node, Pod, Service
    from .presets.docker import Container, DockerHost, PublishedPort
    from .topology import Link, Segment, Topology

# Loaded on first use: the plugin imports this package, and pytest's start-up
# must not pay for netfilter or packet machinery a run may never use.
_LAZY = {
    "BridgeMembers": "presets",
    "Capture": "packets",
    "Cluster": "presets.cluster",
    "Container": "presets.docker",
    "DockerHost": "presets.docker",
    "External": "presets.cluster",
    "Impairment": "_net.impair",
    "Link": "topology",
    "NamespaceFactory": "_plugin.fixtures",
    "NamespacePair": "presets",
    "NatNetwork": "presets",
    "NetworkPolicy": "presets.cluster",
    "Node": "presets.cluster",
    "Partition": "_net.partition",
    "Pod": "presets.cluster",
    "PublishedPort": "presets.docker",
    "Segment": "topology",
    "Service": "presets.cluster",
    "Topology": "topology",
    "block": "_net.partition",
    "partition": "_net.partition",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_netns' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


try:
    __version__ = version("pytest-netns")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "BridgeMembers",
    "Capture",
    "Cluster",
    "CommandError",
    "Container",
    "DockerHost",
    "External",
    "FeatureUnavailable",
    "Impairment",
    "KernelError",
    "Link",
    "Namespace",
    "NamespaceFactory",
    "NamespacePair",
    "NatNetwork",
    "NetnsError",
    "NetnsLeakWarning",
    "NetnsProcessWarning",
    "NetnsTimeout",
    "NetworkPolicy",
    "Node",
    "Partition",
    "Pod",
    "ProcessExited",
    "PublishedPort",
    "Segment",
    "Service",
    "TeardownError",
    "Topology",
    "__version__",
    "block",
    "partition",
]
