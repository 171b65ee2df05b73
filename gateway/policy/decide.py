"""``decide``: the destination policy check, a pure function on the hot path.

Theory of operation (docs/policy.md, "Decision order"):

1. The destination scope's current revision is looked up in the store's index. None, or a revoked
   one: deny ``no_policy`` (rule ``default-deny``).
2. If the envelope names a destination SPIFFE ID, the revision's ``workloads`` must list it (an
   empty list lists nothing): otherwise deny ``destination_mismatch`` (rule ``destination``).
   Without this, a sender could borrow a permissive scope's policy for another workload.
3. Rules are tried in order; the first whose conditions all hold allows. A rule's conditions are
   checked in a fixed order, each with its own reason: origin (``origin_not_allowed``), tier
   (``tier_too_low``), transit (``policy_transit_denied``), hops (``policy_hop_limit``), lineage
   (``lineage_unknown`` / ``lineage_revoked`` / ``lineage_outside_grace``).
4. No rule allows: deny, reporting the *closest* rule, the one that got furthest through that
   order (the first such rule on a tie), with its failing condition's reason, so people read
   "tier too low for rule X" rather than "no rule". When no rule even matched the origin, the
   reason is ``origin_not_allowed`` under rule ``default-deny``; a revision with no rules denies
   ``no_matching_rule``.

Everything per rule was compiled when the store was built (``gateway.policy.compiled``); here
there is only string set membership, prefix tests and integer comparisons, and the lineage check
is done at most once per envelope.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gateway.envelope.frozen import positional_builder
from gateway.envelope.model import VerifiedEnvelope
from gateway.policy.compiled import CompiledRule, CompiledScope
from gateway.policy.model import ZERO_HASH
from gateway.policy.store import PolicyStore, lineage_problem
from gateway.reasons import Reason

DEFAULT_DENY = "default-deny"
DESTINATION_RULE = "destination"


class Stage(enum.IntEnum):
    """A rule's conditions, in the order they are checked; higher = closer to allowing."""

    ORIGIN = 0
    TIER = 1
    TRANSIT = 2
    HOPS = 3
    LINEAGE = 4


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of :func:`decide`.

    Attributes:
        allow: True only when a rule allowed the envelope.
        rule: the allowing rule's id; for a denial, the closest rule's id, or ``default-deny``
            / ``destination``.
        reason: ``Reason.ALLOWED`` or the denial's policy reason code.
        revision: hash of the destination revision applied (32 zero bytes when there was none).
        detail: one human-readable sentence.
    """

    allow: bool
    rule: str
    reason: Reason
    revision: bytes
    detail: str


def decide(envelope: VerifiedEnvelope, store: PolicyStore, now: int) -> Decision:
    """Decide whether the destination scope's policy admits ``envelope``.

    Args:
        envelope: a verified envelope (signature, anchor, stamps and routing already checked).
        store: the policy snapshot.
        now: unix seconds, for lineage grace windows measured in time.

    Returns:
        The :class:`Decision`. Never raises for a verified envelope and a built store.
    """
    claims = envelope.claims
    scope = store.compiled(claims.destination_scope)
    if scope is None:
        return Decision(
            False, DEFAULT_DENY, Reason.NO_POLICY, ZERO_HASH,
            f"no policy for destination scope {claims.destination_scope!r}",
        )  # fmt: skip
    digest = scope.revision.digest
    if scope.revoked:
        return Decision(
            False, DEFAULT_DENY, Reason.NO_POLICY, digest,
            f"the current policy revision {scope.revision.number} of "
            f"{claims.destination_scope!r} is revoked",
        )  # fmt: skip
    destination_id = claims.destination_id
    if destination_id is not None and str(destination_id) not in scope.workloads:
        return Decision(
            False, DESTINATION_RULE, Reason.DESTINATION_MISMATCH, digest,
            f"{destination_id} is not a workload of scope {claims.destination_scope!r}",
        )  # fmt: skip
    if not scope.rules:
        return Decision(
            False, DEFAULT_DENY, Reason.NO_MATCHING_RULE, digest,
            f"revision {scope.revision.number} of {claims.destination_scope!r} has no rules",
        )  # fmt: skip
    return _try_rules(envelope, store, scope, now)


def _try_rules(
    envelope: VerifiedEnvelope, store: PolicyStore, scope: CompiledScope, now: int
) -> Decision:
    claims = envelope.claims
    origin = claims.origin_scope
    issuer = claims.issuer
    issuer_text = str(issuer)
    issuer_domain = issuer.trust_domain.name
    tier = claims.tier
    hops = len(envelope.stamps)
    gateways: list[tuple[str, str]] | None = None
    lineage_known = False  # the lineage check runs at most once, and only if a rule needs it
    lineage: tuple[Reason, str] | None = None
    best: CompiledRule | None = None
    best_stage = -1
    best_reason = Reason.ORIGIN_NOT_ALLOWED
    for rule in scope.rules:
        if (
            (rule.scopes is not None and origin not in rule.scopes)
            or (rule.ids is not None and issuer_text not in rule.ids)
            or (rule.domains is not None and issuer_domain not in rule.domains)
        ):
            continue  # ORIGIN: the lowest stage, never better than "no rule matched the origin"
        if tier < rule.min_tier:
            stage, reason = Stage.TIER, Reason.TIER_TOO_LOW
        else:
            if rule.transit_ids is not None:
                if gateways is None:
                    gateways = [
                        (str(s.claims.gateway), s.claims.gateway.trust_domain.name)
                        for s in envelope.stamps
                    ]
                transit_ok = all(
                    text in rule.transit_ids or domain in rule.transit_domains
                    for text, domain in gateways
                )
            else:
                transit_ok = True
            if not transit_ok:
                stage, reason = Stage.TRANSIT, Reason.POLICY_TRANSIT_DENIED
            elif 0 <= rule.max_hops < hops:
                stage, reason = Stage.HOPS, Reason.POLICY_HOP_LIMIT
            elif rule.lineage_checked:
                if not lineage_known:
                    lineage_known = True
                    lineage = lineage_problem(
                        store.lineage_fact(claims.lineage), origin, scope.window_for(origin), now
                    )
                if lineage is None:
                    return _allowed(scope, rule, origin, claims.destination_scope)
                stage, reason = Stage.LINEAGE, lineage[0]
            else:
                return _allowed(scope, rule, origin, claims.destination_scope)
        if stage > best_stage:
            best, best_stage, best_reason = rule, stage, reason
    if best is None:
        return Decision(
            False, DEFAULT_DENY, Reason.ORIGIN_NOT_ALLOWED, scope.revision.digest,
            f"no rule of {claims.destination_scope!r} revision {scope.revision.number} admits "
            f"origin {origin!r} / {issuer_text}",
        )  # fmt: skip
    detail = _failure_detail(envelope, store, best, best_reason, lineage)
    return Decision(False, best.rule.id, best_reason, scope.revision.digest, detail)


# Every allowed envelope builds one Decision; the builder skips the frozen per-field stores.
_build_decision = positional_builder(Decision)


def _allowed(scope: CompiledScope, rule: CompiledRule, origin: str, destination: str) -> Decision:
    return _build_decision(
        True, rule.rule.id, Reason.ALLOWED, scope.revision.digest,
        f"rule {rule.rule.id} allows {origin!r} -> {destination!r} "
        f"(revision {scope.revision.number})",
    )  # fmt: skip


def _failure_detail(
    envelope: VerifiedEnvelope,
    store: PolicyStore,
    rule: CompiledRule,
    reason: Reason,
    lineage: tuple[Reason, str] | None,
) -> str:
    rule_id = rule.rule.id
    if reason is Reason.TIER_TOO_LOW:
        tiers = store.tiers
        return (
            f"tier {tiers.label(envelope.claims.tier)} is below "
            f"{tiers.label(rule.min_tier)} required by rule {rule_id}"
        )
    if reason is Reason.POLICY_TRANSIT_DENIED:
        outsiders = [
            str(s.claims.gateway)
            for s in envelope.stamps
            if rule.transit_ids is not None
            and str(s.claims.gateway) not in rule.transit_ids
            and s.claims.gateway.trust_domain.name not in rule.transit_domains
        ]
        return f"carried by {', '.join(outsiders)}, not a transit allowed by rule {rule_id}"
    if reason is Reason.POLICY_HOP_LIMIT:
        return f"{envelope.hops} hops exceed the {rule.max_hops} allowed by rule {rule_id}"
    if lineage is not None:
        return f"{lineage[1]} (rule {rule_id})"
    return f"rule {rule_id} denied: {reason.value}"
