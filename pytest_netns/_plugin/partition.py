"""Partitions end with their test: whatever a test left cut is healed and removed at its teardown.

After the fixtures are torn down: the namespaces that went with them took
their partition rules along for free, and only namespaces that outlive the
test (a module-scoped topology) still hold rules, which are deleted then.
"""

from __future__ import annotations

import sys
from collections.abc import Generator

import pytest

__all__ = ["pytest_runtest_teardown"]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, None, None]:
    try:
        return (yield)
    finally:
        # Never imported: no partition was ever made, nothing to do (and nothing to import).
        module = sys.modules.get("pytest_netns._net.partition")
        if module is not None:
            module.release_all()
