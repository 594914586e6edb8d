"""Plugin behaviour, checked by running inner pytest sessions in subprocesses."""

from __future__ import annotations

import os
import shutil
import sys

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def test_fixtures_work_in_a_downstream_suite(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import socket

        def test_pair(netns_pair):
            a, b = netns_pair
            assert a.ping("10.0.0.2") and b.ping("fd00::1")

        def test_netns(netns):
            assert netns.interfaces() == ["lo"]

        def test_factory(netns_factory):
            assert netns_factory("x").name == "x"
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


@pytest.mark.parametrize("workers", ["0", "2"])
def test_parallel_workers_do_not_collide(pytester: pytest.Pytester, workers: str) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.parametrize("i", range(40))
        def test_pair(netns_pair, i):
            a, b = netns_pair
            assert a.ping("10.0.0.2")
            assert b.run(["cat", "/proc/net/dev"]).stdout.count("eth0") == 1
        """
    )
    result = pytester.runpytest_subprocess("-n", workers, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=40)


def test_marker_configures_the_pair_closest_wins(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import ipaddress
        import pytest

        pytestmark = pytest.mark.netns(mtu=9000)

        def test_module_level(netns_pair):
            assert netns_pair.a.mtu("eth0") == 9000

        @pytest.mark.netns(subnet="192.168.7.0/24")
        class TestClass:
            def test_class_level(self, netns_pair):
                a, b = netns_pair
                assert str(a.ip) == "192.168.7.1" and str(b.ip) == "192.168.7.2"
                assert a.mtu("eth0") == 1500  # the class marker replaces the module's

            @pytest.mark.netns(mtu=1280, subnet="172.16.0.0/30", ipv6=False)
            def test_function_level(self, netns_pair):
                a, b = netns_pair
                assert a.mtu("eth0") == 1280 and str(b.ip) == "172.16.0.2"
                assert a.ip6 is None and [x.version for x in a.addresses("eth0")] == [4]
                assert a.ping("172.16.0.2")
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ("mtu=1000", "*UsageError*mtu=1000 is below 1280*"),
        ("mtux=1500", "*UsageError*unknown argument 'mtux'*"),
        ("mtu=70000", "*UsageError*mtu 70000 is outside 68..65535*"),
        ("subnet='10.0.0.0/33'", "*UsageError*subnet '10.0.0.0/33' is malformed*"),
        ("subnet='10.0.0.0/32'", "*UsageError*10.0.0.0/32 has room for 1 host addresses, 2 needed*"),
        ("ipv6='yes'", "*UsageError*ipv6 must be True or False*"),
        ("1500", "*UsageError*keyword arguments only*"),
    ],
)
def test_bad_marker_is_a_usage_error_naming_it(pytester: pytest.Pytester, marker: str, message: str) -> None:
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.netns({marker})
        def test_x(netns_pair):
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([message])


def test_low_mtu_is_fine_without_ipv6(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.netns(mtu=576, ipv6=False)
        def test_x(netns_pair):
            a, b = netns_pair
            assert a.mtu("eth0") == 576 and a.ping("10.0.0.2")
        """
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_marker_is_registered_with_its_signature(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--markers")
    result.stdout.fnmatch_lines(
        ['@pytest.mark.netns(mtu=1500, subnet="10.0.0.0/24", ipv6=True, size=3, offloads=False, cni="ptp")*']
    )


def test_fixtures_are_documented(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--fixtures")
    result.stdout.fnmatch_lines(
        [
            "netns_pair -- *",
            "*Two namespaces ``(a, b)`` joined by one veth*",
        ]
    )
    result.stdout.fnmatch_lines(["netns -- *", "*A fresh network namespace with ``lo`` up*"])


def test_disabled_with_p_no_netns(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(netns): pass")
    result = pytester.runpytest_subprocess("-p", "no:netns", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'netns' not found*"])


@pytest.mark.parametrize("workers", ["0", "2"])
def test_loading_the_plugin_is_cheap_and_unprivileged(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, workers: str
) -> None:
    """A run that uses no fixture, report header included: no namespace made or entered, no netlink, no scapy.

    strace sees every system call of pytest and of its xdist workers,
    whatever makes them (ctypes, a subprocess, os.unshare on Python 3.12).
    """
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed (apt-get install strace): it counts the system calls of the run")
    for name in [n for n in os.environ if n.startswith("PYTEST_NETNS_")]:
        monkeypatch.delenv(name)  # e.g. a sandbox or rootless mode asked for by the environment
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(
        """
        import socket, sys

        def test_nothing_heavy():
            assert "pytest_netns.plugin" in sys.modules
            heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("scapy", "pyroute2"))
            assert heavy == []
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).close()  # proves strace sees this process
        """
    )
    trace = pytester.path / "syscalls.txt"
    result = pytester.run(
        strace, "-f", "-qq", "-o", str(trace), "-e", "trace=unshare,setns,socket,clone,clone3",
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", workers,
    )
    result.assert_outcomes(passed=1)
    (header,) = [line for line in result.outlines if line.startswith("netns: ")]
    assert "namespaces: available" in header
    calls = [line.split(None, 1)[1] for line in trace.read_text().splitlines() if "resumed>" not in line]
    assert any(c.startswith("socket(AF_UNIX, SOCK_DGRAM") for c in calls), calls  # the trace is complete
    privileged = [c for c in calls if c.startswith(("unshare(", "setns(")) or "CLONE_NEW" in c]
    netlink = [c for c in calls if c.startswith("socket(AF_NETLINK")]
    assert privileged == [] and netlink == []


def test_report_header(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["netns: root*namespaces: available*"])


# -- --netns-require-features --------------------------------------------------------------------

#: An inner conftest that hides libpcap from scapy, as on a machine without it (libpcap stays installed).
HIDE_LIBPCAP = """
import sys
sys.modules["scapy.libs.winpcapy"] = None
"""
FILTER_TEST = """
def test_filter(netns_pair):
    netns_pair.b.capture("eth0", filter="icmp")
"""


def libpcap_missing() -> str | None:
    try:
        import scapy.libs.winpcapy  # noqa: F401
    except (ImportError, OSError) as exc:
        return f"libpcap is not installed here ({exc})"
    return None


def test_feature_names_are_doctors_and_every_raise_site_names_one() -> None:
    """Each ``raise FeatureUnavailable(...)`` in the package passes feature= (a doctor name, a variable, or None)."""
    import ast
    from pathlib import Path

    import pytest_netns
    from pytest_netns._kernel.probes import FEATURES, doctor_probes

    assert [p.feature for p in doctor_probes() if p.feature] == list(FEATURES)
    assert {"netem", "libpcap", "br_netfilter"} <= set(FEATURES)
    sites = []
    for path in Path(pytest_netns.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                func = node.exc.func
                if isinstance(func, ast.Name) and func.id == "FeatureUnavailable":
                    sites.append((f"{path.name}:{node.lineno}", node.exc))
    assert len(sites) >= 6
    for where, call in sites:
        (feature,) = [k.value for k in call.keywords if k.arg == "feature"] or [None]
        assert feature is not None, f"{where}: FeatureUnavailable without feature="
        if isinstance(feature, ast.Constant):
            assert feature.value is None or feature.value in FEATURES, where


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_required_feature_that_is_missing_fails_naming_it(pytester: pytest.Pytester, workers: str) -> None:
    pytester.makeconftest(HIDE_LIBPCAP)
    pytester.makepyfile(FILTER_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", workers, "--netns-require-features=libpcap")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "netns: *; required features: libpcap;*",
        "test_a_required_feature_that_is_missing_fails_naming_it.py:2: libpcap is missing, "
        "and --netns-require-features requires it:",
        "filter='icmp' needs libpcap to compile BPF syntax*",
    ])


def test_a_missing_feature_that_is_not_required_is_a_skip_naming_it(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(HIDE_LIBPCAP)
    pytester.makepyfile(FILTER_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs", "--netns-require-features=netem")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED [[]1[]] *.py:1: libpcap missing: filter='icmp' needs libpcap*"])


def test_the_readme_says_what_filter_does_without_libpcap() -> None:
    """What the two tests above check, as the README tells it (it said FeatureUnavailable, not a skip)."""
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    start = readme.index("`filter=` (BPF syntax) needs")
    paragraph = " ".join(readme[start : readme.index("\n\n", start)].split())
    for said in ("`FeatureUnavailable` (feature `libpcap`)", "a skip of the test naming it", "libpcap missing:",
                 "a failure under `--netns-require-features=libpcap`", "outside pytest it is simply raised"):
        assert said in paragraph, said


@pytest.mark.skipif(libpcap_missing() is not None, reason=f"needs libpcap installed: {libpcap_missing()}")
def test_a_required_feature_that_is_there_passes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(FILTER_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--netns-require-features=libpcap,tbf")
    result.assert_outcomes(passed=1)


def test_required_netem_fails_or_works_for_real(pytester: pytest.Pytester) -> None:
    """The kernel's own answer: a delay works where sch_netem exists, and fails naming netem where not."""
    from pytest_netns._net import impair as _impair

    pytester.makepyfile(
        """
        def test_delay(netns_bridge):
            with netns_bridge.segment.impair(delay="10ms"):
                pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--netns-require-features=netem")
    if _impair.netem_unavailable_reason() is None:  # pragma: no cover - kernels with sch_netem
        result.assert_outcomes(passed=1)
    else:
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines(
            ["test_*.py:2: netem is missing, and --netns-require-features requires it:", "*sch_netem*"]
        )


def test_required_br_netfilter_fails_where_the_bridge_sysctls_are_missing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from pytest_netns._net.sysctl import settle as _settle_sysctls

        def test_node(netns):
            missing = "/proc/sys/net/bridge/no-such-setting"  # as on a kernel without br_netfilter
            _settle_sysctls(netns, [(missing, "1")], required={missing})
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--netns-require-features", "br_netfilter")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["test_*.py:5: br_netfilter is missing, and --netns-require-features requires it:"])


def test_an_unknown_feature_is_a_usage_error_listing_the_valid_ones(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile("def test_x(): pass")
    valid = (
        "valid: veth, bridge, macvlan, tbf, netem, nft-nat, nft-ingress, nft-filter, nft-dup, br_netfilter, mountns, "
        "libpcap"
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--netns-require-features=netem, netme")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--netns-require-features: unknown feature 'netme'; {valid}"])
    monkeypatch.setenv("PYTEST_NETNS_REQUIRE_FEATURES", "pcap")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"*environment variable PYTEST_NETNS_REQUIRE_FEATURES: unknown feature 'pcap'; {valid}"]
    )


@pytest.mark.parametrize(
    ("ini", "env", "option", "outcome"),
    [
        ("libpcap", None, None, "failed"),
        ("libpcap", "netem", None, "skipped"),  # the environment beats the ini file
        ("libpcap", "", None, "skipped"),  # an empty value requires nothing
        ("netem", "netem", "libpcap", "failed"),  # the command line beats both
        ("libpcap", "libpcap", "", "skipped"),
    ],
)
def test_required_features_from_ini_environment_and_command_line(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    ini: str,
    env: str | None,
    option: str | None,
    outcome: str,
) -> None:
    pytester.makeini(f"[pytest]\nnetns_require_features = {ini}\n")
    pytester.makeconftest(HIDE_LIBPCAP)
    pytester.makepyfile(FILTER_TEST)
    if env is None:
        monkeypatch.delenv("PYTEST_NETNS_REQUIRE_FEATURES", raising=False)
    else:
        monkeypatch.setenv("PYTEST_NETNS_REQUIRE_FEATURES", env)
    args = [] if option is None else [f"--netns-require-features={option}"]
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)
    result.assert_outcomes(**{outcome: 1})


# Drops CAP_SYS_ADMIN and CAP_NET_ADMIN (effective, permitted, inheritable) but stays
# uid 0, so the interpreter's files remain readable: the unprivileged case, exactly.
UNPRIVILEGED = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
header = (ctypes.c_uint32 * 2)(0x20080522, 0)
data = (ctypes.c_uint32 * 6)()
assert libc.capget(header, data) == 0
for cap in (12, 21):  # CAP_NET_ADMIN, CAP_SYS_ADMIN
    for i in range(3):
        data[i * 2 + cap // 32] &= ~(1 << (cap % 32))
assert libc.capset(header, data) == 0, ctypes.get_errno()
import pytest
raise SystemExit(pytest.main({args!r}))
"""


@pytest.mark.parametrize(
    ("extra", "outcome", "line"),
    [
        ([], {"skipped": 1}, "*SKIPPED*network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN (running as uid 0)*"),
        (["--netns-require"], {"errors": 1}, "*--netns-require: network namespaces need*"),
    ],
)
def test_unprivileged_skips_or_fails_with_the_reason(
    pytester: pytest.Pytester, extra: list[str], outcome: dict[str, int], line: str
) -> None:
    pytester.makeini("[pytest]\n")
    pytester.makepyfile("def test_x(netns_pair): pass")
    test_file = "test_unprivileged_skips_or_fails_with_the_reason.py"
    script = pytester.makepyfile(runner=UNPRIVILEGED.format(args=["-rs", "-p", "no:cacheprovider", test_file, *extra]))
    result = pytester.run(sys.executable, str(script))
    result.assert_outcomes(**outcome)
    result.stdout.fnmatch_lines([line])


def test_require_from_ini_and_environment(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeini("[pytest]\nnetns_require = maybe\n")
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ini option netns_require*"])
    monkeypatch.setenv("PYTEST_NETNS_KILL_GRACE", "-1")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-o", "netns_require=true")
    result.stderr.fnmatch_lines(["*environment variable PYTEST_NETNS_KILL_GRACE*-1*"])


STUBBORN = """
import subprocess

def test_x(netns):
    netns.kill_grace = 0.1
    proc = netns.popen(["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done"],
                       stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\\n"
"""


def test_process_killed_after_the_grace_is_a_warning_of_the_test(pytester: pytest.Pytester) -> None:
    """As ``docker stop``: the test passes, the warnings summary names the process; ``-W error`` makes it an error."""
    pytester.makepyfile(STUBBORN)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(
        [
            "*warnings summary*",
            "test_process_killed_after_the_grace_is_a_warning_of_the_test.py::test_x",
            "*NetnsProcessWarning: pid * (sh -c trap * TERM;*) in namespace 'netns' was still running 0.1s after "
            "SIGTERM and was killed with SIGKILL*",
        ]
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error::pytest_netns.NetnsProcessWarning")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["*ERROR at teardown of test_x*", "*NetnsProcessWarning: pid * was still running 0.1s*"]
    )


def test_process_stopping_within_a_long_grace_is_neither_killed_nor_warned_about(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import subprocess, sys

        SLOW_STOP = (
            "import signal, sys, time\\n"
            "signal.signal(signal.SIGTERM, lambda *_: (time.sleep(0.5), sys.exit(0)))\\n"
            "print('ready', flush=True)\\n"
            "while True: time.sleep(1)\\n"
        )
        started = []

        def test_x(netns):
            proc = netns.popen([sys.executable, "-c", SLOW_STOP], stdout=subprocess.PIPE, text=True)
            assert proc.stdout.readline() == "ready\\n"
            started.append(proc)

        def test_it_stopped_by_itself():
            [proc] = started
            assert proc.returncode == 0  # exited from its handler, not -9
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--netns-kill-grace=5", "-W", "error::pytest_netns.NetnsProcessWarning"
    )
    result.assert_outcomes(passed=2, warnings=0)


def test_a_failed_cleanup_step_is_a_teardown_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from pytest_netns._kernel.handle import handle_of

        def test_x(netns):
            handle_of(netns).add_cleanup(lambda: 1 / 0, "dividing on purpose")
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["*ERROR at teardown of test_x*", "*tearing down namespace 'netns' failed*", "*dividing on purpose*"]
    )


def test_kill_grace_option(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(netns): assert netns.kill_grace == 0.25")
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "--netns-kill-grace=0.25").assert_outcomes(passed=1)


def test_leak_warning_names_the_namespace(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import socket
        kept = []

        def test_x(netns):
            with netns:
                kept.append(socket.socket())
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*NetnsLeakWarning: namespace 'netns' is still alive after teardown, held by socket*"])


def test_rootless_mode_runs_the_fixtures_without_capabilities(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(
        test_inner="""
        import os

        def test_pair(netns_pair):
            a, b = netns_pair
            assert a.ping("10.0.0.2") and a.ping("fd00::2")
            # A user namespace mapping only uid 0 (outside the initial one, the map is "0 0 4294967295").
            assert b.run(["cat", "/proc/self/uid_map"]).stdout.split() == ["0", "0", "1"]

        def test_popen(netns):
            proc = netns.popen(["sleep", "30"])
            assert os.stat(f"/proc/{proc.pid}/ns/net").st_ino == netns.inode
        """
    )
    for workers in ("0", "2"):
        script = pytester.makepyfile(
            runner=UNPRIVILEGED.format(
                args=["-p", "no:cacheprovider", "--netns-rootless", "-n", workers, "test_inner.py"]
            )
        )
        result = pytester.run(sys.executable, str(script))
        result.assert_outcomes(passed=2)


def test_rootless_refused_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_inner="def test_x(netns): pass")
    # A process with threads cannot enter a user namespace: start one before pytest configures.
    script = pytester.makepyfile(
        runner=UNPRIVILEGED.replace("import pytest\n", "import pytest, threading, time\n"
                                    "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n").format(
            args=["-p", "no:cacheprovider", "--netns-rootless", "test_inner.py"])
    )
    result = pytester.run(sys.executable, str(script))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--netns-rootless: the process already has 2 threads*single-threaded*"])
