"""The core fixtures (``netns``, ``netns_factory``, ``netns_pair``) and what every fixture shares."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

import pytest

from ..presets.simple import NamespacePair
from . import settings as _settings

if TYPE_CHECKING:
    from ..namespace import Namespace
    from ..presets.simple import Built

T = TypeVar("T")

RUN_SETTINGS = pytest.StashKey["_settings.RunSettings"]()
#: Every namespace a fixture made for a test, in creation order.
TEST_NAMESPACES = pytest.StashKey[list["Namespace"]]()


def run_settings(config: pytest.Config) -> _settings.RunSettings:
    return config.stash[RUN_SETTINGS]


def require_namespaces(request: pytest.FixtureRequest) -> None:
    """Skip (or with --netns-require, fail) when this machine cannot make namespaces."""
    __tracebackhide__ = True
    from .._kernel.netns import unavailable_reason

    reason = unavailable_reason()
    if reason is None:
        return
    if run_settings(request.config).require:
        pytest.fail(f"--netns-require: {reason}", pytrace=False)
    pytest.skip(reason)


def track(request: pytest.FixtureRequest, namespaces: list[Namespace]) -> None:
    """Record namespaces a fixture made for the requesting test and announce them."""
    item = request.node
    item.stash.setdefault(TEST_NAMESPACES, []).extend(namespaces)
    for ns in namespaces:
        request.config.hook.pytest_netns_namespace_created(item=item, namespace=ns)


def teardown(request: pytest.FixtureRequest, close: Callable[[], object]) -> None:
    """Run a fixture's teardown; its problems fail the test's teardown.

    When the session was interrupted (Ctrl-C, ``pytest.exit``) pytest tears
    fixtures down after the run, where an exception would escape as a raw
    traceback and change the exit code: then the problems are written to the
    terminal instead.
    """
    __tracebackhide__ = True
    from ..errors import TeardownError

    try:
        close()
    except TeardownError as exc:
        if request.session.exitstatus == pytest.ExitCode.OK:
            raise
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"pytest-netns: after the interruption, {exc}", red=True)


def provide(request: pytest.FixtureRequest, built: Built[T]) -> Iterator[T]:
    """Yield what a preset built to the test, its namespaces tracked, and tear it down after the test."""
    __tracebackhide__ = True
    try:
        track(request, built.namespaces)
    except BaseException:
        built.close()
        raise
    yield built.value
    teardown(request, built.close)


def test_namespaces(item: pytest.Item) -> list[Namespace]:
    """The namespaces fixtures made for ``item`` so far (alive until its teardown)."""
    return item.stash.get(TEST_NAMESPACES, [])


class NamespaceFactory:
    """Makes namespaces for one test and tears all of them down with it."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self._request = request
        self._kill_grace = run_settings(request.config).kill_grace
        self.namespaces: list[Namespace] = []

    def __call__(self, name: str | None = None) -> Namespace:
        """A new ``Namespace`` with ``lo`` up, torn down with the test."""
        from ..namespace import Namespace

        ns = Namespace(name, kill_grace=self._kill_grace)
        self.namespaces.append(ns)
        track(self._request, [ns])
        return ns

    def close(self) -> None:
        __tracebackhide__ = True
        from ..namespace import close_all

        namespaces, self.namespaces = self.namespaces, []
        close_all(namespaces)


@pytest.fixture
def netns_factory(request: pytest.FixtureRequest) -> Iterator[NamespaceFactory]:
    """A function ``make(name=None) -> Namespace`` for as many namespaces as the test needs.

    Each has ``lo`` up and nothing else; all are torn down with the test
    (processes stopped, namespaces released).
    """
    require_namespaces(request)
    factory = NamespaceFactory(request)
    yield factory
    teardown(request, factory.close)


@pytest.fixture
def netns(netns_factory: NamespaceFactory) -> Namespace:
    """A fresh network namespace with ``lo`` up and nothing else, torn down after the test.

    ``with netns:`` moves the test's thread inside; ``netns.run``/``popen``
    start processes inside (stopped at teardown).
    """
    return netns_factory("netns")


@pytest.fixture
def netns_pair(request: pytest.FixtureRequest) -> Iterator[NamespacePair]:
    """Two namespaces ``(a, b)`` joined by one veth named ``eth0`` on both sides.

    a = 10.0.0.1/24 + fd00::1/64, b = 10.0.0.2/24 + fd00::2/64; the link is
    up and the first packet is delivered (IPv4 and IPv6); ``.link`` is its
    ``Link``.  Configure it with ``@pytest.mark.netns(mtu=..., subnet=...,
    ipv6=..., offloads=...)``.  Both namespaces are torn down after the test.
    """
    settings = _settings.network_settings(request.node, members=2, fixture="netns_pair")
    require_namespaces(request)
    from ..presets.simple import pair_network

    yield from provide(request, pair_network(settings, kill_grace=run_settings(request.config).kill_grace))
