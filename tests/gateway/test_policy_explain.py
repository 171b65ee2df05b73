"""explain(): what a person reads, and a Hypothesis cross-check of decide against explain's own
straight-from-the-model evaluation of every rule."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from config.policy import LineageMode, LineageWindow, Rule
from gateway.envelope.model import VerifiedEnvelope
from gateway.policy import (
    DEFAULT_DENY,
    DESTINATION_RULE,
    PolicyStore,
    decide,
    explain,
    rule_reports,
)
from gateway.policy.decide import Stage
from gateway.reasons import Reason
from identity import parse_trust_domain
from tests.gateway.test_policy_helpers import (
    GATEWAY_A,
    GATEWAY_B,
    NOW,
    Spec,
    chain,
    envelope,
    ids,
    ledger_store,
)


def test_explain_a_tier_denial() -> None:
    store, origin = ledger_store()
    env = envelope(lineage=origin[0].digest, tier=0, gateways=(GATEWAY_A,))
    decision = decide(env, store, NOW)
    text = explain(decision, env, store, now=NOW)
    lines = text.splitlines()
    assert lines[0] == "decision: DENY (reason tier_too_low, rule allow-ledger-from-payments)"
    ledger = store.current("payments/ledger")
    assert ledger is not None
    assert f"revision 1, hash {ledger.digest.hex()}" in text
    assert f"hop 1: stamped by {GATEWAY_A}" in text
    assert "scope 'payments/api' revision 1 (current is 3)" in text
    assert "  [1] allow-ledger-from-payments: does not allow: tier <- applied" in lines
    assert any(line.split() == ["tier", "FAILED", "0", "(public)", "against", "minimum", "1",
                                "(internal)"] for line in lines)  # fmt: skip
    assert any("lineage" in line and "FAILED" in line and "2 behind" in line for line in lines)
    assert "  [2] allow-audit-restricted: does not allow: domain" in lines


def test_explain_an_allow_and_unset_conditions() -> None:
    store, origin = ledger_store()
    env = envelope(lineage=origin[-1].digest)
    text = explain(decide(env, store, NOW), env, store)
    assert text.startswith("decision: ALLOW (reason allowed, rule allow-ledger-from-payments)")
    assert "[1] allow-ledger-from-payments: ALLOWS <- applied" in text
    assert "any gateway may carry it" in text and "no hop limit in this rule" in text
    assert "evaluated at the envelope's issued_at" in text


def test_explain_without_a_policy() -> None:
    store, _ = ledger_store()
    env = envelope(lineage=b"\x03" * 32, destination_scope="hr/payroll")
    text = explain(decide(env, store, NOW), env, store, now=NOW)
    assert "reason no_policy, rule default-deny" in text
    assert "destination policy: none for scope 'hr/payroll'" in text
    assert "not a known policy revision" in text


def test_explain_lineage_any() -> None:
    rule = Rule("any", from_scopes=("*",), lineage=LineageMode.ANY)
    store, _ = ledger_store((rule,))
    env = envelope(lineage=b"\x03" * 32)
    assert 'not checked (lineage = "any")' in explain(decide(env, store, NOW), env, store, now=NOW)


# -- property: decide agrees with the independent evaluation ---------------------------------

SCOPES = ["payments/api", "payments/batch", "hr/x"]
ISSUERS = [
    "spiffe://weave.prod.example/ns/payments/sa/api",
    "spiffe://cilium.prod.example/ns/payments/sa/api",
    "spiffe://partner.example/orders",
]
GATEWAYS = [GATEWAY_A, GATEWAY_B, "spiffe://elsewhere.example/gw"]
DOMAINS = ["weave.prod.example", "cilium.prod.example", "partner.example"]

rules_strategy = st.lists(
    st.builds(
        lambda i, scopes, idents, domains, tier, tgw, tdom, hops, any_lineage: Rule(
            f"r{i}",
            from_scopes=tuple(scopes) or (() if idents or domains else ("*",)),
            from_ids=ids(*idents),
            from_domains=tuple(parse_trust_domain(d) for d in domains),
            min_tier=tier,
            transit_gateways=ids(*tgw),
            transit_domains=tuple(parse_trust_domain(d) for d in tdom),
            max_hops=hops,
            lineage=LineageMode.ANY if any_lineage else LineageMode.MANAGED,
        ),
        st.integers(0, 10_000),
        st.lists(st.sampled_from(["payments/*", "payments/api", "hr/x", "*"]), max_size=2),
        st.lists(st.sampled_from([*ISSUERS, "spiffe://weave.prod.example/ns/*"]), max_size=2),
        st.lists(st.sampled_from(DOMAINS), max_size=2),
        st.integers(0, 3),
        st.lists(st.sampled_from([*GATEWAYS, "spiffe://cilium.prod.example/*"]), max_size=2),
        st.lists(st.sampled_from(DOMAINS), max_size=1),
        st.none() | st.integers(0, 3),
        st.booleans(),
    ),
    max_size=5,
    unique_by=lambda r: r.id,
)


@st.composite
def cases(draw: st.DrawFn) -> tuple[VerifiedEnvelope, PolicyStore, int]:
    origin_count = draw(st.integers(1, 4))
    origin = chain(
        "payments/api",
        [
            Spec(issued_at=NOW - 1000 * (origin_count - n), revokes_numbers=revokes)
            for n, revokes in enumerate(
                [()] * (origin_count - 1) + [tuple(draw(st.sets(st.integers(1, origin_count - 1))))
                                             if origin_count > 1 else ()]
            )
        ],
    )  # fmt: skip
    window = LineageWindow(
        ("payments/*",),
        grace_revisions=draw(st.none() | st.integers(0, 3)),
        grace_seconds=draw(st.none() | st.integers(0, 3000)),
    )
    store, _ = ledger_store(
        tuple(draw(rules_strategy)),
        lineage=draw(st.sampled_from([(), (window,)])),
        workloads=draw(st.sampled_from([(), ids("spiffe://cilium.prod.example/ns/payments/*")])),
        origin=origin,
    )
    env = envelope(
        lineage=draw(st.sampled_from([r.digest for r in origin] + [b"\x00" * 32])),
        origin_scope=draw(st.sampled_from(SCOPES)),
        destination_scope=draw(st.sampled_from(["payments/ledger", "payments/ledger", "nope/x"])),
        issuer=draw(st.sampled_from(ISSUERS)),
        tier=draw(st.integers(0, 3)),
        destination_id=draw(
            st.sampled_from([None, None, "spiffe://cilium.prod.example/ns/payments/sa/ledger"])
        ),
        gateways=tuple(draw(st.lists(st.sampled_from(GATEWAYS), max_size=4))),
    )
    return env, store, NOW + draw(st.integers(0, 4000))


@settings(max_examples=400, deadline=None)
@given(cases())
def test_decide_never_raises_and_agrees_with_the_model(
    case: tuple[VerifiedEnvelope, PolicyStore, int],
) -> None:
    env, store, now = case
    decision = decide(env, store, now)
    assert isinstance(explain(decision, env, store, now=now), str)
    revision = store.current(env.claims.destination_scope)
    if revision is None:
        assert (decision.allow, decision.reason) == (False, Reason.NO_POLICY)
        return
    assert decision.revision == revision.digest
    if env.claims.destination_id is not None and not any(
        p.matches(env.claims.destination_id) for p in revision.workloads
    ):
        assert (decision.rule, decision.reason) == (DESTINATION_RULE, Reason.DESTINATION_MISMATCH)
        return
    reports = rule_reports(env, revision, store, now)
    allowing = [r for r in reports if r.allows]
    if decision.allow:
        # Allow implies the named rule is the first whose every condition holds.
        assert allowing and allowing[0].rule.id == decision.rule
        assert all(c.holds is not False for c in allowing[0].conditions)
        return
    assert not allowing
    if not reports:
        assert decision.reason is Reason.NO_MATCHING_RULE
        return
    stages = [r.first_failure.stage for r in reports if r.first_failure]
    if max(stages) == Stage.ORIGIN:
        assert (decision.rule, decision.reason) == (DEFAULT_DENY, Reason.ORIGIN_NOT_ALLOWED)
        return
    closest = next(r for r in reports if r.first_failure and r.first_failure.stage == max(stages))
    assert closest.first_failure is not None
    assert (decision.rule, decision.reason) == (closest.rule.id, closest.first_failure.reason)
