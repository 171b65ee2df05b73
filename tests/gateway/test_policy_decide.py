"""decide(): every decision path, each policy reason, rule order and the closest-rule report."""

from __future__ import annotations

from config.policy import LineageMode, LineageWindow, Rule, TierNames
from gateway.policy import DEFAULT_DENY, DESTINATION_RULE, ZERO_HASH, PolicyStore, decide
from gateway.reasons import Reason
from identity import parse_trust_domain
from tests.gateway.test_policy_helpers import (
    GATEWAY_A,
    GATEWAY_B,
    LEDGER,
    LEDGER_RULES,
    NOW,
    Spec,
    chain,
    envelope,
    ids,
    ledger_store,
    origin_chain,
)


def _current(store: PolicyStore, scope: str = "payments/ledger") -> bytes:
    revision = store.current(scope)
    assert revision is not None
    return revision.digest


# -- the destination -------------------------------------------------------------------------


def test_unknown_destination_scope_is_denied_with_no_policy() -> None:
    store, origin = ledger_store()
    decision = decide(
        envelope(lineage=origin[-1].digest, destination_scope="hr/payroll"), store, NOW
    )
    assert (decision.allow, decision.rule, decision.reason) == (
        False,
        DEFAULT_DENY,
        Reason.NO_POLICY,
    )
    assert decision.revision == ZERO_HASH
    assert "hr/payroll" in decision.detail


def test_revoked_current_destination_revision_means_no_policy() -> None:
    store, origin = ledger_store()
    revoked = store.with_revoked([_current(store)])
    decision = decide(envelope(lineage=origin[-1].digest), revoked, NOW)
    assert (decision.allow, decision.reason) == (False, Reason.NO_POLICY)
    assert decision.revision == _current(store)
    assert "revoked" in decision.detail


def test_revision_without_rules_denies_no_matching_rule() -> None:
    store, origin = ledger_store(rules=())
    decision = decide(envelope(lineage=origin[-1].digest), store, NOW)
    assert (decision.allow, decision.rule, decision.reason) == (
        False,
        DEFAULT_DENY,
        Reason.NO_MATCHING_RULE,
    )


def test_destination_id_must_be_a_listed_workload() -> None:
    store, origin = ledger_store(workloads=ids(LEDGER))
    lineage = origin[-1].digest
    assert decide(envelope(lineage=lineage, destination_id=LEDGER), store, NOW).allow
    other = "spiffe://cilium.prod.example/ns/payments/sa/other"
    decision = decide(envelope(lineage=lineage, destination_id=other), store, NOW)
    assert (decision.allow, decision.rule, decision.reason) == (
        False,
        DESTINATION_RULE,
        Reason.DESTINATION_MISMATCH,
    )
    assert other in decision.detail


def test_destination_id_with_no_workloads_listed_is_a_mismatch() -> None:
    store, origin = ledger_store(workloads=())
    decision = decide(envelope(lineage=origin[-1].digest, destination_id=LEDGER), store, NOW)
    assert decision.reason is Reason.DESTINATION_MISMATCH
    # Without a destination id the scope's rules decide.
    assert decide(envelope(lineage=origin[-1].digest), store, NOW).allow


def test_destination_workload_subtree_pattern() -> None:
    store, origin = ledger_store(workloads=ids("spiffe://cilium.prod.example/ns/payments/*"))
    lineage = origin[-1].digest
    assert decide(envelope(lineage=lineage, destination_id=LEDGER), store, NOW).allow
    sibling = "spiffe://cilium.prod.example/ns/payments-evil/sa/x"
    assert not decide(envelope(lineage=lineage, destination_id=sibling), store, NOW).allow


# -- origin, tier, order ---------------------------------------------------------------------


def test_first_matching_rule_allows() -> None:
    store, origin = ledger_store()
    decision = decide(envelope(lineage=origin[-1].digest, tier=1), store, NOW)
    assert decision.allow
    assert (decision.rule, decision.reason) == ("allow-ledger-from-payments", Reason.ALLOWED)
    assert decision.revision == _current(store)


def test_rule_order_decides_which_rule_is_named() -> None:
    broad = Rule("broad", from_scopes=("*",))
    narrow = Rule("narrow", from_scopes=("payments/api",))
    for rules, expected in (((broad, narrow), "broad"), ((narrow, broad), "narrow")):
        store, origin = ledger_store(rules)
        assert decide(envelope(lineage=origin[-1].digest), store, NOW).rule == expected


def test_tier_too_low_names_the_rule_and_tiers() -> None:
    store, origin = ledger_store()
    decision = decide(envelope(lineage=origin[-1].digest, tier=0), store, NOW)
    assert (decision.allow, decision.rule, decision.reason) == (
        False,
        "allow-ledger-from-payments",
        Reason.TIER_TOO_LOW,
    )
    assert "0 (public)" in decision.detail and "1 (internal)" in decision.detail


def test_tier_names_come_from_the_store() -> None:
    origin = origin_chain()
    ledger = chain("payments/ledger", [Spec(rules=LEDGER_RULES)])
    tiers = TierNames((("open", 0), ("staff", 1), ("secret", 5)))
    store = PolicyStore.build([*ledger, *origin], tiers=tiers)
    decision = decide(envelope(lineage=origin[-1].digest, tier=0), store, NOW)
    assert "0 (open)" in decision.detail and "1 (staff)" in decision.detail


def test_origin_not_matched_by_any_rule() -> None:
    store, origin = ledger_store()
    decision = decide(
        envelope(
            lineage=origin[-1].digest,
            origin_scope="billing/invoices",
            issuer="spiffe://weave.prod.example/ns/billing/sa/x",
        ),
        store,
        NOW,
    )
    assert (decision.allow, decision.rule, decision.reason) == (
        False,
        DEFAULT_DENY,
        Reason.ORIGIN_NOT_ALLOWED,
    )


def test_every_set_origin_field_must_match() -> None:
    rule = Rule(
        "scoped-and-id",
        from_scopes=("payments/*",),
        from_ids=ids("spiffe://weave.prod.example/ns/payments/sa/api"),
        from_domains=(parse_trust_domain("weave.prod.example"),),
    )
    store, origin = ledger_store((rule,))
    lineage = origin[-1].digest
    assert decide(envelope(lineage=lineage), store, NOW).allow
    wrong_id = "spiffe://weave.prod.example/ns/payments/sa/batch"
    assert decide(envelope(lineage=lineage, issuer=wrong_id), store, NOW).reason is (
        Reason.ORIGIN_NOT_ALLOWED
    )
    assert decide(envelope(lineage=lineage, origin_scope="hr/x"), store, NOW).reason is (
        Reason.ORIGIN_NOT_ALLOWED
    )


def test_any_of_within_a_field_and_id_subtrees() -> None:
    rule = Rule(
        "ids",
        from_ids=ids(
            "spiffe://other.example/x",
            "spiffe://weave.prod.example/ns/payments/*",
        ),
    )
    store, origin = ledger_store((rule,))
    lineage = origin[-1].digest
    assert decide(envelope(lineage=lineage), store, NOW).allow
    # A subtree pattern stops at a path segment boundary.
    near_miss = "spiffe://weave.prod.example/ns/payments2/sa/api"
    assert not decide(envelope(lineage=lineage, issuer=near_miss), store, NOW).allow


def test_trust_domain_rule() -> None:
    rule = Rule("domain", from_domains=(parse_trust_domain("audit.example"),))
    store, origin = ledger_store((rule,))
    lineage = origin[-1].digest
    assert not decide(envelope(lineage=lineage), store, NOW).allow
    auditor = "spiffe://audit.example/auditor"
    assert decide(envelope(lineage=lineage, issuer=auditor), store, NOW).allow


def test_closest_rule_is_the_one_that_got_furthest() -> None:
    tier_fails = Rule("needs-restricted", from_scopes=("payments/*",), min_tier=2)
    hops_fail = Rule("direct-only", from_scopes=("payments/*",), max_hops=0)
    store, origin = ledger_store((tier_fails, hops_fail))
    decision = decide(
        envelope(lineage=origin[-1].digest, tier=1, gateways=(GATEWAY_A,)), store, NOW
    )
    assert (decision.rule, decision.reason) == ("direct-only", Reason.POLICY_HOP_LIMIT)


def test_closest_rule_tie_goes_to_the_first() -> None:
    first = Rule("first", from_scopes=("payments/*",), min_tier=2)
    second = Rule("second", from_scopes=("*",), min_tier=3)
    store, origin = ledger_store((first, second))
    decision = decide(envelope(lineage=origin[-1].digest, tier=1), store, NOW)
    assert (decision.rule, decision.reason) == ("first", Reason.TIER_TOO_LOW)


# -- transit and hops ------------------------------------------------------------------------


def test_transit_domains_and_gateways() -> None:
    rule = Rule(
        "via-weave",
        from_scopes=("payments/*",),
        transit_domains=(parse_trust_domain("weave.prod.example"),),
        transit_gateways=ids("spiffe://cilium.prod.example/gateway/b"),
    )
    store, origin = ledger_store((rule,))
    lineage = origin[-1].digest
    assert decide(envelope(lineage=lineage), store, NOW).allow  # no stamps: nothing to refuse
    assert decide(envelope(lineage=lineage, gateways=(GATEWAY_A, GATEWAY_B)), store, NOW).allow
    rogue = "spiffe://elsewhere.example/gateway/z"
    decision = decide(envelope(lineage=lineage, gateways=(GATEWAY_A, rogue)), store, NOW)
    assert (decision.rule, decision.reason) == ("via-weave", Reason.POLICY_TRANSIT_DENIED)
    assert rogue in decision.detail and GATEWAY_A not in decision.detail


def test_no_transit_lists_means_any_gateway() -> None:
    store, origin = ledger_store((Rule("any-transit", from_scopes=("*",)),))
    rogue = "spiffe://elsewhere.example/gateway/z"
    assert decide(envelope(lineage=origin[-1].digest, gateways=(rogue,)), store, NOW).allow


def test_hop_limit() -> None:
    store, origin = ledger_store((Rule("two-hops", from_scopes=("*",), max_hops=2),))
    lineage = origin[-1].digest
    assert decide(envelope(lineage=lineage, gateways=(GATEWAY_A, GATEWAY_B)), store, NOW).allow
    decision = decide(
        envelope(lineage=lineage, gateways=(GATEWAY_A, GATEWAY_B, GATEWAY_A)), store, NOW
    )
    assert (decision.rule, decision.reason) == ("two-hops", Reason.POLICY_HOP_LIMIT)
    assert "3 hops" in decision.detail


def test_zero_hops_means_direct_only() -> None:
    store, origin = ledger_store((Rule("direct", from_scopes=("*",), max_hops=0),))
    assert decide(envelope(lineage=origin[-1].digest), store, NOW).allow
    assert not decide(envelope(lineage=origin[-1].digest, gateways=(GATEWAY_A,)), store, NOW).allow


# -- lineage ---------------------------------------------------------------------------------


def test_current_and_grace_window_of_revisions() -> None:
    store, origin = ledger_store()  # grace_revisions = 1; origin has revisions 1..3
    assert decide(envelope(lineage=origin[2].digest), store, NOW).allow
    assert decide(envelope(lineage=origin[1].digest), store, NOW).allow
    decision = decide(envelope(lineage=origin[0].digest), store, NOW)
    assert (decision.rule, decision.reason) == (
        "allow-ledger-from-payments",
        Reason.LINEAGE_OUTSIDE_GRACE,
    )
    assert "revision 1 is 2 behind" in decision.detail


def test_no_window_accepts_only_the_current_revision() -> None:
    store, origin = ledger_store(lineage=())
    assert decide(envelope(lineage=origin[2].digest), store, NOW).allow
    assert decide(envelope(lineage=origin[1].digest), store, NOW).reason is (
        Reason.LINEAGE_OUTSIDE_GRACE
    )


def test_window_applies_per_origin_scope_first_match() -> None:
    windows = (
        LineageWindow(("billing/*",), grace_revisions=5),
        LineageWindow(("payments/api",), grace_revisions=0),
        LineageWindow(("*",), grace_revisions=5),
    )
    store, origin = ledger_store(lineage=windows)
    assert not decide(envelope(lineage=origin[1].digest), store, NOW).allow


def test_grace_in_seconds_after_supersession() -> None:
    origin = chain(
        "payments/api",
        [Spec(rules=(), issued_at=NOW - 1000), Spec(rules=(), issued_at=NOW - 300)],
    )
    window = (LineageWindow(("payments/*",), grace_seconds=600),)
    store, _ = ledger_store(lineage=window, origin=origin)
    old = envelope(lineage=origin[0].digest)
    assert decide(old, store, NOW).allow  # superseded 300 s ago
    assert decide(old, store, NOW + 300).allow  # exactly at the limit
    late = decide(old, store, NOW + 301)
    assert late.reason is Reason.LINEAGE_OUTSIDE_GRACE and "601s ago" in late.detail


def test_both_grace_limits_must_hold() -> None:
    origin = chain("payments/api", [Spec(issued_at=NOW - 100 + n) for n in range(3)])
    window = (LineageWindow(("*",), grace_revisions=1, grace_seconds=3600),)
    store, _ = ledger_store(lineage=window, origin=origin)
    assert decide(envelope(lineage=origin[1].digest), store, NOW).allow
    # Two behind breaks grace_revisions although well within grace_seconds.
    assert not decide(envelope(lineage=origin[0].digest), store, NOW).allow
    # One behind but superseded too long ago breaks grace_seconds.
    assert not decide(envelope(lineage=origin[1].digest), store, NOW + 7200).allow


def test_revoked_lineage_is_refused_even_inside_the_window() -> None:
    origin = origin_chain(3, revokes=(2,))
    store, _ = ledger_store(lineage=(LineageWindow(("*",), grace_revisions=5),), origin=origin)
    assert decide(envelope(lineage=origin[0].digest), store, NOW).allow
    decision = decide(envelope(lineage=origin[1].digest), store, NOW)
    assert decision.reason is Reason.LINEAGE_REVOKED
    assert "revision 2 is revoked" in decision.detail


def test_operator_revocation_of_the_current_origin_revision() -> None:
    store, origin = ledger_store()
    store = store.with_revoked([origin[-1].digest])
    decision = decide(envelope(lineage=origin[-1].digest), store, NOW)
    assert decision.reason is Reason.LINEAGE_REVOKED


def test_unknown_lineage_hash() -> None:
    store, _ = ledger_store()
    decision = decide(envelope(lineage=b"\x07" * 32), store, NOW)
    assert (decision.rule, decision.reason) == (
        "allow-ledger-from-payments",
        Reason.LINEAGE_UNKNOWN,
    )


def test_lineage_of_another_scope_is_unknown() -> None:
    store, _ = ledger_store()
    ledger_hash = _current(store)
    decision = decide(envelope(lineage=ledger_hash), store, NOW)
    assert decision.reason is Reason.LINEAGE_UNKNOWN
    assert "not of the origin scope" in decision.detail


def test_origin_scope_not_managed_locally_needs_lineage_any() -> None:
    foreign = "spiffe://partner.example/ns/orders/sa/api"
    managed = Rule("partner-managed", from_domains=(parse_trust_domain("partner.example"),))
    store, _ = ledger_store((managed,))
    env = envelope(lineage=b"\x01" * 32, origin_scope="orders/api", issuer=foreign)
    assert decide(env, store, NOW).reason is Reason.LINEAGE_UNKNOWN
    relaxed = Rule(
        "partner-any-lineage",
        from_domains=(parse_trust_domain("partner.example"),),
        lineage=LineageMode.ANY,
    )
    store, _ = ledger_store((relaxed,))
    decision = decide(env, store, NOW)
    assert (decision.allow, decision.rule) == (True, "partner-any-lineage")


def test_lineage_failure_is_closer_than_a_tier_failure() -> None:
    needs_lineage = Rule("managed", from_scopes=("payments/*",))
    any_lineage = Rule("any", from_scopes=("payments/*",), min_tier=2, lineage=LineageMode.ANY)
    store, _ = ledger_store((any_lineage, needs_lineage))
    decision = decide(envelope(lineage=b"\x02" * 32, tier=1), store, NOW)
    assert (decision.rule, decision.reason) == ("managed", Reason.LINEAGE_UNKNOWN)


def test_later_rule_allows_after_earlier_lineage_failure() -> None:
    managed = Rule("managed", from_scopes=("payments/*",))
    fallback = Rule("fallback", from_scopes=("payments/*",), lineage=LineageMode.ANY)
    store, _ = ledger_store((managed, fallback))
    decision = decide(envelope(lineage=b"\x02" * 32), store, NOW)
    assert (decision.allow, decision.rule) == (True, "fallback")
