"""``Cluster.apply``: Kubernetes manifests (YAML, dicts) as services and NetworkPolicies, every field accounted for."""

from __future__ import annotations

import re
from typing import Any

import pytest
from _servers import Responder, ask

from pytest_netns.presets.cluster import Cluster, Service
from pytest_netns.presets.cluster import manifests as _manifests
from pytest_netns.presets.cluster.policy import NetworkPolicy

WEB_AND_POLICY = """
apiVersion: v1
kind: Service
metadata:
  name: web
  labels: {app.kubernetes.io/name: web}
spec:
  selector: {app: web}
  ports:
    - name: http
      port: 80
      targetPort: 8080
      protocol: TCP
---
# Only pods labelled role=client may reach the web pods, on 8080.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: web-from-clients
  namespace: default
spec:
  podSelector:
    matchLabels: {app: web}
  policyTypes: [Ingress]
  ingress:
    - from:
        - podSelector: {matchLabels: {role: client}}
      ports:
        - port: 8080
          protocol: TCP
---
"""


def blocked(ns: Any, address: tuple[str, int]) -> bool:
    try:
        ask(ns, address, timeout=0.6)
    except TimeoutError:
        return True
    return False


# -- real objects ------------------------------------------------------------------------------


def test_multi_document_yaml_makes_a_service_and_a_policy_that_carry_traffic(
    netns_cluster: Cluster, servers: list[Responder]
) -> None:
    n1, n2 = netns_cluster.node("node1"), netns_cluster.node("node2")
    web = netns_cluster.pod("web-0", node=n2, labels={"app": "web"})
    servers.append(Responder(web, 8080))
    client = netns_cluster.pod("client", node=n1, labels={"role": "client"})
    stranger = netns_cluster.pod("stranger", node=n1)
    made = netns_cluster.apply(WEB_AND_POLICY)
    assert [type(obj) for obj in made] == [Service, NetworkPolicy]
    svc, policy = made
    assert isinstance(svc, Service) and isinstance(policy, NetworkPolicy)
    assert (svc.name, svc.namespace, svc.port, svc.target_port, svc.proto, svc.port_name) == (
        "web",
        "default",
        80,
        8080,
        "tcp",
        "http",
    )
    assert svc.pods == (web,) and policy.pods == [web]
    assert netns_cluster.services == [svc] and netns_cluster.network_policies == [policy]
    # Through the service's ClusterIP (the policy matches the pod's port after kube-proxy's DNAT).
    assert ask(client, svc.address) == ("web-0", str(client.ip))
    assert blocked(stranger, svc.address)


def test_a_node_port_service_from_a_dict(netns_cluster: Cluster, servers: list[Responder]) -> None:
    node = netns_cluster.node("node1")
    pod = netns_cluster.pod("web-0", node=node, namespace="shop", labels={"app": "web"})
    servers.append(Responder(pod, 8080))
    ext = netns_cluster.external("outside")
    (svc,) = netns_cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {
                "type": "NodePort",
                "selector": {"app": "web"},
                "externalTrafficPolicy": "Local",
                "ports": [{"port": 80, "targetPort": 8080, "nodePort": 30080}],
            },
        }
    )
    assert isinstance(svc, Service)
    assert (svc.namespace, svc.type, svc.node_port, svc.external_traffic_policy) == ("shop", "NodePort", 30080, "Local")
    assert ask(ext, (str(node.ip), 30080)) == ("web-0", str(ext.ip))


def test_a_list_of_dicts_is_made_in_order(netns_cluster: Cluster) -> None:
    netns_cluster.node("node1")

    def service(name: str, **spec: Any) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}

    made = netns_cluster.apply(
        [
            service("b", selector={"app": "b"}, ports=[{"port": 80}]),
            service("a", selector={"app": "a"}, ports=[{"port": 53, "protocol": "UDP"}], clusterIP="None"),
            service(
                "c",
                selector={"app": "c"},
                ports=[{"port": 81}],
                clusterIP="10.96.7.7",
                sessionAffinity="ClientIP",
                sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}},
            ),
        ]
    )
    assert [obj.name for obj in made] == ["b", "a", "c"]
    b, a, c = made
    assert isinstance(a, Service) and isinstance(b, Service) and isinstance(c, Service)
    assert a.headless and a.proto == "udp" and a.ip is None
    assert str(c.ip) == "10.96.7.7" and (c.session_affinity, c.session_affinity_timeout) == ("ClientIP", 60)
    assert b.target_port == 80 and b.type == "ClusterIP" and b.session_affinity is None


def test_a_failure_while_making_names_the_document_and_what_was_made(netns_cluster: Cluster) -> None:
    netns_cluster.node("node1")
    doc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": {}}
    doc["spec"] = {"selector": {"app": "web"}, "ports": [{"port": 80}]}
    with pytest.raises(ValueError, match=r"document 2 \(Service default/web\): .*already exists.*made before it: "):
        netns_cluster.apply([doc, doc])
    assert [svc.name for svc in netns_cluster.services] == ["web"]


def test_apply_with_network_policy_of_every_field_carries_traffic(
    netns_cluster: Cluster, servers: list[Responder]
) -> None:
    """A default-deny egress policy plus DNS and one ipBlock: what it allows goes through, the rest is dropped."""
    n1 = netns_cluster.node("node1")
    app = netns_cluster.pod("app", node=n1, labels={"app": "shop"})
    db = netns_cluster.pod("db", node=n1, labels={"app": "db"})
    servers.append(Responder(db, 5432))
    other = netns_cluster.pod("other", node=n1, labels={"app": "other"})
    servers.append(Responder(other, 5432))
    netns_cluster.apply(
        """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: shop-egress}
spec:
  podSelector: {matchLabels: {app: shop}}
  policyTypes: [Egress]
  egress:
    - to:
        - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}
          podSelector: {matchExpressions: [{key: k8s-app, operator: In, values: [kube-dns]}]}
      ports: [{port: 53, protocol: UDP}, {port: 53, protocol: TCP}]
    - to:
        - podSelector: {matchExpressions: [{key: app, operator: Exists}, {key: app, operator: NotIn, values: [other]}]}
      ports: [{port: 5000, endPort: 5500, protocol: TCP}]
"""
    )
    svc = netns_cluster.service("db", port=5432, selector={"app": "db"})
    assert app.resolve("db") == svc.ip  # the query to kube-dns is allowed
    assert ask(app, svc.address)[0] == "db"
    assert ask(app, (str(db.ip), 5432))[0] == "db"
    assert blocked(app, (str(other.ip), 5432))


# -- translation (no kernel) -------------------------------------------------------------------


class Recorder:
    """A fake cluster recording the calls ``apply`` makes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def service(self, name: str, **kwargs: Any) -> Any:
        self.calls.append(("service", name, kwargs))
        return ("service", name)

    def network_policy(self, name: str, **kwargs: Any) -> Any:
        self.calls.append(("network_policy", name, kwargs))
        return ("network_policy", name)


def record(manifest: Any) -> list[tuple[str, str, dict[str, Any]]]:
    fake = Recorder()
    made = _manifests.apply(manifest, service=fake.service, network_policy=fake.network_policy)
    assert made == [(method, name) for method, name, _ in fake.calls]
    return fake.calls


def test_every_network_policy_field_becomes_its_snake_case_argument() -> None:
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "everything", "namespace": "prod", "annotations": {"owner": "platform"}},
        "spec": {
            "podSelector": {
                "matchLabels": {"app": "api"},
                "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["test"]}],
            },
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {
                    "from": [
                        {"podSelector": {"matchLabels": {"role": "web"}}},
                        {"namespaceSelector": {"matchLabels": {"team": "a"}}, "podSelector": {}},
                        {"ipBlock": {"cidr": "172.18.0.0/24", "except": ["172.18.0.200/32"]}},
                    ],
                    "ports": [{"port": 8080}, {"port": 9000, "endPort": 9100, "protocol": "UDP"}, {"protocol": "SCTP"}],
                },
                {},
            ],
            "egress": [{"to": [{"namespaceSelector": {}}]}, {"ports": [{"port": 53, "protocol": "UDP"}]}],
        },
    }
    assert record(policy) == [
        (
            "network_policy",
            "everything",
            {
                "namespace": "prod",
                "pod_selector": {
                    "match_labels": {"app": "api"},
                    "match_expressions": [{"key": "tier", "operator": "NotIn", "values": ["test"]}],
                },
                "policy_types": ["Ingress", "Egress"],
                "ingress": [
                    {
                        "from": [
                            {"pod_selector": {"match_labels": {"role": "web"}}},
                            {"pod_selector": {}, "namespace_selector": {"match_labels": {"team": "a"}}},
                            {"ip_block": {"cidr": "172.18.0.0/24", "except": ["172.18.0.200/32"]}},
                        ],
                        "ports": [
                            {"port": 8080},
                            {"port": 9000, "end_port": 9100, "protocol": "UDP"},
                            {"protocol": "SCTP"},
                        ],
                    },
                    {},
                ],
                "egress": [{"to": [{"namespace_selector": {}}]}, {"ports": [{"port": 53, "protocol": "UDP"}]}],
            },
        )
    ]


@pytest.mark.parametrize(
    ("spec", "types", "rules"),
    [
        ({}, ["Ingress"], {}),  # isolates ingress: deny all
        ({"egress": []}, ["Ingress"], {}),  # an empty egress list without policyTypes isolates nothing (API default)
        ({"egress": [{}]}, ["Ingress", "Egress"], {"egress": [{}]}),
        ({"policyTypes": [], "ingress": [{}]}, ["Ingress"], {"ingress": [{}]}),
        ({"policyTypes": ["Egress"], "egress": []}, ["Egress"], {"egress": []}),  # deny all egress
    ],
)
def test_policy_types_default_as_the_api_server_does(
    spec: dict[str, Any], types: list[str], rules: dict[str, Any]
) -> None:
    doc = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "p"}}
    ((_, _, kwargs),) = record(doc | {"spec": {"podSelector": {}, **spec}})
    assert kwargs == {"namespace": "default", "pod_selector": {}, "policy_types": types, **rules}


def test_service_fields_become_service_arguments() -> None:
    ((method, name, kwargs),) = record(
        """
kind: Service
apiVersion: v1
metadata: {name: web, namespace: shop}
spec:
  type: NodePort
  selector: {app: web}
  externalTrafficPolicy: Cluster
  sessionAffinity: None
  ports: [{name: http, port: 80, targetPort: 8080, protocol: UDP, nodePort: 30007}]
"""
    )
    assert (method, name) == ("service", "web")
    assert kwargs == {
        "namespace": "shop",
        "selector": {"app": "web"},
        "type": "NodePort",
        "port": 80,
        "port_name": "http",
        "target_port": 8080,
        "proto": "udp",
        "node_port": 30007,
        "external_traffic_policy": "Cluster",
    }


def test_yaml_is_imported_only_for_text(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "yaml", None)  # importing it now raises ImportError
    doc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "a"},
        "spec": {"selector": {"a": "b"}, "ports": [{"port": 1}]},
    }
    assert record(doc)[0][1] == "a"
    with pytest.raises(ImportError):
        record("kind: Service")


SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}}
POLICY = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "p"}}
PORTS = {"selector": {"app": "web"}, "ports": [{"port": 80}]}
HTTP = {"name": "a", "port": 80}  # the first of two ports


@pytest.mark.parametrize(
    ("manifest", "named"),
    [
        ({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}}, "kind 'Deployment'"),
        ({"apiVersion": "v1", "kind": "ConfigMap"}, "kind 'ConfigMap'"),
        ({"apiVersion": "v2", "kind": "Service"}, "'v2'"),
        ({"apiVersion": "networking.k8s.io/v1beta1", "kind": "NetworkPolicy"}, "'networking.k8s.io/v1beta1'"),
        (SERVICE | {"status": {}}, "field status "),
        (SERVICE | {"metadata": {"name": "web", "uid": "1"}, "spec": PORTS}, "field metadata.uid "),
        (SERVICE | {"spec": PORTS | {"ipFamilies": ["IPv4"]}}, "field spec.ipFamilies "),
        (SERVICE | {"spec": {**PORTS, "ports": [{"port": 80, "appProtocol": "http"}]}}, "spec.ports[0].appProtocol"),
        (SERVICE | {"spec": {**PORTS, "ports": [{"port": 80}, {"port": 81}]}}, "spec.ports[0]: a service with several"),
        (SERVICE | {"spec": {**PORTS, "ports": [HTTP, {"port": 81}]}}, "spec.ports[1]: a service"),
        (SERVICE | {"spec": {**PORTS, "ports": [HTTP, {"name": "a", "port": 81}]}}, "spec.ports[1]: name 'a' is given"),
        (SERVICE | {"spec": {**PORTS, "ports": [HTTP, {"name": "b", "port": 80}]}}, "spec.ports[1]: port 80/tcp is"),
        (
            SERVICE | {"spec": {**PORTS, "ports": [HTTP, {"name": "b", "port": 8, "targetPort": "h"}]}},
            "spec.ports[1].targetPort 'h' is a named port",
        ),
        (SERVICE | {"spec": {**PORTS, "ports": [HTTP, {"port": 8, "x": 1}]}}, "spec.ports[1].x"),
        (
            SERVICE | {"spec": {**PORTS, "ports": [HTTP, {"name": "B", "port": 81}]}},
            "spec.ports[1]: name 'B' is not an IANA service name",
        ),
        (SERVICE | {"spec": {**PORTS, "ports": []}}, "spec.ports"),
        (SERVICE | {"spec": {"ports": [{"port": 80}]}}, "spec.selector is required"),
        (SERVICE | {"spec": {**PORTS, "ports": [{"port": 80, "targetPort": "http"}]}}, "targetPort 'http'"),
        (SERVICE | {"spec": {**PORTS, "ports": [{"port": 80, "protocol": "SCTP"}]}}, "protocol 'SCTP'"),
        (SERVICE | {"spec": {**PORTS, "ports": [{"port": 70000}]}}, "70000"),
        (SERVICE | {"spec": PORTS | {"type": "LoadBalancer"}}, "'LoadBalancer'"),
        (SERVICE | {"spec": PORTS | {"type": "NodePort", "externalTrafficPolicy": "local"}}, "'local'"),
        (SERVICE | {"spec": {**PORTS, "type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}}, "node_port 80"),
        (SERVICE | {"spec": PORTS | {"sessionAffinity": "Cookie"}}, "'Cookie'"),
        (SERVICE | {"spec": PORTS | {"sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 5}}}}, "sessionAffinity"),
        (
            SERVICE
            | {"spec": PORTS | {"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"x": 1}}}},
            "spec.sessionAffinityConfig.clientIP.x",
        ),
        (SERVICE | {"metadata": {}, "spec": PORTS}, "metadata.name"),
        (SERVICE | {"metadata": {"name": "Web"}, "spec": PORTS}, "'Web'"),
        (SERVICE | {"metadata": {"name": "web", "labels": {"a": 1}}, "spec": PORTS}, "metadata.labels"),
        (POLICY | {"spec": {}}, "spec.podSelector is required"),
        (POLICY | {"spec": {"podSelector": {}, "ingres": []}}, "field spec.ingres "),
        (POLICY | {"spec": {"podSelector": {"app": "x"}}}, "field spec.podSelector.app "),
        (
            POLICY | {"spec": {"podSelector": {}, "ingress": [{"from": [{"podselector": {}}]}]}},
            "spec.ingress[0].from[0].podselector",
        ),
        (POLICY | {"spec": {"podSelector": {}, "egress": [{"from": []}]}}, "field spec.egress[0].from "),
        (
            POLICY | {"spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 80, "end_port": 90}]}]}},
            "spec.ingress[0].ports[0].end_port",
        ),
        (
            POLICY
            | {"spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "exc": []}}]}]}},
            "spec.ingress[0].from[0].ipBlock.exc",
        ),
        (
            POLICY | {"spec": {"podSelector": {"matchExpressions": [{"key": "a", "operator": "In", "value": ["b"]}]}}},
            "spec.podSelector.matchExpressions[0].value",
        ),
        (POLICY | {"spec": {"podSelector": {}, "ingress": [{"ports": [{"port": "http"}]}]}}, "'http'"),
        (POLICY | {"spec": {"podSelector": {}, "ingress": [{"ports": [{"protocol": "ICMP"}]}]}}, "'ICMP'"),
        (POLICY | {"spec": {"podSelector": {}, "policyTypes": ["Ingres"]}}, "'Ingres'"),
        (POLICY | {"spec": {"podSelector": {"matchExpressions": [{"key": "a", "operator": "Is"}]}}}, "'Is'"),
        ("kind: Service\n  bad: [", "not valid YAML"),
        ("just-a-file.yaml", "'just-a-file.yaml'"),
        ("", "no objects"),
        ([SERVICE | {"spec": PORTS}, 3], "document 2"),
        (42, "42"),
    ],
)
def test_unsupported_kinds_and_fields_are_value_errors_naming_them(manifest: Any, named: str) -> None:
    fake = Recorder()
    with pytest.raises(ValueError, match=re.escape(named)):
        _manifests.apply(manifest, service=fake.service, network_policy=fake.network_policy)
    assert fake.calls == []  # checked before anything was made


def test_apply_names_the_document(netns_cluster: Cluster) -> None:
    with pytest.raises(
        ValueError, match=re.escape("document 2 (Service default/web): field spec.ports[0].appProtocol")
    ):
        netns_cluster.apply(
            [
                SERVICE | {"metadata": {"name": "ok"}, "spec": PORTS},
                SERVICE | {"spec": {**PORTS, "ports": [{"port": 80, "appProtocol": "h"}]}},
            ]
        )
    assert netns_cluster.services == []
