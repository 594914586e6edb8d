"""Service discovery by name: an app in namespace ``web`` finds ``db.prod`` through the cluster DNS.

The database is a headless service of namespace ``prod`` selecting its pods
by label, so its name resolves to the pods themselves.  The app (a process in
a pod of namespace ``web``, with kubelet's resolv.conf) resolves ``db.prod``
before every attempt, as a client that follows its service does; when the pod
it was talking to is deleted, the next answer no longer holds it, and the app
fails over to the other one.
"""

from __future__ import annotations

import sys
import textwrap

#: A "database": answers every connection with its pod's name.
DB = textwrap.dedent("""
    import socket, sys
    server = socket.create_server(("0.0.0.0", 5432))
    while True:
        conn, _ = server.accept()
        conn.sendall(sys.argv[1].encode())
        conn.close()
""")

#: The app: resolve db.prod (libc, search path web.svc.cluster.local first, then svc.cluster.local), connect.
APP = textwrap.dedent("""
    import socket
    addresses = sorted({info[4][0] for info in socket.getaddrinfo("db.prod", 5432, socket.AF_INET, socket.SOCK_STREAM)})
    with socket.create_connection((addresses[0], 5432), timeout=5) as conn:
        print(",".join(addresses), conn.recv(100).decode())
""")


def ask(app) -> tuple[list[str], str]:
    addresses, answer = app.run([sys.executable, "-c", APP]).stdout.split()
    return addresses.split(","), answer


def test_app_in_web_finds_db_prod_and_fails_over(netns_cluster):
    cluster = netns_cluster
    node1, node2 = cluster.node("node1"), cluster.node("node2")
    dbs = [
        cluster.pod(f"db-{i}", node=node, namespace="prod", labels={"app": "db"})
        for i, node in enumerate((node1, node2))
    ]
    for pod in dbs:
        pod.popen([sys.executable, "-c", DB, pod.name])
    cluster.service("db", port=5432, namespace="prod", selector={"app": "db"}, headless=True)
    app = cluster.pod("app", node=node1, namespace="web")
    for pod in dbs:
        app.wait_for_port(str(pod.ip), 5432)

    addresses, first = ask(app)
    assert sorted(addresses) == sorted(str(pod.ip) for pod in dbs)
    serving = next(pod for pod in dbs if pod.name == first)

    serving.delete()  # the pod goes: the next answer holds only the other one
    addresses, second = ask(app)
    (survivor,) = [pod for pod in dbs if pod is not serving]
    assert addresses == [str(survivor.ip)] and second == survivor.name
