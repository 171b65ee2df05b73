"""The hot-path shortcuts of opening, sealing and stamping agree with the general paths.

``open_envelope`` walks an unstamped envelope in one pass (``wire.decode_unstamped_fast``) and
falls back to ``decode_unverified`` for anything else; these tests feed the same bytes, intact,
mutated and truncated, through both and require the same values or the same reason. They also
cover the positional builder for frozen dataclasses, the short-head branches of ``read_head``,
the parts-based signature check and the route-cached stamp encoder.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.envelope import claims as claims_mod
from gateway.envelope import cose, decode_unverified, open_envelope, recipe, stamp, wire
from gateway.envelope._cbor import _read_head_checked, head, read_head
from gateway.envelope.frozen import positional_builder
from gateway.envelope.model import (
    Claims,
    StampClaims,
    StampDecision,
    VerifiedEnvelope,
)
from gateway.errors import LocalProtocolError, RemoteProtocolError
from gateway.policy.decide import Decision
from gateway.reasons import Reason
from identity.spiffe_id import parse_spiffe_id
from tests.gateway.envelope_fixtures import (
    GATEWAY_IDS,
    GATEWAY_KEYS,
    ORIGIN_KEY,
    POLICY_REV,
    T0,
    standard_resolver,
)
from tests.gateway.test_envelope import make, stamped


def outcome(fn: Callable[[], object]) -> object:
    try:
        return fn()
    except RemoteProtocolError as exc:
        return exc.reason


def reference_parts(data: bytes) -> object:
    """What ``decode_unverified`` gives, in the shape of ``decode_unstamped_fast``'s parts."""
    env = decode_unverified(data)
    origin = env.origin
    return (
        (env.origin_bytes, origin.protected_bytes, origin.kid, origin.payload, origin.signature,
         env.claims, env.payload),
        env.stamps,
        dict(origin.unprotected),
    )  # fmt: skip


def mutate(data: st.DataObject, base: bytes) -> bytes:
    blob = bytearray(base)
    for _ in range(data.draw(st.integers(0, 3), label="mutations")):
        kind = data.draw(st.sampled_from(["set", "insert", "delete"]))
        pos = data.draw(st.integers(0, len(blob) - 1))
        if kind == "set":
            blob[pos] = data.draw(st.integers(0, 255))
        elif kind == "insert":
            blob.insert(pos, data.draw(st.integers(0, 255)))
        else:
            del blob[pos]
    return bytes(blob[: data.draw(st.integers(0, len(blob)), label="cut")])


def general_open(data: bytes) -> object:
    """``open_envelope`` with the one-pass walker switched off (the general path only)."""
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(recipe, "decode_unstamped_fast", lambda _data: None)
        return outcome(lambda: open_envelope(data, resolver=standard_resolver(), now=T0 + 2))


# -- the one-pass walker -----------------------------------------------------------------------


def test_walker_takes_our_unstamped_envelopes_and_leaves_stamped_ones() -> None:
    data = make()
    parts = wire.decode_unstamped_fast(data)
    assert parts is not None
    assert (parts, (), {}) == reference_parts(data)
    assert wire.decode_unstamped_fast(stamped(1)) is None


@settings(max_examples=600, deadline=None)
@given(st.data())
def test_walker_never_accepts_what_the_reference_refuses(data: st.DataObject) -> None:
    base = data.draw(st.sampled_from([make(), make(payload=bytes(300)), stamped(1)]))
    blob = mutate(data, base)
    fast = wire.decode_unstamped_fast(blob)
    reference = outcome(lambda: reference_parts(blob))
    if fast is not None:
        assert (fast, (), {}) == reference


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_open_gives_the_same_result_with_and_without_the_walker(data: st.DataObject) -> None:
    blob = mutate(data, data.draw(st.sampled_from([make(), make(payload=b""), stamped(1)])))
    fast = outcome(lambda: open_envelope(blob, resolver=standard_resolver(), now=T0 + 2))
    assert fast == general_open(blob)


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"\x80",
        b"\x84\x01",
        b"\x84\x01\x40\x40\x80",
        b"\x84\x01\x58\x01a\x40\x80",  # non-shortest origin length
        bytearray(b"\x84\x01\x40\x40\x80"),  # not bytes at all
    ],
)
def test_walker_declines_odd_input_and_open_refuses_it_as_before(blob: bytes) -> None:
    assert wire.decode_unstamped_fast(blob) is None
    fast = outcome(lambda: open_envelope(blob, resolver=standard_resolver(), now=T0))
    assert isinstance(fast, Reason)
    assert fast == general_open(blob)


def test_open_checks_in_the_documented_order_on_the_fast_path() -> None:
    # Expired and tampered: the time check comes before the signature (docs/envelope.md).
    data = bytearray(make())
    data[-2] ^= 1  # the payload's last byte: the signature still holds, the digest does not
    tampered = bytes(data)
    assert wire.decode_unstamped_fast(tampered) is not None
    reason = outcome(lambda: open_envelope(tampered, resolver=standard_resolver(), now=T0 + 2))
    assert reason is Reason.PAYLOAD_MISMATCH
    late = T0 + 100_000
    assert outcome(lambda: open_envelope(tampered, resolver=standard_resolver(), now=late)) is (
        Reason.EXPIRED
    )


# -- signatures from parts -----------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 255))
def test_verify_parts_agrees_with_verify_sign1(position: int, value: int) -> None:
    origin = decode_unverified(make()).origin
    mutated = bytearray(origin.signature + origin.payload)
    mutated[position % len(mutated)] = value
    sign1 = dataclasses.replace(origin, signature=bytes(mutated[:64]), payload=bytes(mutated[64:]))
    key = ORIGIN_KEY.verify_key.encode()
    parts = (sign1.protected_bytes, sign1.payload, sign1.signature, key)
    assert outcome(lambda: cose.verify_parts(*parts)) == outcome(
        lambda: cose.verify_sign1(sign1, key)
    )


# -- read_head's short-head branches ---------------------------------------------------------


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=10), st.integers(0, 11), st.integers(0, 7))
def test_read_head_shortcuts_agree_with_the_full_check(data: bytes, pos: int, major: int) -> None:
    def full() -> object:
        return _read_head_checked(data, pos, major, "item")

    def fast() -> object:
        return read_head(data, pos, major, "item")

    assert outcome(fast) == outcome(full)
    try:
        full()
    except RemoteProtocolError as expected:
        with pytest.raises(RemoteProtocolError) as info:
            fast()
        assert (info.value.offset, info.value.detail) == (expected.offset, expected.detail)


def test_encode_frames_like_cbor2() -> None:
    stamps = [b"s" * 30, b"t" * 300]
    expected = cbor2.dumps([1, b"o" * 500, b"p" * 70_000, stamps], canonical=True)
    assert wire.encode(b"o" * 500, b"p" * 70_000, stamps) == expected


# -- the positional builder ------------------------------------------------------------------


def test_built_values_are_the_frozen_class_itself() -> None:
    claims = decode_unverified(make()).claims
    values = [getattr(claims, f.name) for f in dataclasses.fields(Claims)]
    built = positional_builder(Claims)(*values)
    assert type(built) is Claims
    assert built == claims and hash(built) == hash(claims) and repr(built) == repr(claims)
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.tier = 9  # type: ignore[misc]
    for value in (built, claims):  # a new attribute fails alike (how depends on the Python)
        with pytest.raises((AttributeError, TypeError)) as info:
            value.extra = 1  # type: ignore[attr-defined]
        assert type(info.value) is type(refused_extra(claims))
    assert dataclasses.replace(built, tier=1) == dataclasses.replace(claims, tier=1)


def refused_extra(value: object) -> BaseException:
    try:
        value.extra = 1  # type: ignore[attr-defined]
    except (AttributeError, TypeError) as exc:
        return exc
    raise AssertionError("a frozen value took a new attribute")


def test_open_returns_a_genuine_verified_envelope() -> None:
    verified = open_envelope(make(), resolver=standard_resolver(), now=T0)
    assert type(verified) is VerifiedEnvelope and type(verified.claims) is Claims
    rebuilt = VerifiedEnvelope(
        **{f.name: getattr(verified, f.name) for f in dataclasses.fields(VerifiedEnvelope)}
    )
    assert rebuilt == verified and hash(rebuilt.claims) == hash(verified.claims)
    with pytest.raises(dataclasses.FrozenInstanceError):
        verified.payload = b"other"  # type: ignore[misc]


def test_builder_refuses_classes_it_cannot_build() -> None:
    @dataclasses.dataclass(slots=True)
    class Mutable:
        x: int

    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        x: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Derived:
        x: int
        y: int = dataclasses.field(init=False, default=0)

    for cls in (Mutable, NoSlots, Derived):
        with pytest.raises(TypeError):
            positional_builder(cls)
    decision = positional_builder(Decision)(True, "r", Reason.ALLOWED, bytes(32), "d")
    assert decision == Decision(True, "r", Reason.ALLOWED, bytes(32), "d")


# -- stamping --------------------------------------------------------------------------------


def _stamp_claims(**overrides: object) -> StampClaims:
    fields: dict[str, object] = dict(
        gateway=parse_spiffe_id(GATEWAY_IDS[0]),
        hop=1,
        from_network="weave",
        to_network="cilium",
        decision=StampDecision.ALLOW,
        rule="ledger-from-payments",
        policy_revision=POLICY_REV,
        stamped_at=T0,
        envelope_signature_hash=bytes(range(32)),
        previous_stamp_hash=bytes(32),
    )
    fields.update(overrides)
    return StampClaims(**fields)  # type: ignore[arg-type]


def test_stamp_bytes_equal_the_reference_construction() -> None:
    verified = open_envelope(make(), resolver=standard_resolver(), now=T0)
    for hop in range(1, 3):
        produced = stamp(
            verified, gateway_id=parse_spiffe_id(GATEWAY_IDS[0]), signing_key=GATEWAY_KEYS[0],
            from_network="weave", to_network="cilium", rule="r-1", policy_revision=POLICY_REV,
            now=T0 + hop,
        )  # fmt: skip
        claims = _stamp_claims(
            hop=hop, rule="r-1", stamped_at=T0 + hop,
            envelope_signature_hash=recipe.digest(verified.signature),
            previous_stamp_hash=(
                recipe.digest(verified.stamps[-1].encoded) if verified.stamps else bytes(32)
            ),
        )  # fmt: skip
        protected = recipe._protected_for(GATEWAY_KEYS[0].verify_key.encode())
        expected_stamp, _ = cose.sign1_with_protected(
            protected, claims_mod.encode_stamp_claims_reference(claims), GATEWAY_KEYS[0]
        )
        expected = wire.encode(
            verified.signed_header,
            verified.payload,
            [s.encoded for s in verified.stamps] + [expected_stamp],
        )
        assert produced == expected
        verified = open_envelope(produced, resolver=standard_resolver(), now=T0 + hop)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"hop": 0}, "hop must be 1..16"),
        ({"hop": 17, "rule": "bad rule"}, "hop must be 1..16"),
        ({"from_network": "has space"}, "bad from_network"),
        ({"to_network": ""}, "bad to_network"),
        ({"rule": "x" * 129}, "bad rule id"),
        ({"rule": "bad rule", "stamped_at": -1}, "bad rule id"),
        ({"policy_revision": b"short"}, "policy_revision must be 32 bytes"),
        ({"policy_revision": bytearray(32)}, "policy_revision must be 32 bytes"),
        ({"from_network": ["unhashable"]}, "bad from_network"),
        ({"stamped_at": 2**40 + 1}, "stamped_at out of range"),
        ({"envelope_signature_hash": b""}, "bad signature hash"),
        ({"previous_stamp_hash": bytes(31)}, "bad previous stamp hash"),
    ],
)
def test_stamp_encoder_refuses_in_field_order(overrides: dict[str, object], message: str) -> None:
    for _ in range(2):  # the second time, a cached route must refuse exactly the same way
        with pytest.raises(LocalProtocolError, match=f"^{message}$"):
            claims_mod.encode_stamp_claims(_stamp_claims(**overrides))


@settings(max_examples=200, deadline=None)
@given(
    hop=st.integers(1, 16),
    stamped_at=st.integers(0, 2**40),
    rule=st.sampled_from(["r", "ledger-from-payments", "x" * 128]),
    network=st.sampled_from(["a", "weave", "n" * 64]),
)
def test_cached_route_encoder_equals_cbor2(
    hop: int, stamped_at: int, rule: str, network: str
) -> None:
    claims = _stamp_claims(hop=hop, stamped_at=stamped_at, rule=rule, to_network=network)
    expected = claims_mod.encode_stamp_claims_reference(claims)
    assert claims_mod.encode_stamp_claims(claims) == expected
    assert claims_mod.decode_stamp_claims(expected) == claims


@pytest.mark.parametrize("value", [0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32])
def test_heads_are_cbor2s_shortest_forms(value: int) -> None:
    assert head(0, value) == cbor2.dumps(value)
    if value <= 70_000:
        assert head(2, value) + bytes(value) == cbor2.dumps(bytes(value))
        assert head(4, value) == cbor2.dumps([0] * value)[: len(head(4, value))]
