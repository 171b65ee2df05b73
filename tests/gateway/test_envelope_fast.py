"""The envelope codec's fast paths agree with the reference paths they shortcut.

Each fast path (strict head walker for the envelope and COSE_Sign1 frames, template walk of the
claims map, specialised claims encoder, memoised protected header, reusable Sealer) must accept
exactly what the reference (cbor2 decode + canonical re-encode) accepts, with the same values, and
produce the same bytes. Refusals always carry the reference's reason code.
"""

from __future__ import annotations

import dataclasses

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.envelope import Sealer, cose, decode_unverified, open_envelope, seal, wire
from gateway.envelope import claims as claims_mod
from gateway.envelope._cbor import loads_canonical, read_bstr, read_head
from gateway.envelope.model import Claims, RoutingConstraint
from gateway.errors import LocalProtocolError, RemoteProtocolError
from gateway.reasons import Reason
from identity.spiffe_id import parse_spiffe_id, parse_trust_domain
from tests.gateway.envelope_fixtures import (
    DESTINATION_BOX,
    LINEAGE,
    ORIGIN_ID,
    ORIGIN_KEY,
    ROUTING,
    T0,
    standard_resolver,
)
from tests.gateway.test_envelope import make, stamped

# -- strategies ------------------------------------------------------------------------------

_segment = st.from_regex(r"[a-z0-9_\-][a-z0-9._\-]{0,11}", fullmatch=True)
scopes = st.lists(_segment, min_size=1, max_size=4).map("/".join)
domains = st.from_regex(r"[a-z0-9][a-z0-9\-]{0,10}(\.[a-z0-9]{1,8}){0,2}", fullmatch=True)
spiffe_ids = st.builds(
    lambda td, segs: parse_spiffe_id(f"spiffe://{td}" + "".join(f"/{s}" for s in segs)),
    domains,
    st.lists(_segment, max_size=3),
)
routings = st.builds(
    RoutingConstraint,
    transit_domains=st.lists(domains, max_size=4, unique=True).map(
        lambda ds: tuple(parse_trust_domain(d) for d in ds)
    ),
    transit_gateways=st.lists(spiffe_ids, max_size=4, unique=True).map(tuple),
    max_hops=st.integers(0, 16),
)
timestamps = st.integers(0, 2**40 - 3600)


@st.composite
def claims_values(draw: st.DrawFn) -> Claims:
    issued = draw(timestamps)
    return Claims(
        issuer=draw(spiffe_ids),
        origin_scope=draw(scopes),
        destination_scope=draw(scopes),
        destination_id=draw(st.none() | spiffe_ids),
        tier=draw(st.integers(0, 255)),
        lineage=draw(st.binary(min_size=32, max_size=32)),
        routing=draw(routings),
        issued_at=issued,
        expires_at=issued + draw(st.integers(1, 3600)),
        envelope_id=draw(st.binary(min_size=16, max_size=16)),
        payload_digest=draw(st.binary(min_size=32, max_size=32)),
        payload_length=draw(st.sampled_from([0, 1, 23, 24, 255, 256, 65535, 65536, 1 << 20])),
        sealed=draw(st.booleans()),
    )


def reference_claims(data: bytes) -> Claims:
    return claims_mod._claims_from_value(loads_canonical(data, "claims"))


def outcome(fn: object, data: bytes) -> object:
    try:
        return fn(data)  # type: ignore[operator]
    except RemoteProtocolError as exc:
        return exc.reason


# -- the specialised claims encoder and the template walk -------------------------------------


@settings(max_examples=300, deadline=None)
@given(claims_values())
def test_specialised_encoder_equals_cbor2_canonical(claims: Claims) -> None:
    expected = cbor2.dumps(claims_mod.claims_as_map(claims), canonical=True)
    assert claims_mod.encode_claims_unchecked(claims) == expected
    assert claims_mod.encode_claims(claims) == expected


@settings(max_examples=300, deadline=None)
@given(claims_values())
def test_fast_claims_walk_accepts_every_encoding_and_agrees(claims: Claims) -> None:
    data = claims_mod.encode_claims(claims)
    assert claims_mod._decode_claims_fast(data) == claims  # the fast path, not a fallback
    assert reference_claims(data) == claims
    assert claims_mod.decode_claims(data) == claims


@settings(max_examples=500, deadline=None)
@given(claims_values(), st.data())
def test_fast_claims_walk_never_accepts_what_the_reference_refuses(
    claims: Claims, data: st.DataObject
) -> None:
    mutated = bytearray(claims_mod.encode_claims(claims))
    for _ in range(data.draw(st.integers(1, 3))):
        kind = data.draw(st.sampled_from(["set", "insert", "delete"]))
        pos = data.draw(st.integers(0, len(mutated) - 1))
        if kind == "set":
            mutated[pos] = data.draw(st.integers(0, 255))
        elif kind == "insert":
            mutated.insert(pos, data.draw(st.integers(0, 255)))
        else:
            del mutated[pos]
    blob = bytes(mutated)
    try:
        fast = claims_mod._decode_claims_fast(blob)
    except Exception:
        fast = None
    reference = outcome(reference_claims, blob)
    if fast is not None:
        assert fast == reference
    assert outcome(claims_mod.decode_claims, blob) == reference


def test_null_destination_id_is_refused() -> None:
    # A null destination id would be a second encoding of "no destination id" (the reference path
    # used to accept it as None); present means a SPIFFE ID.
    claims = reference_claims(claims_mod.encode_claims(_claims()))
    value = claims_mod.claims_as_map(claims)
    value[claims_mod.C_DESTINATION_ID] = None
    with pytest.raises(RemoteProtocolError) as info:
        claims_mod.decode_claims(cbor2.dumps(value, canonical=True))
    assert info.value.reason is Reason.MALFORMED


def _claims(**overrides: object) -> Claims:
    fields: dict[str, object] = dict(
        issuer=parse_spiffe_id(ORIGIN_ID),
        origin_scope="payments/checkout",
        destination_scope="payments/ledger",
        destination_id=None,
        tier=2,
        lineage=LINEAGE,
        routing=ROUTING,
        issued_at=T0,
        expires_at=T0 + 300,
        envelope_id=bytes(16),
        payload_digest=bytes(32),
        payload_length=0,
        sealed=False,
    )
    fields.update(overrides)
    return Claims(**fields)  # type: ignore[arg-type]


# -- the strict head reader ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "pos", "major", "reason"),
    [
        (b"\x58\x05hello", 0, 2, Reason.NON_CANONICAL),  # 5 fits in the initial byte
        (b"\x00\x59\x00\x10" + bytes(16), 1, 2, Reason.NON_CANONICAL),  # 16 < 256: one byte
        (b"\x5a\x00\x00\x00\x10" + bytes(16), 0, 2, Reason.NON_CANONICAL),
        (b"\x1b" + (5).to_bytes(8, "big"), 0, 0, Reason.NON_CANONICAL),
        (b"\x5f\x41a\xff", 0, 2, Reason.NON_CANONICAL),  # indefinite length
        (b"\x9f\xff", 0, 4, Reason.NON_CANONICAL),
        (b"\x5c", 0, 2, Reason.MALFORMED),  # reserved additional information
        (b"\x59\x01", 0, 2, Reason.MALFORMED),  # truncated head
        (b"\x61a", 0, 2, Reason.MALFORMED),  # a tstr where a bstr belongs
        (b"\x00\x00", 2, 2, Reason.MALFORMED),  # input ends
    ],
)
def test_read_head_refuses_with_the_exact_offset(
    data: bytes, pos: int, major: int, reason: Reason
) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        read_head(data, pos, major, "item")
    assert (info.value.reason, info.value.offset) == (reason, pos)


def test_read_head_accepts_shortest_forms() -> None:
    for value in (0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1):
        encoded = cbor2.dumps(value)
        assert read_head(encoded, 0, 0, "uint") == (value, len(encoded))
    assert read_bstr(b"\x00\x43abc\x01", 1, "b") == (b"abc", 5)
    with pytest.raises(RemoteProtocolError) as info:
        read_bstr(b"\x00\x43ab", 1, "b")
    assert (info.value.reason, info.value.offset) == (Reason.MALFORMED, 1)


def test_non_shortest_origin_length_is_non_canonical_at_its_offset() -> None:
    data = make()
    origin, _end = read_bstr(data, 2, "origin")
    assert data[2] == 0x59  # origin is 256..65535 bytes: a two-byte length
    longer = data[:2] + b"\x5a" + len(origin).to_bytes(4, "big") + data[5:]
    with pytest.raises(RemoteProtocolError) as info:
        decode_unverified(longer)
    assert (info.value.reason, info.value.offset) == (Reason.NON_CANONICAL, 2)


def test_unsupported_version_offset_and_too_many_stamps_reason() -> None:
    data = make()
    with pytest.raises(RemoteProtocolError) as info:
        decode_unverified(data[:1] + b"\x02" + data[2:])
    assert (info.value.reason, info.value.offset) == (Reason.UNSUPPORTED_VERSION, 1)
    many = wire.encode(*_parts(data), stamps=[b"x"] * 17)
    with pytest.raises(RemoteProtocolError) as info:
        decode_unverified(many)
    assert info.value.reason is Reason.TOO_MANY_STAMPS


def _parts(data: bytes) -> tuple[bytes, bytes]:
    origin, pos = read_bstr(data, 2, "origin")
    payload, _ = read_bstr(data, pos, "payload")
    return origin, payload


# -- frames: fast walk vs reference ------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_frame_walkers_agree_with_the_reference(data: st.DataObject) -> None:
    base = bytearray(stamped(1))
    for _ in range(data.draw(st.integers(0, 3))):
        pos = data.draw(st.integers(0, len(base) - 1))
        base[pos] = data.draw(st.integers(0, 255))
    blob = bytes(base[: data.draw(st.integers(0, len(base)))])
    fast = outcome(wire._split_fast, blob)
    reference = outcome(wire._split_reference, blob)
    if not isinstance(fast, Reason):
        assert fast == reference
    assert outcome(wire._split, blob) == reference
    origin = wire._split_reference(bytes(stamped(1)))[0]
    mutated = bytearray(origin)
    pos = data.draw(st.integers(0, len(mutated) - 1))
    mutated[pos] = data.draw(st.integers(0, 255))
    for candidate in (bytes(mutated), origin):
        fast_sign1 = outcome(cose._decode_sign1_fast, candidate)
        reference_sign1 = outcome(cose._decode_sign1_reference, candidate)
        if not isinstance(fast_sign1, Reason):
            assert fast_sign1 == reference_sign1
        assert outcome(cose.decode_sign1_unverified, candidate) == reference_sign1


def test_fast_paths_are_taken_for_our_own_envelopes() -> None:
    data = stamped(2)
    origin, _payload, stamps = wire._split_fast(data)
    assert len(stamps) == 2
    sign1 = cose._decode_sign1_fast(origin)
    assert claims_mod._decode_claims_fast(sign1.payload) is not None
    assert decode_unverified(data).claims == reference_claims(sign1.payload)


def test_mutable_protected_headers_are_not_shared_between_calls() -> None:
    header = cbor2.dumps({1: -8, 2: [4], 4: b"kid"}, canonical=True)
    first = cose.decode_protected(header)
    first[2].append(99)  # a caller misbehaving with a decoded crit list
    assert cose.decode_protected(header)[2] == [4]
    plain = cbor2.dumps({1: -8, 4: b"kid"}, canonical=True)
    assert cose.decode_protected(plain) is cose.decode_protected(plain)  # memoised


# -- the reusable sealer -----------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(claims_values(), st.binary(max_size=300), st.booleans())
def test_sealer_bytes_equal_generic_seal(claims: Claims, payload: bytes, with_id: bool) -> None:
    fixed = dict(
        issuer=claims.issuer,
        origin_scope=claims.origin_scope,
        destination_scope=claims.destination_scope,
        destination_id=claims.destination_id,
        tier=claims.tier,
        lineage=claims.lineage,
        routing=claims.routing,
        signing_key=ORIGIN_KEY,
    )
    per_envelope = dict(
        issued_at=claims.issued_at,
        expires_at=claims.expires_at,
        envelope_id=claims.envelope_id if with_id else None,
    )
    sealer = Sealer(**fixed)  # type: ignore[arg-type]
    produced = sealer.seal(payload, **per_envelope)  # type: ignore[arg-type]
    if with_id:
        assert produced == seal(payload=payload, **fixed, **per_envelope)  # type: ignore[arg-type]
    decoded = decode_unverified(produced).claims
    if with_id:
        assert decoded.envelope_id == claims.envelope_id
    assert (decoded.payload_length, decoded.sealed) == (len(payload), False)
    unchanged = dataclasses.replace(
        decoded,
        envelope_id=claims.envelope_id,
        payload_digest=claims.payload_digest,
        payload_length=claims.payload_length,
        sealed=claims.sealed,
    )
    assert unchanged == claims


def test_sealer_output_opens_and_seals_to_a_box() -> None:
    sealer = Sealer(
        issuer=parse_spiffe_id(ORIGIN_ID), origin_scope="payments/checkout",
        destination_scope="payments/ledger", tier=2, lineage=LINEAGE, routing=ROUTING,
        signing_key=ORIGIN_KEY,
    )  # fmt: skip
    data = sealer.seal(b"hello", issued_at=T0, expires_at=T0 + 60)
    verified = open_envelope(data, resolver=standard_resolver(), now=T0)
    assert verified.payload == b"hello" and not verified.claims.sealed
    boxed = sealer.seal(
        b"secret", issued_at=T0, expires_at=T0 + 60, seal_to=bytes(DESTINATION_BOX.public_key)
    )
    assert open_envelope(boxed, resolver=standard_resolver(), now=T0).claims.sealed


@pytest.mark.parametrize(
    ("fixed", "per_envelope"),
    [
        ({"tier": 256}, {}),
        ({"origin_scope": "bad scope"}, {}),
        ({"lineage": b"short"}, {}),
        ({}, {"expires_at": T0}),
        ({}, {"expires_at": T0 + 3601}),
        ({}, {"envelope_id": b"short"}),
        ({}, {"issued_at": -1}),
    ],
)
def test_sealer_refuses_what_seal_refuses(
    fixed: dict[str, object], per_envelope: dict[str, object]
) -> None:
    base: dict[str, object] = dict(
        issuer=parse_spiffe_id(ORIGIN_ID), origin_scope="payments/checkout",
        destination_scope="payments/ledger", tier=2, lineage=LINEAGE, routing=ROUTING,
        signing_key=ORIGIN_KEY,
    )  # fmt: skip
    times: dict[str, object] = dict(issued_at=T0, expires_at=T0 + 60)
    base.update(fixed)
    times.update(per_envelope)
    with pytest.raises(LocalProtocolError):
        seal(payload=b"x", **base, **times)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        Sealer(**base).seal(b"x", **times)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(
    hop=st.integers(1, 16),
    stamped_at=st.integers(0, 2**40),
    from_network=st.text(st.sampled_from("abcxyz-_.0189"), min_size=1, max_size=40),
    to_network=st.text(st.sampled_from("abcxyz-_.0189"), min_size=1, max_size=40),
    rule=st.text(st.sampled_from("abcdefghij-_.:0189"), min_size=1, max_size=60),
    hashes=st.lists(st.binary(min_size=32, max_size=32), min_size=3, max_size=3),
)
def test_fast_stamp_encoder_equals_cbor2_canonical(
    hop: int, stamped_at: int, from_network: str, to_network: str, rule: str, hashes: list[bytes]
) -> None:
    from gateway.envelope.claims import (  # noqa: PLC0415
        decode_stamp_claims,
        encode_stamp_claims,
        encode_stamp_claims_reference,
    )
    from gateway.envelope.model import StampClaims, StampDecision  # noqa: PLC0415
    from identity.spiffe_id import parse_spiffe_id  # noqa: PLC0415

    claims = StampClaims(
        gateway=parse_spiffe_id("spiffe://weave.prod.example/gateway/a"),
        hop=hop,
        from_network=from_network,
        to_network=to_network,
        decision=StampDecision.ALLOW,
        rule=rule,
        policy_revision=hashes[0],
        stamped_at=stamped_at,
        envelope_signature_hash=hashes[1],
        previous_stamp_hash=hashes[2],
    )
    fast = encode_stamp_claims(claims)
    assert fast == encode_stamp_claims_reference(claims)
    assert decode_stamp_claims(fast) == claims
