"""Shared configuration of pytest-netns's own tests.

``_rootguard`` (tests/_rootguard.py) fails the run if the network namespace
the tests started in (a private one: the tests run inside ``unshare --net``)
is not exactly the same at the end; see its docstring.
"""

# pytester is also in pyproject's addopts (-p pytester); naming it here keeps
# `pytest tests/...` working under any ini file.
pytest_plugins = ["pytester", "_rootguard"]
