"""A client with retries against a plain Python service, across a partition and a refusing block.

The service is Python's own ``http.server`` in one namespace; the client, in
another, retries what looks like a network hiccup (a timeout) and gives up
at once on what means the service is gone (a refused connection).  Both
halves of that policy are checked against the network faults they are for:

* ``block(client, server, one_way=True)`` drops the client's packets for a
  while: requests time out, the client retries and succeeds once the block
  is lifted (here by a timer, as a flapping link would);
* ``block(..., reject=True)``: every connect is refused at once (a crashed
  host): the client fails fast, after one attempt, instead of burning its
  whole retry budget on timeouts.
"""

from __future__ import annotations

import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import pytest

import pytest_netns

PORT = 8000


class ServiceDown(Exception):
    """The service refused the connection: retrying will not help."""


@dataclass
class Client:
    """GET with a timeout per try, a pause between tries and a budget of tries; ``log`` says what each try met."""

    url: str
    timeout: float = 0.5
    pause: float = 0.2
    tries: int = 20
    log: list[str] = field(default_factory=list)

    def get(self) -> bytes:
        for _ in range(self.tries):
            try:
                with urllib.request.urlopen(self.url, timeout=self.timeout) as response:
                    self.log.append("ok")
                    return bytes(response.read())
            except urllib.error.URLError as exc:
                if isinstance(exc.reason, ConnectionRefusedError):
                    self.log.append("refused")
                    raise ServiceDown(self.url) from exc
                self.log.append("timeout")
            except TimeoutError:
                self.log.append("timeout")
            time.sleep(self.pause)
        raise TimeoutError(f"{self.url}: no answer in {self.tries} tries")


@pytest.fixture
def service(netns_pair, tmp_path):
    """``python -m http.server`` in b, serving one file; yields (client namespace, server namespace, url)."""
    client, server = netns_pair
    (tmp_path / "hello").write_text("hello from b\n")
    server.popen([sys.executable, "-m", "http.server", str(PORT), "--bind", str(server.ip), "-d", str(tmp_path)])
    client.wait_for_port(str(server.ip), PORT)
    return client, server, f"http://{server.ip}:{PORT}/hello"


def test_retries_ride_out_a_one_way_block(service) -> None:
    client_ns, server_ns, url = service
    client = Client(url)
    cut = pytest_netns.block(client_ns, server_ns, one_way=True)  # the client's packets vanish
    lift = threading.Timer(1.5, cut.heal)  # a link that comes back by itself
    lift.start()
    try:
        with client_ns:  # urllib's sockets are made in the client's namespace
            assert client.get() == b"hello from b\n"
    finally:
        lift.join()
    assert not cut.active
    assert client.log[-1] == "ok" and client.log.count("timeout") >= 2, client.log  # it did have to retry


def test_a_refusing_host_makes_the_client_fail_fast(service) -> None:
    client_ns, server_ns, url = service
    client = Client(url)
    with pytest_netns.block(client_ns, server_ns, reject=True), client_ns:
        with pytest.raises(ServiceDown):
            client.get()
    assert client.log == ["refused"]  # one try: no retry budget spent on a host that says no
    with client_ns:
        assert Client(url).get() == b"hello from b\n"  # healed
