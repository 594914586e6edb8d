"""Docker networks and their DNS: a web app finds its database by the alias ``db``.

What ``docker compose`` sets up for a two-service app: one user-defined
network, the database reachable as ``db`` through Docker's embedded DNS
(127.0.0.11), the web app published on the host.  A container on another
network cannot reach the database until it is connected to the app's network.
"""

from __future__ import annotations

import socket
import sys
import textwrap
import urllib.request

import pytest

DATABASE = textwrap.dedent(
    """
    import socket, sys
    server = socket.create_server(("0.0.0.0", 5432))
    while True:
        conn, peer = server.accept()
        with conn:
            conn.sendall(f"rows from {sys.argv[1]}".encode())
    """
)

WEB = textwrap.dedent(
    """
    import http.server, socket
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            with socket.create_connection(("db", 5432), timeout=5) as conn:  # found by name
                body = conn.recv(100)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)
    http.server.HTTPServer(("0.0.0.0", 80), Handler).serve_forever()
    """
)


def fetch(url: str) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as response:
        return response.read().decode()


def test_web_finds_db_by_alias_on_the_app_network(netns_docker, tmp_path):
    docker = netns_docker
    app = docker.network("app")  # docker network create app  -> 172.18.0.0/16
    postgres = docker.container("postgres", network=app, aliases=["db"])
    web = docker.container("web", network=app)
    (tmp_path / "db.py").write_text(DATABASE)
    (tmp_path / "web.py").write_text(WEB)
    postgres.popen([sys.executable, str(tmp_path / "db.py"), "postgres"])
    web.popen([sys.executable, str(tmp_path / "web.py")])
    postgres.wait_for_port("127.0.0.1", 5432, timeout=15.0)
    web.wait_for_port("127.0.0.1", 80, timeout=15.0)
    published = docker.publish(web, host_port=8080, container_port=80)  # -p 8080:80

    with docker.external:
        assert fetch(f"http://{docker.host.ip}:8080/") == "rows from postgres"
    assert web.resolve("db") == postgres.ip
    # The host's own tools reach it too; a port published on 127.0.0.1 only is for them alone.
    docker.publish(postgres, host_port=15432, container_port=5432, host_ip="127.0.0.1")
    with docker.host:
        with socket.create_connection(("127.0.0.1", 15432), timeout=5) as conn:
            assert conn.recv(100) == b"rows from postgres"
    assert published.address == (str(docker.host.ip), 8080)


def test_another_network_is_isolated_until_connected(netns_docker, tmp_path):
    docker = netns_docker
    app, tools = docker.network("app"), docker.network("tools")
    postgres = docker.container("postgres", network=app, aliases=["db"])
    (tmp_path / "db.py").write_text(DATABASE)
    postgres.popen([sys.executable, str(tmp_path / "db.py"), "postgres"])
    postgres.wait_for_port("127.0.0.1", 5432, timeout=15.0)
    backup = docker.container("backup", network=tools)

    assert backup.run(["getent", "hosts", "db"], check=False).returncode == 2  # not found, at once
    with backup, pytest.raises(OSError), socket.create_connection((str(postgres.ip), 5432), timeout=1):
        pass  # Docker's isolation: no route between networks, by IP either

    docker.connect(backup, app)  # docker network connect app backup
    with backup, socket.create_connection(("db", 5432), timeout=5) as conn:
        assert conn.recv(100) == b"rows from postgres"
