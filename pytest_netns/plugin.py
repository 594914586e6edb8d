"""The pytest plugin (entry point ``netns``): options, the ``netns`` marker, the fixtures.

Loading it does nothing privileged and imports neither pyroute2 nor scapy:
the kernel is first touched when a test requests a fixture.  Each feature
is a plugin module of its own, loaded with this one through
``pytest_plugins`` (so ``-p no:netns`` disables all of them).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from . import _settings
from ._fixtures import RUN_SETTINGS, TEST_NAMESPACES, NamespacePair, netns, netns_factory, netns_pair

pytest_plugins: list[str] = [
    "pytest_netns._topology_plugin",
    "pytest_netns._keep_plugin",
    "pytest_netns._pcap_plugin",
    "pytest_netns._cluster_plugin",
]

__all__ = ["NamespacePair", "netns", "netns_factory", "netns_pair"]


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from . import _hookspecs

    pluginmanager.add_hookspecs(_hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    _settings.addoption(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", _settings.MARKER_HELP)
    settings = config.stash[RUN_SETTINGS] = _settings.resolve(config)
    if settings.rootless and not hasattr(config, "workerinput"):
        _enter_rootless()


def _enter_rootless() -> None:
    """--netns-rootless: without the capabilities, move the session into its own user + net namespace.

    Runs before xdist starts workers (they inherit it).  With the
    capabilities already there it does nothing.
    """
    from . import _kernel, _rootless

    if not _kernel.Capabilities.current().missing():
        return
    try:
        _rootless.enter_session_namespaces()
    except RuntimeError as exc:
        raise pytest.UsageError(f"--netns-rootless: {exc}") from None
    _kernel.reset_after_rootless()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    """Forget the test's namespaces once its fixtures are torn down (the session keeps no references)."""
    yield
    if TEST_NAMESPACES in item.stash:
        del item.stash[TEST_NAMESPACES]


def pytest_report_header(config: pytest.Config) -> str:
    from ._capabilities import header_line

    return header_line()
