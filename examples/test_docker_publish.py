"""Docker's published ports: ``docker run -p 8080:80`` without Docker.

A container's port is reachable from outside the host through the host's
address; the container sees the real client address (the host only
DNATs).  Two containers cannot publish the same host port.
"""

from __future__ import annotations

import sys
import time
import urllib.request

import pytest


def fetch(url: str) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy inside
    with opener.open(url, timeout=5) as response:
        return response.read().decode()


def test_container_reached_through_a_published_port(netns_docker, tmp_path):
    docker = netns_docker
    web = docker.container("web")
    (tmp_path / "index.html").write_text("hello from the container")
    log = open(tmp_path / "access.log", "w")
    with log:
        web.popen([sys.executable, "-m", "http.server", "80", "--directory", str(tmp_path)],
                  stdout=log, stderr=log)
    web.wait_for_port("127.0.0.1", 80, timeout=15.0)

    published = docker.publish(web, host_port=8080, container_port=80)  # docker run -p 8080:80
    with docker.external:
        assert fetch(f"http://{docker.host.ip}:8080/") == "hello from the container"
    # The container's access log shows the external client's own address: no source NAT on the way in.
    wait_for_log = time.monotonic() + 10
    while str(docker.external.ip) not in (tmp_path / "access.log").read_text():
        assert time.monotonic() < wait_for_log, "the request never reached the access log"
        time.sleep(0.02)
    assert published.address == (str(docker.host.ip), 8080)


def test_the_same_host_port_cannot_be_published_twice(netns_docker):
    docker = netns_docker
    web, api = docker.container("web"), docker.container("api")
    docker.publish(web, host_port=8080, container_port=80)
    with pytest.raises(ValueError, match="host port 8080/tcp is already allocated"):
        docker.publish(api, host_port=8080, container_port=3000)
    docker.publish(api, host_port=8081, container_port=3000)  # another host port is fine
