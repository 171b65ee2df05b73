"""NetworkPolicy -> CiliumNetworkPolicy, compared with hand-written YAML that follows Cilium's
ParseNetworkPolicy (pkg/k8s/network_policy.go)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.migration.netpol import load_objects
from gateway.migration.to_cilium import cilium_divergences, to_cilium, to_cilium_yaml

CORPUS = Path(__file__).parent / "netpol_corpus"
NS = "k8s:io.kubernetes.pod.namespace"

EXPECTED = {
    "pay/api-from-shop-back": """
spec:
  endpointSelector: {matchLabels: {k8s:app: api, k8s:io.kubernetes.pod.namespace: pay}}
  ingress:
  - fromEndpoints:
    - matchLabels: {k8s:io.cilium.k8s.namespace.labels.team: shop, k8s:tier: back}
    toPorts:
    - ports: [{port: https, protocol: TCP}]
""",
    "pay/ledger-from-api": """
spec:
  endpointSelector: {matchLabels: {k8s:app: ledger, k8s:io.kubernetes.pod.namespace: pay}}
  ingress:
  - fromEndpoints: [{matchLabels: {k8s:app: api, k8s:io.kubernetes.pod.namespace: pay}}]
    toPorts:
    - ports: [{port: "5432", protocol: TCP}]
  - fromEndpoints: [{matchLabels: {k8s:io.cilium.k8s.namespace.labels.team: ops}}]
  - fromEndpoints: [{matchLabels: {k8s:app: fraud, k8s:io.kubernetes.pod.namespace: pay}}]
""",
    "pay/default-deny-egress": """
spec:
  endpointSelector: {matchLabels: {k8s:io.kubernetes.pod.namespace: pay}}
  egress: [{}]
""",
    "pay/default-deny-ingress": """
spec:
  endpointSelector: {matchLabels: {k8s:io.kubernetes.pod.namespace: pay}}
  ingress: [{}]
""",
    "ops/default-deny-all": """
spec:
  endpointSelector: {matchLabels: {k8s:io.kubernetes.pod.namespace: ops}}
  ingress: [{}]
  egress: [{}]
""",
    "shop/web-from-anywhere": """
spec:
  endpointSelector: {matchLabels: {k8s:app: web, k8s:io.kubernetes.pod.namespace: shop}}
  ingress:
  - fromEndpoints: [{}]
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
    - ports: [{port: "443", protocol: TCP}]
""",
    "shop/cart-egress": """
spec:
  endpointSelector: {matchLabels: {k8s:app: cart, k8s:io.kubernetes.pod.namespace: shop}}
  egress:
  - toEndpoints:
    - matchLabels: {k8s:app: api}
      matchExpressions: [{key: k8s:io.kubernetes.pod.namespace, operator: Exists}]
  - toCIDRSet: [{cidr: 10.0.0.0/8, except: [10.32.0.0/12]}]
    toPorts:
    - ports: [{port: "443", protocol: TCP}]
""",
    "pay/ledger-metrics": """
spec:
  endpointSelector: {matchLabels: {k8s:app: ledger, k8s:io.kubernetes.pod.namespace: pay}}
  ingress:
  - fromEndpoints:
    - matchLabels:
        k8s:app: monitor
        k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name: ops
    toPorts:
    - ports: [{port: "9100", endPort: 9102, protocol: TCP}]
""",
    "pay/ledger-from-backup-net": """
spec:
  endpointSelector: {matchLabels: {k8s:app: ledger, k8s:io.kubernetes.pod.namespace: pay}}
  ingress:
  - fromCIDRSet: [{cidr: 192.168.10.0/24, except: [192.168.10.128/25]}]
    toPorts:
    - ports: [{port: "5432", protocol: TCP}]
""",
    "shop/admin-expressions": """
spec:
  endpointSelector:
    matchLabels: {k8s:io.kubernetes.pod.namespace: shop}
    matchExpressions: [{key: k8s:role, operator: Exists}]
  ingress:
  - fromEndpoints:
    - matchLabels: {k8s:io.kubernetes.pod.namespace: shop}
      matchExpressions: [{key: k8s:tier, operator: NotIn, values: [front]}]
  - fromEndpoints:
    - matchExpressions:
      - {key: k8s:io.cilium.k8s.namespace.labels.env, operator: In, values: [dev]}
""",
    "shop/allow-same-namespace": """
spec:
  endpointSelector: {matchLabels: {k8s:io.kubernetes.pod.namespace: shop}}
  ingress:
  - fromEndpoints: [{matchLabels: {k8s:io.kubernetes.pod.namespace: shop}}]
""",
    "ops/monitor-egress-typed": """
spec:
  endpointSelector: {matchLabels: {k8s:app: monitor, k8s:io.kubernetes.pod.namespace: ops}}
  ingress:
  - fromEndpoints: [{matchLabels: {k8s:app: debug, k8s:io.kubernetes.pod.namespace: ops}}]
  egress:
  - toEndpoints: [{}]
""",
    "ops/debug-egress-deny": """
spec:
  endpointSelector: {matchLabels: {k8s:app: debug, k8s:io.kubernetes.pod.namespace: ops}}
  egress: [{}]
""",
    "pay/fraud-to-external": """
spec:
  endpointSelector: {matchLabels: {k8s:app: fraud, k8s:io.kubernetes.pod.namespace: pay}}
  egress:
  - toCIDRSet: [{cidr: "2001:db8::/32", except: ["2001:db8:1::/48"]}]
    toPorts:
    - ports: [{port: "443", protocol: TCP}]
""",
}


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_translation_matches_hand_written_cilium_policy(key: str) -> None:
    policy = next(p for p in load_objects(CORPUS).policies if p.key == key)
    namespace, name = key.split("/")
    expected = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        **yaml.safe_load(EXPECTED[key]),
    }
    assert to_cilium(policy) == expected


def test_every_corpus_policy_translates_and_the_stream_round_trips() -> None:
    policies = load_objects(CORPUS).policies
    documents = list(yaml.safe_load_all(to_cilium_yaml(policies)))
    assert len(documents) == len(policies) == 25
    for policy, document in zip(policies, documents, strict=True):
        assert document == to_cilium(policy)
        selector = document["spec"]["endpointSelector"]
        assert selector["matchLabels"][NS] == policy.namespace
        # Every policy isolates something in Cilium: an empty spec would allow everything.
        assert "ingress" in document["spec"] or "egress" in document["spec"]


def test_divergence_is_reported_only_where_cilium_and_kubernetes_differ() -> None:
    policies = load_objects(CORPUS).policies
    diverging = {p.key: cilium_divergences(p) for p in policies if cilium_divergences(p)}
    assert list(diverging) == ["ops/monitor-egress-typed"]
    assert diverging["ops/monitor-egress-typed"][0][0] == "spec.ingress[0]"
