"""Serialisations of a :class:`GovernanceGraph`: a JSON document and Graphviz DOT.

What is drawn (DOT), and why: scopes are nodes grouped in one cluster per trust domain (the
scope -> trust-domain membership is the cluster, not an edge, which keeps a 500-scope graph
readable); gateways are boxes inside their trust domain's cluster; flows are edges, green for
allowed and red dashed for refused, labelled with their count; policy revisions are notes joined
to the gateways that applied them by dotted edges. The JSON carries everything, membership edges
included. Scope names and other strings are attacker-influenced: they are escaped, never trusted.
"""

from __future__ import annotations

import json
from typing import Any

from gateway.audit.graph import Flow, GovernanceGraph, Sample

JSON_FORMAT = "sluice-governance-graph"
JSON_VERSION = 1
ALLOW_COLOUR = "#2a9d5c"
DENY_COLOUR = "#d1495b"


def scope_id(name: str) -> str:
    return "scope:" + name


def td_id(name: str) -> str:
    return "td:" + name


def gateway_id(name: str) -> str:
    return "gateway:" + name


def revision_id(rev: str) -> str:
    return "revision:" + rev


def _hist(pairs: tuple[tuple[str, int], ...]) -> list[list[Any]]:
    return [[k, n] for k, n in pairs]


def _sample(s: Sample) -> dict[str, Any]:
    return {"envelope_id": s.envelope_id, "ts_ms": s.ts_ms, "reason": s.reason, "rule": s.rule,
            "gateway": s.gateway, "from": s.from_, "to": s.to}


def flow_json(f: Flow) -> dict[str, Any]:
    """One flow edge as JSON (the shape documented in docs/audit.md)."""
    return {
        "kind": "flow", "source": scope_id(f.origin), "target": scope_id(f.destination),
        "origin": f.origin, "destination": f.destination, "decision": f.decision.value,
        "count": f.count, "first_ms": f.first_ms, "last_ms": f.last_ms,
        "reasons": _hist(f.reasons), "rules": _hist(f.rules), "lineages": _hist(f.lineages),
        "policy_revisions": _hist(f.policy_revisions), "gateways": _hist(f.gateways),
        "hops": _hist(f.hops), "trust_domains": _hist(f.trust_domains),
        "samples": [_sample(s) for s in f.samples], "buckets": [[b, n] for b, n in f.buckets],
    }


def to_json(graph: GovernanceGraph, *, max_flows: int | None = None) -> dict[str, Any]:
    """The graph as a JSON-able document.

    Args:
        graph: the aggregated graph.
        max_flows: keep only the largest flows (they are sorted by count); ``None`` keeps all.
            ``flows_total`` always gives the full number.

    Returns:
        ``{"format", "version", "records", ..., "nodes": [...], "edges": [...]}``.
    """
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []
    for td in graph.trust_domains:
        nodes.append({"id": td_id(td), "kind": "trust_domain", "name": td})
    for s in graph.scopes:
        nodes.append({"id": scope_id(s.name), "kind": "scope", "name": s.name,
                      "trust_domain": s.trust_domain, "sent": s.sent, "received": s.received})
        for td, n in s.trust_domains:
            if td != "(other)":
                edges.append({"kind": "member_of", "source": scope_id(s.name),
                              "target": td_id(td), "count": n})
    for g in graph.gateways:
        nodes.append({"id": gateway_id(g.id), "kind": "gateway", "name": g.id,
                      "trust_domain": g.trust_domain, "allowed": g.allowed, "denied": g.denied})
        if g.trust_domain:
            edges.append({"kind": "gateway_of", "source": gateway_id(g.id),
                          "target": td_id(g.trust_domain)})
    for r in graph.revisions:
        nodes.append({"id": revision_id(r.revision), "kind": "policy_revision",
                      "name": r.revision, "allowed": r.allowed, "denied": r.denied})
    for a in graph.applied:
        edges.append({"kind": "applied", "source": gateway_id(a.gateway),
                      "target": revision_id(a.revision), "allowed": a.allowed,
                      "denied": a.denied})
    flows = graph.flows if max_flows is None else graph.flows[:max_flows]
    edges.extend(flow_json(f) for f in flows)
    return {
        "format": JSON_FORMAT, "version": JSON_VERSION, "records": graph.records,
        "filtered_out": graph.filtered_out, "overflow_records": graph.overflow_records,
        "first_ms": graph.first_ms, "last_ms": graph.last_ms, "bucket_ms": graph.bucket_ms,
        "flows_total": len(graph.flows), "nodes": nodes, "edges": edges,
    }


def render_json(graph: GovernanceGraph) -> str:
    """The JSON document of :func:`to_json` as text (sorted keys, one line, ASCII)."""
    return json.dumps(to_json(graph), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def dot_quote(text: str) -> str:
    """A DOT double-quoted string for any text: backslashes, quotes and controls escaped."""
    out = text.replace("\\", "\\\\").replace('"', '\\"')
    out = "".join(ch if ch >= " " and ch != "\x7f" else " " for ch in out)
    return '"' + out + '"'


def _short(rev: str) -> str:
    return rev[:12] if rev else "(none)"


def render_dot(graph: GovernanceGraph, *, max_flows: int | None = None) -> str:
    """The graph in Graphviz DOT (``dot -Tsvg`` draws it).

    Args:
        graph: the aggregated graph.
        max_flows: draw only the largest flows; ``None`` draws all.

    Returns:
        The DOT source, deterministic for a given graph.
    """
    lines = [
        "digraph governance {",
        '  graph [rankdir=LR, fontname="Helvetica", fontsize=11, '
        f'label={dot_quote(_title(graph))}, labelloc=t];',
        '  node [fontname="Helvetica", fontsize=10, shape=ellipse];',
        '  edge [fontname="Helvetica", fontsize=9];',
    ]
    by_td: dict[str, list[str]] = {}
    for s in graph.scopes:
        by_td.setdefault(s.trust_domain, []).append(
            f"    {dot_quote(scope_id(s.name))} [label={dot_quote(s.name)}];")
    for g in graph.gateways:
        by_td.setdefault(g.trust_domain, []).append(
            f"    {dot_quote(gateway_id(g.id))} [shape=box, style=filled, fillcolor=\"#eef2f7\", "
            f"label={dot_quote('gateway ' + g.id)}];")
    for n, td in enumerate(sorted(k for k in by_td if k)):
        lines.append(f"  subgraph cluster_{n} {{")
        lines.append(f"    label={dot_quote('trust domain ' + td)}; style=rounded; "
                     'color="#8899aa";')
        lines.extend(by_td[td])
        lines.append("  }")
    lines.extend(x[2:] for x in by_td.get("", []))
    for r in graph.revisions:
        lines.append(f"  {dot_quote(revision_id(r.revision))} [shape=note, "
                     f"label={dot_quote('policy revision ' + _short(r.revision))}];")
    for a in graph.applied:
        lines.append(f"  {dot_quote(gateway_id(a.gateway))} -> {dot_quote(revision_id(a.revision))}"
                     f" [style=dotted, arrowhead=none, color=\"#8899aa\", "
                     f"label={dot_quote(f'{a.allowed} allowed / {a.denied} refused')}];")
    flows = graph.flows if max_flows is None else graph.flows[:max_flows]
    for f in flows:
        allow = f.decision.value == "allow"
        reasons = ", ".join(f"{k} x{n}" for k, n in f.reasons)
        attrs = [
            f"color={dot_quote(ALLOW_COLOUR if allow else DENY_COLOUR)}",
            f"label={dot_quote(str(f.count))}",
            f"tooltip={dot_quote(f'{f.decision.value}: {reasons}')}",
        ]
        if not allow:
            attrs.append("style=dashed")
        lines.append(f"  {dot_quote(scope_id(f.origin))} -> {dot_quote(scope_id(f.destination))}"
                     f" [{', '.join(attrs)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _title(graph: GovernanceGraph) -> str:
    shown = f"{graph.records} decisions, {len(graph.flows)} flows"
    return f"sluice governance flow: {shown}"
