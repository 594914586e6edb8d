"""A client keeps calling a 3-replica service while one replica is taken away: no request fails.

On Kubernetes a pod leaves its service's endpoints before it is stopped;
kube-proxy then sends new connections only to the remaining pods, while
connections already open keep their pod.  Here ``service.remove(pod)`` plays
the endpoints controller and kube-proxy, then the replica's process is
stopped, and the client, calling the service all along over fresh
connections, never notices.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import urllib.request

import pytest


def fetch(url: str) -> str:
    # No proxy: the environment's proxy settings would send the request elsewhere.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=30) as response:  # generous: a slow machine must not look like a failure
        return response.read().decode()


class Caller(threading.Thread):
    """A client loop inside ``pod``: one request after another, each on a new connection."""

    def __init__(self, pod, url: str) -> None:
        super().__init__(daemon=True)
        self.pod, self.url = pod, url
        self.started = 0  # requests begun
        self.results: list[str | Exception] = []  # replica that answered, or the error, in order
        self.stop = threading.Event()

    def run(self) -> None:
        with self.pod:  # sockets urllib makes on this thread are made inside the pod
            while not self.stop.is_set():
                self.started += 1
                try:
                    self.results.append(fetch(self.url))
                except Exception as exc:  # recorded: the test asserts there is none
                    self.results.append(exc)

    def wait_for(self, condition, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"gave up waiting; results so far: {self.results[-5:]}"
            time.sleep(0.01)


@pytest.fixture
def web(netns_cluster, tmp_path):
    """Three replicas of a web server (python -m http.server) over two nodes, behind the service "web"."""
    cluster = netns_cluster
    nodes = [cluster.node("node1"), cluster.node("node2")]
    replicas, processes = [], {}
    for i in range(3):
        pod = cluster.pod(f"web-{i}", node=nodes[i % 2])
        root = tmp_path / pod.name
        root.mkdir()
        (root / "index.html").write_text(pod.name)
        processes[pod.name] = pod.popen(
            [sys.executable, "-m", "http.server", "8080", "--bind", "0.0.0.0", "--directory", str(root)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        replicas.append(pod)
    client = cluster.pod("client", node=nodes[0])
    service = cluster.service("web", port=80, target_port=8080, pods=replicas)
    for pod in replicas:
        client.wait_for_port(str(pod.ip), 8080, timeout=15.0)
    return cluster, service, client, processes


def test_no_request_fails_while_a_replica_is_removed(web):
    cluster, service, client, processes = web
    doomed = service.pods[1]
    # In-process code resolves the cluster's names with cluster.resolve (processes would use "web").
    caller = Caller(client, f"http://{cluster.resolve('web.default.svc.cluster.local')}/")
    caller.start()
    try:
        caller.wait_for(lambda: {"web-0", "web-1", "web-2"} <= set(caller.results))  # every replica served
        service.remove(doomed)
        boundary = caller.started  # requests numbered from here began after the removal
        caller.wait_for(lambda: len(caller.results) > boundary)  # (so every earlier one has finished)
        processes[doomed.name].terminate()  # the pod stops, as the kubelet would stop it now
        processes[doomed.name].wait(timeout=10)
        caller.wait_for(lambda: len(caller.results) > boundary + 60)
    finally:
        caller.stop.set()
        caller.join()
    failures = [r for r in caller.results if isinstance(r, Exception)]
    assert failures == []
    after = caller.results[boundary:]
    assert doomed.name not in after
    assert set(after) == {"web-0", "web-2"}
