"""The session's own network namespace: ``--netns-sandbox`` and ``--netns-rootless``.

Rootless mode is tried as a real unprivileged user: the test creates one
(``useradd``, removed with ``userdel -r``), gives it a fresh home of its own
(pytester's directories are root's and closed to others), and runs the inner
pytest as that user.  Where the interpreter lives under a directory other
users cannot enter (``/root/.pyenv``), the launcher makes the path reachable
in a private mount namespace of its own (nothing changes on the machine).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from pytest_netns._kernel.session import userns_unavailable_reason

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

#: Run as root: make the interpreter reachable for the user in a private mount
#: namespace, drop to the user, exec the command (argv: user, cwd, command...).
LAUNCHER = r"""
import ctypes, os, pwd, sys

CLONE_NEWNS, MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 0x20000, 0x1000, 0x2000, 0x4000, 1 << 18
libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p)

def check(result, what):
    if result != 0:
        raise OSError(ctypes.get_errno(), what)

def closed_ancestor(paths):
    # The first directory on the way to one of `paths` that others cannot enter, and the children needed.
    for path in paths:
        parts = os.path.realpath(path).split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i]) or "/"
            if not os.stat(parent).st_mode & 0o001:
                children = {p.split("/")[i] for p in map(os.path.realpath, paths)
                            if p.startswith(parent.rstrip("/") + "/")}
                return parent, children
    return None

user, cwd, *command = sys.argv[1:]
check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "making / private")
needed = [sys.executable, sys.base_prefix, sys.prefix]
while (closed := closed_ancestor(needed)) is not None:
    # Cover the closed directory with an open tmpfs holding only what is needed.
    parent, children = closed
    staging = {}
    for child in children:
        staging[child] = os.path.join("/tmp", f".launcher-{os.getpid()}-{child}")
        os.mkdir(staging[child])
        check(libc.mount(os.path.join(parent, child).encode(), staging[child].encode(), None, MS_BIND | MS_REC,
                         None), f"binding {parent}/{child}")
    check(libc.mount(b"tmpfs", parent.encode(), b"tmpfs", 0, b"mode=755"), f"a tmpfs on {parent}")
    for child, stage in staging.items():
        os.mkdir(os.path.join(parent, child))
        check(libc.mount(stage.encode(), os.path.join(parent, child).encode(), None, MS_MOVE, None), "moving")
        os.rmdir(stage)
entry = pwd.getpwnam(user)
os.initgroups(user, entry.pw_gid)
os.setgid(entry.pw_gid)
os.setuid(entry.pw_uid)
os.chdir(cwd)
os.execv(command[0], command)
"""


class User(NamedTuple):
    name: str
    uid: int
    home: Path


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a user-management command; retry while another one holds the password file lock (exit 10)."""
    for _ in range(50):
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 10:
            return done
        time.sleep(0.1)
    return done


@pytest.fixture(scope="module")
def real_user() -> Iterator[User]:
    """A real unprivileged user with a fresh home directory of its own, removed (home included) at the end."""
    if os.geteuid() != 0:
        pytest.skip("creating a user for the rootless tests needs root")
    for tool in ("useradd", "userdel"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (package passwd)")
    reason = userns_unavailable_reason()
    if reason is not None:
        pytest.skip(f"this machine does not allow unprivileged user namespaces: {reason}")
    name = f"pnrl{os.getpid()}"
    home = Path(tempfile.mkdtemp(prefix=f"{name}-"))
    try:
        pwd.getpwnam(name)  # left by a crashed run with the same pid: reuse it
    except KeyError:
        done = _run(["useradd", "--no-create-home", "--home-dir", str(home), "--user-group",
                     "--shell", "/usr/sbin/nologin", "--comment", "pytest-netns rootless test", name])
        assert done.returncode == 0, done.stderr
    else:
        _run(["usermod", "--home", str(home), name])
    entry = pwd.getpwnam(name)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    try:
        yield User(name, entry.pw_uid, home)
    finally:
        done = _run(["userdel", "--remove", name])
        shutil.rmtree(home, ignore_errors=True)
        assert done.returncode in (0, 12), done.stderr  # 12: the home directory was already gone


#: Every fixture, each with real traffic, plus ordinary tests that use loopback and tmp_path.
ROOTLESS_SUITE = '''
import http.server
import os
import socket
import sys
import threading
import urllib.request

from pytest_netns._kernel import netns as _kernel
from pytest_netns._kernel.watchdog import client as watchdog

SERVE = [sys.executable, "-c", """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen()
while True:
    c, peer = s.accept()
    c.sendall((sys.argv[2] + " " + peer[0]).encode())
    c.close()
"""]


def serve(ns, port, label):
    ns.popen(SERVE + [str(port), label])
    ns.wait_for_port(str(ns.ip), port)


def ask(ns, address):
    with ns:
        sock = socket.create_connection(address, timeout=5)
    with sock:
        return sock.recv(256).decode().split()


def test_a_real_user_mapped_to_root_in_a_user_namespace():
    outer = int(os.environ["OUTER_UID"])
    assert outer != 0
    with open("/proc/self/uid_map") as handle:
        assert handle.read().split() == ["0", str(outer), "1"]
    assert os.getuid() == 0


def test_http_server_on_loopback_outside_the_fixtures():
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/", timeout=5) as reply:
            assert reply.status == 200
    finally:
        server.shutdown()
        server.server_close()


def test_tmp_path(tmp_path):
    (tmp_path / "x").write_text("x")
    assert os.stat(tmp_path / "x").st_uid == 0  # the user, seen from inside


def test_netns_popen_sysctl_and_the_watchdog(netns):
    proc = netns.popen(["sleep", "30"])
    assert os.stat(f"/proc/{proc.pid}/ns/net").st_ino == netns.inode
    session = os.fstat(_kernel.INITIAL_NETNS_FD).st_ino
    assert session == os.stat("/proc/self/ns/net").st_ino
    assert os.stat(f"/proc/{watchdog.pid}/ns/net").st_ino == session
    netns.sysctl("net.ipv4.ip_forward", "1")
    assert netns.sysctl("net.ipv4.ip_forward") == "1"


def test_pair(netns_pair):
    a, b = netns_pair
    assert a.ping("10.0.0.2") and a.ping("fd00::2")
    serve(b, 8080, "b")
    assert ask(a, ("10.0.0.2", 8080)) == ["b", "10.0.0.1"]


def test_factory(netns_factory):
    x, y = netns_factory("x"), netns_factory("y")
    assert x.inode != y.inode and x.interfaces() == ["lo"]


def test_bridge(netns_bridge):
    assert all(netns_bridge[0].ping(str(member.ip)) for member in netns_bridge[1:])


def test_nat(netns_nat):
    client, router, server = netns_nat
    serve(server, 80, "server")
    assert ask(client, (str(server.ip), 80)) == ["server", "203.0.113.1"]


def test_topology_with_names(netns_topology):
    t = netns_topology
    client, router, server = t.add("client"), t.add("r1", router=True), t.add("server")
    t.link(client, router)
    t.link(router, server)
    t.autoroute()
    assert client.ping(str(server.ip))
    assert str(server.ip) in client.run(["getent", "ahosts", "server"]).stdout.split()


def test_cluster_service_and_names(netns_cluster):
    c = netns_cluster
    n1, n2 = c.node("node1"), c.node("node2")
    pods = [c.pod("web-0", node=n1), c.pod("web-1", node=n2)]
    client = c.pod("client", node=n1)
    service = c.service("web", port=80, target_port=8080, pods=pods)
    for pod in pods:
        serve(pod, 8080, pod.name)
    assert {ask(client, service.address)[0] for _ in range(40)} == {"web-0", "web-1"}  # P(miss) = 2 * 2**-40
    names = client.run(["getent", "hosts", "web.default.svc.cluster.local"]).stdout.split()
    assert names[0] == str(service.ip)


def test_docker_publish_and_egress(netns_docker):
    docker = netns_docker
    web = docker.container("web")
    serve(web, 80, "web")
    published = docker.publish(web, host_port=8080, container_port=80)
    assert ask(docker.external, published.address) == ["web", str(docker.external.ip)]
    serve(docker.external, 443, "external")
    assert ask(web, (str(docker.external.ip), 443)) == ["external", str(docker.host.ip)]
'''


@pytest.mark.parametrize("workers", ["0", "2"])
def test_rootless_as_a_real_user_runs_every_fixture_and_loopback(real_user: User, workers: str) -> None:
    work = real_user.home / f"suite-{workers}"
    work.mkdir()
    (work / "pytest.ini").write_text("[pytest]\n")
    (work / "test_inner.py").write_text(ROOTLESS_SUITE)
    for path in (work, *work.iterdir()):
        os.chown(path, real_user.uid, real_user.uid)
    # Root's own pytest runs leave /tmp/pytest-of-root, which pytest refuses to use for another uid.
    (work / "pytest-of-root").mkdir(mode=0o700)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(real_user.home),
        "TMPDIR": str(work),
        # As left by su/setpriv from root: pytest would name its temporary directory after root.
        "USER": "root",
        "LOGNAME": "root",
        "OUTER_UID": str(real_user.uid),
        "PYTHONDONTWRITEBYTECODE": "1",
        **{name: os.environ[name] for name in ("PYTHONPATH",) if name in os.environ},  # the same package
    }
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--netns-rootless", "--netns-pcap=always",
               "-n", workers, "test_inner.py"]
    done = subprocess.run(
        [sys.executable, "-c", LAUNCHER, real_user.name, str(work), *command],
        env=env, capture_output=True, text=True, timeout=600,
    )
    print(done.stdout)  # shown with a failure
    print(done.stderr, file=sys.stderr)
    result = pytest.RunResult(done.returncode, done.stdout.splitlines(), done.stderr.splitlines(), 0.0)
    result.assert_outcomes(passed=11)
    # Recordings went to the user's own temporary directory, named after the user.
    assert list((work / f"pytest-of-{real_user.name}").glob("**/netns-artifacts/*/*.pcap"))


# -- --netns-sandbox --------------------------------------------------------------------------------------------

SANDBOX_CONFTEST = """
import os

import pytest


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    # After the plugin's own configure: where the controller (or a worker) is now.
    who = getattr(config, "workerinput", {}).get("workerid", "controller")
    record(f"configure-{who}")


def record(what):
    inode = os.stat("/proc/thread-self/ns/net").st_ino
    with open(os.path.join(os.environ["RECORD_DIR"], what), "w") as handle:
        handle.write(str(inode))
"""

SANDBOX_SUITE = """
import errno
import os
import socket

import pytest
from conftest import record

from pytest_netns._kernel import netns as _kernel
from pytest_netns._kernel.watchdog import client as watchdog


def test_loopback_works_both_families():
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with socket.socket(family) as server:
            server.bind((host, 0))
            server.listen()
            with socket.create_connection(server.getsockname()[:2], timeout=5) as client:
                conn, _ = server.accept()
                with conn:
                    client.sendall(b"ping")
                    assert conn.recv(4) == b"ping"


def test_a_fresh_namespace_with_only_lo():
    assert os.stat("/proc/thread-self/ns/net").st_ino != int(os.environ["OUTER_NETNS"])
    assert socket.if_nameindex() == [(1, "lo")]
    with socket.socket() as sock, pytest.raises(OSError) as info:
        sock.settimeout(5)
        sock.connect(("192.0.2.1", 80))
    assert info.value.errno == errno.ENETUNREACH


def test_fixtures_work_and_helpers_start_in_the_sandbox(netns_pair):
    a, b = netns_pair
    assert a.ping("10.0.0.2")
    a.popen(["sleep", "30"])
    sandbox = os.stat("/proc/thread-self/ns/net").st_ino
    assert os.fstat(_kernel.INITIAL_NETNS_FD).st_ino == sandbox
    assert os.stat(f"/proc/{watchdog.pid}/ns/net").st_ino == sandbox


@pytest.mark.parametrize("i", range(8))
def test_where(i):
    record(f"test-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-{i}")
"""


def _set_netns_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """Exactly these PYTEST_NETNS_* variables (the outer run may have been started with some)."""
    for name in [n for n in os.environ if n.startswith("PYTEST_NETNS_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def _outer_netns() -> str:
    return str(os.stat("/proc/thread-self/ns/net").st_ino)


def _recorded(directory: Path) -> dict[str, str]:
    return {path.name: path.read_text() for path in directory.iterdir()}


@pytest.mark.parametrize("workers", ["0", "2"])
def test_sandbox_moves_the_session_and_its_workers_into_one_fresh_namespace(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, workers: str
) -> None:
    records = pytester.mkdir("records")
    _set_netns_env(monkeypatch, {"RECORD_DIR": str(records), "OUTER_NETNS": _outer_netns()})
    pytester.makeini("[pytest]\n")
    pytester.makeconftest(SANDBOX_CONFTEST)
    pytester.makepyfile(test_inner=SANDBOX_SUITE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--netns-sandbox", "-n", workers)
    result.assert_outcomes(passed=11)
    recorded = _recorded(records)
    tests = {name: inode for name, inode in recorded.items() if name.startswith("test-")}
    assert len(tests) == 8
    # The controller, every worker and every test: one namespace, not the one pytest was started in.
    assert len(set(recorded.values())) == 1 and _outer_netns() not in recorded.values()
    if workers == "2":
        assert {"configure-controller", "configure-gw0", "configure-gw1"} <= set(recorded)
        assert {name.split("-")[1] for name in tests} == {"gw0", "gw1"}


PRECEDENCE_SUITE = """
import os

def test_where():
    inside = os.stat("/proc/thread-self/ns/net").st_ino != int(os.environ["OUTER_NETNS"])
    assert inside == (os.environ["EXPECT"] == "inside")
"""


@pytest.mark.parametrize(
    ("ini", "env", "args", "expect"),
    [
        ("true", {}, [], "inside"),
        ("true", {"PYTEST_NETNS_SANDBOX": "0"}, [], "outside"),  # environment over ini
        ("false", {"PYTEST_NETNS_SANDBOX": "1"}, [], "inside"),
        ("false", {"PYTEST_NETNS_SANDBOX": "0"}, ["--netns-sandbox"], "inside"),  # command line over environment
        ("false", {}, [], "outside"),
        ("false", {"PYTEST_NETNS_ROOTLESS": "1"}, [], "inside"),  # rootless implies the sandbox (here with root)
    ],
)
def test_sandbox_from_ini_environment_and_command_line(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ini: str, env: dict[str, str], args: list[str],
    expect: str,
) -> None:
    _set_netns_env(monkeypatch, {**env, "OUTER_NETNS": _outer_netns(), "EXPECT": expect})
    pytester.makeini(f"[pytest]\nnetns_sandbox = {ini}\n")
    pytester.makepyfile(test_inner=PRECEDENCE_SUITE)
    pytester.runpytest_subprocess("-p", "no:cacheprovider", *args).assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("ini", "env", "source"),
    [
        ("perhaps", {}, "ini option netns_sandbox: 'perhaps' is not a boolean"),
        ("true", {"PYTEST_NETNS_SANDBOX": "2"}, "environment variable PYTEST_NETNS_SANDBOX: '2' is not a boolean"),
    ],
)
def test_bad_sandbox_values_are_usage_errors_naming_the_source(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ini: str, env: dict[str, str], source: str
) -> None:
    _set_netns_env(monkeypatch, env)
    pytester.makeini(f"[pytest]\nnetns_sandbox = {ini}\n")
    pytester.makepyfile(test_inner="def test_x(): pass")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{source}*"])


#: Drops CAP_SYS_ADMIN (uid stays 0), then runs pytest in this process.
WITHOUT_SYS_ADMIN = """
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
header = (ctypes.c_uint32 * 2)(0x20080522, 0)
data = (ctypes.c_uint32 * 6)()
assert libc.capget(header, data) == 0
for i in range(3):
    data[i * 2] &= ~(1 << 21)  # CAP_SYS_ADMIN
assert libc.capset(header, data) == 0, ctypes.get_errno()
import pytest
raise SystemExit(pytest.main(sys.argv[1:]))
"""


@pytest.mark.parametrize(
    ("args", "env", "source"),
    [
        (["--netns-sandbox"], {}, "--netns-sandbox"),
        ([], {"PYTEST_NETNS_SANDBOX": "yes"}, "environment variable PYTEST_NETNS_SANDBOX"),
    ],
)
def test_sandbox_without_the_privileges_is_a_usage_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str], source: str
) -> None:
    _set_netns_env(monkeypatch, env)
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_inner="def test_x(): pass")
    result = pytester.run(sys.executable, "-c", WITHOUT_SYS_ADMIN, "-p", "no:cacheprovider", *args, "test_inner.py")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"*{source}: unshare(CLONE_NEWNET) failed: Operation not permitted*without CAP_SYS_ADMIN*"
         "run as root, or add --netns-rootless*"]
    )


def test_an_in_process_run_leaves_the_sandbox_at_the_end(pytester: pytest.Pytester) -> None:
    before = _outer_netns()
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(
        test_inner=f"""
        import os, socket

        def test_inside(netns):
            assert os.stat("/proc/thread-self/ns/net").st_ino != {before}
            assert socket.if_nameindex() == [(1, "lo")]
        """
    )
    from pytest_netns._kernel import netns as _kernel

    pytester.runpytest("-p", "no:cacheprovider", "--netns-sandbox").assert_outcomes(passed=1)
    assert _outer_netns() == before
    assert str(os.fstat(_kernel.INITIAL_NETNS_FD).st_ino) == before
