"""The pytest plugin: options, the ``netns`` marker and the fixtures.

Loading it does nothing privileged and imports neither pyroute2 nor scapy:
the kernel is first touched when a test requests a fixture.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, NamedTuple

import pytest

from . import _settings

if TYPE_CHECKING:
    from .namespace import Namespace

RUN_SETTINGS = pytest.StashKey["_settings.RunSettings"]()


class NamespacePair(NamedTuple):
    """The two ends of ``netns_pair``: ``a`` (first address) and ``b`` (second)."""

    a: Namespace
    b: Namespace


def pytest_addoption(parser: pytest.Parser) -> None:
    _settings.addoption(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", _settings.MARKER_HELP)
    config.stash[RUN_SETTINGS] = _settings.resolve(config)


def pytest_report_header(config: pytest.Config) -> str:
    from ._capabilities import header_line

    return header_line()


def _run_settings(request: pytest.FixtureRequest) -> _settings.RunSettings:
    return request.config.stash[RUN_SETTINGS]


def require_namespaces(request: pytest.FixtureRequest) -> None:
    """Skip (or with --netns-require, fail) when this machine cannot make namespaces."""
    from ._kernel import unavailable_reason

    reason = unavailable_reason()
    if reason is None:
        return
    if _run_settings(request).require:
        pytest.fail(f"--netns-require: {reason}", pytrace=False)
    pytest.skip(reason)


class NamespaceFactory:
    """Makes namespaces for one test and tears all of them down with it."""

    def __init__(self, kill_grace: float) -> None:
        self._kill_grace = kill_grace
        self.namespaces: list[Namespace] = []

    def __call__(self, name: str | None = None) -> Namespace:
        """A new ``Namespace`` with ``lo`` up, torn down with the test."""
        from .namespace import Namespace

        ns = Namespace(name, kill_grace=self._kill_grace)
        self.namespaces.append(ns)
        return ns

    def close(self) -> None:
        from .namespace import close_all

        namespaces, self.namespaces = self.namespaces, []
        close_all(namespaces)


@pytest.fixture
def netns_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., Namespace]]:
    """A function ``make(name=None) -> Namespace`` for as many namespaces as the test needs.

    Each has ``lo`` up and nothing else; all are torn down with the test
    (processes stopped, namespaces released).
    """
    require_namespaces(request)
    factory = NamespaceFactory(_run_settings(request).kill_grace)
    yield factory
    factory.close()


@pytest.fixture
def netns(netns_factory: Callable[..., Namespace]) -> Namespace:
    """A fresh network namespace with ``lo`` up and nothing else, torn down after the test.

    ``with netns:`` moves the test's thread inside; ``netns.run``/``popen``
    start processes inside (stopped at teardown).
    """
    return netns_factory("netns")


@pytest.fixture
def netns_pair(request: pytest.FixtureRequest) -> Iterator[NamespacePair]:
    """Two namespaces ``(a, b)`` joined by one veth named ``eth0`` on both sides.

    a = 10.0.0.1/24 + fd00::1/64, b = 10.0.0.2/24 + fd00::2/64; the link is
    up and the first packet is delivered (IPv4 and IPv6).  Configure it with
    ``@pytest.mark.netns(mtu=..., subnet=..., ipv6=...)``.  Both namespaces
    are torn down after the test.
    """
    settings = _settings.network_settings(request.node, members=2)
    require_namespaces(request)
    from ._presets import build_pair
    from .namespace import close_all

    pair = build_pair(settings, kill_grace=_run_settings(request).kill_grace)
    yield NamespacePair(*pair)
    close_all(list(pair))
