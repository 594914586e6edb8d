"""The baselines: the same shapes as a typical project's conftest builds them with ``ip``.

A pytest plugin (``-p no:netns -p bench._handrolled``) defining fixtures with
the plugin's names, so the very same generated test module runs against
either.  ``BENCH_IP_MODE`` picks the style:

* ``step``: one ``ip`` process per step (``ip netns add``, ``ip link add ...
  netns``, ``ip addr add``, ``ip link set up``, ``ip netns del``), sysctls and
  nftables through ``ip netns exec``, as most hand-written fixtures do;
* ``batch``: the same commands grouped with ``ip -batch``: one process for
  everything done from the outside (``netns add``, ``link add ... netns``,
  ``netns del``), one ``ip -n NS -batch -`` per namespace (``-n`` is not
  accepted inside a batch), sysctls and the NAT ruleset still one
  ``ip netns exec`` each (``nft -f -`` takes the whole ruleset at once).

Like most hand-rolled fixtures, neither waits for the links to be
operationally UP or for IPv6 to be usable: they do less than the plugin.
Named namespaces live in ``/run/netns``: the harness runs these suites in a
private mount namespace with a tmpfs on ``/run``, so the host never sees them.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Iterator

import pytest

_MODE = os.environ.get("BENCH_IP_MODE", "step")
_names = itertools.count()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "netns(size=3): bridge members (the plugin's marker, registered for baselines)")


def _name() -> str:
    return f"b{os.getpid()}n{next(_names)}"


def _run(cmd: list[str], script: str | None = None) -> None:
    done = subprocess.run(cmd, input=script, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}\n{script or ''}")


def ip(*args: str) -> None:
    _run(["ip", *args])


class Builder:
    """Collects commands: ``step`` runs each at once, ``batch`` groups them until ``flush``."""

    def __init__(self) -> None:
        self.outside: list[str] = []
        self.inside: dict[str, list[str]] = {}
        self.execs: list[tuple[list[str], str | None]] = []

    def root(self, command: str) -> None:
        if _MODE in ("step", "exec"):
            ip(*command.split())
        else:
            self.outside.append(command)

    def within(self, ns: str, command: str) -> None:
        if _MODE == "exec":
            _run(["ip", "netns", "exec", ns, "ip", *command.split()])
        elif _MODE == "step":
            ip("-n", ns, *command.split())
        else:
            self.inside.setdefault(ns, []).append(command)

    def exec(self, ns: str, *cmd: str, script: str | None = None) -> None:
        """``ip netns exec ns cmd`` (with ``script`` on its stdin)."""
        if _MODE in ("step", "exec"):
            _run(["ip", "netns", "exec", ns, *cmd], script)
        else:
            self.execs.append((["ip", "netns", "exec", ns, *cmd], script))

    def flush(self) -> None:
        if self.outside:
            _run(["ip", "-batch", "-"], "\n".join(self.outside) + "\n")
        for ns, commands in self.inside.items():
            _run(["ip", "-n", ns, "-batch", "-"], "\n".join(commands) + "\n")
        for cmd, script in self.execs:
            _run(cmd, script)
        self.outside, self.inside, self.execs = [], {}, []


def _delete(names: list[str]) -> None:
    if _MODE in ("step", "exec"):
        for ns in names:
            ip("netns", "del", ns)
    else:
        _run(["ip", "-batch", "-"], "".join(f"netns del {ns}\n" for ns in names))


def _size(request: pytest.FixtureRequest, marker: str, default: int) -> int:
    mark = request.node.get_closest_marker(marker)
    return int(mark.kwargs.get("size", default)) if mark else default


@pytest.fixture
def netns() -> Iterator[str]:
    ns = _name()
    b = Builder()
    b.root(f"netns add {ns}")
    b.flush()
    b.within(ns, "link set lo up")
    b.flush()
    yield ns
    _delete([ns])


@pytest.fixture
def netns_pair() -> Iterator[tuple[str, str]]:
    a, z = _name(), _name()
    b = Builder()
    b.root(f"netns add {a}")
    b.root(f"netns add {z}")
    b.root(f"link add eth0 netns {a} type veth peer name eth0 netns {z}")
    b.flush()
    for ns, host in ((a, 1), (z, 2)):
        b.within(ns, "link set lo up")
        b.within(ns, f"addr add 10.0.0.{host}/24 dev eth0")
        b.within(ns, f"addr add fd00::{host}/64 dev eth0 nodad")
        b.within(ns, "link set eth0 up")
    b.flush()
    yield a, z
    _delete([a, z])


def _bridge(members: int) -> tuple[list[str], list[str]]:
    br = _name()
    hosts = [_name() for _ in range(members)]
    b = Builder()
    b.root(f"netns add {br}")
    for host in hosts:
        b.root(f"netns add {host}")
    b.flush()
    b.within(br, "link set lo up")
    b.within(br, "link add br0 type bridge stp_state 0 forward_delay 0")
    b.within(br, "link set br0 up")
    b.flush()
    for i, host in enumerate(hosts):
        b.root(f"link add eth0 netns {host} type veth peer name p{i} netns {br}")
    b.flush()
    for i, host in enumerate(hosts):
        b.within(br, f"link set p{i} master br0")
        b.within(br, f"link set p{i} up")
        b.within(host, "link set lo up")
        b.within(host, f"addr add 10.0.0.{i + 1}/24 dev eth0")
        b.within(host, f"addr add fd00::{i + 1:x}/64 dev eth0 nodad")
        b.within(host, "link set eth0 up")
    b.flush()
    return [br, *hosts], hosts


@pytest.fixture
def netns_bridge(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    names, hosts = _bridge(_size(request, "netns", 3))
    yield hosts
    _delete(names)


@pytest.fixture
def bench_chain(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    routers = [_name() for _ in range(_size(request, "bench", 100))]
    b = Builder()
    for r in routers:
        b.root(f"netns add {r}")
    b.flush()
    for k in range(len(routers) - 1):
        a, z = routers[k], routers[k + 1]
        b.root(f"link add eth{1 if k else 0} netns {a} type veth peer name eth0 netns {z}")
    b.flush()
    for r in routers:
        b.within(r, "link set lo up")
        b.exec(r, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
    for k in range(len(routers) - 1):
        ends = ((routers[k], "eth1" if k else "eth0", 1), (routers[k + 1], "eth0", 2))
        for ns, dev, host in ends:
            b.within(ns, f"addr add 10.{k >> 8}.{k & 255}.{host}/24 dev {dev}")
            b.within(ns, f"addr add fd00:0:0:{k:x}::{host}/64 dev {dev} nodad")
            b.within(ns, f"link set {dev} up")
    b.flush()
    yield routers
    _delete(routers)


NAT_RULESET = """
add table ip nat
add chain ip nat post { type nat hook postrouting priority 100 ; }
add rule ip nat post oifname "eth1" masquerade
"""


@pytest.fixture
def netns_nat() -> Iterator[tuple[str, str, str]]:
    client, router, server = _name(), _name(), _name()
    b = Builder()
    for ns in (client, router, server):
        b.root(f"netns add {ns}")
    b.root(f"link add eth0 netns {router} type veth peer name eth0 netns {client}")
    b.root(f"link add eth1 netns {router} type veth peer name eth0 netns {server}")
    b.flush()
    for ns in (client, router, server):
        b.within(ns, "link set lo up")
    b.within(router, "addr add 192.168.0.1/24 dev eth0")
    b.within(router, "addr add 203.0.113.1/24 dev eth1")
    b.within(router, "link set eth0 up")
    b.within(router, "link set eth1 up")
    b.within(client, "addr add 192.168.0.2/24 dev eth0")
    b.within(client, "link set eth0 up")
    b.within(client, "route add default via 192.168.0.1")
    b.within(server, "addr add 203.0.113.2/24 dev eth0")
    b.within(server, "link set eth0 up")
    b.exec(router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    if _MODE in ("step", "exec"):
        for line in NAT_RULESET.strip().splitlines():
            b.exec(router, "nft", *_nft_words(line))
    else:
        b.exec(router, "nft", "-f", "-", script=NAT_RULESET)
    b.flush()
    yield client, router, server
    _delete([client, router, server])


def _nft_words(line: str) -> list[str]:
    return line.replace('"', "").split()


@pytest.fixture
def bench_many(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    names = [_name() for _ in range(_size(request, "bench", 1000))]
    b = Builder()
    for ns in names:
        b.root(f"netns add {ns}")
    b.flush()
    for ns in names:
        b.within(ns, "link set lo up")
    b.flush()
    yield names
    _delete(names)
