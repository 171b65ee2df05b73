"""NetworkPolicy -> CiliumNetworkPolicy, rule for rule as Cilium's own translator does it.

Theory of operation: at S5 the original NetworkPolicies are restored and Cilium enforces them
through ``ParseNetworkPolicy`` (cilium/cilium ``pkg/k8s/network_policy.go``). This module writes
the ``cilium.io/v2`` CiliumNetworkPolicy that translator produces, so a platform engineer can
review the end state before S5 (``cilium policy get`` shows the same selectors). What it does,
mirrored here:

- Every selector key gets the label source prefix ``k8s:``.
- ``endpointSelector`` = the policy's ``podSelector`` plus ``io.kubernetes.pod.namespace=<ns>``.
- A peer with a ``podSelector`` only: that selector plus ``io.kubernetes.pod.namespace=<ns>``.
- A peer with a ``namespaceSelector``: its keys prefixed ``io.cilium.k8s.namespace.labels.``,
  merged with the peer's ``podSelector`` (AND; no namespace pinning); an empty
  ``namespaceSelector`` becomes ``io.kubernetes.pod.namespace Exists`` (any namespace).
- Each peer becomes its own ingress/egress rule (OR), each carrying the rule's ``toPorts``.
- A rule without peers becomes ``fromEndpoints: [{}]`` / ``toEndpoints: [{}]`` (wildcard).
- ``ipBlock`` becomes ``fromCIDRSet`` / ``toCIDRSet`` entries ``{cidr, except}``.
- Ports: protocol default TCP, port ``"0"`` when absent, named ports kept as names; ``endPort``
  is kept (the Cilium versions that support NetworkPolicy ``endPort`` pass it through as the
  port range end; the oldest translators drop it, see docs/migration-policies.md).
- Default deny: no ingress rules and (``Ingress`` written in policyTypes, or ``Egress`` not
  written) gives ``ingress: [{}]``; no egress rules and ``Egress`` written gives ``egress: [{}]``.

Cilium reads the ``policyTypes`` as written, Kubernetes the defaulted list; where that changes the
outcome (ingress rules in a policy whose written policyTypes is ``[Egress]``) the divergence is
returned by :func:`cilium_divergences` so the report lists it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

from gateway.migration.netpol_model import (
    IPBlock,
    LabelSelector,
    NetworkPolicy,
    Peer,
    PolicyPort,
    PolicyRule,
    PolicyType,
)

CILIUM_API = "cilium.io/v2"
SOURCE_PREFIX = "k8s:"
POD_NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
NAMESPACE_LABELS_PREFIX = "io.cilium.k8s.namespace.labels."


def to_cilium(policy: NetworkPolicy) -> dict[str, Any]:
    """The CiliumNetworkPolicy object for one NetworkPolicy.

    Returns:
        A plain mapping ready for ``yaml.safe_dump`` (keys in the order Cilium documents them).
    """
    ns = policy.namespace
    ingress: list[dict[str, Any]] = []
    for rule in policy.ingress:
        ingress.extend(_rules(rule, ns, "fromEndpoints", "fromCIDRSet"))
    egress: list[dict[str, Any]] = []
    for rule in policy.egress:
        egress.extend(_rules(rule, ns, "toEndpoints", "toCIDRSet"))
    written = set(policy.policy_types) if policy.policy_types_given else set()
    if not ingress and (PolicyType.INGRESS in written or PolicyType.EGRESS not in written):
        ingress = [{}]
    if not egress and PolicyType.EGRESS in written:
        egress = [{}]
    spec: dict[str, Any] = {
        "endpointSelector": _selector(policy.pod_selector, pin_namespace=ns),
    }
    if ingress:
        spec["ingress"] = ingress
    if egress:
        spec["egress"] = egress
    return {
        "apiVersion": CILIUM_API,
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": policy.name, "namespace": ns},
        "spec": spec,
    }


def to_cilium_yaml(policies: Iterable[NetworkPolicy]) -> str:
    """A multi-document YAML stream of the translated policies, in the given order."""
    return yaml.safe_dump_all(
        [to_cilium(p) for p in policies], sort_keys=False, default_flow_style=False
    )


def cilium_divergences(policy: NetworkPolicy) -> tuple[tuple[str, str], ...]:
    """Where Cilium's translation of ``policy`` does not mean what Kubernetes means.

    Returns:
        ``(field path, reason)`` pairs (empty for almost every policy).
    """
    out: list[tuple[str, str]] = []
    if policy.policy_types_given and PolicyType.INGRESS not in policy.policy_types:
        for i, _rule in enumerate(policy.ingress):
            out.append(
                (
                    f"spec.ingress[{i}]",
                    "Kubernetes ignores ingress rules when policyTypes omits Ingress, but "
                    "Cilium's translator still enforces them (the pods become ingress-isolated)",
                )
            )
    return tuple(out)


def _rules(
    rule: PolicyRule, namespace: str, endpoints_key: str, cidr_key: str
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if not rule.peers:
        out.append({endpoints_key: [{}]})
    for peer in rule.peers:
        entry: dict[str, Any] = {}
        selector = _peer_selector(peer, namespace)
        if selector is not None:
            entry[endpoints_key] = [selector]
        if peer.ip_block is not None:
            entry[cidr_key] = [_cidr_rule(peer.ip_block)]
        out.append(entry)
    if rule.ports:
        ports = [_port_rule(p) for p in rule.ports]
        for entry in out:
            entry["toPorts"] = ports
    return out


def _peer_selector(peer: Peer, namespace: str) -> dict[str, Any] | None:
    if peer.namespace_selector is not None:
        ns_selector = peer.namespace_selector
        labels = {NAMESPACE_LABELS_PREFIX + k: v for k, v in ns_selector.match_labels}
        expressions = [
            _expression(NAMESPACE_LABELS_PREFIX + r.key, r.operator.value, r.values)
            for r in ns_selector.match_expressions
        ]
        if ns_selector.empty:
            expressions = [_expression(POD_NAMESPACE_LABEL, "Exists", ())]
        if peer.pod_selector is not None:
            labels.update(dict(peer.pod_selector.match_labels))
            expressions.extend(
                _expression(r.key, r.operator.value, r.values)
                for r in peer.pod_selector.match_expressions
            )
        return _assemble(labels, expressions)
    if peer.pod_selector is not None:
        return _selector(peer.pod_selector, pin_namespace=namespace)
    return None


def _selector(selector: LabelSelector, *, pin_namespace: str) -> dict[str, Any]:
    labels = dict(selector.match_labels)
    labels[POD_NAMESPACE_LABEL] = pin_namespace
    expressions = [
        _expression(r.key, r.operator.value, r.values) for r in selector.match_expressions
    ]
    return _assemble(labels, expressions)


def _assemble(labels: dict[str, str], expressions: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if labels:
        out["matchLabels"] = {SOURCE_PREFIX + k: labels[k] for k in sorted(labels)}
    if expressions:
        out["matchExpressions"] = expressions
    return out


def _expression(key: str, operator: str, values: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {"key": SOURCE_PREFIX + key, "operator": operator}
    if values:
        out["values"] = list(values)
    return out


def _cidr_rule(block: IPBlock) -> dict[str, Any]:
    out: dict[str, Any] = {"cidr": block.cidr}
    if block.except_:
        out["except"] = list(block.except_)
    return out


def _port_rule(port: PolicyPort) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "port": "0" if port.port is None else str(port.port),
        "protocol": port.protocol.value,
    }
    if port.end_port is not None:
        entry["endPort"] = port.end_port
    return {"ports": [entry]}
