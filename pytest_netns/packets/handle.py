"""What the packet functions need from a namespace, as a protocol.

``Namespace`` offers ``send``/``sr1``/``sniff``/``capture`` by importing this package, so this package must not
import ``namespace`` (not even for type checking): it types against ``NamespaceHandle`` and sits below
``namespace`` in the layers (docs/architecture.md).  ``Namespace`` satisfies the protocol; mypy checks that where
``namespace.py`` passes ``self``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .._kernel.rtnl import RtnlSocket


class NamespaceHandle(Protocol):
    """The part of a ``Namespace`` that packets and the recorder use."""

    @property
    def name(self) -> str: ...

    @property
    def _nsfd(self) -> int: ...

    @property
    def rtnl(self) -> RtnlSocket: ...

    def _check_open(self) -> None: ...

    def add_cleanup(self, fn: Callable[[], object], doing: str) -> None: ...

    def interfaces(self) -> list[str]: ...
