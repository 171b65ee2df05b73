"""Envelope recipes: round trips, every refusal reason, single-byte flips, prefixes, fuzzing."""

from __future__ import annotations

import dataclasses

import cbor2
import nacl.public
import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.envelope import (
    decode_unverified,
    digest,
    encode,
    limits,
    open_envelope,
    seal,
    seal_claims,
    stamp,
    unseal_payload,
)
from gateway.envelope.claims import encode_claims
from gateway.envelope.cose import sig_structure, sign1
from gateway.envelope.model import RoutingConstraint
from gateway.errors import LocalProtocolError, RemoteProtocolError
from gateway.reasons import Reason
from gateway.replay import ReplayWindow
from identity.anchor_contract import AnchorProblem, key_id
from identity.spiffe_id import parse_spiffe_id
from tests.gateway.envelope_fixtures import (
    DESTINATION_BOX,
    GATEWAY_IDS,
    GATEWAY_KEYS,
    LINEAGE,
    ORIGIN_ID,
    ORIGIN_KEY,
    POLICY_REV,
    ROUTING,
    T0,
    anchor_for,
    seeded_signing_key,
    standard_resolver,
)

ISSUER = parse_spiffe_id(ORIGIN_ID)
PAYLOAD = b'{"amount": 1200, "currency": "EUR"}'


def make(**overrides: object) -> bytes:
    fields: dict[str, object] = dict(
        issuer=ISSUER,
        origin_scope="payments/checkout",
        destination_scope="payments/ledger",
        tier=2,
        lineage=LINEAGE,
        routing=ROUTING,
        issued_at=T0,
        expires_at=T0 + 300,
        payload=PAYLOAD,
        signing_key=ORIGIN_KEY,
        envelope_id=bytes(range(16)),
    )
    fields.update(overrides)
    return seal(**fields)  # type: ignore[arg-type]


def hop(data: bytes, n: int, now: int = T0 + 1) -> bytes:
    verified = open_envelope(data, resolver=standard_resolver(), now=now)
    return stamp(
        verified,
        gateway_id=parse_spiffe_id(GATEWAY_IDS[n]),
        signing_key=GATEWAY_KEYS[n],
        from_network=f"net-{n}",
        to_network=f"net-{n + 1}",
        rule="allow-checkout",
        policy_revision=POLICY_REV,
        now=now,
    )


def stamped(hops: int = 3) -> bytes:
    data = make()
    for n in range(hops):
        data = hop(data, n)
    return data


def refused(data: bytes, *, now: int = T0 + 2, resolver: object = None, **kw: object) -> Reason:
    with pytest.raises(RemoteProtocolError) as info:
        open_envelope(data, resolver=resolver or standard_resolver(), now=now, **kw)  # type: ignore[arg-type]
    return info.value.reason


# Round trips ---------------------------------------------------------------------------------


def test_round_trip_without_stamps() -> None:
    env = open_envelope(make(), resolver=standard_resolver(), now=T0)
    assert env.payload == PAYLOAD
    assert env.claims.issuer == ISSUER
    assert env.claims.routing == ROUTING
    assert env.claims.payload_digest == digest(PAYLOAD)
    assert env.anchor.kid == key_id(ORIGIN_KEY.verify_key.encode())
    assert env.hops == 0
    assert len(env.signature) == 64


def test_round_trip_with_three_stamps_chained() -> None:
    env = open_envelope(stamped(3), resolver=standard_resolver(), now=T0 + 2)
    assert [s.claims.hop for s in env.stamps] == [1, 2, 3]
    assert [str(s.claims.gateway) for s in env.stamps] == GATEWAY_IDS
    assert env.stamps[0].claims.previous_stamp_hash == bytes(32)
    assert env.stamps[1].claims.previous_stamp_hash == digest(env.stamps[0].encoded)
    assert all(s.claims.envelope_signature_hash == digest(env.signature) for s in env.stamps)


def test_sealed_payload_round_trip() -> None:
    data = make(seal_to=DESTINATION_BOX.public_key.encode())
    env = open_envelope(data, resolver=standard_resolver(), now=T0)
    assert env.claims.sealed
    assert env.payload != PAYLOAD
    assert env.claims.payload_length == len(PAYLOAD) + 48
    assert unseal_payload(env, DESTINATION_BOX) == PAYLOAD
    other = nacl.public.PrivateKey.generate()
    with pytest.raises(RemoteProtocolError) as info:
        unseal_payload(env, other)
    assert info.value.reason is Reason.PAYLOAD_MISMATCH


def test_unseal_of_plain_payload_is_a_local_error() -> None:
    env = open_envelope(make(), resolver=standard_resolver(), now=T0)
    with pytest.raises(LocalProtocolError):
        unseal_payload(env, DESTINATION_BOX)


def test_destination_id_round_trips() -> None:
    dest = parse_spiffe_id("spiffe://cilium.prod.example/ns/ledger/sa/api")
    env = open_envelope(make(destination_id=dest), resolver=standard_resolver(), now=T0)
    assert env.claims.destination_id == dest


def test_encoding_is_canonical_cbor() -> None:
    data = stamped(2)
    assert cbor2.dumps(cbor2.loads(data), canonical=True) == data
    env = decode_unverified(data)
    assert encode(env.origin_bytes, env.payload, [s.encoded for s in env.stamps]) == data


# Local misuse is LocalProtocolError ----------------------------------------------------------


@pytest.mark.parametrize(
    "override",
    [
        {"tier": 256},
        {"tier": -1},
        {"lineage": b"short"},
        {"envelope_id": b"x" * 15},
        {"origin_scope": "payments/*"},
        {"destination_scope": ""},
        {"expires_at": T0},
        {"expires_at": T0 + limits.MAX_LIFETIME + 1},
        {"payload": b"x" * (limits.MAX_PAYLOAD_BYTES + 1)},
        {"seal_to": b"short"},
        {"routing": RoutingConstraint((), (), max_hops=limits.MAX_STAMPS + 1)},
    ],
)
def test_seal_refuses_out_of_range_claims(override: dict[str, object]) -> None:
    with pytest.raises(LocalProtocolError):
        make(**override)


def test_stamp_beyond_hop_limit_is_refused_locally() -> None:
    data = make(routing=dataclasses.replace(ROUTING, max_hops=1))
    data = hop(data, 0)
    with pytest.raises(LocalProtocolError):
        hop(data, 1)


# Every refusal reason -------------------------------------------------------------------------


def _envelope_parts(data: bytes) -> list[object]:
    parts = cbor2.loads(data)
    assert isinstance(parts, list)
    return parts


def test_too_large() -> None:
    assert refused(b"\x00" * (limits.MAX_ENVELOPE_BYTES + 1)) is Reason.TOO_LARGE
    big = encode(b"\x00" * (limits.MAX_HEADER_BYTES + 1), b"")
    assert refused(big) is Reason.TOO_LARGE


def test_unsupported_version() -> None:
    parts = _envelope_parts(make())
    parts[0] = 2
    assert refused(cbor2.dumps(parts)) is Reason.UNSUPPORTED_VERSION


def test_non_canonical_outer_and_claims() -> None:
    data = make()
    # The same array with a non-shortest version integer (0x18 0x01 instead of 0x01).
    assert refused(b"\x84\x18\x01" + data[2:]) is Reason.NON_CANONICAL
    # Indefinite-length outer array.
    assert refused(b"\x9f" + data[1:] + b"\xff") is Reason.NON_CANONICAL
    # Claims with a key order that is not canonical, properly signed.
    claims = cbor2.loads(decode_unverified(data).origin.payload)
    reordered = dict(sorted(claims.items(), key=lambda kv: -kv[0] if kv[0] > 0 else kv[0]))
    payload = cbor2.dumps(reordered)
    assert payload != cbor2.dumps(claims, canonical=True)
    origin = sign1({1: -8, 4: key_id(ORIGIN_KEY.verify_key.encode())}, payload, ORIGIN_KEY)
    assert refused(encode(origin, PAYLOAD)) is Reason.NON_CANONICAL


def _origin_with(
    claims_map: dict[int, object], protected: dict[int, object] | None = None
) -> bytes:
    prot = protected or {1: -8, 4: key_id(ORIGIN_KEY.verify_key.encode())}
    return encode(sign1(prot, cbor2.dumps(claims_map, canonical=True), ORIGIN_KEY), PAYLOAD)


def _claims_map() -> dict[int, object]:
    m = cbor2.loads(decode_unverified(make()).origin.payload)
    assert isinstance(m, dict)
    return m


def test_unknown_claim_label_is_unknown_critical() -> None:
    m = _claims_map()
    m[-70000] = 1
    assert refused(_origin_with(m)) is Reason.UNKNOWN_CRITICAL


@pytest.mark.parametrize(
    ("label", "value"),
    [
        (1, "spiffe://Weave.example/x"),  # issuer not a strict SPIFFE ID
        (-65541, True),  # tier as bool
        (-65541, 300),  # tier out of range
        (-65542, b"\x00" * 31),  # lineage length
        (-65538, "payments/*"),  # scope pattern, not a scope
        (-65546, 1),  # sealed as int
        (7, b"\x00" * 8),  # envelope id length
    ],
)
def test_bad_claim_values_are_malformed(label: int, value: object) -> None:
    m = _claims_map()
    m[label] = value
    assert refused(_origin_with(m)) is Reason.MALFORMED


def test_missing_claim_is_malformed() -> None:
    m = _claims_map()
    del m[-65541]
    assert refused(_origin_with(m)) is Reason.MALFORMED


def test_claims_version() -> None:
    m = _claims_map()
    m[-65537] = 2
    assert refused(_origin_with(m)) is Reason.UNSUPPORTED_VERSION


def test_bad_algorithm_and_unknown_critical_header() -> None:
    kid = key_id(ORIGIN_KEY.verify_key.encode())
    m = _claims_map()
    prot_bytes = cbor2.dumps({1: -7, 4: kid}, canonical=True)
    # sign1 refuses to make it, so build the COSE_Sign1 by hand.
    sig = ORIGIN_KEY.sign(sig_structure(prot_bytes, cbor2.dumps(m, canonical=True))).signature
    raw = cbor2.dumps(
        cbor2.CBORTag(18, [prot_bytes, {}, cbor2.dumps(m, canonical=True), sig]), canonical=True
    )
    assert refused(encode(raw, PAYLOAD)) is Reason.BAD_ALGORITHM
    prot_bytes = cbor2.dumps({1: -8, 2: [99], 4: kid, 99: 1}, canonical=True)
    raw = cbor2.dumps(
        cbor2.CBORTag(18, [prot_bytes, {}, cbor2.dumps(m, canonical=True), sig]), canonical=True
    )
    assert refused(encode(raw, PAYLOAD)) is Reason.UNKNOWN_CRITICAL


@pytest.mark.parametrize(
    ("now", "issued", "expires", "reason"),
    [
        (T0 + 300 + limits.CLOCK_SKEW, T0, T0 + 300, Reason.EXPIRED),
        (T0 - limits.CLOCK_SKEW - 1, T0, T0 + 300, Reason.NOT_YET_VALID),
    ],
)
def test_time_checks(now: int, issued: int, expires: int, reason: Reason) -> None:
    assert refused(make(issued_at=issued, expires_at=expires), now=now) is reason


def test_time_edges_inside_skew_are_accepted() -> None:
    data = make()
    open_envelope(data, resolver=standard_resolver(), now=T0 + 300 + limits.CLOCK_SKEW - 1)
    open_envelope(data, resolver=standard_resolver(), now=T0 - limits.CLOCK_SKEW)


def test_lifetime_too_long() -> None:
    m = _claims_map()
    m[4] = T0 + limits.MAX_LIFETIME + 1
    assert refused(_origin_with(m)) is Reason.LIFETIME_TOO_LONG


def test_replay_window_check_then_record() -> None:
    data = make()
    window = ReplayWindow(capacity=4)
    env = open_envelope(data, resolver=standard_resolver(), now=T0, replay=window)
    window.record(env.claims.envelope_id, env.claims.expires_at, T0)
    assert refused(data, now=T0 + 1, replay=window) is Reason.REPLAYED


@pytest.mark.parametrize("problem", list(AnchorProblem))
def test_anchor_problems_map_to_reasons(problem: AnchorProblem) -> None:
    resolver = standard_resolver()
    resolver.problems[key_id(ORIGIN_KEY.verify_key.encode())] = problem
    assert refused(make(), resolver=resolver) == Reason(problem.value)


def test_unknown_anchor() -> None:
    assert refused(make(signing_key=seeded_signing_key("stranger"))) is Reason.UNKNOWN_ANCHOR


def test_bad_signature_when_kid_names_another_key() -> None:
    # Signed by a stranger but carrying the origin's kid.
    m = _claims_map()
    kid = key_id(ORIGIN_KEY.verify_key.encode())
    raw = sign1({1: -8, 4: kid}, cbor2.dumps(m, canonical=True), seeded_signing_key("stranger"))
    assert refused(encode(raw, PAYLOAD)) is Reason.BAD_SIGNATURE


def test_claims_bound_to_endorsement() -> None:
    def resolver_with(**kw: object) -> object:
        return standard_resolver().add(anchor_for(ORIGIN_KEY, **kw))  # type: ignore[arg-type]

    data = make()
    other_id = resolver_with(spiffe_id="spiffe://weave.prod.example/ns/shop/sa/other")
    assert refused(data, resolver=other_id) is Reason.ISSUER_MISMATCH
    narrow = resolver_with(spiffe_id=ORIGIN_ID, scopes=("payments/refunds",))
    assert refused(data, resolver=narrow) is Reason.SCOPE_NOT_ENDORSED
    low = resolver_with(spiffe_id=ORIGIN_ID, max_tier=1)
    assert refused(data, resolver=low) is Reason.TIER_EXCEEDS_ENDORSEMENT


def test_payload_mismatch() -> None:
    env = decode_unverified(make())
    assert refused(encode(env.origin_bytes, PAYLOAD + b"!")) is Reason.PAYLOAD_MISMATCH
    assert refused(encode(env.origin_bytes, b"X" + PAYLOAD[1:])) is Reason.PAYLOAD_MISMATCH


def test_stamp_reasons() -> None:
    env = decode_unverified(stamped(3))
    s = [x.encoded for x in env.stamps]
    assert refused(encode(env.origin_bytes, env.payload, [s[1], s[0], s[2]])) is (
        Reason.STAMP_CHAIN_BROKEN
    )
    assert refused(encode(env.origin_bytes, env.payload, s[1:])) is Reason.STAMP_CHAIN_BROKEN
    # A stamp from another envelope does not chain to this one's signature.
    other = decode_unverified(hop(make(envelope_id=b"\x01" * 16), 0))
    assert refused(encode(env.origin_bytes, env.payload, [other.stamps[0].encoded])) is (
        Reason.STAMP_CHAIN_BROKEN
    )
    resolver = standard_resolver()
    resolver.problems[key_id(GATEWAY_KEYS[1].verify_key.encode())] = AnchorProblem.REVOKED
    assert refused(stamped(3), resolver=resolver) is Reason.ANCHOR_REVOKED
    # Gateway anchor endorsed for another ID than the stamp claims.
    resolver = standard_resolver().add(
        anchor_for(GATEWAY_KEYS[0], "spiffe://weave.prod.example/gateway/z", scopes=())
    )
    assert refused(stamped(1), resolver=resolver) is Reason.BAD_STAMP


def test_stamp_signature_by_wrong_key_is_bad_stamp() -> None:
    verified = open_envelope(make(), resolver=standard_resolver(), now=T0)
    forged = stamp(
        verified,
        gateway_id=parse_spiffe_id(GATEWAY_IDS[0]),
        signing_key=GATEWAY_KEYS[1],  # kid of gateway 1, which is endorsed for GATEWAY_IDS[1]
        from_network="a",
        to_network="b",
        rule="r",
        policy_revision=POLICY_REV,
        now=T0,
    )
    assert refused(forged) is Reason.BAD_STAMP
    # Same claims under gateway 0's kid but signed by gateway 1: the signature fails.
    env = decode_unverified(forged)
    good = decode_unverified(hop(make(), 0, now=T0))
    spliced = encode(env.origin_bytes, env.payload, [_resign(good.stamps[0].encoded)])
    assert refused(spliced) is Reason.BAD_STAMP


def _resign(stamp_bytes: bytes) -> bytes:
    tag = cbor2.loads(stamp_bytes)
    prot, unprot, payload, _ = tag.value
    sig = GATEWAY_KEYS[1].sign(sig_structure(prot, payload)).signature
    return cbor2.dumps(cbor2.CBORTag(18, [prot, unprot, payload, sig]), canonical=True)


def test_stamp_time_out_of_range_is_bad_stamp() -> None:
    data = hop(make(), 0, now=T0 + 200)
    assert refused(data, now=T0 + 100) is Reason.BAD_STAMP


def test_too_many_stamps() -> None:
    env = decode_unverified(stamped(1))
    many = encode(env.origin_bytes, env.payload, [env.stamps[0].encoded] * (limits.MAX_STAMPS + 1))
    assert refused(many) is Reason.TOO_MANY_STAMPS


def test_hop_limit_and_transit() -> None:
    data = make(routing=dataclasses.replace(ROUTING, max_hops=1))
    once = hop(data, 0)
    env = decode_unverified(once)
    # A second stamp made as if max_hops allowed it: reuse a 2-stamp chain from a max_hops=3 twin.
    twin = decode_unverified(hop(hop(make(routing=ROUTING), 0), 1))
    assert twin.stamps[0].encoded != env.stamps[0].encoded
    two = encode(env.origin_bytes, env.payload, [env.stamps[0].encoded, twin.stamps[1].encoded])
    assert refused(two) is Reason.HOP_LIMIT_EXCEEDED
    nowhere = make(routing=RoutingConstraint((), (), max_hops=3))
    assert refused(hop(nowhere, 0)) is Reason.TRANSIT_NOT_ALLOWED
    only_c = make(routing=RoutingConstraint((), (parse_spiffe_id(GATEWAY_IDS[2]),), max_hops=3))
    assert open_envelope(hop(only_c, 2), resolver=standard_resolver(), now=T0 + 2).hops == 1
    assert refused(hop(only_c, 1)) is Reason.TRANSIT_NOT_ALLOWED


def test_seal_claims_checks_digest() -> None:
    claims = decode_unverified(make()).claims
    with pytest.raises(LocalProtocolError):
        seal_claims(claims, PAYLOAD + b"x", ORIGIN_KEY)
    assert encode_claims(claims) == decode_unverified(make()).origin.payload


# Tampering: every single byte ------------------------------------------------------------------


def _assert_every_flip_refused(data: bytes, start: int, end: int, now: int) -> None:
    resolver = standard_resolver()
    open_envelope(data, resolver=resolver, now=now)
    for i in range(start, end):
        flipped = bytearray(data)
        flipped[i] ^= 0x01 if i % 2 else 0x80
        with pytest.raises(RemoteProtocolError):
            open_envelope(bytes(flipped), resolver=resolver, now=now)


def test_every_byte_flip_of_sealed_stamped_envelope_is_refused() -> None:
    data = make(seal_to=DESTINATION_BOX.public_key.encode())
    for n in range(3):
        data = hop(data, n)
    env = decode_unverified(data)
    # The whole envelope, which covers header, payload and each stamp; then each region on its
    # own is located to show the loop did cover it.
    for region in (env.origin_bytes, env.payload, *(s.encoded for s in env.stamps)):
        assert data.find(region) >= 0
    _assert_every_flip_refused(data, 0, len(data), now=T0 + 2)


def test_every_byte_flip_with_all_bits() -> None:
    data = hop(make(payload=b"p" * 8), 0)
    resolver = standard_resolver()
    for i in range(len(data)):
        for bit in range(8):
            flipped = bytearray(data)
            flipped[i] ^= 1 << bit
            with pytest.raises(RemoteProtocolError):
                open_envelope(bytes(flipped), resolver=resolver, now=T0 + 2)


# Prefixes and fuzzing ------------------------------------------------------------------------


def test_every_strict_prefix_is_malformed() -> None:
    data = stamped(2)
    for end in range(len(data)):
        with pytest.raises(RemoteProtocolError) as info:
            decode_unverified(data[:end])
        assert info.value.reason is Reason.MALFORMED, end


def test_trailing_bytes_are_refused() -> None:
    assert refused(make() + b"\x00") in (Reason.MALFORMED, Reason.NON_CANONICAL)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_give_value_or_protocol_error(data: bytes) -> None:
    try:
        decode_unverified(data)
        open_envelope(data, resolver=standard_resolver(), now=T0)
    except RemoteProtocolError as exc:
        assert isinstance(exc.reason, Reason)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_envelopes_give_value_or_protocol_error(data: st.DataObject) -> None:
    base = bytearray(stamped(1))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(base) - 1))
        base[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(base)))
    try:
        open_envelope(bytes(base[:cut]), resolver=standard_resolver(), now=T0 + 2)
    except RemoteProtocolError as exc:
        assert isinstance(exc.reason, Reason)


def test_nesting_bomb_is_malformed() -> None:
    assert refused(b"\x81" * 100_000 + b"\x00") is Reason.MALFORMED


def test_wrong_signing_key_type_never_verifies() -> None:
    key = nacl.signing.SigningKey.generate()
    assert refused(make(signing_key=key)) is Reason.UNKNOWN_ANCHOR
