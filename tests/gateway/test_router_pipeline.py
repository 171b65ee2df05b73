"""The pure per-envelope path: router lookup order, and process() from bytes to Forward/Refuse."""

from __future__ import annotations

from gateway.envelope.model import RoutingConstraint
from gateway.envelope.recipe import open_envelope, seal
from gateway.envelope.wire import decode_unverified, encode
from gateway.pipeline import (
    RESERVED_TRANSIT_SCOPE,
    Arrival,
    FederationScopes,
    Forward,
    GatewayState,
    Refuse,
    process,
)
from gateway.reasons import Reason
from gateway.replay import ReplayWindow
from gateway.router import RouteEntry, Router, RouteTarget
from identity import parse_spiffe_id, parse_trust_domain
from tests.gateway.envelope_fixtures import (
    GATEWAY_IDS,
    GATEWAY_KEYS,
    ORIGIN_ID,
    ORIGIN_KEY,
    TableResolver,
    anchor_for,
)
from tests.gateway.test_policy_helpers import NOW, ledger_store

LEDGER = RouteTarget("cilium", "network", "127.0.0.1", 9000)
PEER = RouteTarget("gw-b", "peer", "127.0.0.1", 9443, parse_spiffe_id(GATEWAY_IDS[1]))
WEAVE = parse_trust_domain("weave.prod.example")
CILIUM = parse_trust_domain("cilium.prod.example")


def _claims_for(destination_scope: str = "payments/ledger", destination_id: str | None = None):  # type: ignore[no-untyped-def]
    from gateway.envelope.model import Claims  # noqa: PLC0415

    return Claims(
        issuer=parse_spiffe_id(ORIGIN_ID),
        origin_scope="payments/api",
        destination_scope=destination_scope,
        destination_id=parse_spiffe_id(destination_id) if destination_id else None,
        tier=1,
        lineage=bytes(32),
        routing=RoutingConstraint((WEAVE,), (), 2),
        issued_at=NOW,
        expires_at=NOW + 60,
        envelope_id=bytes(16),
        payload_digest=bytes(32),
        payload_length=0,
        sealed=False,
    )


def test_router_prefers_the_most_specific_route() -> None:
    pinned = RouteTarget("weave", "network", "127.0.0.1", 1)
    subtree = RouteTarget("cilium", "network", "127.0.0.1", 2)
    deeper = RouteTarget("cilium", "network", "127.0.0.1", 3)
    exact = RouteTarget("cilium", "network", "127.0.0.1", 4)
    default = RouteTarget("weave", "network", "127.0.0.1", 5)
    router = Router.build(
        [
            RouteEntry(default, scope="*"),
            RouteEntry(subtree, scope="payments/*"),
            RouteEntry(deeper, scope="payments/ledger/*"),
            RouteEntry(exact, scope="payments/ledger"),
            RouteEntry(pinned, workload=parse_spiffe_id("spiffe://c.example/ns/x/sa/y")),
        ]
    )
    assert router.route(_claims_for("payments/ledger")) is exact
    assert router.route(_claims_for("payments/ledger/eu")) is deeper
    assert router.route(_claims_for("payments/api")) is subtree
    assert router.route(_claims_for("orders/intake")) is default
    assert router.route(_claims_for("payments/ledger", "spiffe://c.example/ns/x/sa/y")) is pinned
    moved = RouteTarget("cilium", "network", "127.0.0.1", 6)
    overridden = router.with_overrides({parse_spiffe_id("spiffe://c.example/ns/x/sa/y"): moved})
    assert overridden.route(_claims_for("payments/ledger", "spiffe://c.example/ns/x/sa/y")) is moved
    assert (
        Router.build([RouteEntry(exact, scope="payments/ledger")]).route(_claims_for("x/y")) is None
    )
    assert {t.key for t in router.targets()} == {
        t.key for t in (pinned, subtree, deeper, exact, default)
    }


def standard_resolver() -> TableResolver:
    """Origin and gateway anchors valid around the policy fixtures' clock."""
    window = {"not_before": NOW - 3600, "not_after": NOW + 3600}
    resolver = TableResolver().add(anchor_for(ORIGIN_KEY, ORIGIN_ID, **window))  # type: ignore[arg-type]
    for key, gid in zip(GATEWAY_KEYS, GATEWAY_IDS, strict=True):
        resolver.add(anchor_for(key, gid, scopes=(RESERVED_TRANSIT_SCOPE,), **window))  # type: ignore[arg-type]
    return resolver


def _state(gateway: int = 0, peers: dict[str, FederationScopes] | None = None) -> GatewayState:
    store, _ = ledger_store()
    resolver = standard_resolver()
    return GatewayState(
        gateway_id=parse_spiffe_id(GATEWAY_IDS[gateway]),
        signing_key=GATEWAY_KEYS[gateway],
        resolver=resolver,
        policies=store,
        router=Router.build([RouteEntry(LEDGER, scope="payments/*")]),
        peers=peers or {},
    )


def _envelope(state: GatewayState, **overrides: object) -> bytes:
    origin = ledger_store()[1]
    fields: dict[str, object] = {
        "issuer": parse_spiffe_id(ORIGIN_ID),
        "origin_scope": "payments/api",
        "destination_scope": "payments/ledger",
        "tier": 1,
        "lineage": origin[-1].digest,
        "routing": RoutingConstraint((WEAVE, CILIUM), (), 2),
        "issued_at": NOW,
        "expires_at": NOW + 60,
        "payload": b"hello",
        "signing_key": ORIGIN_KEY,
    }
    fields.update(overrides)
    return seal(**fields)  # type: ignore[arg-type]


def test_forward_stamps_and_records_replay() -> None:
    state = _state()
    replay = ReplayWindow()
    data = _envelope(state)
    out = process(data, arrival=Arrival("weave"), state=state, replay=replay, now=NOW)
    assert isinstance(out, Forward)
    assert out.target is LEDGER
    assert out.decision.rule == "allow-ledger-from-payments"
    again = open_envelope(out.data, resolver=state.resolver, now=NOW)
    assert [str(s.claims.gateway) for s in again.stamps] == [GATEWAY_IDS[0]]
    assert again.stamps[0].claims.from_network == "weave"
    assert again.stamps[0].claims.to_network == "cilium"
    assert again.stamps[0].claims.policy_revision == out.decision.revision
    second = process(data, arrival=Arrival("weave"), state=state, replay=replay, now=NOW)
    assert isinstance(second, Refuse) and second.reason is Reason.REPLAYED
    replay.forget(again.claims.envelope_id)
    assert isinstance(
        process(data, arrival=Arrival("weave"), state=state, replay=replay, now=NOW), Forward
    )


def test_refusals_before_authentication_are_uniform_toward_the_sender() -> None:
    state = _state()
    data = _envelope(state)
    env = decode_unverified(data)
    forged = encode(env.origin_bytes[:-1] + bytes([env.origin_bytes[-1] ^ 1]), env.payload)
    out = process(forged, arrival=Arrival("weave"), state=state, replay=ReplayWindow(), now=NOW)
    assert isinstance(out, Refuse)
    assert out.reason is Reason.BAD_SIGNATURE and not out.verified
    assert out.reason_for_sender is Reason.UNAUTHENTICATED
    assert out.claims is not None  # kept for the audit record, marked unverified
    tampered = encode(env.origin_bytes, b"hellO")
    out = process(tampered, arrival=Arrival("weave"), state=state, replay=ReplayWindow(), now=NOW)
    assert isinstance(out, Refuse) and out.reason_for_sender is Reason.PAYLOAD_MISMATCH
    garbage = process(
        b"\x00garbage", arrival=Arrival("weave"), state=state, replay=ReplayWindow(), now=NOW
    )
    assert isinstance(garbage, Refuse) and garbage.claims is None
    assert garbage.reason_for_sender is Reason.UNAUTHENTICATED


def test_policy_route_and_routing_refusals() -> None:
    state = _state()
    replay = ReplayWindow()
    low = process(
        _envelope(state, tier=0), arrival=Arrival("weave"), state=state, replay=replay, now=NOW
    )
    assert (
        isinstance(low, Refuse) and low.reason is Reason.TIER_TOO_LOW and low.decision is not None
    )
    # A destination scope the policy store allows but no route reaches.
    unrouted = _state()
    unrouted = GatewayState(
        **{**{f: getattr(unrouted, f) for f in unrouted.__slots__}, "router": Router.build([])}
    )  # type: ignore[attr-defined]
    out = process(
        _envelope(unrouted), arrival=Arrival("weave"), state=unrouted, replay=replay, now=NOW
    )
    assert isinstance(out, Refuse) and out.reason is Reason.NO_ROUTE
    # The envelope may only transit cilium.prod.example; gateway 0 is in weave.prod.example.
    only_cilium = _envelope(state, routing=RoutingConstraint((CILIUM,), (), 2))
    out = process(only_cilium, arrival=Arrival("weave"), state=state, replay=replay, now=NOW)
    assert isinstance(out, Refuse) and out.reason is Reason.TRANSIT_NOT_ALLOWED
    # The id of a refused envelope is not burned: the same envelope is refused for the same reason.
    out = process(only_cilium, arrival=Arrival("weave"), state=state, replay=replay, now=NOW)
    assert isinstance(out, Refuse) and out.reason is Reason.TRANSIT_NOT_ALLOWED


def test_federation_scope_filters_and_reserved_scope() -> None:
    peers = {"gw-b": FederationScopes(exports=("orders/*",), imports=())}
    state = _state(peers=peers)
    out = process(
        _envelope(state),
        arrival=Arrival("federation", "gw-b"),
        state=state,
        replay=ReplayWindow(),
        now=NOW,
    )
    assert isinstance(out, Refuse) and out.reason is Reason.SCOPE_NOT_FEDERATED
    peers = {"gw-b": FederationScopes(exports=("payments/*",), imports=())}
    state = _state(peers=peers)
    out = process(
        _envelope(state),
        arrival=Arrival("federation", "gw-b"),
        state=state,
        replay=ReplayWindow(),
        now=NOW,
    )
    assert isinstance(out, Forward)
    # A gateway's own anchor (endorsed for the reserved transit scope) cannot originate envelopes.
    gw_resolver = standard_resolver()
    state = GatewayState(
        **{**{f: getattr(state, f) for f in state.__slots__}, "resolver": gw_resolver}
    )  # type: ignore[attr-defined]
    data = _envelope(
        state,
        issuer=parse_spiffe_id(GATEWAY_IDS[2]),
        origin_scope=RESERVED_TRANSIT_SCOPE,
        signing_key=GATEWAY_KEYS[2],
    )
    out = process(data, arrival=Arrival("weave"), state=state, replay=ReplayWindow(), now=NOW)
    assert isinstance(out, Refuse) and out.reason is Reason.SCOPE_NOT_ENDORSED
