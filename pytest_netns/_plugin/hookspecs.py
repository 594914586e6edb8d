"""Hooks pytest-netns adds to pytest (other plugins and conftest files may implement them)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

    from ..namespace import Namespace


def pytest_netns_namespace_created(item: pytest.Item, namespace: Namespace) -> None:
    """Called when a fixture has made a namespace for ``item``, before the test uses it.

    Packet recording and keep-on-failure attach here; the namespace is ready
    (its links are up) when this is called.
    """
