"""The pytest plugin (entry point ``netns``): options, the ``netns`` marker, the fixtures.

Loading it does nothing privileged and imports neither pyroute2 nor scapy:
the kernel is first touched when a test requests a fixture.  Each feature
is a plugin module of its own, loaded with this one through
``pytest_plugins`` (so ``-p no:netns`` disables all of them).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._plugin import settings as _settings
from ._plugin.fixtures import RUN_SETTINGS, TEST_NAMESPACES, netns, netns_factory, netns_pair
from .presets.simple import NamespacePair

pytest_plugins: list[str] = [
    "pytest_netns._plugin.topology",
    "pytest_netns._plugin.keep",
    "pytest_netns._plugin.pcap",
    "pytest_netns._plugin.cluster",
    "pytest_netns._plugin.partition",
    "pytest_netns._plugin.tracebacks",
    "pytest_netns._plugin.preload",
    "pytest_netns._plugin.shared",
]

__all__ = ["NamespacePair", "netns", "netns_factory", "netns_pair"]


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from ._plugin import hookspecs as _hookspecs

    pluginmanager.add_hookspecs(_hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    _settings.addoption(parser)


#: The namespace pytest's main thread was in before --netns-sandbox moved it (sandbox without a user namespace).
_OUTSIDE_SANDBOX = pytest.StashKey[int]()


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", _settings.MARKER_HELP)
    settings = config.stash[RUN_SETTINGS] = _settings.resolve(config)
    if settings.sandbox and not hasattr(config, "workerinput"):
        _enter_sandbox(config, settings)


def _enter_sandbox(config: pytest.Config, settings: _settings.RunSettings) -> None:
    """--netns-sandbox (implied by --netns-rootless): move the session into a fresh network namespace, lo up.

    Runs in the controller before xdist starts its workers (children
    inherit the namespace).  Without CAP_SYS_ADMIN and with --netns-rootless,
    a user namespace comes first (there is no way back out of that one).
    """
    from ._kernel import netns as _kernel
    from ._kernel import session as _rootless

    try:
        if settings.rootless and _kernel.Capabilities.current().missing():
            _rootless.enter_session_namespaces()
        else:
            config.stash[_OUTSIDE_SANDBOX] = _rootless.enter_sandbox()
    except _rootless.SessionMoveError as exc:
        raise pytest.UsageError(f"{settings.sandbox_source}: {exc}") from None
    _kernel.reset_after_session_move()


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave the sandbox again (matters for in-process runs, such as pytester's ``runpytest``)."""
    saved = config.stash.get(_OUTSIDE_SANDBOX, None)
    if saved is not None:
        from ._kernel import netns as _kernel
        from ._kernel import session as _rootless

        del config.stash[_OUTSIDE_SANDBOX]
        _rootless.leave_sandbox(saved)
        _kernel.reset_after_session_move()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """The ``netns`` marker's arguments, checked against the fixtures the test requests, before any is set up."""
    __tracebackhide__ = True
    _settings.check_marker(item)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    """Forget the test's namespaces once its fixtures are torn down (the session keeps no references)."""
    yield
    if TEST_NAMESPACES in item.stash:
        del item.stash[TEST_NAMESPACES]


def pytest_report_header(config: pytest.Config) -> str:
    """Privileges and whether namespaces can be made, from files only: nothing is created at start."""
    from ._kernel.probes import header_line

    return header_line(config.stash[RUN_SETTINGS].require_features)
