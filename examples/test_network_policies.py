"""A platform team's NetworkPolicies, proven with real connections before they reach a cluster.

The shop runs in namespace ``shop``: ``frontend`` (port 8080, behind Service ``frontend`` on 80),
``api`` (9000) and ``postgres`` (5432).  The ingress controller runs in ``ingress-nginx``.  The
team's policy set, as it ships it (YAML, applied with ``cluster.apply``):

* ``default-deny``: nothing gets into or out of any pod of ``shop`` unless a policy allows it;
* ``allow-dns``: every pod of ``shop`` may ask kube-dns (the rule everyone forgets);
* ``allow-from-ingress``: the ingress controller's namespace reaches the frontend on 8080;
* ``frontend``, ``api``, ``postgres``: each tier talks to the next one, and nothing else.

Every pod's process resolves names through the cluster DNS (kubelet's resolv.conf), so a policy
that forgets DNS shows up as a failed lookup, as it would in production.
"""

from __future__ import annotations

import sys
import textwrap

import pytest

#: A server: answers every connection with its pod's name.
SERVER = textwrap.dedent("""
    import socket, sys
    server = socket.create_server(("0.0.0.0", int(sys.argv[2])))
    while True:
        conn, _ = server.accept()
        conn.sendall(sys.argv[1].encode())
        conn.close()
""")

#: A client: resolve the name (libc, the pod's search path), connect; print what happened.  A lookup
#: gives up after 1 s instead of glibc's 5 s, twice, for each name of the search path.
CLIENT = textwrap.dedent("""
    import os, socket, sys
    os.environ["RES_OPTIONS"] = "timeout:1 attempts:1"
    name, port = sys.argv[1], int(sys.argv[2])
    try:
        address = socket.getaddrinfo(name, port, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    except socket.gaierror:
        print("no-dns"); sys.exit()
    try:
        with socket.create_connection((address, port), timeout=1) as conn:
            print("answered-by", conn.recv(100).decode())
    except TimeoutError:
        print("blocked")
""")

#: The team's policy set, as its repository keeps it (applied with ``cluster.apply``).
POLICIES = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny, namespace: shop}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-dns, namespace: shop}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector:
        matchLabels: {kubernetes.io/metadata.name: kube-system}
      podSelector:
        matchLabels: {k8s-app: kube-dns}
    ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-from-ingress, namespace: shop}
spec:
  podSelector:
    matchLabels: {app: frontend}
  ingress:
  - from:
    - namespaceSelector:
        matchLabels: {kubernetes.io/metadata.name: ingress-nginx}
    ports:
    - {port: 8080, protocol: TCP}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: frontend, namespace: shop}
spec:
  podSelector:
    matchLabels: {app: frontend}
  policyTypes: [Egress]
  egress:
  - to:
    - podSelector:
        matchLabels: {app: api}
    ports:
    - port: 9000
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api, namespace: shop}
spec:
  podSelector:
    matchLabels: {app: api}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - podSelector:
        matchLabels: {app: frontend}
    ports:
    - port: 9000
  egress:
  - to:
    - podSelector:
        matchLabels: {app: postgres}
    ports:
    - port: 5432
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: postgres, namespace: shop}
spec:
  podSelector:
    matchLabels: {app: postgres}
  ingress:
  - from:
    - podSelector:
        matchLabels: {app: api}
    ports:
    - port: 5432
"""


@pytest.fixture
def shop(netns_cluster):
    """Two nodes; the shop's three tiers with their Services, the ingress controller, a pod of another team."""
    cluster = netns_cluster
    node1, node2 = cluster.node("node1"), cluster.node("node2")
    tiers = {"frontend": (node1, 8080, 80), "api": (node2, 9000, 9000), "postgres": (node2, 5432, 5432)}
    pods = {}
    for app, (node, port, service_port) in tiers.items():
        pod = cluster.pod(f"{app}-0", node=node, namespace="shop", labels={"app": app})
        pod.popen([sys.executable, "-c", SERVER, pod.name, str(port)])
        pod.wait_for_port(str(pod.ip), port)
        cluster.service(app, namespace="shop", port=service_port, target_port=port, selector={"app": app})
        pods[app] = pod
    pods["ingress"] = cluster.pod(
        "controller", node=node2, namespace="ingress-nginx", labels={"app.kubernetes.io/name": "ingress-nginx"}
    )
    pods["other-team"] = cluster.pod("batch-job", node=node1, namespace="analytics")
    pods["policies"] = cluster.apply(POLICIES)
    return pods


def connect(pod, name, port):
    return " ".join(pod.run([sys.executable, "-c", CLIENT, name, str(port)]).stdout.split())


def test_the_ingress_controller_reaches_the_frontend_service(shop):
    assert connect(shop["ingress"], "frontend.shop", 80) == "answered-by frontend-0"


def test_each_tier_reaches_the_next_by_name(shop):
    assert connect(shop["frontend"], "api", 9000) == "answered-by api-0"
    assert connect(shop["api"], "postgres", 5432) == "answered-by postgres-0"


def test_no_tier_skips_one_and_nothing_flows_backwards(shop):
    assert connect(shop["frontend"], "postgres", 5432) == "blocked"
    assert connect(shop["postgres"], "api", 9000) == "blocked"
    assert connect(shop["ingress"], "api.shop", 9000) == "blocked"


def test_other_namespaces_are_kept_out(shop):
    for target, port in (("frontend.shop", 80), ("api.shop", 9000), ("postgres.shop", 5432)):
        assert connect(shop["other-team"], target, port) == "blocked"


def test_the_database_cannot_reach_the_internet(shop, netns_cluster):
    internet = netns_cluster.external("internet")
    internet.popen([sys.executable, "-c", SERVER, "internet", "443"])
    internet.wait_for_port(str(internet.ip), 443)
    assert connect(shop["postgres"], str(internet.ip), 443) == "blocked"
    assert connect(shop["other-team"], str(internet.ip), 443) == "answered-by internet"


def test_forgetting_dns_breaks_every_name(shop):
    (allow_dns,) = [policy for policy in shop["policies"] if policy.name == "allow-dns"]
    allow_dns.delete()
    assert connect(shop["frontend"], "api.shop.svc.cluster.local.", 9000) == "no-dns"
    assert connect(shop["frontend"], str(shop["api"].ip), 9000) == "answered-by api-0"  # only DNS is gone


# The example of README.md's "Test your NetworkPolicies", as it is shown there.
DNS_RULE = {
    "to": [
        {"namespace_selector": {"kubernetes.io/metadata.name": "kube-system"}, "pod_selector": {"k8s-app": "kube-dns"}}
    ],
    "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
}


def test_only_the_ingress_namespace_reaches_the_shop(netns_cluster):
    c = netns_cluster
    n1, n2 = c.node("node1"), c.node("node2")
    web = c.pod("web-0", node=n1, namespace="shop", labels={"app": "web"})
    web.popen(["python3", "-m", "http.server", "8080"])
    web.wait_for_port(str(web.ip), 8080)
    c.service("web", namespace="shop", port=80, target_port=8080, selector={"app": "web"})
    controller = c.pod("controller", node=n2, namespace="ingress-nginx")
    stranger = c.pod("stranger", node=n2, namespace="analytics")
    c.network_policy("default-deny", namespace="shop", pod_selector={}, policy_types=["Ingress", "Egress"])
    c.network_policy("allow-dns", namespace="shop", pod_selector={}, egress=[DNS_RULE], policy_types=["Egress"])
    c.network_policy(
        "allow-from-ingress",
        namespace="shop",
        pod_selector={"app": "web"},
        ingress=[{"from": [{"namespace_selector": {"kubernetes.io/metadata.name": "ingress-nginx"}}], "ports": [8080]}],
    )
    controller.run(["curl", "-sf", "http://web.shop/"])  # allowed
    assert stranger.run(["curl", "-s", "-m1", "http://web.shop/"], check=False).returncode == 28  # dropped
