"""wait_for_port does not wait out its timeout for a server that died (issue 16, item 4)."""

from __future__ import annotations

import pickle
import socket
import subprocess
import sys
import time

import pytest

from pytest_netns import CommandError, NetnsError, NetnsTimeout, ProcessExited

#: A server that fails as servers do: it cannot bind, says why on stderr, exits 1.
CRASHING = [
    sys.executable,
    "-c",
    "import socket, sys; print('starting', flush=True); "
    "print('config: port 8080', file=sys.stderr); "
    "socket.create_server(('10.9.9.9', 8080))",
]


def test_the_process_given_exits_fails_at_once_with_its_code_and_stderr(netns_pair) -> None:
    a, b = netns_pair
    server = b.popen(CRASHING, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    started = time.monotonic()
    with pytest.raises(ProcessExited) as caught:
        a.wait_for_port("10.0.0.2", 8080, timeout=60, process=server)
    assert time.monotonic() - started < 30  # not the timeout: the exit ended the wait
    error = caught.value
    assert isinstance(error, NetnsError) and isinstance(error, CommandError)
    assert (error.returncode, error.pid, error.namespace) == (1, server.pid, "b")
    text = str(error)
    assert text.startswith(f"waiting for 10.0.0.2:8080 to accept a connection from 'a': pid {server.pid} (")
    assert "in namespace 'b' exited with code 1" in text
    assert "its stderr ends with:\n    config: port 8080\n" in text
    assert text.rstrip().splitlines()[-1].startswith("    OSError: [Errno 99] Cannot assign requested address")
    # Shown, not taken: the test still reads all of it.
    out, err = server.communicate()
    assert out == b"starting\n" and err.startswith(b"config: port 8080\n") and b"Errno 99" in err
    assert pickle.loads(pickle.dumps(error)).__str__() == text


def test_by_default_a_process_popen_started_here_that_failed_counts(netns) -> None:
    server = netns.popen(CRASHING, stderr=subprocess.PIPE)
    with pytest.raises(ProcessExited, match=r"pid \d+ \(.*\) in namespace 'netns' exited with code 1") as caught:
        netns.wait_for_port("127.0.0.1", 8080, timeout=60)
    assert caught.value.pid == server.pid and "Errno 99" in str(caught.value)


def test_a_signal_is_named_and_a_stderr_that_is_no_pipe_is_explained(netns) -> None:
    server = netns.popen(["sleep", "600"])
    server.kill()
    with pytest.raises(ProcessExited) as caught:
        netns.wait_for_port("127.0.0.1", 8080, timeout=60)
    text = str(caught.value)
    assert f"pid {server.pid} (sleep 600) in namespace 'netns' was killed by SIGKILL" in text
    assert "its stderr is not a pipe to the test" in text and "stderr=subprocess.PIPE" in text


def test_what_the_test_already_saw_end_or_ended_well_does_not_count(netns) -> None:
    seen = netns.popen(["false"])
    assert seen.wait() == 1  # the test collected its status: it knows
    launcher = netns.popen(["true"])  # exits 0, as a daemonising server's launcher does
    while launcher.poll() is None:
        time.sleep(0.01)
    launcher.returncode = None  # as if nobody had looked yet
    with netns:
        listener = socket.create_server(("127.0.0.1", 0))
    with listener:
        netns.wait_for_port("127.0.0.1", listener.getsockname()[1], timeout=5)
        with pytest.raises(NetnsTimeout):
            netns.wait_for_port("127.0.0.1", 9, timeout=0.1)


def test_a_listening_port_wins_over_an_old_failure(netns) -> None:
    netns.popen(["false"])  # fails, unobserved
    with netns:
        listener = socket.create_server(("127.0.0.1", 0))
    with listener:
        netns.wait_for_port("127.0.0.1", listener.getsockname()[1], timeout=5)


def test_the_timeout_is_a_netns_timeout_and_a_timeout_error(netns_pair) -> None:
    a, b = netns_pair
    sleeper = b.popen(["sleep", "600"])
    with pytest.raises(NetnsTimeout) as caught:
        a.wait_for_port("10.0.0.2", 8082, timeout=0.2, process=sleeper)
    assert isinstance(caught.value, TimeoutError) and isinstance(caught.value, NetnsError)
    assert "10.0.0.2:8082 from 'a' within 0.2s" in str(caught.value)
    assert f"pid {sleeper.pid} (sleep 600) is still running" in str(caught.value)


def test_process_must_be_a_popen(netns) -> None:
    with pytest.raises(ValueError, match=r"process must be the subprocess.Popen that popen returned, got 42"):
        netns.wait_for_port("127.0.0.1", 80, process=42)  # type: ignore[arg-type]


def test_capture_wait_times_out_with_a_netns_timeout(netns) -> None:
    with netns.capture("lo") as cap, pytest.raises(NetnsTimeout, match=r"waited 0\.05 s for 1 packet on netns:lo"):
        cap.wait(timeout=0.05)
