"""What the packet functions take: a ``Namespace``, typed as ``NamespaceHandle``.

``Namespace`` offers ``send``/``sr1``/``sniff``/``capture`` by importing this package, so this package must not
import ``namespace`` (not even for type checking) and sits below it in the layers (docs/architecture.md).  It types
a namespace as ``NamespaceHandle`` (a name, and the ``NetnsHandle`` behind it) and reaches the namespace's fd,
netlink socket and cleanup stack with ``handle_of(ns)``, as every other layer does.
"""

from __future__ import annotations

from .._kernel.handle import Handled as NamespaceHandle
from .._kernel.handle import NetnsHandle, handle_of

__all__ = ["NamespaceHandle", "NetnsHandle", "handle_of"]
