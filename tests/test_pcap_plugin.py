"""--netns-pcap: recordings, pcap files and the failure story, checked in inner pytest sessions."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

FAILING = """
    from scapy.all import IP, TCP

    def test_port_80(netns_pair):
        a, b = netns_pair
        assert a.ping("10.0.0.2")
        reply = a.sr1(IP(dst="10.0.0.2") / TCP(dport=80, flags="S"), timeout=10)
        assert reply is None, "b answered on port 80"
"""

PASSING = """
    def test_ok(netns_pair):
        assert netns_pair.a.ping("10.0.0.2")
"""


def test_a_failed_test_gets_pcaps_a_ladder_and_the_topology(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makepyfile(FAILING)
    artifacts = tmp_path / "artifacts"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--netns-artifacts-dir={artifacts}")
    result.assert_outcomes(failed=1)
    directory = artifacts / "test_a_failed_test_gets_pcaps_a_ladder_and_the_topology.py__test_port_80"
    assert sorted(os.listdir(directory)) == ["a-eth0.pcap", "b-eth0.pcap", "packets.txt", "topology.txt"]
    result.stdout.fnmatch_lines([
        "*- netns: pcap files -*",
        f"{directory}/",
        "  a-eth0.pcap * packets  (a:eth0)",
        "  b-eth0.pcap * packets  (b:eth0)",
        "open with: wireshark FILE, tcpdump -nr FILE*",
        "*- netns: * packets -*",
        "*time  where *packet",
        "*+0.0*  a:eth0 -> b:eth0  ARP who has 10.0.0.2 says 10.0.0.1",
        "*  a:eth0 -> b:eth0  IP / ICMP 10.0.0.1 > 10.0.0.2 echo-request 0*",
        "*  a:eth0 -> b:eth0  IP / TCP 10.0.0.1:ftp_data > 10.0.0.2:http S",
        "*  b:eth0 -> a:eth0  IP / TCP 10.0.0.2:http > 10.0.0.1:ftp_data RA",
        "*- netns: topology -*",
        "a (net:*)",
        "  lo * loopback  up * mtu 65536",
        "  eth0 * veth * up * mtu 1500  *:*  peer b:eth0",
        "      10.0.0.1/24 fd00::1/64 fe80::*",
        "  routes: 10.0.0.0/24 dev eth0 | fd00::/64 dev eth0 | fe80::/64 dev eth0",
        "b (net:*)",
    ])
    assert "ARP who has" in (directory / "packets.txt").read_text()
    assert "peer a:eth0" in (directory / "topology.txt").read_text()
    if shutil.which("tcpdump"):
        dump = subprocess.run(["tcpdump", "-nr", str(directory / "b-eth0.pcap")], capture_output=True, text=True,
                              check=True).stdout
        assert "10.0.0.1.20 > 10.0.0.2.80: Flags [S]" in dump and "10.0.0.2.80 > 10.0.0.1.20: Flags [R.]" in dump


def test_default_directory_is_in_pytest_basetemp(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makepyfile(FAILING)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--basetemp={tmp_path / 'base'}")
    result.assert_outcomes(failed=1)
    pcap = tmp_path / "base" / "netns-artifacts" / "test_default_directory_is_in_pytest_basetemp.py__test_port_80"
    assert (pcap / "a-eth0.pcap").is_file()


def test_passing_tests_leave_nothing_by_default(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makepyfile(PASSING)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--netns-artifacts-dir={tmp_path}", "-rA")
    result.assert_outcomes(passed=1)
    assert not list(tmp_path.iterdir())
    result.stdout.no_fnmatch_line("*netns: pcap files*")


def test_always_writes_pcaps_for_passing_tests(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makepyfile(PASSING)
    pytester.makeini(f"[pytest]\nnetns_pcap = always\nnetns_artifacts_dir = {tmp_path}\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert sorted(os.listdir(tmp_path / "test_always_writes_pcaps_for_passing_tests.py__test_ok")) == [
        "a-eth0.pcap", "b-eth0.pcap"]


def test_never_records_nothing(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makepyfile(FAILING)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--netns-pcap=never",
                                           f"--netns-artifacts-dir={tmp_path}")
    result.assert_outcomes(failed=1)
    assert not list(tmp_path.iterdir())
    result.stdout.no_fnmatch_line("*netns: pcap files*")


def test_setup_failures_tell_the_story_too(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.fixture
        def service(netns_pair):
            assert netns_pair.a.ping("10.0.0.2")
            raise RuntimeError("the service did not start")

        def test_uses_service(service):
            pass

        @pytest.mark.xfail(reason="known", strict=True)
        def test_expected_failure(netns_pair):
            assert netns_pair.a.ping("10.0.0.2")
            assert False
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--netns-artifacts-dir={tmp_path}")
    result.assert_outcomes(errors=1, xfailed=1)
    assert [p.name for p in tmp_path.iterdir()] == ["test_setup_failures_tell_the_story_too.py__test_uses_service"]
    result.stdout.fnmatch_lines(["*- netns: pcap files -*", "*a:eth0 -> b:eth0  IP / ICMP*echo-request*"])


def test_a_full_buffer_is_reported(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makepyfile(
        """
        from scapy.all import IP, UDP

        def test_flood(netns_pair):
            a, b = netns_pair
            a.send([IP(dst="10.0.0.2") / UDP(sport=40000, dport=9) / bytes(1000)] * 300)
            assert False
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--netns-artifacts-dir={tmp_path}",
                                           "-o", "netns_pcap_buffer=64K")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["  a: * later packets not recorded from +0.* s: the 64 KiB buffer was full (ini netns_pcap_buffer)"])


def test_same_names_get_distinct_files(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makepyfile(
        """
        def test_two_of_a_kind(netns_factory):
            one, two = netns_factory("x"), netns_factory("x")
            assert one.ping("127.0.0.1") and two.ping("127.0.0.1")
            assert False
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--netns-artifacts-dir={tmp_path}")
    result.assert_outcomes(failed=1)
    assert sorted(os.listdir(tmp_path / "test_same_names_get_distinct_files.py__test_two_of_a_kind")) == [
        "packets.txt", "topology.txt", "x-lo.pcap", "x.2-lo.pcap"]


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--netns-pcap=sometimes"], {}, "*argument --netns-pcap: invalid choice: 'sometimes'*"),
        ([], {"PYTEST_NETNS_PCAP": "sometimes"},
         "*environment variable PYTEST_NETNS_PCAP: 'sometimes' is not a valid mode (valid: never, failed, always)*"),
        (["-o", "netns_pcap=maybe"], {}, "*ini option netns_pcap: 'maybe' is not a valid mode*"),
        (["-o", "netns_pcap_buffer=lots"], {}, "*ini option netns_pcap_buffer: 'lots' is not a size like 4M*"),
        (["-o", "netns_pcap_buffer=2G"], {}, "*ini option netns_pcap_buffer: '2G' is outside 64K..1G*"),
    ],
)
def test_bad_settings_are_usage_errors(pytester: pytest.Pytester, monkeypatch, args, env, message) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    pytester.makepyfile(PASSING)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_command_line_beats_environment_beats_ini(pytester: pytest.Pytester, monkeypatch, tmp_path: Path) -> None:
    pytester.makepyfile(PASSING)
    pytester.makeini(f"[pytest]\nnetns_pcap = never\nnetns_artifacts_dir = {tmp_path / 'ini'}\n")
    monkeypatch.setenv("PYTEST_NETNS_PCAP", "always")
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
    assert (tmp_path / "ini").is_dir()
    monkeypatch.setenv("PYTEST_NETNS_ARTIFACTS_DIR", str(tmp_path / "env"))
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
    assert (tmp_path / "env").is_dir()
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "--netns-pcap=never",
                                  f"--netns-artifacts-dir={tmp_path / 'cli'}").assert_outcomes(passed=1)
    assert not (tmp_path / "cli").exists()


def test_recording_does_not_import_scapy(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import sys

        def test_no_scapy(netns_pair):
            assert netns_pair.a.ping("10.0.0.2")
            assert "scapy" not in sys.modules
        """
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


@pytest.mark.parametrize("workers", ["0", "2"])
def test_with_xdist(pytester: pytest.Pytester, tmp_path: Path, workers: str) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.parametrize("i", range(6))
        def test_pair(netns_pair, i):
            assert netns_pair.a.ping("10.0.0.2")
            assert i % 3, "every third fails"
        """
    )
    result = pytester.runpytest_subprocess("-n", workers, "-p", "no:cacheprovider", f"--netns-artifacts-dir={tmp_path}")
    result.assert_outcomes(passed=4, failed=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test_with_xdist.py__test_pair[0]",
                                                          "test_with_xdist.py__test_pair[3]"]
    assert result.stdout.str().count("-> b:eth0  IP / ICMP 10.0.0.1 > 10.0.0.2 echo-request") == 2
