"""``--netns-keep-on-failure``: keep a failed test's namespaces for a look inside.

When a test fails (in setup or in its body), each namespace its fixtures
made is bind-mounted under ``/run/netns`` before teardown releases it, and
the failure report gets a section saying how to enter each one
(``nsenter --net=...`` or ``ip netns exec ...``).  Teardown still runs as
usual: processes started inside are stopped, so what is kept is the network
state (interfaces, addresses, routes, rules, sysctls), not the processes.
The kept namespaces stay until ``python -m pytest_netns cleanup`` removes
them (or the machine reboots); ``python -m pytest_netns list`` shows them.

The mounts are made in pytest's mount namespace; ``/run/netns`` is made
shared as ``ip netns`` does, so they are visible wherever ``/run/netns`` is
(in a container: inside that container).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

import pytest

from . import settings as _settings
from .fixtures import test_namespaces
from .topology import missing_feature

if TYPE_CHECKING:
    import pluggy

    from ..namespace import Namespace

KEEP = pytest.StashKey[bool]()
KEPT = pytest.StashKey[set[int]]()  # inodes already kept for an item
SECTION = "netns: kept namespaces"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("netns")
    group.addoption(
        "--netns-keep-on-failure",
        action="store_true",
        default=None,
        help="keep the namespaces of a failed test (bind-mounted under /run/netns) and print how to enter them; "
        "remove them with `python -m pytest_netns cleanup`. Also: ini netns_keep_on_failure, "
        "env PYTEST_NETNS_KEEP_ON_FAILURE=1.",
    )
    parser.addini(
        "netns_keep_on_failure",
        type="bool",
        default=False,
        help="keep the namespaces of failed tests under /run/netns for debugging",
    )


def pytest_configure(config: pytest.Config) -> None:
    value, source = _settings._pick(
        config, "netns_keep_on_failure", "PYTEST_NETNS_KEEP_ON_FAILURE", "netns_keep_on_failure"
    )
    config.stash[KEEP] = keep = _settings._as_bool(value, source)
    if keep:
        config.pluginmanager.register(KeptSummary(), "netns-kept-summary")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pluggy.Result[pytest.TestReport], None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not item.config.stash.get(KEEP, False):
        return
    if report.when not in ("setup", "call") or not report.failed or hasattr(report, "wasxfail"):
        return
    if missing_feature(call, report) is not None:
        return  # the machine lacks a feature (a skip, or a failure if required): nothing inside to look at
    done = item.stash.setdefault(KEPT, set())
    namespaces = [ns for ns in test_namespaces(item) if not ns.closed and ns.inode not in done]
    if namespaces:
        report.sections.append((SECTION, _keep_all(item, namespaces, done)))


def _keep_all(item: pytest.Item, namespaces: list[Namespace], done: set[int]) -> str:
    from .._net import kept as _kept

    lines = []
    for ns in namespaces:
        try:
            info = _kept.keep(ns, item.nodeid)
        except OSError as exc:
            lines.append(f"{ns.name}: could not be kept: {exc}")
            continue
        done.add(ns.inode)
        lines += [
            f"{ns.name} (net:[{ns.inode}]) is kept as {info.path}",
            f"    nsenter --net={info.path} <command>",
            f"    ip netns exec {info.name} <command>",
        ]
    lines.append("Processes started inside were stopped at teardown; the network state is as the test left it.")
    lines.append("Remove: python -m pytest_netns cleanup    (list: python -m pytest_netns list)")
    return "\n".join(lines)


class KeptSummary:
    """Lists what was kept (by this process or by xdist workers) at the end of the run."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for title, content in report.sections:
            if title == SECTION:
                lines = content.splitlines()
                self.paths += [line.split(" is kept as ", 1)[1] for line in lines if " is kept as " in line]

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.paths:
            return
        terminalreporter.write_sep("-", f"netns: {len(self.paths)} namespace(s) of failed tests kept under /run/netns")
        for path in self.paths:
            terminalreporter.write_line(f"  {path}")
        terminalreporter.write_line("list: python -m pytest_netns list    remove: python -m pytest_netns cleanup")
