"""The reusable sealer's fast path writes exactly what the generic path and cbor2 write.

``Sealer.seal`` skips per-call work (pre-joined COSE prefixes, one combined range check, packed
timestamps); these tests compare its bytes with :func:`gateway.envelope.seal` (or, for sealed
payloads, whose ciphertext is random, :func:`seal_claims` on the same ciphertext) and with an
envelope built independently through cbor2, and check that bad per-envelope fields are refused
with the same exception type and message as before (an independent statement of the rules).
"""

from __future__ import annotations

import random

import cbor2
import nacl.bindings
import nacl.public
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.envelope import Sealer, cose, decode_unverified, digest, limits, seal, seal_claims
from gateway.envelope import claims as claims_mod
from gateway.envelope.model import Claims
from gateway.errors import LocalProtocolError
from identity.anchor_contract import key_id
from identity.spiffe_id import parse_spiffe_id
from tests.gateway.envelope_fixtures import DESTINATION_BOX, LINEAGE, ORIGIN_ID, ORIGIN_KEY, ROUTING
from tests.gateway.test_envelope_fast import claims_values

T_MAX = limits.MAX_TIMESTAMP
# iat values around every CBOR head boundary (1, 2, 3, 5 and 9-byte heads) and the packed range.
issued_ats = st.one_of(
    st.integers(0, 300),
    st.sampled_from([23, 24, 255, 256, 0xFFFF, 0x10000, 0xFFFFFFFF - 3600, 0xFFFFFFFF - 1]),
    st.sampled_from([0xFFFFFFFF, 0x100000000, T_MAX - 3600, T_MAX - 1]),
    st.integers(0, T_MAX - 1),
)
payload_sizes = st.one_of(
    st.sampled_from([0, 1, 23, 24, 255, 256, 65535, 65536, 70_000]), st.integers(0, 70_000)
)


def payload_of(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def fixed_of(claims: Claims) -> dict[str, object]:
    return dict(
        issuer=claims.issuer,
        origin_scope=claims.origin_scope,
        destination_scope=claims.destination_scope,
        destination_id=claims.destination_id,
        tier=claims.tier,
        lineage=claims.lineage,
        routing=claims.routing,
        signing_key=ORIGIN_KEY,
    )


def cbor2_envelope(claims: Claims, carried: bytes) -> bytes:
    """The envelope written from scratch with cbor2 (canonical) and PyNaCl's SigningKey."""
    labels = claims_mod
    m: dict[int, object] = {
        labels.ISS: str(claims.issuer),
        labels.EXP: claims.expires_at,
        labels.IAT: claims.issued_at,
        labels.CTI: claims.envelope_id,
        labels.C_VERSION: 1,
        labels.C_ORIGIN_SCOPE: claims.origin_scope,
        labels.C_DESTINATION_SCOPE: claims.destination_scope,
        labels.C_TIER: claims.tier,
        labels.C_LINEAGE: claims.lineage,
        labels.C_ROUTING: {
            1: [td.id_string for td in claims.routing.transit_domains],
            2: [str(g) for g in claims.routing.transit_gateways],
            3: claims.routing.max_hops,
        },
        labels.C_PAYLOAD_DIGEST: digest(carried),
        labels.C_PAYLOAD_LENGTH: len(carried),
        labels.C_SEALED: claims.sealed,
    }
    if claims.destination_id is not None:
        m[labels.C_DESTINATION_ID] = str(claims.destination_id)
    claims_bytes = cbor2.dumps(m, canonical=True)
    protected = cbor2.dumps({1: -8, 4: key_id(ORIGIN_KEY.verify_key.encode())}, canonical=True)
    to_sign = cbor2.dumps(["Signature1", protected, b"", claims_bytes], canonical=True)
    signature = ORIGIN_KEY.sign(to_sign).signature
    origin = cbor2.dumps(cbor2.CBORTag(18, [protected, {}, claims_bytes, signature]))
    return cbor2.dumps([1, origin, carried, []], canonical=True)


@settings(max_examples=120, deadline=None)
@given(
    claims=claims_values(),
    issued_at=issued_ats,
    lifetime=st.integers(1, 3600),
    size=payload_sizes,
    seed=st.integers(0, 2**32),
    sealed=st.booleans(),
)
@example(claims=None, issued_at=0xFFFFFFFF - 10, lifetime=10, size=65536, seed=1, sealed=False)
@example(claims=None, issued_at=0xFFFFFFFF - 10, lifetime=11, size=65535, seed=2, sealed=True)
@example(claims=None, issued_at=0xFFFF, lifetime=1, size=0, seed=3, sealed=False)
def test_sealer_equals_seal_and_cbor2(
    claims: Claims | None, issued_at: int, lifetime: int, size: int, seed: int, sealed: bool
) -> None:
    if claims is None:  # the explicit examples: the benchmark's workload claims
        claims = Claims(
            issuer=parse_spiffe_id(ORIGIN_ID), origin_scope="payments/checkout",
            destination_scope="payments/ledger", destination_id=None, tier=2, lineage=LINEAGE,
            routing=ROUTING, issued_at=0, expires_at=1, envelope_id=bytes(16),
            payload_digest=bytes(32), payload_length=0, sealed=False,
        )  # fmt: skip
    expires_at = min(issued_at + lifetime, T_MAX)
    payload = payload_of(size, seed)
    seal_to = bytes(DESTINATION_BOX.public_key) if sealed else None
    fixed = fixed_of(claims)
    times = dict(issued_at=issued_at, expires_at=expires_at, envelope_id=claims.envelope_id)
    produced = Sealer(**fixed).seal(payload, seal_to=seal_to, **times)  # type: ignore[arg-type]

    env = decode_unverified(produced)
    carried = env.payload
    final = Claims(
        issuer=claims.issuer, origin_scope=claims.origin_scope,
        destination_scope=claims.destination_scope, destination_id=claims.destination_id,
        tier=claims.tier, lineage=claims.lineage, routing=claims.routing, issued_at=issued_at,
        expires_at=expires_at, envelope_id=claims.envelope_id, payload_digest=digest(carried),
        payload_length=len(carried), sealed=sealed,
    )  # fmt: skip
    assert env.claims == final
    assert produced == cbor2_envelope(final, carried)
    if sealed:  # the ciphertext is random: compare with the generic path on the same ciphertext
        assert len(carried) == size + 48
        assert nacl.public.SealedBox(DESTINATION_BOX).decrypt(carried) == payload
        assert produced == seal_claims(final, carried, ORIGIN_KEY)
    else:
        assert carried == payload
        assert produced == seal(payload=payload, **fixed, **times)  # type: ignore[arg-type]


def reference_problem(issued_at: object, expires_at: object, envelope_id: object) -> str | None:
    """The per-envelope rules and messages, stated independently of the code under test (payload
    digest and length are the sealer's own, always in range; a missing id is made at random)."""

    def uint(value: object, maximum: int) -> bool:
        return type(value) is int and 0 <= value <= maximum

    if envelope_id is not None and (not isinstance(envelope_id, bytes) or len(envelope_id) != 16):
        return "envelope_id must be 16 bytes"
    if not uint(issued_at, T_MAX):
        return "issued_at out of range"
    if not uint(expires_at, T_MAX):
        return "expires_at out of range"
    assert isinstance(issued_at, int) and isinstance(expires_at, int)
    if expires_at <= issued_at:
        return "expires_at must be after issued_at"
    if expires_at - issued_at > 3600:
        return "lifetime exceeds 3600 s"
    return None


class IdBytes(bytes):
    """A bytes subclass: accepted before (isinstance), so it must still be accepted."""


odd_times = st.one_of(
    st.integers(-5, 5),
    st.sampled_from([T_MAX - 1, T_MAX, T_MAX + 1, 2**64, 1.5e9, True, False, "1700000000", None]),
    st.integers(1_700_000_000 - 4000, 1_700_000_000 + 4000),
)
odd_ids = st.one_of(
    st.binary(min_size=15, max_size=17),
    st.sampled_from(
        [bytearray(16), memoryview(bytes(16)), "x" * 16, None, 16, IdBytes(16), IdBytes(15)]
    ),
)


@settings(max_examples=400, deadline=None)
@given(issued_at=odd_times, expires_at=odd_times, envelope_id=odd_ids, sealed=st.booleans())
@example(issued_at=0, expires_at=3600, envelope_id=IdBytes(16), sealed=False)
@example(issued_at=0, expires_at=3601, envelope_id=bytes(16), sealed=False)
@example(issued_at=T_MAX - 1, expires_at=T_MAX, envelope_id=bytes(16), sealed=False)
@example(issued_at=T_MAX, expires_at=T_MAX + 1, envelope_id=bytes(16), sealed=False)
def test_bad_fields_refused_with_the_same_message(
    issued_at: object, expires_at: object, envelope_id: object, sealed: bool
) -> None:
    fixed = fixed_of(next_claims())
    seal_to = bytes(DESTINATION_BOX.public_key) if sealed else None
    times = dict(issued_at=issued_at, expires_at=expires_at, envelope_id=envelope_id)
    expected = reference_problem(issued_at, expires_at, envelope_id)
    sealer = Sealer(**fixed)  # type: ignore[arg-type]
    if expected is None:
        produced = sealer.seal(b"p", seal_to=seal_to, **times)  # type: ignore[arg-type]
        produced_id = decode_unverified(produced).claims.envelope_id
        assert produced_id == envelope_id or (envelope_id is None and len(produced_id) == 16)
        if not sealed and envelope_id is None:
            times["envelope_id"] = produced_id
        if not sealed:
            assert produced == seal(payload=b"p", **fixed, **times)  # type: ignore[arg-type]
        return
    with pytest.raises(LocalProtocolError) as fast:
        sealer.seal(b"p", seal_to=seal_to, **times)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError) as generic:
        seal(payload=b"p", seal_to=seal_to, **fixed, **times)  # type: ignore[arg-type]
    assert type(fast.value) is type(generic.value) is LocalProtocolError
    assert str(fast.value) == str(generic.value) == expected


def next_claims() -> Claims:
    return Claims(
        issuer=parse_spiffe_id(ORIGIN_ID), origin_scope="payments/checkout",
        destination_scope="payments/ledger", destination_id=None, tier=2, lineage=LINEAGE,
        routing=ROUTING, issued_at=0, expires_at=1, envelope_id=bytes(16),
        payload_digest=bytes(32), payload_length=0, sealed=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("payload", "seal_to", "envelope_id", "message"),
    [
        # The payload is checked before the fields, as in seal(): its error wins.
        (bytes(limits.MAX_PAYLOAD_BYTES + 1), None, b"short", "payload exceeds 1048576 bytes"),
        (bytes(limits.MAX_PAYLOAD_BYTES - 47), b"k" * 32, b"short", "payload too large to seal"),
        (b"p", b"k" * 31, bytes(16), "seal_to must be a 32-byte X25519 public key"),
        (b"p", None, b"short", "envelope_id must be 16 bytes"),
    ],
)
def test_payload_problems_keep_their_order_and_message(
    payload: bytes, seal_to: bytes | None, envelope_id: bytes, message: str
) -> None:
    fixed = fixed_of(next_claims())
    times = dict(issued_at=1_700_000_000, expires_at=1_700_000_060, envelope_id=envelope_id)
    with pytest.raises(LocalProtocolError) as fast:
        Sealer(**fixed).seal(payload, seal_to=seal_to, **times)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError) as generic:
        seal(payload=payload, seal_to=seal_to, **fixed, **times)  # type: ignore[arg-type]
    assert str(fast.value) == str(generic.value) == message


def test_largest_payload_still_seals_and_random_ids_differ() -> None:
    sealer = Sealer(**fixed_of(next_claims()))  # type: ignore[arg-type]
    big = bytes(limits.MAX_PAYLOAD_BYTES)
    env = decode_unverified(sealer.seal(big, issued_at=10**9, expires_at=10**9 + 1))
    assert env.payload == big and env.claims.payload_length == len(big)
    ids = {
        decode_unverified(
            sealer.seal(b"", issued_at=10**9, expires_at=10**9 + 1)
        ).claims.envelope_id
        for _ in range(50)
    }
    assert len(ids) == 50 and all(len(i) == 16 for i in ids)


@settings(max_examples=100, deadline=None)
@given(payload=st.binary(max_size=600), kid=st.binary(min_size=1, max_size=64))
def test_sign1_signer_equals_sign1_with_protected(payload: bytes, kid: bytes) -> None:
    protected = cose.encode_protected({cose.HEADER_ALG: cose.ALG_EDDSA, cose.HEADER_KID: kid})
    secret = nacl.bindings.crypto_sign_seed_keypair(ORIGIN_KEY.encode())[1]
    signer = cose.Sign1Signer(protected, secret)
    produced = signer.sign(payload)
    assert produced == cose.sign1_with_protected(protected, payload, ORIGIN_KEY)[0]
    assert len(produced) == signer.overhead + len(cbor2.dumps(payload))
    assert secret.hex() not in repr(signer) and "secret" not in repr(signer)


@settings(max_examples=300, deadline=None)
@given(
    issued_at=st.one_of(issued_ats, st.integers(0, 0x20000)),
    lifetime=st.integers(1, 3600),
    length=st.sampled_from([0, 23, 24, 255, 256, 65535, 65536, limits.MAX_PAYLOAD_BYTES]),
    sealed=st.booleans(),
)
def test_positional_splice_equals_cbor2(
    issued_at: int, lifetime: int, length: int, sealed: bool
) -> None:
    claims = next_claims()
    expires_at = min(issued_at + lifetime, T_MAX)
    spliced = claims_mod.splice_claims(
        claims_mod.encode_claims_head(claims.issuer, None),
        claims_mod.encode_claims_middle(
            claims.origin_scope,
            claims.destination_scope,
            None,
            claims.tier,
            claims.lineage,
            claims.routing,
        ),
        issued_at,
        expires_at,
        b"i" * 16,
        b"d" * 32,
        length,
        sealed,
    )
    decoded = cbor2.loads(spliced)
    assert cbor2.dumps(decoded, canonical=True) == spliced
    assert (decoded[claims_mod.IAT], decoded[claims_mod.EXP]) == (issued_at, expires_at)
    assert (decoded[claims_mod.C_PAYLOAD_LENGTH], decoded[claims_mod.C_SEALED]) == (length, sealed)
