"""``--netns-keep-on-failure``: keep a failed test's namespaces for a look inside.

When a test fails (in setup or in its body), each namespace its fixtures
made is bind-mounted under ``/run/netns`` before teardown releases it, and
the failure report gets a section saying how to enter each one
(``nsenter --net=...`` or ``ip netns exec ...``).  Teardown still runs as
usual: processes started inside are stopped, so what is kept is the network
state (interfaces, addresses, routes, rules, sysctls), not the processes.
With ``--netns-keep-on-failure=processes`` (ini/env value ``processes``)
the processes inside are left running too, a server included, for a look at
it live: teardown neither stops nor kills them and the watchdog forgets the
namespace, so they outlive the run (their pipes to pytest close when it
exits).  The end of the run lists what was kept once.  The kept namespaces,
and processes, stay until ``python -m pytest_netns cleanup`` removes them
(or the machine reboots); ``python -m pytest_netns list`` shows them.

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

#: What --netns-keep-on-failure keeps: "" (nothing), "namespaces" (the bare flag) or "processes" (those too).
KEEP = pytest.StashKey[str]()
KEPT = pytest.StashKey[set[int]]()  # inodes already kept for an item
#: Namespaces whose processes were left running: their Popen objects (and pipes) live as long as the run.
SPARED = pytest.StashKey[list["Namespace"]]()
SECTION = "netns: kept namespaces"
MODES = ("namespaces", "processes")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("netns")
    group.addoption(
        "--netns-keep-on-failure",
        action="store_const",
        const="namespaces",
        dest="netns_keep_on_failure",
        default=None,
        help="keep the namespaces of a failed test (bind-mounted under /run/netns) and print how to enter them; "
        "processes started inside are stopped at teardown as usual. Remove them with "
        "`python -m pytest_netns cleanup`. Also: ini netns_keep_on_failure, env PYTEST_NETNS_KEEP_ON_FAILURE=1.",
    )
    # A second option string rather than an optional value: `--netns-keep-on-failure tests/` must keep
    # meaning the bare flag and a path (an optional value would swallow the path).
    group.addoption(
        "--netns-keep-on-failure=processes",
        action="store_const",
        const="processes",
        dest="netns_keep_on_failure",
        default=None,
        help="as --netns-keep-on-failure, and leave the failed test's processes running (a server, to look at it "
        "live): they outlive the run until `python -m pytest_netns cleanup`. Also: ini/env value processes.",
    )
    parser.addini(
        "netns_keep_on_failure",
        default="false",
        help="keep the namespaces of failed tests under /run/netns for debugging: true/false, or processes "
        "(their processes keep running too)",
    )


def pytest_configure(config: pytest.Config) -> None:
    value, source = _settings._pick(
        config, "netns_keep_on_failure", "PYTEST_NETNS_KEEP_ON_FAILURE", "netns_keep_on_failure"
    )
    config.stash[KEEP] = keep = keep_mode(value, source)
    config.stash[SPARED] = []
    if keep:
        config.pluginmanager.register(KeptSummary(config), "netns-kept-summary")


def keep_mode(value: object, source: str) -> str:
    """ "", "namespaces" or "processes" from an option, environment or ini value; UsageError names the source."""
    if isinstance(value, str) and value.strip().lower() in MODES:
        return value.strip().lower()
    try:
        return "namespaces" if _settings._as_bool(value, source) else ""
    except pytest.UsageError:
        raise pytest.UsageError(
            f"{source}: {value!r} is neither a boolean (1/0, true/false, yes/no) nor processes"
        ) from None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pluggy.Result[pytest.TestReport], None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    mode = item.config.stash.get(KEEP, "")
    if not mode:
        return
    if report.when not in ("setup", "call") or not report.failed or hasattr(report, "wasxfail"):
        return
    if missing_feature(call, report) is not None:
        return  # the machine lacks a feature (a skip, or a failure if required): nothing inside to look at
    done = item.stash.setdefault(KEPT, set())
    namespaces = [ns for ns in test_namespaces(item) if not ns.closed and ns.inode not in done]
    if namespaces:
        report.sections.append((SECTION, _keep_all(item, namespaces, done, mode)))


def _keep_all(item: pytest.Item, namespaces: list[Namespace], done: set[int], mode: str) -> str:
    from .._kernel.handle import handle_of
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
        if mode == "processes":
            handle_of(ns).spare_processes()
            item.config.stash[SPARED].append(ns)
            lines += [f"    still running inside: pid {pid} ({command})" for pid, command in _kept.processes_of(ns)]
    if mode == "processes":
        lines.append(
            "Processes inside are left running (--netns-keep-on-failure=processes), past the end of the run; "
            "pipes to the test (stdout=PIPE) close when pytest exits."
        )
    else:
        lines.append("Processes started inside were stopped at teardown; the network state is as the test left it.")
    return "\n".join(lines)


class KeptSummary:
    """Says once, at the end of the run, what was kept (by this process or by xdist workers) and how to remove it.

    The kept paths are listed only where the failure reports (which hold
    them) were not shown (``--tb=no``, ``--tb=line``).
    """

    def __init__(self, config: pytest.Config) -> None:
        self.paths: list[str] = []
        self.processes = config.stash[KEEP] == "processes"
        self.sections_shown = config.getoption("tbstyle", "auto") not in ("no", "line")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for title, content in report.sections:
            if title == SECTION:
                lines = content.splitlines()
                self.paths += [line.split(" is kept as ", 1)[1] for line in lines if " is kept as " in line]

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.paths:
            return
        terminalreporter.write_sep("-", f"netns: {len(self.paths)} namespace(s) of failed tests kept under /run/netns")
        if not self.sections_shown:
            for path in self.paths:
                terminalreporter.write_line(f"  {path}")
        stopped = " (and stop the processes inside)" if self.processes else ""
        terminalreporter.write_line(
            f"list: python -m pytest_netns list    remove{stopped}: python -m pytest_netns cleanup"
        )
