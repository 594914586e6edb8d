"""Shared configuration of pytest-netns's own tests.

``_rootguard`` fails the run if the network namespace the tests started in
(a private one: the tests run inside ``unshare --net``) is not exactly the
same at the end; see its docstring.
"""

from __future__ import annotations

import pytest

# pytester is also in pyproject's addopts (-p pytester); naming it here keeps
# `pytest tests/...` working with any ini file.  _rootguard is tests/_rootguard.py.
pytest_plugins = ["pytester", "_rootguard"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes several seconds (fault injection with xdist, load); -m 'not slow' skips it")
    config.addinivalue_line("markers", "load: the 1,000-test load runs (-m load to run them)")
    config.addinivalue_line("markers", "serial: must not run beside other tests (dev/test runs it without -n)")
