"""``python -m pytest_netns doctor|list|cleanup`` and the report header."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_netns import Namespace
from pytest_netns._cli.main import main
from pytest_netns._net import kept as _kept

#: Root without the two capabilities namespaces need (the bounding set limits what exec grants).
UNPRIVILEGED = ["setpriv", "--bounding-set=-net_admin,-sys_admin", "--"]
CHECKS = [
    "privileges", "network namespaces", "kernel", "user namespaces", "veth", "bridge", "macvlan",
    "tbf (rate limits)",
    "netem (delay, jitter)", "nftables NAT (masquerade)", "nftables netdev ingress", "nftables reject (partitions)",
    "nftables dup", "br_netfilter",
    "private mount namespaces", "libpcap", "scapy", "kept namespaces (/run/netns)",
]


def cli(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, sys.executable, "-m", "pytest_netns", *args], capture_output=True, text=True,
                          timeout=60)


# -- doctor --------------------------------------------------------------------------------------------


def test_doctor_prints_a_table_with_what_is_missing_and_what_that_disables() -> None:
    table = cli("doctor")
    data = json.loads(cli("doctor", "--json").stdout)
    assert table.returncode == 0, table.stdout + table.stderr
    assert data["usable"] is True
    assert [p["name"] for p in data["probes"]] == CHECKS
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["CHECK", "FEATURE", "STATUS", "DETAIL", "IF", "MISSING,", "THIS", "IS", "DISABLED"]
    for probe in data["probes"]:
        (line,) = [x for x in lines if x.startswith(probe["name"] + "  ")]
        feature, status = line[len(probe["name"]) :].split()[:2]
        assert feature == (probe["feature"] or "-")
        if probe["ok"]:
            assert status == "ok"
        else:
            assert status == "MISSING" and probe["disables"] in line
    for name in ("privileges", "network namespaces", "veth", "bridge"):
        assert next(p for p in data["probes"] if p["name"] == name)["ok"] is True
    assert "The fixtures work here" in table.stdout
    features = [p["feature"] for p in data["probes"] if p["feature"]]
    assert f"--netns-require-features=NAME,... fails it instead (names: {', '.join(features)})" in table.stdout


def test_doctor_without_privileges_says_nothing_works_and_why() -> None:
    result = cli("doctor", prefix=tuple(UNPRIVILEGED))
    data = json.loads(cli("doctor", "--json", prefix=tuple(UNPRIVILEGED)).stdout)
    assert result.returncode == 1
    probes = {p["name"]: p for p in data["probes"]}
    assert probes["privileges"]["ok"] is False
    assert "missing CAP_SYS_ADMIN, CAP_NET_ADMIN" in probes["privileges"]["detail"]
    assert probes["network namespaces"]["ok"] is False
    assert probes["veth"]["ok"] is None and "no network namespaces" in probes["veth"]["detail"]
    assert "The fixtures cannot work here" in result.stdout
    assert "every fixture (tests are skipped, or fail with --netns-require)" in result.stdout


def test_doctor_probes_leave_the_calling_namespace_alone() -> None:
    """The probes make veths, bridges, qdiscs and nftables tables, all in a throwaway namespace."""
    before = socket.if_nameindex()
    assert main(["doctor"], out=io.StringIO()) == 0
    assert socket.if_nameindex() == before


# -- the report header ---------------------------------------------------------------------------------


def test_header_shows_privileges_and_whether_namespaces_can_be_made_in_one_line(pytester: pytest.Pytester) -> None:
    """Only what files tell (cheap; test_plugin.py proves it makes no namespace); doctor probes the features."""
    pytester.makepyfile("def test_x(netns):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--netns-require-features=tbf,veth")
    result.assert_outcomes(passed=1)
    (line,) = [x for x in result.outlines if x.startswith("netns: ")]
    assert line == (
        f"netns: root, CAP_NET_ADMIN+CAP_SYS_ADMIN; namespaces: available; kernel {os.uname().release}; "
        "required features: tbf, veth; features are probed when a test needs one (python -m pytest_netns doctor)"
    )


def test_header_without_privileges(pytester: pytest.Pytester) -> None:
    from pytest_netns._kernel.probes import user_namespace_sysctls

    pytester.makepyfile("def test_x(netns):\n    pass\n")
    result = pytester.run(*UNPRIVILEGED, sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(skipped=1)
    refused = user_namespace_sysctls()
    rootless = f"--netns-rootless is refused too ({refused})" if refused else "or pass --netns-rootless"
    result.stdout.fnmatch_lines([
        "netns: root, neither CAP_NET_ADMIN nor CAP_SYS_ADMIN (missing CAP_SYS_ADMIN, CAP_NET_ADMIN); "
        "namespaces: UNAVAILABLE (network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN (running as uid 0); "
        f"run as root or in a privileged container, {rootless}); see python -m pytest_netns doctor",
    ])


@pytest.mark.parametrize(
    ("sysctl", "value", "refused"),
    [
        ("kernel/unprivileged_userns_clone", "0", True),
        ("user/max_user_namespaces", "0", True),
        ("kernel/apparmor_restrict_unprivileged_userns", "1", True),
        ("kernel/apparmor_restrict_unprivileged_userns", "0", False),
    ],
)
def test_header_says_whether_rootless_mode_is_refused_from_the_sysctls(
    monkeypatch: pytest.MonkeyPatch, sysctl: str, value: str, refused: bool
) -> None:
    from pytest_netns._kernel import probes as _capabilities
    from pytest_netns._kernel.netns import Capabilities

    path = f"/proc/sys/{sysctl}"
    monkeypatch.setattr(_capabilities, "_sysctl", lambda p: value if p == path else None)
    monkeypatch.setattr(Capabilities, "current", classmethod(lambda cls: cls(0)))
    reason = _capabilities.namespaces_unavailable_reason()
    assert reason is not None and "need CAP_SYS_ADMIN and CAP_NET_ADMIN" in reason
    if refused:
        assert reason.endswith(f"--netns-rootless is refused too ({path} is {value})")
    else:
        assert reason.endswith("or pass --netns-rootless")


def test_header_without_network_namespaces(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_netns._kernel import probes as _capabilities

    monkeypatch.setattr(_capabilities, "_sysctl", lambda p: "0" if p == "/proc/sys/user/max_net_namespaces" else None)
    assert _capabilities.namespaces_unavailable_reason() == "/proc/sys/user/max_net_namespaces is 0"
    monkeypatch.setattr(_capabilities, "_sysctl", lambda p: None)
    assert _capabilities.namespaces_unavailable_reason() is None


# -- list and cleanup ----------------------------------------------------------------------------------


@pytest.mark.usefixtures("private_run_dir")
def test_nothing_to_list_or_clean() -> None:
    assert cli("list").stdout == "No kept namespaces.\n"
    assert cli("list", "--json").stdout.strip() == "[]"
    assert cli("cleanup").stdout == "Nothing to clean up.\n"


def ip_netns(*args: str) -> str:
    return subprocess.run(["ip", "netns", *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def leftovers(pytester: pytest.Pytester, netns_factory: Callable[..., Namespace], private_run_dir: None):  # type: ignore[no-untyped-def]
    """/run/netns as a crashed, a kept and a still-running run leave it, next to other programs' namespaces."""
    # Other programs' namespaces, one of them even named like ours.
    ip_netns("add", "foreign")
    ip_netns("add", "pytest-netns-1-1-impostor")
    # A finished run kept the namespaces of its failed test; someone started a process inside since.
    pytester.makepyfile("def test_fails(netns):\n    assert False\n")
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "--netns-keep-on-failure").assert_outcomes(failed=1)
    (finished,) = [e for e in _kept.find() if e.state == "kept"]
    sleeper = subprocess.Popen(["ip", "netns", "exec", finished.name, "sleep", "600"])  # ip execs sleep
    deadline = time.monotonic() + 10
    while _kept.processes_inside(finished) != [sleeper.pid] and time.monotonic() < deadline:
        time.sleep(0.01)
    # This very process (a run still going) keeps one.
    running = _kept.keep(netns_factory("mine"), "test_cli.py::live")
    # Metadata whose mount is gone, and a mount point an interrupted keep left empty.
    stale = _kept.KeptInfo(**{**_kept.read_metadata(finished.name).__dict__, "name": "pytest-netns-2-1-gone"})  # type: ignore[union-attr]
    _kept.metadata_path(stale.name).write_text(json.dumps(stale.__dict__))
    half = _kept.KeptInfo(**{**stale.__dict__, "name": "pytest-netns-3-1-half"})
    _kept.metadata_path(half.name).write_text(json.dumps(half.__dict__))
    Path("/run/netns", half.name).touch()
    try:
        yield {"finished": finished.name, "running": running.name, "sleeper": sleeper}
    finally:
        sleeper.kill()
        sleeper.wait()


def test_list_shows_what_runs_kept(leftovers: dict) -> None:  # type: ignore[type-arg]
    states = {e["name"]: e["state"] for e in json.loads(cli("list", "--json").stdout)}
    assert states == {
        leftovers["finished"]: "kept",
        leftovers["running"]: "run still going",
        "pytest-netns-1-1-impostor": "not ours",
        "pytest-netns-2-1-gone": "stale metadata",
        "pytest-netns-3-1-half": "placeholder",
    }
    entry = next(e for e in json.loads(cli("list", "--json").stdout) if e["name"] == leftovers["finished"])
    assert entry["processes"] == [leftovers["sleeper"].pid]
    table = cli("list").stdout.splitlines()
    assert table[0].split()[:4] == ["NAME", "STATE", "NAMESPACE", "TEST"]
    (row,) = [line for line in table if line.startswith(leftovers["finished"])]
    assert "netns (net:[" in row and "test_fails" in row and f"ip netns exec {leftovers['finished']}" in row


def test_cleanup_removes_only_what_this_plugin_made(leftovers: dict) -> None:  # type: ignore[type-arg]
    dry = cli("cleanup", "--dry-run")
    assert f"would remove {leftovers['finished']} (kept)" in dry.stdout
    assert len(_kept.find()) == 5
    result = cli("cleanup")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert f"removed {leftovers['finished']} (kept) (killed pid {leftovers['sleeper'].pid}; unmounted" in out
    assert "removed pytest-netns-2-1-gone (stale metadata)" in out
    assert "removed pytest-netns-3-1-half (placeholder)" in out
    assert "skipped pytest-netns-1-1-impostor: /run/netns/pytest-netns-1-1-impostor has no metadata" in out
    assert f"skipped {leftovers['running']}: pytest pid {os.getpid()} is still running (--force" in out
    assert leftovers["sleeper"].wait(10) == -9
    assert sorted(ip_netns("list").split()) == sorted(["foreign", "pytest-netns-1-1-impostor", leftovers["running"]])

    forced = cli("cleanup", "--force")
    assert f"removed {leftovers['running']} (run still going)" in forced.stdout
    assert sorted(ip_netns("list").split()) == ["foreign", "pytest-netns-1-1-impostor"]
    assert sorted(os.listdir(_kept.STATE_DIR)) == []


def test_cleanup_never_touches_a_namespace_that_is_not_the_recorded_one(leftovers: dict) -> None:  # type: ignore[type-arg]
    """Same name and metadata, but another namespace mounted there (inode or cookie differ): not ours."""
    name = leftovers["finished"]
    path = _kept.metadata_path(name)
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "cookie": data["cookie"] + 1}))
    result = cli("cleanup")
    assert f"skipped {name}: /run/netns/{name} is another namespace than the one recorded" in result.stdout
    assert name in ip_netns("list")


def test_installed_as_a_command_and_usage_errors() -> None:
    script = Path(sys.executable).with_name("pytest-netns")
    assert script.exists(), "pip install installs the pytest-netns command ([project.scripts])"
    assert subprocess.run([str(script), "list", "--help"], capture_output=True, text=True).returncode == 0
    result = cli()
    assert result.returncode == 2 and "doctor" in result.stderr and "cleanup" in result.stderr
    assert cli("frobnicate").returncode == 2
