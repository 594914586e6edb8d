"""Shared configuration of pytest-netns's own tests."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes several seconds (fault injection with xdist, load); -m 'not slow' skips it")
    config.addinivalue_line("markers", "load: the 1,000-test load runs (-m load to run them)")
    config.addinivalue_line("markers", "serial: must not run beside other tests (dev/test runs it without -n)")
