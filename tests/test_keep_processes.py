"""--netns-keep-on-failure=processes: a failed test's processes keep running, past the end of the run.

Every test runs with a private /run (the ``private_run_dir`` fixture), so
the bind mounts it makes are seen by nobody else and vanish afterwards; what
a test leaves running, ``python -m pytest_netns cleanup`` stops.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from pytest_netns._net import kept as _kept

pytestmark = [
    pytest.mark.usefixtures("private_run_dir"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

SERVER = """
import subprocess, sys

def test_server(netns_pair, tmp_path_factory):
    a, b = netns_pair
    b.popen([sys.executable, "-m", "http.server", "8080", "--bind", "10.0.0.2"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    b.popen(["sleep", "600"])
    b.wait_for_port("10.0.0.2", 8080)
    assert False, "look at the server"

def test_passes(netns):
    proc = netns.popen(["sleep", "600"])
    with open("passing.pid", "w") as handle:
        handle.write(str(proc.pid))
"""


def kept() -> list[_kept.Entry]:
    return [e for e in _kept.find() if e.state in ("kept", "run still going")]


def wait_for_watchdogs(run_pid: int, timeout: float = 10.0) -> None:
    """Wait until the watchdog of the pytest run ``run_pid`` has done its end-of-run work and exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        watchdogs = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    argv = handle.read().split(b"\0")
            except OSError:
                continue
            if any(arg.endswith(b"watchdog.py") for arg in argv) and str(run_pid).encode() in argv:
                watchdogs.append(pid)
        if not watchdogs:
            return
        time.sleep(0.02)
    raise AssertionError(f"the watchdog of pytest {run_pid} is still running after {timeout} s")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def fetch(entry: _kept.Entry, url: str) -> str:
    code = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=5).status)"
    return subprocess.run(
        ["ip", "netns", "exec", entry.name, sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.strip()


def test_processes_outlive_the_run_and_cleanup_stops_them(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SERVER)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--netns-keep-on-failure=processes")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*- netns: kept namespaces -*",
            "b (net:[[]*]) is kept as /run/netns/pytest-netns-*-b",
            "    still running inside: pid * (*python* -m http.server 8080 --bind 10.0.0.2)",
            "    still running inside: pid * (sleep 600)",
            "Processes inside are left running (--netns-keep-on-failure=processes)*",
        ]
    )
    b = next(e for e in kept() if e.info is not None and e.info.namespace == "b")
    assert b.info is not None
    wait_for_watchdogs(b.info.pid)  # the run is over and its watchdog has acted on what was still registered
    inside = _kept.processes_inside(b)
    commands = sorted(_kept.command_line(pid) for pid in inside)
    assert len(commands) == 2 and commands[1] == "sleep 600" and "http.server" in commands[0], commands
    assert fetch(b, "http://10.0.0.2:8080/") == "200"  # the server answers, live
    # The passing test's process was stopped at its teardown, as always.
    assert not alive(int((pytester.path / "passing.pid").read_text()))

    cleanup = subprocess.run([sys.executable, "-m", "pytest_netns", "cleanup"], capture_output=True, text=True)
    assert cleanup.returncode == 0, cleanup.stdout + cleanup.stderr
    assert all(f"killed pid {pid}" in cleanup.stdout for pid in inside), cleanup.stdout
    assert not any(alive(pid) for pid in inside)
    assert _kept.find() == []


@pytest.mark.parametrize(
    ("args", "ini", "env", "running"),
    [
        pytest.param([], "netns_keep_on_failure = processes", {}, True, id="ini"),
        pytest.param([], "", {"PYTEST_NETNS_KEEP_ON_FAILURE": "processes"}, True, id="environment"),
        pytest.param([], "netns_keep_on_failure = true", {}, False, id="ini-true-keeps-namespaces-only"),
        pytest.param(
            ["--netns-keep-on-failure"], "", {"PYTEST_NETNS_KEEP_ON_FAILURE": "processes"}, False,
            id="option-beats-environment",
        ),
        pytest.param(
            ["--netns-keep-on-failure=processes"], "netns_keep_on_failure = false", {}, True, id="option-beats-ini"
        ),
    ],
)
def test_ini_and_environment_take_processes(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, args: list[str], ini: str, env: dict[str, str],
    running: bool,
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile("def test_fails(netns):\n    netns.popen(['sleep', '600'])\n    assert False\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)
    result.assert_outcomes(failed=1)
    (entry,) = kept()
    assert entry.info is not None
    wait_for_watchdogs(entry.info.pid)
    assert bool(_kept.processes_inside(entry)) == running
    assert ("still running inside: pid" in result.stdout.str()) == running
    subprocess.run([sys.executable, "-m", "pytest_netns", "cleanup"], check=True, capture_output=True)


def test_the_bare_flag_before_a_path_is_still_the_flag(pytester: pytest.Pytester) -> None:
    """The value is a second option string, not an optional argument that would swallow the path."""
    pytester.makepyfile(test_one="def test_fails(netns):\n    assert False\n", test_other="def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--netns-keep-on-failure", "test_one.py")
    result.assert_outcomes(failed=1)
    assert len(kept()) == 1

