"""Reading NetworkPolicy YAML: the corpus, List kinds, multi-document files and precise errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.migration.netpol import NetpolError, load_objects, parse_text
from gateway.migration.netpol_model import (
    LabelSelector,
    Operator,
    PolicyPort,
    PolicyType,
    Protocol,
    Requirement,
)

CORPUS = Path(__file__).parent / "netpol_corpus"


def _by_key() -> dict[str, object]:
    return {p.key: p for p in load_objects(CORPUS).policies}


def test_corpus_has_25_policies_from_files_lists_and_multi_documents() -> None:
    objects = load_objects(CORPUS)
    keys = [p.key for p in objects.policies]
    assert len(keys) == 25 == len(set(keys))
    # The List (two items), the NetworkPolicyList, and the skipped ConfigMap of 05-lists.yaml.
    listed = [p for p in objects.policies if p.source.file.endswith("05-lists.yaml")]
    assert [(p.key, p.source.document, p.source.item) for p in listed] == [
        ("pay/fraud-from-api", 1, "items[0]"),
        ("shop/cart-from-pay-or-web", 1, "items[1]"),
        ("ops/debug-egress-deny", 2, "items[0]"),
    ]
    assert [(s.document, what) for s, what in objects.skipped] == [(3, "ConfigMap unrelated")]


def test_policy_types_default_from_the_rules_present() -> None:
    policies = load_objects(CORPUS).policies
    by_key = {p.key: p for p in policies}
    only_egress = by_key["pay/api-egress-to-ledger"]
    assert not only_egress.policy_types_given
    assert only_egress.policy_types == (PolicyType.INGRESS, PolicyType.EGRESS)
    only_ingress = by_key["shop/allow-same-namespace"]
    assert only_ingress.policy_types == (PolicyType.INGRESS,)
    assert by_key["ops/default-deny-all"].policy_types == (PolicyType.INGRESS, PolicyType.EGRESS)


def test_selectors_ports_and_ip_blocks_are_modelled() -> None:
    by_key = {p.key: p for p in load_objects(CORPUS).policies}
    admin = by_key["shop/admin-expressions"]
    assert admin.pod_selector == LabelSelector((), (Requirement("role", Operator.EXISTS),))
    peers = admin.ingress[0].peers
    assert peers[0].pod_selector == LabelSelector(
        (), (Requirement("tier", Operator.NOT_IN, ("front",)),)
    )
    assert peers[1].namespace_selector is not None and peers[1].pod_selector is None
    assert by_key["pay/ledger-metrics"].ingress[0].ports == (PolicyPort(Protocol.TCP, 9100, 9102),)
    assert by_key["pay/api-from-shop-back"].ingress[0].ports == (PolicyPort(Protocol.TCP, "https"),)
    block = by_key["shop/cart-egress"].egress[1].peers[0].ip_block
    assert block is not None and (block.cidr, block.except_) == ("10.0.0.0/8", ("10.32.0.0/12",))
    assert by_key["shop/web-from-anywhere"].ingress[0].peers == ()
    assert by_key["ops/deny-debug-ingress"].ingress == ()


def test_inventory_pods_and_namespaces() -> None:
    inventory = load_objects(CORPUS / "inventory")
    assert len(inventory.pods) == 9 and len(inventory.namespaces) == 4
    dns = next(p for p in inventory.pods if p.namespace == "kube-system")
    assert dns.service_account == "coredns" and dns.label_map["k8s-app"] == "kube-dns"
    ops = next(n for n in inventory.namespaces if n.name == "ops")
    assert ops.label_map == {"team": "ops", "env": "dev", "kubernetes.io/metadata.name": "ops"}


def test_malformed_objects_get_one_line_each_naming_file_line_document_and_field() -> None:
    path = CORPUS / "malformed" / "bad-objects.yaml"
    with pytest.raises(NetpolError) as caught:
        load_objects(path)
    assert str(caught.value).splitlines() == [
        f"{path}:14: document 2: spec.ingress[0].from[0].ipBlock.cidr: expected a CIDR such as "
        "10.0.0.0/8, found '10.0.0.0/33'",
        f"{path}:23: document 3: spec.egress[0].ports[0].endPort: endPort needs a numeric port",
        f"{path}:24: document 3: spec.egress[0].ports[1].protocol: expected TCP, UDP or SCTP, "
        "found a string ('ICMP')",
        f"{path}:32: document 4: spec.podSelector.matchExpressions[0].operator: expected In, "
        "NotIn, Exists or DoesNotExist, found a string ('Has')",
        f"{path}:35: document 4: spec.ingress[0].from[0]: ipBlock cannot be combined with "
        "podSelector or namespaceSelector",
    ]


def test_invalid_yaml_names_the_document_and_line() -> None:
    path = CORPUS / "malformed" / "broken-yaml.yaml"
    with pytest.raises(NetpolError) as caught:
        load_objects(path)
    (line,) = str(caught.value).splitlines()
    assert line.startswith(f"{path}:9: document 2: invalid YAML: ")


def test_a_directory_reports_every_file_at_once(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("kind: NetworkPolicy\napiVersion: v1\n")
    (tmp_path / "b.yml").write_text("- not\n- a mapping\n")
    (tmp_path / "ignored.txt").write_text("::: not yaml")
    with pytest.raises(NetpolError) as caught:
        load_objects(tmp_path)
    lines = str(caught.value).splitlines()
    assert lines == [
        f"{tmp_path / 'a.yaml'}:2: document 1: apiVersion: expected 'networking.k8s.io/v1', "
        "found a string ('v1')",
        f"{tmp_path / 'a.yaml'}:1: document 1: metadata: expected a mapping, found null",
        f"{tmp_path / 'a.yaml'}:1: document 1: spec: expected a mapping, found null",
        f"{tmp_path / 'a.yaml'}:1: document 1: spec.podSelector: missing required field "
        "(use {} for every pod)",
        f"{tmp_path / 'b.yml'}:1: document 1: expected a mapping, found a list",
    ]


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("spec: {podSelector: {}, ingres: []}", "spec.ingres: unknown field"),
        (
            "spec: {podSelector: {matchLabels: {app: 7}}}",
            "spec.podSelector.matchLabels.app: expected a string, found a number (7)",
        ),
        (
            "spec: {podSelector: {}, policyTypes: [Ingress, Ingress]}",
            "spec.policyTypes[1]: 'Ingress' is listed twice",
        ),
        (
            "spec: {podSelector: {}, egress: [{ports: [{port: 70000}]}]}",
            "spec.egress[0].ports[0].port: expected a port number from 1 to 65535, found 70000",
        ),
        (
            "spec: {podSelector: {}, egress: [{ports: [{port: 80, endPort: 79}]}]}",
            "spec.egress[0].ports[0].endPort: expected 80..65535",
        ),
        (
            "spec: {podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, "
            "except: [11.0.0.0/16]}}]}]}",
            "spec.ingress[0].from[0].ipBlock.except[0]: 11.0.0.0/16 is not inside cidr 10.0.0.0/8",
        ),
        (
            "spec: {podSelector: {matchExpressions: [{key: a, operator: In}]}}",
            "spec.podSelector.matchExpressions[0].values: operator In needs at least one value",
        ),
        (
            "spec: {podSelector: {}, ingress: [{from: [{}]}]}",
            "spec.ingress[0].from[0]: a peer needs podSelector, namespaceSelector or ipBlock",
        ),
    ],
)
def test_field_errors(snippet: str, expected: str) -> None:
    text = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: x}\n" + snippet
    with pytest.raises(NetpolError) as caught:
        parse_text(text, "inline.yaml")
    (line,) = str(caught.value).splitlines()
    assert line.startswith("inline.yaml:4: document 1: ")
    assert expected in line


def test_missing_namespace_means_default_and_empty_documents_are_skipped() -> None:
    text = (
        "---\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        "metadata: {name: x}\nspec: {podSelector: {}}\n"
    )
    (policy,) = parse_text(text, "f.yaml").policies
    assert policy.key == "default/x" and policy.source.document == 2
