"""Functional tests of Namespace with real namespaces."""

from __future__ import annotations

import errno
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings

import pytest

from pytest_netns import (
    CommandError,
    KernelError,
    Namespace,
    NetnsError,
    NetnsLeakWarning,
    NetnsProcessWarning,
    TeardownError,
)
from pytest_netns._kernel.handle import handle_of
from pytest_netns._kernel.netns import open_thread_netns, setns, thread_netns_inode
from pytest_netns.namespace import close_all


def test_fresh_namespace_has_only_lo_up(netns: Namespace) -> None:
    assert netns.interfaces() == ["lo"]
    assert netns.ip is None and netns.ip6 is None
    assert {str(a) for a in netns.addresses()} == {"127.0.0.1/8", "::1/128"}
    assert netns.ping("127.0.0.1") and netns.ping("::1")


def test_forwarding_is_off_whatever_the_host_has(netns: Namespace) -> None:
    assert netns.sysctl("net.ipv4.ip_forward") == "0"
    assert netns.sysctl("net.ipv6.conf.all.forwarding") == "0"


def test_sysctl_is_per_namespace(netns_factory) -> None:
    one, two = netns_factory("one"), netns_factory("two")
    assert one.sysctl("net.ipv4.ip_forward", 1) == "1"
    assert one.sysctl("net/ipv4/ip_forward") == "1"
    assert two.sysctl("net.ipv4.ip_forward") == "0"


def test_pair_addresses_and_names(netns_pair) -> None:
    a, b = netns_pair
    assert (a.name, b.name) == ("a", "b")
    assert a.interfaces() == ["lo", "eth0"] and b.interfaces() == ["lo", "eth0"]
    assert a.ip == ipaddress.ip_address("10.0.0.1") and b.ip == ipaddress.ip_address("10.0.0.2")
    assert a.ip6 == ipaddress.ip_address("fd00::1") and b.ip6 == ipaddress.ip_address("fd00::2")
    assert ipaddress.ip_interface("10.0.0.1/24") in a.addresses("eth0")
    assert ipaddress.ip_interface("fd00::2/64") in b.addresses("eth0")
    assert a.mtu("eth0") == 1500


def test_pair_is_a_tuple_with_names(netns_pair) -> None:
    assert isinstance(netns_pair, tuple) and netns_pair.a is netns_pair[0] and netns_pair.b is netns_pair[1]


@pytest.mark.parametrize("family", ["10.0.0.2", "fd00::2"])
def test_first_packet_is_delivered_without_retry(netns_pair, family: str) -> None:
    """One UDP datagram, no retransmission: a lost first ARP/NS would lose it."""
    a, b = netns_pair
    af = socket.AF_INET6 if ":" in family else socket.AF_INET
    with b:
        server = socket.socket(af, socket.SOCK_DGRAM)
    server.bind((family, 9999))
    server.settimeout(0.5)  # the kernel's ARP/NS retransmit takes 1 s: a lost first packet is caught
    with a:
        client = socket.socket(af, socket.SOCK_DGRAM)
    with server, client:
        client.sendto(b"first", (family, 9999))
        data, _ = server.recvfrom(100)
    assert data == b"first"


def test_tcp_across_the_pair_with_sockets_made_inside(netns_pair) -> None:
    a, b = netns_pair
    with b:
        server = socket.create_server(("0.0.0.0", 8080))
    with a:
        client = socket.create_connection(("10.0.0.2", 8080), timeout=2)
    with server, client:
        conn, peer = server.accept()
        with conn:
            client.sendall(b"hello")
            assert conn.recv(5) == b"hello"
    assert peer[0] == "10.0.0.1"


def test_with_restores_the_thread_namespace_and_nests(netns_pair) -> None:
    a, b = netns_pair
    outside = thread_netns_inode()
    with a:
        assert thread_netns_inode() == a.inode
        with b:
            assert thread_netns_inode() == b.inode
            with b:
                assert thread_netns_inode() == b.inode
            assert thread_netns_inode() == b.inode
        assert thread_netns_inode() == a.inode
    assert thread_netns_inode() == outside


def test_with_restores_after_an_exception(netns: Namespace) -> None:
    outside = thread_netns_inode()
    with pytest.raises(RuntimeError), netns:
        raise RuntimeError("boom")
    assert thread_netns_inode() == outside


def test_with_switches_only_the_calling_thread(netns: Namespace) -> None:
    seen = []
    with netns:
        thread = threading.Thread(target=lambda: seen.append(thread_netns_inode()))
        # A thread started inside inherits the namespace...
        thread.start()
        thread.join()
    assert seen == [netns.inode]
    other = []
    with netns:
        pass
    worker = threading.Thread(target=lambda: other.append(thread_netns_inode()))
    worker.start()
    worker.join()
    assert other == [thread_netns_inode()] != [netns.inode]


def test_call_returns_and_reraises(netns: Namespace) -> None:
    assert netns.call(thread_netns_inode) == netns.inode
    assert netns.call(lambda x, *, y: x + y, 1, y=2) == 3
    with pytest.raises(ZeroDivisionError):
        netns.call(lambda: 1 / 0)
    assert thread_netns_inode() != netns.inode


def test_run_list_and_string(netns_pair) -> None:
    a, _ = netns_pair
    assert a.run(["cat", "/proc/net/dev"]).returncode == 0
    result = a.run("echo $((40 + 2)); echo err >&2")
    assert (result.stdout, result.stderr) == ("42\n", "err\n")
    assert a.run(["cat"], input="data").stdout == "data"
    assert a.run(["cat"], input=b"raw", text=False).stdout == b"raw"
    # The process really runs inside: it sees the namespace's interfaces.
    assert "eth0" in a.run(["cat", "/proc/net/dev"]).stdout


def test_run_env_adds_and_drops_proxies(netns: Namespace, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTPS_PROXY", "all_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "http://proxy.invalid:3128")
    monkeypatch.setenv("KEEP_ME", "yes")
    out = netns.run("env", env={"EXTRA": "1"}).stdout
    lines = set(out.splitlines())
    assert "KEEP_ME=yes" in lines and "EXTRA=1" in lines
    proxies = ("http_proxy=", "https_proxy=", "all_proxy=", "no_proxy=")
    assert not any(line.lower().startswith(proxies) for line in lines)


def test_run_check_raises_command_error(netns: Namespace) -> None:
    with pytest.raises(CommandError) as info:
        netns.run("echo out; echo bad >&2; exit 3")
    error = info.value
    assert isinstance(error, NetnsError) and isinstance(error, subprocess.CalledProcessError)
    assert error.returncode == 3
    message = str(error)
    assert "exit 3" in message and "code 3" in message and "out" in message and "bad" in message
    assert netns.run("exit 4", check=False).returncode == 4


def test_run_timeout_kills(netns: Namespace) -> None:
    start = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        netns.run(["sleep", "30"], timeout=0.2)
    assert time.monotonic() - start < 10
    assert _pids_in(netns) == []


def test_popen_runs_inside_and_is_stopped_at_teardown(netns_factory) -> None:
    ns = netns_factory("p")
    proc = ns.popen(["sleep", "60"])
    assert os.stat(f"/proc/{proc.pid}/ns/net").st_ino == ns.inode
    close_all([ns])
    assert proc.poll() is not None


def test_popen_that_ignores_sigterm_is_killed_after_grace_with_a_warning(netns_factory) -> None:
    """As ``docker stop``: killed after the grace, named in a warning, not a teardown error."""
    ns = netns_factory("stubborn")
    ns.kill_grace = 0.2
    script = "trap '' TERM; echo ready; while :; do sleep 0.05; done"
    proc = ns.popen(["sh", "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    with pytest.warns(NetnsProcessWarning) as record:
        ns.close()
    assert proc.poll() == -9
    proc.stdout.close()
    [warning] = [w for w in record if issubclass(w.category, NetnsProcessWarning)]
    message = str(warning.message)
    assert f"pid {proc.pid} (sh -c {script})" in message and "'stubborn'" in message and "0.2s" in message
    assert warning.filename == __file__  # the caller of close(), not the plugin's insides


SLOW_STOP = """
import signal, sys, time

def stop(*_):
    time.sleep(0.5)
    sys.exit(0)

signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
while True:
    time.sleep(1)
"""


def test_popen_stopping_within_the_grace_is_not_killed_and_not_warned_about() -> None:
    ns = Namespace("patient", kill_grace=5)
    proc = ns.popen([sys.executable, "-c", SLOW_STOP], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    with warnings.catch_warnings():
        warnings.simplefilter("error", NetnsProcessWarning)
        ns.close()
    assert proc.returncode == 0  # its own exit after 0.5 s in the handler, not -9
    proc.stdout.close()


def test_teardown_error_outranks_the_warning_turned_error() -> None:
    """With ``-W error``, a failed cleanup step still surfaces as ``TeardownError`` (the warning is its context)."""
    ns = Namespace("both", kill_grace=0.1)
    proc = ns.popen(["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done"], stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b"ready\n"
    handle_of(ns).add_cleanup(lambda: 1 / 0, "dividing on purpose")
    with warnings.catch_warnings():
        warnings.simplefilter("error", NetnsProcessWarning)
        with pytest.raises(TeardownError, match="dividing on purpose") as info:
            ns.close()
    assert isinstance(info.value.__context__, NetnsProcessWarning)
    assert proc.poll() == -9 and ns.closed
    proc.stdout.close()


def test_failed_watchdog_registration_leaves_the_thread_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registering comes before setns: a failure there (the watchdog died, EMFILE) must not strand the thread."""
    from pytest_netns._kernel.watchdog import client as watchdog_client

    def refuse(inode: int) -> None:
        raise KernelError(errno.EMFILE, f"registering namespace net:[{inode}] with the watchdog")

    ns = Namespace("unregistered")
    saved = open_thread_netns()  # to put the thread back should the test fail
    try:
        outside = thread_netns_inode()
        with monkeypatch.context() as patched:
            patched.setattr(watchdog_client, "register", refuse)
            with pytest.raises(KernelError, match="watchdog"), ns:
                pytest.fail("the body ran although entering failed")
            assert thread_netns_inode() == outside
        # Not counted as registered: the next entry registers and enters.
        with ns:
            assert thread_netns_inode() == ns.inode
        assert thread_netns_inode() == outside
    finally:
        setns(saved)
        os.close(saved)
        ns.close()


def test_a_dead_watchdog_is_a_kernel_error_naming_it() -> None:
    """Writing to a watchdog that died (EPIPE) is reported as what it is, not a bare BrokenPipeError."""
    from pytest_netns._kernel.watchdog import WatchdogClient

    client = WatchdogClient()
    client.register(0)  # starts it; no namespace has inode 0
    pid = client.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    client._proc.wait()  # type: ignore[union-attr]
    with pytest.raises(KernelError, match=rf"registering namespace net:\[0\] with the watchdog \(pid {pid}\)") as info:
        client.register(0)
    assert info.value.errno == errno.EPIPE
    client.stop()


def test_processes_started_by_user_code_inside_are_killed(netns_factory) -> None:
    ns = netns_factory("user")
    with ns:
        proc = subprocess.Popen(["sleep", "60"])
    # setsid + double fork: not our child any more
    ns.run("setsid sh -c 'sleep 60 & sleep 61' >/dev/null 2>&1 &")
    time.sleep(0.1)
    assert _pids_in(ns)
    close_all([ns])
    assert proc.wait(5) == -9
    assert _pids_in_inode(ns.inode) == []


def _state(pid: int) -> str | None:
    """The state letter of a process ("Z": a zombie), or None once it is reaped."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


@pytest.fixture
def full_scans(monkeypatch: pytest.MonkeyPatch) -> list[set[int]]:
    """The namespaces teardown looked for in all of /proc (instead of among the test process's descendants)."""
    import pytest_netns._kernel.watchdog as watchdog

    calls: list[set[int]] = []
    real = watchdog.pids_in_netns

    def spy(inodes: set[int], exclude: set[int] = frozenset()) -> list[int]:  # type: ignore[assignment]
        calls.append(set(inodes))
        return real(inodes, exclude)

    monkeypatch.setattr(watchdog, "pids_in_netns", spy)
    return calls


def test_teardown_looks_among_descendants_unless_the_fd_or_path_was_given_out(full_scans: list[set[int]]) -> None:
    """Entering costs teardown a walk of this process's descendants, whatever the machine runs; ``fd``/``path``
    let anything enter, so those namespaces are looked for in all of /proc."""
    entered, given_out = Namespace("entered"), Namespace("given-out")
    with entered:
        daemon = int(entered.run("setsid sleep 60 >/dev/null 2>&1 & echo $!").stdout)
    assert given_out.path
    entered.close()
    assert full_scans == []
    assert _state(daemon) in ("Z", None)  # killed: the subreaper kept the orphan among our descendants
    given_out.close()
    assert full_scans and all(inodes == {given_out.inode} for inodes in full_scans)


def test_without_proc_children_teardown_scans_all_of_proc(
    monkeypatch: pytest.MonkeyPatch, full_scans: list[set[int]]
) -> None:
    """A kernel without CONFIG_PROC_CHILDREN cannot list descendants: the /proc scan still finds a daemon."""
    from pytest_netns._kernel import process

    monkeypatch.setattr(process, "_children_listable", False)
    ns = Namespace("old-kernel")
    daemon = int(ns.run("setsid sleep 60 >/dev/null 2>&1 & echo $!").stdout)
    ns.close()
    assert full_scans and all(inodes == {ns.inode} for inodes in full_scans)
    assert _state(daemon) in ("Z", None)


def _is_subreaper() -> bool:
    import ctypes

    flag = ctypes.c_int(-1)
    assert ctypes.CDLL(None).prctl(37, ctypes.byref(flag), 0, 0, 0) == 0  # PR_GET_CHILD_SUBREAPER
    return bool(flag.value)


def test_the_test_process_adopts_orphans_only_while_a_namespace_hosts_processes() -> None:
    """Outside that window an orphan of the test's own processes goes where it always went (not a zombie of ours)."""
    first, second = Namespace("first"), Namespace("second")
    assert not _is_subreaper()
    with first:
        assert _is_subreaper()
    assert second.path
    first.close()
    assert _is_subreaper()  # second may still host processes
    second.close()
    assert not _is_subreaper()
    orphan = int(subprocess.run(["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"], capture_output=True).stdout)
    try:
        assert _parent(orphan) != os.getpid()
    finally:
        os.kill(orphan, signal.SIGKILL)


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as handle:
        return int(handle.read().rsplit(")", 1)[1].split()[1])


def test_orphans_adopted_by_the_test_process_are_reaped() -> None:
    """Teardown kills a grandchild; its parent dies too, so the orphan's zombie comes to us: reaped at once.

    An orphan that was already our child when killed (``cmd &`` of a shell that
    exited) could also be a user's ``Popen``: it is left for its owner until
    the next namespace is made.  A ``Popen`` of the user's gets its own status.
    """
    ns = Namespace("orphans")
    with ns:
        shell = subprocess.Popen(["sh", "-c", "sleep 60 & echo $!; wait"], stdout=subprocess.PIPE, text=True)
    assert shell.stdout is not None
    grandchild = int(shell.stdout.readline())
    background = int(ns.run("sleep 60 >/dev/null 2>&1 & echo $!").stdout)  # its shell exits: adopted by us
    ns.close()
    assert _state(grandchild) is None
    assert _state(background) == "Z"
    assert shell.wait(5) == -9
    shell.stdout.close()
    Namespace("next").close()
    assert _state(background) is None


def test_mtu_link_down_up(netns_pair) -> None:
    a, b = netns_pair
    b.set_mtu("eth0", 1400)
    assert b.mtu("eth0") == 1400
    b.down("eth0")
    assert not a.ping("10.0.0.2", timeout=0.3)
    b.up("eth0")
    # The failed ping above left an incomplete ARP entry whose next solicitation
    # is due up to 1 s later (the kernel's retransmit timer): allow for it.
    assert a.ping("10.0.0.2", timeout=3) and a.ping("fd00::2", timeout=3)
    # IPv6 addresses survive a link going down and up (as IPv4 ones do).
    assert ipaddress.ip_interface("fd00::2/64") in b.addresses("eth0")


def test_routes_both_families(netns_pair) -> None:
    a, b = netns_pair
    b.add_address("lo", "192.0.2.77/32")
    b.add_address("lo", "2001:db8::77/128")
    assert not a.ping("192.0.2.77", timeout=0.2)
    a.add_route("192.0.2.77/32", via="10.0.0.2")
    a.add_route("2001:db8::/64", via="fd00::2")
    assert a.ping("192.0.2.77") and a.ping("2001:db8::77")
    a.add_route("default", via="10.0.0.2")
    b.add_route("198.51.100.0/24", dev="eth0")
    assert "default via 10.0.0.2" in a.run(["ip", "route"]).stdout if _has_ip() else True


def test_ping_unreachable_is_false(netns_pair) -> None:
    a, _ = netns_pair
    assert not a.ping("10.0.0.99", timeout=0.2)
    assert not a.ping("203.0.113.1", timeout=0.1)  # no route: lost, not an exception


def test_missing_interface_names_what_exists(netns: Namespace) -> None:
    with pytest.raises(KernelError, match=r"no interface 'eth9'.*lo"):
        netns.mtu("eth9")


def test_close_is_idempotent_and_blocks_use(netns_factory) -> None:
    ns = netns_factory("done")
    ns.close()
    ns.close()
    with pytest.raises(NetnsError, match="already torn down"):
        ns.interfaces()


def test_leaked_socket_is_warned_about() -> None:
    ns = Namespace("leaky")
    with ns:
        sock = socket.socket()
    with pytest.warns(NetnsLeakWarning, match="'leaky'.*socket"):
        ns.close()
    sock.close()


def test_namespace_without_pytest() -> None:
    ns = Namespace()
    try:
        assert ns.interfaces() == ["lo"]
        assert ns.name.startswith("ns")
        assert repr(ns).startswith("<Namespace")
    finally:
        ns.close()
    assert "closed" in repr(ns)


def _pids_in(ns: Namespace) -> list[int]:
    return _pids_in_inode(ns.inode)


def _pids_in_inode(inode: int) -> list[int]:
    from pytest_netns._kernel.watchdog import pids_in_netns

    deadline = time.monotonic() + 5
    while True:
        pids = pids_in_netns({inode}, {os.getpid()})
        if not pids or time.monotonic() > deadline:
            return pids
        time.sleep(0.02)


def _has_ip() -> bool:
    import shutil

    return shutil.which("ip") is not None


def test_wait_for_port_returns_once_a_server_listens_and_times_out_naming_it(netns_pair) -> None:
    a, b = netns_pair
    with b:
        server = socket.create_server(("::", 8081), family=socket.AF_INET6, dualstack_ipv6=True)
    with server:
        a.wait_for_port("10.0.0.2", 8081)
        a.wait_for_port("fd00::2", 8081)
    with pytest.raises(TimeoutError, match=r"10\.0\.0\.2:8082 from 'a' within 0\.2s"):
        a.wait_for_port("10.0.0.2", 8082, timeout=0.2)
    with pytest.raises(ValueError, match="70000"):
        a.wait_for_port("10.0.0.2", 70000)
