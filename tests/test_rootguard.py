"""The root-namespace guard (tests/_rootguard.py) notices what a run changes in its starting namespace."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from _rootguard import diff

TESTS = Path(__file__).parent


@pytest.fixture
def guarded(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Run an inner pytest with the guard, in a namespace of its own (``unshare --net``)."""
    monkeypatch.setenv("PYTHONPATH", str(TESTS))

    def run(*args: str) -> pytest.RunResult:
        return pytester.run(
            "unshare", "--net", "--", sys.executable, "-m", "pytest", "-p", "_rootguard", "-p", "no:cacheprovider",
            "--netns-require", *args, timeout=120,
        )

    return run


def test_a_clean_run_passes(pytester: pytest.Pytester, guarded) -> None:  # type: ignore[no-untyped-def]
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.parametrize("i", range(4))
        def test_pair(netns_pair, i):
            a, b = netns_pair
            a.sysctl("net.ipv4.ip_forward", 1)
            a.add_route("10.9.0.0/24", via="10.0.0.2")
            assert a.ping("10.0.0.2")

        def test_processes(netns):
            netns.popen(["sleep", "60"])
            with netns:
                assert netns.run("cat /proc/net/dev").stdout.count(":") == 1
        """
    )
    for workers in ("0", "2"):
        result = guarded("-n", workers)
        result.assert_outcomes(passed=5)
        assert result.ret == 0
        assert "root namespace guard" not in result.stdout.str()


CHANGES = """
import os, socket
from pyroute2 import IPRoute
from pyroute2.nftables.main import NFTables

def test_address():
    with IPRoute() as ipr:
        ipr.link("set", index=1, state="up")
        ipr.addr("add", index=1, address="10.123.0.1", prefixlen=32)

def test_route():
    with IPRoute() as ipr:
        ipr.route("add", dst="10.124.0.0/24", oif=1, table=77)

def test_sysctl():
    with open("/proc/sys/net/ipv4/conf/all/forwarding", "w") as handle:
        handle.write("1")

def test_nftables():
    with NFTables(nfgen_family=1) as nft:
        nft.table("add", name="guardtest")
"""


@pytest.mark.parametrize("workers", ["0", "2"])
def test_changes_fail_the_run_with_a_diff(pytester: pytest.Pytester, guarded, workers: str) -> None:  # type: ignore[no-untyped-def]
    pytester.makepyfile(CHANGES)
    result = guarded("-n", workers)
    result.assert_outcomes(passed=4)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*root namespace guard: the run's starting namespace changed*",
            "addresses:",
            "*+ lo 10.123.0.1/32*",
            "routes:",
            "*+ table=77 10.124.0.0/24*",
            "nftables:",
            "*+ table 1 guardtest*",
            "sysctls:",
            "*~ /proc/sys/net/ipv4/conf/all/forwarding: '0' -> '1'*",
        ]
    )


def test_a_namespace_left_entered_fails_the_run(pytester: pytest.Pytester, guarded) -> None:  # type: ignore[no-untyped-def]
    pytester.makepyfile(
        """
        def test_forgets_to_leave(netns):
            netns.__enter__()
        """
    )
    result = guarded()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*main thread ends the run in net:*a `with ns:` was entered and never left*"])


def test_sysctls_a_module_adds_are_not_a_change() -> None:
    before = {"sysctls": {"/proc/sys/net/a": "1"}, "links": {"lo": "up"}}
    after = {"sysctls": {"/proc/sys/net/a": "1", "/proc/sys/net/new": "0"}, "links": {"lo": "up", "x": "y"}}
    assert diff(before, after) == ["links:", "  + x = y"]
