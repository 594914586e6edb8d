"""A failure report shows the test's line and the plugin's message, not the plugin's frames (issue 16, item 5)."""

from __future__ import annotations

import re

import pytest

TESTS = """
import errno
import pytest
from pytest_netns import Topology
from pytest_netns._kernel.handle import handle_of

def test_wait(netns_pair):
    a, b = netns_pair
    a.wait_for_port("10.0.0.2", 8080, timeout=0.1)

def test_teardown(netns_pair):
    a, b = netns_pair
    def fail():
        raise OSError(errno.EPERM, "not allowed")
    handle_of(a).add_cleanup(fail, "undoing something")

def test_kernel(netns_topology):
    a = netns_topology.add("a")
    a.add_route("10.77.0.0/24", via="10.99.0.1")

def test_bad_input(netns):
    netns.set_mtu("lo", 20)
"""

#: A bug (not an error the plugin explains) deep in the plugin: its frames must stay.
BUG = """
from pytest_netns._kernel import handle

def broken(self):
    raise RuntimeError("a bug in the plugin")

def test_bug(netns, monkeypatch):
    monkeypatch.setattr(handle.NetnsHandle, "links", broken)
    netns.interfaces()
"""


def sections(output: str) -> dict[str, list[str]]:
    """Each test's failure or error report, by test name: the lines under its ``____ name ____`` header."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        header = re.fullmatch(r"_{3,} (?:ERROR at \w+ of )?(\w+) _{3,}", line)
        if header:
            current = found.setdefault(header[1], [])
        elif re.match(r"={5,}", line):
            current = None
        elif current is not None:
            current.append(line)
    return found


@pytest.fixture
def outcome(pytester: pytest.Pytester) -> pytest.RunResult:
    pytester.makepyfile(TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--netns-pcap=never")
    result.assert_outcomes(passed=1, failed=3, errors=1)
    return result


def test_a_wait_for_port_timeout_shows_the_test_line_and_the_message(outcome: pytest.RunResult) -> None:
    report = sections(outcome.stdout.str())["test_wait"]
    assert not any("pytest_netns" + "/" in line for line in report), report
    assert len(report) <= 10, report
    assert ">       a.wait_for_port(\"10.0.0.2\", 8080, timeout=0.1)" in report
    assert any(line.startswith("E       pytest_netns.errors.NetnsTimeout: nothing accepted") for line in report)


def test_a_teardown_error_is_its_message(outcome: pytest.RunResult) -> None:
    report = sections(outcome.stdout.str())["test_teardown"]
    assert not any("pytest_netns" + "/" in line for line in report), report
    assert [line for line in report if line.strip()] == [
        "E   pytest_netns.errors.TeardownError: tearing down namespace 'a, b' failed:",
        "      - NetnsError: undoing something: [Errno 1] not allowed",
        "All traceback entries are hidden. Pass `--full-trace` to see hidden and internal frames.",
    ]
    # The short summary still says what it was.
    outcome.stdout.fnmatch_lines(["ERROR *::test_teardown - pytest_netns.e*"])


def test_a_kernel_error_and_bad_input_point_at_the_test(outcome: pytest.RunResult) -> None:
    found = sections(outcome.stdout.str())
    for name, line in [
        ("test_kernel", '>       a.add_route("10.77.0.0/24", via="10.99.0.1")'),
        ("test_bad_input", '>       netns.set_mtu("lo", 20)'),
    ]:
        report = found[name]
        assert not any("pytest_netns" + "/" in text for text in report), report
        assert line in report and len(report) <= 10, report
    assert any("KernelError: adding route to 10.77.0.0/24 via 10.99.0.1" in text for text in found["test_kernel"])
    assert any("ValueError: " in text and "20" in text for text in found["test_bad_input"])


def test_a_bug_keeps_its_frames_and_full_trace_shows_all(pytester: pytest.Pytester) -> None:
    timeout = "def test_wait(netns):\n    netns.wait_for_port('127.0.0.1', 9, timeout=0.05)\n"
    pytester.makepyfile(test_bug=BUG, test_timeout=timeout)
    args = ("-p", "no:cacheprovider", "--netns-pcap=never")
    result = pytester.runpytest_subprocess(*args, "test_bug.py")
    result.assert_outcomes(failed=1)
    assert any("pytest_netns/namespace.py" in line for line in sections(result.stdout.str())["test_bug"])
    result = pytester.runpytest_subprocess(*args, "--full-trace", "test_timeout.py")
    result.assert_outcomes(failed=1)
    assert any("pytest_netns/namespace.py" in line for line in sections(result.stdout.str())["test_wait"])


def test_under_xdist_too(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--netns-pcap=never", "-n", "2")
    result.assert_outcomes(passed=1, failed=3, errors=1)
    found = sections(result.stdout.str())
    assert not any("pytest_netns" + "/" in line for report in found.values() for line in report), found
    result.stdout.fnmatch_lines(["ERROR *::test_teardown - pytest_netns.e*"])
