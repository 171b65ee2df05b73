"""``explain``: a decision told so a person can follow it, condition by condition.

It re-evaluates every rule of the destination revision straight from the model (``Rule``,
``IdPattern.matches``, ``scope_matches``), not from the compiled index ``decide`` uses, and shows
every condition of every rule (not only the first failing one). Because it is a second, simpler
implementation of the same rules, tests also use :func:`rule_reports` to cross-check ``decide``.
"""

from __future__ import annotations

from dataclasses import dataclass

from config.policy import LineageMode, Rule
from gateway.envelope.model import VerifiedEnvelope
from gateway.policy.compiled import window_for
from gateway.policy.decide import Decision, Stage
from gateway.policy.model import PolicyRevision
from gateway.policy.store import PolicyStore, lineage_problem
from gateway.reasons import Reason
from identity.anchor_contract import scope_matches

_STAGE_REASONS = {
    Stage.ORIGIN: Reason.ORIGIN_NOT_ALLOWED,
    Stage.TIER: Reason.TIER_TOO_LOW,
    Stage.TRANSIT: Reason.POLICY_TRANSIT_DENIED,
    Stage.HOPS: Reason.POLICY_HOP_LIMIT,
}


@dataclass(frozen=True, slots=True)
class ConditionReport:
    """One condition of one rule: ``holds`` is None when the rule does not set it."""

    stage: Stage
    name: str
    holds: bool | None
    text: str
    reason: Reason | None = None  # the denial reason when it does not hold


@dataclass(frozen=True, slots=True)
class RuleReport:
    rule: Rule
    conditions: tuple[ConditionReport, ...]

    @property
    def first_failure(self) -> ConditionReport | None:
        return next((c for c in self.conditions if c.holds is False), None)

    @property
    def allows(self) -> bool:
        return self.first_failure is None


def rule_reports(
    envelope: VerifiedEnvelope, revision: PolicyRevision, store: PolicyStore, now: int
) -> tuple[RuleReport, ...]:
    """Evaluate every rule of ``revision`` against ``envelope``, every condition of each."""
    return tuple(_report(rule, envelope, revision, store, now) for rule in revision.rules)


def explain(
    decision: Decision, envelope: VerifiedEnvelope, store: PolicyStore, *, now: int | None = None
) -> str:
    """Multi-line text saying which revision applied, which rules were considered and which of
    their conditions held or failed.

    Args:
        decision: what :func:`decide` returned for ``envelope``.
        envelope: the envelope decided on.
        store: the store it was decided with.
        now: the time passed to ``decide``; when omitted, the envelope's ``issued_at`` is used to
            re-evaluate lineage time windows, and the text says so.

    Returns:
        The explanation (no trailing newline).
    """
    claims = envelope.claims
    tiers = store.tiers
    verdict = "ALLOW" if decision.allow else "DENY"
    lines = [
        f"decision: {verdict} (reason {decision.reason.value}, rule {decision.rule})",
        f"  {decision.detail}",
        f"envelope: {claims.origin_scope!r} -> {claims.destination_scope!r}, issuer "
        f"{claims.issuer}, tier {tiers.label(claims.tier)}, {envelope.hops} hop(s)"
        + (f", destination id {claims.destination_id}" if claims.destination_id else ""),
        f"  lineage {claims.lineage.hex()}: {_lineage_text(store, claims.lineage)}",
    ]
    for stamp in envelope.stamps:
        lines.append(f"  hop {stamp.claims.hop}: stamped by {stamp.claims.gateway}")
    revision = store.revision(decision.revision)
    if revision is None:
        lines.append(f"destination policy: none for scope {claims.destination_scope!r}")
        return "\n".join(lines)
    revoked = " (REVOKED)" if store.is_revoked(revision.digest) else ""
    lines.append(
        f"destination policy: scope {revision.scope!r} revision {revision.number}{revoked}, "
        f"hash {revision.digest.hex()}"
    )
    if not revision.rules:
        lines.append("rules: none (everything is denied)")
        return "\n".join(lines)
    when = now if now is not None else claims.issued_at
    if now is None:
        lines.append("  (lineage time windows evaluated at the envelope's issued_at)")
    lines.append("rules, in order (the first whose conditions all hold allows):")
    for position, report in enumerate(rule_reports(envelope, revision, store, when), start=1):
        failure = report.first_failure
        status = "ALLOWS" if failure is None else f"does not allow: {failure.name}"
        marker = " <- applied" if report.rule.id == decision.rule else ""
        lines.append(f"  [{position}] {report.rule.id}: {status}{marker}")
        for condition in report.conditions:
            mark = {True: "ok", False: "FAILED", None: "-"}[condition.holds]
            lines.append(f"        {condition.name:<9} {mark:<6} {condition.text}")
    return "\n".join(lines)


def _lineage_text(store: PolicyStore, lineage: bytes) -> str:
    revision = store.revision(lineage)
    if revision is None:
        return "not a known policy revision"
    current = store.current(revision.scope)
    state = (
        "revoked"
        if store.is_revoked(lineage)
        else (
            "current" if current is revision else f"current is {current.number if current else '?'}"
        )
    )
    return f"scope {revision.scope!r} revision {revision.number} ({state})"


def _report(
    rule: Rule, envelope: VerifiedEnvelope, revision: PolicyRevision, store: PolicyStore, now: int
) -> RuleReport:
    claims = envelope.claims
    tiers = store.tiers
    conditions: list[ConditionReport] = []

    def add(
        stage: Stage, name: str, holds: bool | None, text: str, reason: Reason | None = None
    ) -> None:
        conditions.append(
            ConditionReport(stage, name, holds, text, reason or _STAGE_REASONS.get(stage))
        )

    if rule.from_scopes:
        hit = next((p for p in rule.from_scopes if scope_matches(p, claims.origin_scope)), None)
        add(
            Stage.ORIGIN,
            "scope",
            hit is not None,
            f"{claims.origin_scope!r} matches {hit}"
            if hit
            else f"{claims.origin_scope!r} matches none of {', '.join(rule.from_scopes)}",
        )
    if rule.from_ids:
        id_hit = next((p for p in rule.from_ids if p.matches(claims.issuer)), None)
        add(
            Stage.ORIGIN,
            "issuer",
            id_hit is not None,
            f"{claims.issuer} matches {id_hit}"
            if id_hit
            else f"{claims.issuer} matches none of {', '.join(map(str, rule.from_ids))}",
        )
    if rule.from_domains:
        domain = claims.issuer.trust_domain
        add(
            Stage.ORIGIN,
            "domain",
            domain in rule.from_domains,
            f"trust domain {domain} is "
            + (
                "listed"
                if domain in rule.from_domains
                else f"not among {', '.join(d.name for d in rule.from_domains)}"
            ),
        )
    add(
        Stage.TIER,
        "tier",
        claims.tier >= rule.min_tier,
        f"{tiers.label(claims.tier)} against minimum {tiers.label(rule.min_tier)}",
    )
    if rule.transit_gateways or rule.transit_domains:
        outsiders = [
            str(s.claims.gateway)
            for s in envelope.stamps
            if not any(p.matches(s.claims.gateway) for p in rule.transit_gateways)
            and s.claims.gateway.trust_domain not in rule.transit_domains
        ]
        add(
            Stage.TRANSIT,
            "transit",
            not outsiders,
            "every stamping gateway is allowed"
            if not outsiders
            else f"not allowed to carry it: {', '.join(outsiders)}",
        )
    else:
        add(Stage.TRANSIT, "transit", None, "any gateway may carry it")
    if rule.max_hops is not None:
        add(
            Stage.HOPS,
            "hops",
            envelope.hops <= rule.max_hops,
            f"{envelope.hops} hop(s) against a limit of {rule.max_hops}",
        )
    else:
        add(Stage.HOPS, "hops", None, "no hop limit in this rule")
    if rule.lineage is LineageMode.ANY:
        add(Stage.LINEAGE, "lineage", None, 'not checked (lineage = "any")')
    else:
        window = window_for(revision, claims.origin_scope)
        problem = lineage_problem(
            store.lineage_fact(claims.lineage), claims.origin_scope, window, now
        )
        if problem is None:
            add(Stage.LINEAGE, "lineage", True, "accepted")
        else:
            add(Stage.LINEAGE, "lineage", False, problem[1], problem[0])
    return RuleReport(rule, tuple(conditions))
