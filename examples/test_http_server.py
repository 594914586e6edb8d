"""A real HTTP server in one namespace, a client in the other.

The server is Python's own ``http.server`` started with ``b.popen``; the
client runs in the test process, inside ``a`` for the duration of the
``with`` block, and also as ``curl`` where the machine has it.
"""

from __future__ import annotations

import shutil
import sys
import urllib.request

import pytest


@pytest.fixture
def web(netns_pair, tmp_path):
    a, b = netns_pair
    (tmp_path / "index.html").write_text("hello from b\n")
    server = b.popen([sys.executable, "-m", "http.server", "8000", "--bind", "::", "--directory", str(tmp_path)])
    a.wait_for_port("10.0.0.2", 8000)
    yield a, b
    # No cleanup needed: the server is stopped when the namespaces are torn down.
    assert server.poll() is None


def fetch(url: str) -> bytes:
    # No proxy: the environment's proxy settings would send the request elsewhere.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as response:
        return response.read()


def test_http_over_ipv4_and_ipv6(web):
    a, _ = web
    with a:
        assert fetch("http://10.0.0.2:8000/index.html") == b"hello from b\n"
        assert fetch("http://[fd00::2]:8000/index.html") == b"hello from b\n"


def test_server_log_shows_the_client_address(netns_pair, tmp_path):
    a, b = netns_pair
    server = b.popen([sys.executable, "-m", "http.server", "8000", "--bind", "10.0.0.2",
                      "--directory", str(tmp_path)], stderr=__import__("subprocess").PIPE, text=True)
    a.wait_for_port("10.0.0.2", 8000)
    with a:
        fetch("http://10.0.0.2:8000/")
    server.terminate()
    assert "10.0.0.1" in server.communicate(timeout=10)[1]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed on this machine")
def test_curl_as_a_real_client(web):
    a, _ = web
    assert a.run(["curl", "-sS", "--max-time", "5", "http://10.0.0.2:8000/index.html"]).stdout == "hello from b\n"
