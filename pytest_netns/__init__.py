"""pytest-netns: a hermetic network per test, in Linux network namespaces.

Importing this package touches no namespace and does not import scapy.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .errors import CommandError, FeatureUnavailable, KernelError, NetnsError, NetnsLeakWarning, TeardownError
from .namespace import Namespace
from .packets import Capture

try:
    __version__ = version("pytest-netns")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "Capture",
    "CommandError",
    "FeatureUnavailable",
    "KernelError",
    "Namespace",
    "NetnsError",
    "NetnsLeakWarning",
    "TeardownError",
    "__version__",
]
