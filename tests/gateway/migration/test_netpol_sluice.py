"""NetworkPolicy -> sluice scope policies: expected rules, the unsupported list, files that load,
and decision equivalence with a Kubernetes reference evaluator."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from config.policy import load_policy_file
from gateway.migration.netpol import load_objects
from gateway.migration.netpol_model import NetworkPolicy, Pod
from gateway.migration.to_sluice import (
    FindingKind,
    SluiceOptions,
    SluiceTranslation,
    translate,
    write_translation,
)
from gateway.policy import PolicyStore, decide, load_policy_store
from tests.gateway.test_policy_helpers import NOW, envelope

CORPUS = Path(__file__).parent / "netpol_corpus"
TD = "cilium.prod.example"
OPTIONS = SluiceOptions(trust_domain=TD, issued_at=1_767_258_000)


def _full() -> tuple[SluiceTranslation, tuple[NetworkPolicy, ...], tuple[Pod, ...], Any]:
    policies = load_objects(CORPUS).policies
    inventory = load_objects(CORPUS / "inventory")
    result = translate(
        policies, pods=inventory.pods, namespaces=inventory.namespaces, options=OPTIONS
    )
    return result, policies, inventory.pods, inventory.namespaces


def _rules(result: SluiceTranslation, scope: str) -> list[tuple[str, tuple[str, ...]]]:
    policy = result.policy(scope)
    assert policy is not None
    return [(r.id, r.from_scopes) for r in policy.rules]


def test_rules_with_the_inventory() -> None:
    result, *_ = _full()
    assert [p.scope for p in result.policies] == [
        "kube-system/kube-dns",
        "ops/debug",
        "ops/monitor",
        "pay/api",
        "pay/fraud",
        "pay/ledger",
        "shop/admin",
        "shop/cart",
        "shop/web",
    ]
    # Separate peers (OR) become one rule's alternatives; ops/* lost ops/debug, whose egress
    # is denied by ops/debug-egress-deny and ops/default-deny-all.
    assert _rules(result, "pay/ledger") == [
        ("ledger-from-api.ingress-0", ("pay/api",)),
        ("ledger-from-api.ingress-1", ("ops/monitor", "pay/fraud")),
        ("ledger-metrics.ingress-0", ("ops/monitor",)),
    ]
    # Both selectors in one peer (AND): back-tier pods of team=shop namespaces only.
    assert _rules(result, "pay/api") == [
        ("api-from-shop-back.ingress-0", ("shop/cart", "shop/admin"))
    ]
    # Default deny: selected, but no allowing rule.
    assert _rules(result, "ops/debug") == []
    # api's only egress is to the ledger, so fraud-from-api admits nobody.
    assert _rules(result, "pay/fraud") == []
    ledger = result.policy("pay/ledger")
    assert ledger is not None and ledger.workloads == (f"spiffe://{TD}/ns/pay/sa/ledger",)
    assert ledger.sources == (
        "pay/default-deny-ingress",
        "pay/ledger-from-api",
        "pay/ledger-from-backup-net",
        "pay/ledger-metrics",
    )


def test_unsupported_elements_are_listed_with_policy_document_and_field() -> None:
    result, *_ = _full()
    listed = {(f.kind, f.policy, f.field) for f in result.findings}
    expected = {
        (FindingKind.IP_BLOCK, "pay/ledger-from-backup-net", "spec.ingress[0].from[0].ipBlock"),
        (FindingKind.IP_BLOCK, "pay/fraud-to-external", "spec.egress[0].to[0].ipBlock"),
        (FindingKind.IP_BLOCK, "shop/cart-egress", "spec.egress[1].to[0].ipBlock"),
        (FindingKind.IP_BLOCK, "shop/web-egress", "spec.egress[0].to[0].ipBlock"),
        (FindingKind.DNS_EGRESS, "pay/allow-dns-egress", "spec.egress[0]"),
        (FindingKind.DNS_EGRESS, "shop/web-egress", "spec.egress[2]"),
        (FindingKind.PORTS, "pay/ledger-metrics", "spec.ingress[0].ports"),
        (FindingKind.PORTS, "pay/api-from-shop-back", "spec.ingress[0].ports"),
        (FindingKind.PORTS, "ops/monitor-from-everywhere", "spec.ingress[0].ports"),
        (FindingKind.CILIUM_DIVERGENCE, "ops/monitor-egress-typed", "spec.ingress[0]"),
    }
    assert expected <= listed
    ports = next(f for f in result.findings if f.policy == "pay/ledger-metrics")
    assert ports.document.endswith("02-pay-ingress.yaml document 3")
    assert "TCP 9100-9102 (endPort)" in ports.reason and "only after S5" in ports.reason
    named = next(f for f in result.findings if f.policy == "pay/api-from-shop-back")
    assert "named port https" in named.reason
    listed_item = [f for f in result.findings if f.policy == "pay/fraud-from-api"]
    assert listed_item == []  # nothing unsupported in it; its narrowing is reported per scope
    narrowed = [f for f in result.findings if f.kind is FindingKind.EGRESS_NARROWED]
    assert any(f.policy == "pay/fraud" and "pay/api" in f.reason for f in narrowed)
    # Every line of the report is one finding.
    assert len(result.report().splitlines()) == len(result.findings)


def test_every_generated_file_loads_and_builds_a_store(tmp_path: Path) -> None:
    result, *_ = _full()
    paths = write_translation(result, tmp_path)
    tomls = [p for p in paths if p.suffix == ".toml"]
    assert len(tomls) == 9
    for path in tomls:
        loaded = load_policy_file(path)
        generated = result.policy(loaded.scope)
        assert generated is not None
        assert loaded.revisions[0].rules == generated.rules
        assert loaded.revisions[0].issued_at == 1_767_258_000
    load_policy_store(tomls)
    assert (tmp_path / "unsupported.txt").read_text() == result.report()


def test_without_inventory_only_scope_label_selectors_are_mapped() -> None:
    policies = load_objects(CORPUS).policies
    result = translate(policies, options=OPTIONS)
    scopes = [p.scope for p in result.policies]
    assert scopes == [
        "ops/debug",
        "ops/monitor",
        "pay/api",
        "pay/fraud",
        "pay/ledger",
        "shop/admin",
        "shop/cart",
        "shop/web",
    ]
    ledger = result.policy("pay/ledger")
    assert ledger is not None and ledger.workloads == (f"spiffe://{TD}/ns/pay/*",)
    # team=ops needs the namespace inventory: that peer is listed and maps to nothing.
    assert _rules(result, "pay/ledger") == [
        ("ledger-from-api.ingress-0", ("pay/api",)),
        ("ledger-from-api.ingress-1", ("pay/fraud",)),
        ("ledger-metrics.ingress-0", ("ops/monitor",)),
    ]
    needs = {(f.kind, f.policy, f.field) for f in result.findings}
    assert (
        FindingKind.NEEDS_NAMESPACE_INVENTORY,
        "pay/ledger-from-api",
        "spec.ingress[1].from[0].namespaceSelector",
    ) in needs
    assert (FindingKind.NEEDS_POD_INVENTORY, "shop/admin-expressions", "spec.podSelector") in needs
    assert (
        FindingKind.NEEDS_POD_INVENTORY,
        "pay/api-from-shop-back",
        "spec.ingress[0].from[0].podSelector",
    ) in needs


def test_pods_without_the_scope_label_and_split_scopes_are_reported() -> None:
    policies = load_objects(CORPUS).policies
    pods = (
        Pod("shop", "web-a", (("app", "web"), ("tier", "front")), "web"),
        Pod("shop", "web-b", (("app", "web"), ("role", "x"), ("tier", "front")), "web"),
        Pod("shop", "loner", (("tier", "back"),), "loner"),
    )
    result = translate(policies, pods=pods, options=OPTIONS)
    kinds = {(f.kind, f.policy) for f in result.findings}
    assert (FindingKind.NO_SCOPE_LABEL, "shop/loner") in kinds
    assert (FindingKind.SCOPE_SPLIT, "shop/admin-expressions") in kinds


def test_scope_label_is_configurable() -> None:
    policies = load_objects(CORPUS).policies
    pods = (Pod("kube-system", "dns", (("k8s-app", "kube-dns"),), "coredns"),)
    result = translate(policies, pods=pods, options=SluiceOptions(scope_label="k8s-app"))
    assert [p.scope for p in result.policies] == ["kube-system/kube-dns"]


# -- equivalence with Kubernetes semantics ---------------------------------------------------
# The reference evaluator reads the raw YAML objects, not the model, so it shares no code with
# the translation. L3 only: ports are ignored, ipBlock never matches a pod.


def _ref_selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for req in selector.get("matchExpressions") or []:
        key, op, values = req["key"], req["operator"], req.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _ref_types(spec: Mapping[str, Any]) -> list[str]:
    if spec.get("policyTypes") is not None:
        return list(spec["policyTypes"])
    return ["Ingress", "Egress"] if spec.get("egress") else ["Ingress"]


def _ref_peer(policy_ns: str, peer: Mapping[str, Any], pod: Pod, ns_labels: Any) -> bool:
    if "ipBlock" in peer:
        ipaddress.ip_network(peer["ipBlock"]["cidr"], strict=False)  # pods have no address here
        return False
    if peer.get("namespaceSelector") is None:
        return pod.namespace == policy_ns and _ref_selects(peer.get("podSelector"), pod.label_map)
    if not _ref_selects(peer["namespaceSelector"], ns_labels[pod.namespace]):
        return False
    return peer.get("podSelector") is None or _ref_selects(peer["podSelector"], pod.label_map)


def _ref_allows(direction: str, subject: Pod, other: Pod, raws: list[Any], ns_labels: Any) -> bool:
    kind, rules_key, peers_key = {
        "in": ("Ingress", "ingress", "from"),
        "out": ("Egress", "egress", "to"),
    }[direction]
    selecting = [
        r
        for r in raws
        if (r["metadata"].get("namespace") or "default") == subject.namespace
        and _ref_selects(r["spec"]["podSelector"], subject.label_map)
        and kind in _ref_types(r["spec"])
    ]
    if not selecting:
        return True
    for raw in selecting:
        ns = raw["metadata"].get("namespace") or "default"
        for rule in raw["spec"].get(rules_key) or []:
            peers = rule.get(peers_key) or []
            if not peers or any(_ref_peer(ns, p, other, ns_labels) for p in peers):
                return True
    return False


def test_decide_agrees_with_kubernetes_semantics_for_every_workload_pair(tmp_path: Path) -> None:
    result, policies, pods, namespaces = _full()
    raws = [p.raw for p in policies]
    ns_labels = {n.name: n.label_map for n in namespaces}
    paths = [p for p in write_translation(result, tmp_path) if p.suffix == ".toml"]
    store = load_policy_store(paths)
    checked = allowed = 0
    for src in pods:
        for dst in pods:
            if src is dst:
                continue
            expected = _ref_allows("out", src, dst, raws, ns_labels) and _ref_allows(
                "in", dst, src, raws, ns_labels
            )
            decision = decide(_envelope(store, src, dst), store, NOW)
            assert decision.allow == expected, (src.name, dst.name, decision)
            checked += 1
            allowed += expected
    assert checked == 72
    assert 0 < allowed < checked  # both outcomes occur, so the comparison means something


def _scope(pod: Pod) -> str:
    return f"{pod.namespace}/{pod.label_map['app']}"


def _envelope(store: PolicyStore, src: Pod, dst: Pod) -> Any:
    current = store.current(_scope(src))
    assert current is not None
    return envelope(
        lineage=current.digest,
        origin_scope=_scope(src),
        destination_scope=_scope(dst),
        issuer=f"spiffe://{TD}/ns/{src.namespace}/sa/{src.service_account}",
        destination_id=f"spiffe://{TD}/ns/{dst.namespace}/sa/{dst.service_account}",
    )


@pytest.mark.parametrize("domains", [(), ("cilium.prod.example", "weave.prod.example")])
def test_origin_domains_are_added_to_every_rule(domains: tuple[str, ...]) -> None:
    policies = load_objects(CORPUS).policies
    inventory = load_objects(CORPUS / "inventory")
    result = translate(
        policies,
        pods=inventory.pods,
        namespaces=inventory.namespaces,
        options=SluiceOptions(trust_domain=TD, origin_domains=domains),
    )
    for policy in result.policies:
        for rule in policy.rules:
            assert tuple(d.name for d in rule.from_domains) == domains
