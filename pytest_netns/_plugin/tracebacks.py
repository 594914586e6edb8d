"""Failure reports show the test's own lines and the plugin's message, not the plugin's frames.

A ``NetnsError`` (or a ``ValueError`` for bad input) says in one paragraph
what was being done and what went wrong; the frames it crossed inside
``pytest_netns`` (fixtures, their teardown, builders, the kernel layer) add
dozens of lines about the plugin and nothing about the test.  They are
hidden as ``__tracebackhide__`` hides frames: when such an error is reported,
each module of the package it crossed gets a module-level
``__tracebackhide__`` that hides its frames for these errors only (pytest
asks it with the exception at hand).  Any other exception keeps every frame:
it is a bug to report, in the plugin or the test.  ``--full-trace`` shows
everything.  The functions users call most (``wait_for_port``,
``Capture.wait``, ``close``, the fixtures' teardown) also set
``__tracebackhide__`` themselves, for runs without this plugin.

A teardown error raised in the plugin's own fixture has no frame left to
show: the report then says "All traceback entries are hidden", and the
short summary line takes its message from the test's location.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

from ..errors import NetnsError

#: The package's directory: frames whose file is under it are the plugin's.
PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
#: The exceptions whose message is the whole story.
EXPLAINED = (NetnsError, ValueError)


def hide_explained(excinfo: pytest.ExceptionInfo[BaseException] | None) -> bool:
    """``__tracebackhide__`` of the package's modules: hide their frames for the errors the message explains."""
    return excinfo is not None and isinstance(excinfo.value, EXPLAINED)


def plugin_frame(path: object) -> bool:
    return os.fspath(path).startswith(PACKAGE)  # type: ignore[call-overload,no-any-return]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    excinfo = call.excinfo
    explained = excinfo is not None and isinstance(excinfo.value, EXPLAINED)
    if excinfo is not None and explained:
        for entry in excinfo.traceback:
            if plugin_frame(entry.path):
                entry.frame.f_globals.setdefault("__tracebackhide__", hide_explained)
    report = yield
    if excinfo is not None and explained:
        _name_the_crash(item, report, excinfo)
    return report


def _name_the_crash(item: pytest.Item, report: pytest.TestReport, excinfo: pytest.ExceptionInfo[Any]) -> None:
    """Every frame hidden (a teardown error of the plugin's fixture): the short summary still gets the message."""
    longrepr = report.longrepr
    if getattr(longrepr, "reprcrash", False) is not None:
        return
    try:
        from _pytest._code.code import ReprFileLocation
    except ImportError:  # pragma: no cover - pytest's layout changed: the summary line goes without the message
        return
    path, line = item.reportinfo()[:2]
    longrepr.reprcrash = ReprFileLocation(os.fspath(path), (line or 0) + 1, excinfo.exconly(tryshort=True))  # type: ignore[union-attr]
