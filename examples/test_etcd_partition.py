"""A real Raft cluster cut in two: three etcd members on a ``netns_bridge``, the leader partitioned away.

What Jepsen's partition nemesis does to a five-VM cluster over SSH, here in
one test: the majority elects a new leader and accepts a write, the old
leader cannot commit anything on its own, and after the heal it catches up
and serves the value written while it was cut off.

Skipped, with the reason, where etcd is not installed (``.ci/run`` installs
Debian's ``etcd-server`` and ``etcd-client``).  Every wait is a poll with a
generous deadline (a loaded 2-core machine elects in 1-3 s; the deadlines
are ten times that): nothing sleeps in place of an assertion.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

import pytest_netns

T = TypeVar("T")

DEADLINE = 60.0  # seconds for anything the cluster must do on its own


def need(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"{program} is not installed on this machine (Debian: apt-get install etcd-server etcd-client)")
    return path


def eventually(what: str, probe: Callable[[], T | None], timeout: float = DEADLINE) -> T:
    """Poll ``probe`` until it returns something other than None; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:g} s")
        time.sleep(0.2)


class Member:
    """One etcd member in its namespace; ``etcdctl`` runs in the same namespace, against this member."""

    def __init__(self, ns: pytest_netns.Namespace, name: str, etcdctl: str) -> None:
        self.ns, self.name, self.etcdctl = ns, name, etcdctl
        self.ip = str(ns.ip)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, etcd: str, cluster: str, data: Path) -> None:
        log = (data.parent / f"{self.name}.log").open("wb")
        self.process = self.ns.popen(
            [
                etcd, "--name", self.name, "--data-dir", str(data),
                "--listen-peer-urls", f"http://{self.ip}:2380",
                "--initial-advertise-peer-urls", f"http://{self.ip}:2380",
                "--listen-client-urls", f"http://{self.ip}:2379",
                "--advertise-client-urls", f"http://{self.ip}:2379",
                "--initial-cluster", cluster, "--initial-cluster-state", "new",
                "--initial-cluster-token", "pytest-netns",
                "--heartbeat-interval", "100", "--election-timeout", "1000",
                # The isolated member then asks before it campaigns, so the heal does not
                # force an election with the term it would have inflated (etcd 3.5's default).
                "--pre-vote",
                "--logger", "zap", "--log-outputs", "stderr",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def ctl(self, *args: str, timeout: str = "5s") -> subprocess.CompletedProcess[str]:
        command = [self.etcdctl, f"--endpoints=http://{self.ip}:2379", f"--command-timeout={timeout}", *args]
        return self.ns.run(command, check=False, timeout=60)

    def status(self) -> dict[str, int] | None:
        """{"id": member id, "leader": the leader it knows (0: none)}, or None while it does not answer."""
        result = self.ctl("endpoint", "status", "-w", "json", timeout="2s")
        if result.returncode != 0:
            return None
        (entry,) = json.loads(result.stdout)
        return {"id": entry["Status"]["header"]["member_id"], "leader": entry["Status"].get("leader", 0)}

    def get(self, key: str, *, serializable: bool = False) -> str | None:
        """The value (linearizable read, through the leader; ``serializable``: this member's own copy)."""
        args = ["get", key, "--print-value-only"] + (["--consistency=s"] if serializable else [])
        result = self.ctl(*args, timeout="3s")
        return result.stdout.strip() if result.returncode == 0 else None

    def stop(self) -> None:
        """SIGTERM and wait for it: a leader first hands its leadership over."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


def agreed_leader(members: list[Member]) -> int | None:
    """The leader every member of ``members`` reports, if they all report the same one."""
    statuses = [m.status() for m in members]
    if any(s is None for s in statuses):
        return None
    leaders = {s["leader"] for s in statuses if s is not None}
    return leaders.pop() if len(leaders) == 1 and 0 not in leaders else None


@pytest.fixture
def etcd_cluster(netns_bridge, tmp_path: Path) -> Iterator[list[Member]]:
    etcd, etcdctl = need("etcd"), need("etcdctl")
    members = [Member(ns, f"etcd{i}", etcdctl) for i, ns in enumerate(netns_bridge, 1)]
    cluster = ",".join(f"{m.name}=http://{m.ip}:2380" for m in members)
    for member in members:
        member.start(etcd, cluster, tmp_path / member.name)
    try:
        eventually("three members agreeing on a leader", lambda: agreed_leader(members))
        yield members
    finally:
        # One at a time: stopped together, the leader waited 7 s for a successor that was stopping too.
        for member in members:
            member.stop()


def test_partitioned_leader_is_replaced_and_catches_up(etcd_cluster: list[Member]) -> None:
    members = etcd_cluster
    ids = {m.name: eventually(f"{m.name}'s status", m.status)["id"] for m in members}
    leader_id = eventually("a leader", lambda: agreed_leader(members))
    (old,) = [m for m in members if ids[m.name] == leader_id]
    majority = [m for m in members if m is not old]
    assert old.ctl("put", "key", "before").returncode == 0
    eventually("every member holding the first value", lambda: all(m.get("key") == "before" for m in members) or None)

    with pytest_netns.partition([old.ns], [m.ns for m in majority]):
        # The majority elects one of its own (at first it still follows the old leader).
        def new_leader() -> int | None:
            found = agreed_leader(majority)
            return found if found != leader_id else None

        new_id = eventually("the majority electing a new leader", new_leader)
        assert new_id in {ids[m.name] for m in majority}
        # ... and commits a write (retried: the first attempts may meet the election).
        write = majority[0]
        eventually("a write through the majority", lambda: write.ctl("put", "key", "after").returncode == 0 or None)
        assert all(m.get("key") == "after" for m in majority)
        # The old leader cannot commit: no quorum, its write fails (leader lost or timed out) ...
        stale = old.ctl("put", "key", "lost", timeout="3s")
        assert stale.returncode != 0, stale.stdout
        # ... and its own copy still holds the value from before the cut.
        assert old.get("key", serializable=True) == "before"
        assert old.get("key") is None  # a linearizable read needs the leader it cannot reach

    # Healed: the old leader follows the new one and serves the value written while it was away.
    eventually("the old leader following the new one", lambda: agreed_leader(members))
    assert eventually("the old leader serving the new value", lambda: old.get("key") or None) == "after"
    assert old.get("key", serializable=True) == "after"  # its own copy caught up: "lost" was never committed
