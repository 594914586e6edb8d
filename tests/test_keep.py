"""--netns-keep-on-failure: a failed test's namespaces stay under /run/netns, ready to enter.

Every test runs with a private /run (the ``private_run_dir`` fixture), so
the bind mounts it makes are seen by nobody else and vanish afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pytest_netns._net import kept as _kept

pytestmark = [pytest.mark.usefixtures("private_run_dir"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]

FAILING = """
import pytest

def test_fails(netns_pair):
    a, b = netns_pair
    a.sysctl("net.ipv4.ip_forward", 1)
    a.add_route("10.77.0.0/24", via="10.0.0.2")
    a.popen(["sleep", "600"])
    assert a.ping("10.0.0.99", timeout=0.1), "nobody there"

def test_passes(netns):
    pass

@pytest.mark.xfail(reason="expected")
def test_expected_failure(netns):
    assert False

@pytest.fixture
def configured(netns_pair):
    raise RuntimeError("fixture setup failed")

def test_setup_error(configured):
    pass
"""


def kept() -> list[_kept.Entry]:
    return [e for e in _kept.find() if e.state in ("kept", "run still going")]


def in_namespace(name: str, *cmd: str) -> str:
    return subprocess.run(["ip", "netns", "exec", name, *cmd], check=True, capture_output=True, text=True).stdout


def test_failed_tests_keep_their_namespaces(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(FAILING)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--netns-keep-on-failure")
    result.assert_outcomes(passed=1, failed=1, errors=1, xfailed=1)
    entries = kept()
    assert sorted(e.info.test.split("::")[1] + "/" + e.info.namespace for e in entries) == [  # type: ignore[union-attr]
        "test_fails/a",
        "test_fails/b",
        "test_setup_error/a",
        "test_setup_error/b",
    ]
    result.stdout.fnmatch_lines(
        [
            "*- netns: kept namespaces -*",
            "a (net:[[]*]) is kept as /run/netns/pytest-netns-*-a",
            "    nsenter --net=/run/netns/pytest-netns-*-a <command>",
            "    ip netns exec pytest-netns-*-a <command>",
            "b (net:[[]*]) is kept as /run/netns/pytest-netns-*-b",
            "Processes started inside were stopped at teardown*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*netns: 4 namespace(s) of failed tests kept under /run/netns*",
            "list: python -m pytest_netns list    remove: python -m pytest_netns cleanup",
        ]
    )

    a = next(e for e in entries if e.info.namespace == "a" and e.info.test.endswith("test_fails"))  # type: ignore[union-attr]
    # The state the test left: addresses, routes, sysctls; its processes are gone.
    assert "10.0.0.1/24" in in_namespace(a.name, "ip", "-br", "addr", "show", "eth0")
    assert "10.77.0.0/24 via 10.0.0.2" in in_namespace(a.name, "ip", "route")
    assert in_namespace(a.name, "cat", "/proc/sys/net/ipv4/ip_forward").strip() == "1"
    nsenter = subprocess.run(["nsenter", f"--net=/run/netns/{a.name}", "ip", "-br", "link", "show", "eth0"],
                             check=True, capture_output=True, text=True).stdout
    assert "UP" in nsenter
    assert _kept.processes_inside(a) == []
    # As `ip netns add` leaves it: /run/netns is a shared mount point.
    assert any(line.split()[4] == "/run/netns" and "shared:" in line for line in open("/proc/self/mountinfo"))
    # The metadata names the run unambiguously.
    meta = json.loads(_kept.metadata_path(a.name).read_text())
    assert meta["plugin"] == "pytest-netns" and a.name.startswith(f"pytest-netns-{meta['pid']}-")
    assert os.stat(f"/run/netns/{a.name}").st_ino == meta["inode"]


@pytest.mark.parametrize("tb", ["auto", "no"])
def test_what_was_kept_is_said_once(pytester: pytest.Pytester, tb: str) -> None:
    """Each kept path and the commands to list and remove them appear once: in the failure report (its
    section), or, where failure reports are not shown, in the summary at the end of the run."""
    pytester.makepyfile("def test_fails(netns_pair):\n    assert False\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--netns-keep-on-failure", f"--tb={tb}")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert out.count("python -m pytest_netns cleanup") == 1, out
    assert out.count("python -m pytest_netns list") == 1, out
    for entry in kept():
        assert out.count(f"{entry.info.path}\n") + out.count(f"{entry.info.path} ") == 1 + (tb == "auto"), out  # type: ignore[union-attr]
        # "is kept as PATH" and "nsenter --net=PATH <command>" in the section, or "  PATH" in the summary


@pytest.mark.parametrize(
    ("args", "ini", "env", "expected"),
    [
        pytest.param([], "", {}, 0, id="off-by-default"),
        pytest.param(["--netns-keep-on-failure"], "", {}, 1, id="option"),
        pytest.param([], "netns_keep_on_failure = true", {}, 1, id="ini"),
        pytest.param([], "", {"PYTEST_NETNS_KEEP_ON_FAILURE": "1"}, 1, id="environment"),
        pytest.param([], "netns_keep_on_failure = true", {"PYTEST_NETNS_KEEP_ON_FAILURE": "0"}, 0, id="env-beats-ini"),
        pytest.param(["--netns-keep-on-failure"], "", {"PYTEST_NETNS_KEEP_ON_FAILURE": "0"}, 1, id="option-beats-env"),
    ],
)
def test_option_ini_and_environment(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, args: list[str], ini: str, env: dict[str, str],
    expected: int,
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile("def test_fails(netns):\n    assert False\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)
    result.assert_outcomes(failed=1)
    assert len(kept()) == expected
    assert ("netns: kept namespaces" in result.stdout.str()) == bool(expected)


def test_bad_ini_value_is_a_usage_error(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_NETNS_KEEP_ON_FAILURE", "sometimes")
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*PYTEST_NETNS_KEEP_ON_FAILURE*'sometimes' is neither a boolean*nor processes"])


def test_xdist_workers_keep_and_the_controller_reports(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.parametrize("i", range(4))
        def test_fails(netns_pair, i):
            assert False
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "--netns-keep-on-failure")
    result.assert_outcomes(failed=4)
    entries = kept()
    assert len(entries) == 8
    assert len({e.info.pid for e in entries}) == 2  # type: ignore[union-attr]  # one name space per worker
    assert len({e.name for e in entries}) == 8
    result.stdout.fnmatch_lines(["*netns: 8 namespace(s) of failed tests kept under /run/netns*"])


def test_a_namespace_that_cannot_be_kept_is_reported(pytester: pytest.Pytester) -> None:
    """/run read-only: the test fails for its own reason, and the section says why nothing was kept."""
    subprocess.run(["mount", "-o", "remount,ro", "/run"], check=True)
    pytester.makepyfile("def test_fails(netns):\n    assert False\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--netns-keep-on-failure")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["netns: could not be kept: *Read-only file system*"])
    assert not os.path.exists("/run/netns")


def test_kept_namespace_survives_the_run_and_cleanup_removes_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_fails(netns):\n    assert False\n")
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "--netns-keep-on-failure").assert_outcomes(failed=1)
    (entry,) = kept()
    assert entry.state == "kept"  # the run that kept it has ended
    inode = entry.info.inode  # type: ignore[union-attr]
    cleanup = subprocess.run([sys.executable, "-m", "pytest_netns", "cleanup"], capture_output=True, text=True)
    assert cleanup.returncode == 0, cleanup.stdout + cleanup.stderr
    assert f"removed {entry.name} (kept)" in cleanup.stdout
    assert _kept.find() == []
    assert os.listdir("/run/netns") == []
    assert not any(f"net:[{inode}]" in line for line in open("/proc/self/mountinfo"))
