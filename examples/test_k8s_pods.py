"""Pods: each has its own IP, so two can listen on the same port; a pod's containers share localhost.

The "containers" of a pod are processes started in the pod's namespace: they
share its one network stack, as the containers of a Kubernetes pod do.
Processes started with ``pod.run``/``pod.popen`` find pods and services by
name (``shop``, ``api.default.svc.cluster.local``), as in a cluster.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap

FETCH = textwrap.dedent("""
    import sys, urllib.request
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for url in sys.argv[1:]:
        print(opener.open(url, timeout=5).read().decode())
""")

#: A sidecar: listens on the pod's port 8080 and hands every connection to the app on localhost:9000.
SIDECAR = textwrap.dedent("""
    import asyncio

    async def pipe(reader, writer):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def handle(client_reader, client_writer):
        app_reader, app_writer = await asyncio.open_connection("localhost", 9000)
        await asyncio.gather(pipe(client_reader, app_writer), pipe(app_reader, client_writer))

    async def main():
        server = await asyncio.start_server(handle, "0.0.0.0", 8080)
        await server.serve_forever()

    asyncio.run(main())
""")


def serve_http(pod, port: int, root, *, bind: str = "0.0.0.0"):
    return pod.popen([sys.executable, "-m", "http.server", str(port), "--bind", bind, "--directory", str(root)],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def site(tmp_path, name: str, text: str):
    root = tmp_path / name
    root.mkdir()
    (root / "index.html").write_text(text)
    return root


def test_two_pods_both_listen_on_8080(netns_cluster, tmp_path):
    cluster = netns_cluster
    node1, node2 = cluster.node("node1"), cluster.node("node2")
    shop, blog = cluster.pod("shop", node=node1), cluster.pod("blog", node=node1)
    client = cluster.pod("client", node=node2)
    serve_http(shop, 8080, site(tmp_path, "shop", "the shop"))
    serve_http(blog, 8080, site(tmp_path, "blog", "the blog"))  # same port, same node: no conflict
    for pod in (shop, blog):
        client.wait_for_port(str(pod.ip), 8080, timeout=15.0)
    # The client's process reaches both by name, each on its own IP.
    result = client.run([sys.executable, "-c", FETCH, "http://shop:8080/", "http://blog:8080/"])
    assert result.stdout.splitlines() == ["the shop", "the blog"]
    assert shop.ip != blog.ip


def test_a_sidecar_talks_to_its_app_over_localhost(netns_cluster, tmp_path):
    cluster = netns_cluster
    node1, node2 = cluster.node("node1"), cluster.node("node2")
    api, client = cluster.pod("api-7d9f", node=node1), cluster.pod("client", node=node2)
    cluster.service("api", port=80, target_port=8080, pods=[api])
    # Container 1, the app: listens on the pod's localhost only.
    serve_http(api, 9000, site(tmp_path, "app", "hello from the app"), bind="127.0.0.1")
    # Container 2, the sidecar: the pod's public port, forwarding to the app over localhost.
    api.popen([sys.executable, "-c", SIDECAR])
    api.wait_for_port("127.0.0.1", 9000, timeout=15.0)
    client.wait_for_port(str(api.ip), 8080, timeout=15.0)
    result = client.run([sys.executable, "-c", FETCH, "http://api.default.svc.cluster.local/"])
    assert result.stdout.strip() == "hello from the app"
    # The app itself is out of reach from other pods: its localhost is the pod's own.
    with client:
        sock = socket.socket()
    with sock:
        sock.settimeout(2)
        assert sock.connect_ex((str(api.ip), 9000)) != 0
