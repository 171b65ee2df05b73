"""Endorsements: signing with EC, RSA and Ed25519 SVID keys; every way verification must fail.

Certificates come from identity.ca.SvidAuthority at a fixed time, so nothing depends on the clock.
``_encode_by_hand`` is a second encoder written from the format description in
identity/endorsement.py (cbor2 + cryptography only): the verifier accepts it, and the negative
cases re-sign a body broken in exactly one way, so only the rule under test can fail.
"""

from __future__ import annotations

import datetime as dt

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given, settings
from hypothesis import strategies as st

from identity.anchor_contract import key_id
from identity.anchors import AnchorKeyPair
from identity.bundle import BundleSet, TrustBundle
from identity.ca import IssuedSVID, KeyType, SvidAuthority
from identity.endorsement import (
    CONTEXT,
    MAX_ENDORSEMENT_BYTES,
    MAX_ENDORSEMENT_LIFETIME,
    EndorsementProblem,
    InvalidEndorsement,
    decode_unverified,
    endorse,
    valid_scope_pattern,
    verify_endorsement,
)
from identity.spiffe_id import SpiffeID, parse_spiffe_id, parse_trust_domain
from identity.x509svid import X509SVID

NOW = 1_700_000_000
NOW_DT = dt.datetime.fromtimestamp(NOW, dt.UTC)
HOUR = 3600
WORKLOAD = parse_spiffe_id("spiffe://example.org/ns/payments/sa/ledger")
SMALL_ORDER_KEY = bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa")


def authority(domain: str = "example.org", key_type: KeyType = "ec") -> SvidAuthority:
    return SvidAuthority.create_root(parse_trust_domain(domain), key_type=key_type, now=NOW_DT)


def bundles(*authorities: SvidAuthority) -> BundleSet:
    return BundleSet(TrustBundle(a.trust_domain, a.bundle) for a in authorities)


def svid_of(issued: IssuedSVID) -> X509SVID:
    return X509SVID(issued.spiffe_id, issued.chain, issued.private_key)


def issue(
    ca: SvidAuthority,
    key_type: KeyType = "ec",
    spiffe_id: SpiffeID = WORKLOAD,
    lifetime: dt.timedelta = dt.timedelta(hours=1),
) -> X509SVID:
    return svid_of(ca.issue(spiffe_id, key_type=key_type, now=NOW_DT, lifetime=lifetime))


@pytest.fixture(scope="module")
def ca() -> SvidAuthority:
    return authority()


@pytest.fixture(scope="module")
def ec_svid(ca: SvidAuthority) -> X509SVID:
    return issue(ca)


def default_endorsement(svid: X509SVID, anchor: bytes | None = None) -> bytes:
    return endorse(
        anchor or AnchorKeyPair.generate().public_key,
        svid,
        ["payments/ledger", "payments/reports/*"],
        2,
        NOW,
        NOW + HOUR // 2,
    )


def code_of(data: bytes, bundle_set: BundleSet, now: int = NOW) -> EndorsementProblem:
    with pytest.raises(InvalidEndorsement) as info:
        verify_endorsement(data, bundle_set, now=now)
    return info.value.code


# -- a second encoder, from the documented format ----------------------------------------------


def body_map(svid: X509SVID, anchor: bytes, **overrides: object) -> dict[int, object]:
    m: dict[int, object] = {
        1: 1,
        2: anchor,
        3: key_id(anchor),
        4: str(svid.spiffe_id),
        5: ["payments/ledger"],
        6: 1,
        7: NOW,
        8: NOW + 600,
        9: [c.public_bytes(Encoding.DER) for c in svid.chain],
    }
    for name, value in overrides.items():
        label = int(name.removeprefix("l"))
        if value is _DROP:
            del m[label]
        else:
            m[label] = value
    return m


_DROP = object()


def _encode_by_hand(svid: X509SVID, m: dict[int, object]) -> bytes:
    """Canonical CBOR body, ECDSA P-256 r||s over CONTEXT || body (EC SVIDs only)."""
    key = svid.private_key
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    body = cbor2.dumps(m, canonical=True)
    signed = b"sluice endorsement v1\x00" + body
    r, s = decode_dss_signature(key.sign(signed, ec.ECDSA(hashes.SHA256())))
    return cbor2.dumps([body, r.to_bytes(32, "big") + s.to_bytes(32, "big")], canonical=True)


def test_the_documented_context_string() -> None:
    assert CONTEXT == b"sluice endorsement v1\x00"


def test_hand_encoded_endorsement_verifies(ca: SvidAuthority, ec_svid: X509SVID) -> None:
    anchor = AnchorKeyPair.generate().public_key
    verified = verify_endorsement(
        _encode_by_hand(ec_svid, body_map(ec_svid, anchor)), bundles(ca), now=NOW
    )
    assert verified.endorsement.anchor_public_key == anchor
    assert verified.endorsement.scopes == ("payments/ledger",)


# -- positive: every SVID key type -------------------------------------------------------------


@pytest.mark.parametrize("ca_key", ["ec", "rsa", "ed25519"])
@pytest.mark.parametrize("leaf_key", ["ec", "rsa", "ed25519"])
def test_endorse_and_verify(ca_key: KeyType, leaf_key: KeyType) -> None:
    root = authority(key_type=ca_key)
    svid = issue(root, leaf_key)
    pair = AnchorKeyPair.generate()
    data = endorse(pair.public_key, svid, ["payments/*", "audit"], 7, NOW, NOW + 1800)
    verified = verify_endorsement(data, bundles(root), now=NOW)
    e = verified.endorsement
    assert (e.kid, e.anchor_public_key, e.spiffe_id) == (pair.kid, pair.public_key, WORKLOAD)
    assert e.scopes == ("audit", "payments/*")  # sorted
    assert (e.max_tier, e.not_before, e.not_after) == (7, NOW, NOW + 1800)
    anchor = verified.resolved()
    assert anchor.grants_scope("payments/ledger") and anchor.grants_scope("audit")
    assert not anchor.grants_scope("payments") and not anchor.grants_scope("audit/x")
    assert (anchor.not_before, anchor.not_after) == (NOW, NOW + 1800)


def test_p384_svid_and_intermediate_chain() -> None:
    root = authority()
    middle = root.intermediate(now=NOW_DT)
    key = ec.generate_private_key(ec.SECP384R1())
    svid = svid_of(middle.issue(WORKLOAD, private_key=key, now=NOW_DT))
    assert len(svid.chain) == 2
    data = default_endorsement(svid)
    assert len(decode_unverified(data).chain) == 2
    verify_endorsement(data, bundles(root), now=NOW)


def test_effective_window_is_clamped_to_the_svid(ca: SvidAuthority, ec_svid: X509SVID) -> None:
    data = endorse(AnchorKeyPair.generate().public_key, ec_svid, ["a"], 0, NOW, NOW + 86400)
    verified = verify_endorsement(data, bundles(ca), now=NOW)
    leaf_end = int(ec_svid.leaf.not_valid_after_utc.timestamp())
    assert leaf_end == NOW + HOUR
    assert verified.effective_not_after == leaf_end
    assert verified.resolved().not_after == leaf_end
    assert verified.endorsement.not_after == NOW + 86400  # what was asked is still visible


def test_future_endorsement_verifies(ca: SvidAuthority, ec_svid: X509SVID) -> None:
    data = endorse(AnchorKeyPair.generate().public_key, ec_svid, ["a"], 0, NOW + 600, NOW + 900)
    verified = verify_endorsement(data, bundles(ca), now=NOW)
    assert verified.effective_not_before == NOW + 600


# -- negative: tampering -----------------------------------------------------------------------


# Some flips give a non-positive serial number, which cryptography warns about before we reject.
@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
@pytest.mark.parametrize("leaf_key", ["ec", "ed25519"])
def test_every_flipped_bit_is_rejected(ca: SvidAuthority, leaf_key: KeyType) -> None:
    data = default_endorsement(issue(ca, leaf_key))
    bundle_set = bundles(ca)
    verify_endorsement(data, bundle_set, now=NOW)
    for index in range(len(data)):
        for bit in (0x01, 0x80):
            tampered = bytearray(data)
            tampered[index] ^= bit
            with pytest.raises(InvalidEndorsement):
                verify_endorsement(bytes(tampered), bundle_set, now=NOW)


def test_rsa_tampered_signature_and_body(ca: SvidAuthority) -> None:
    data = default_endorsement(issue(ca, "rsa"))
    assert code_of(data[:-1] + bytes([data[-1] ^ 1]), bundles(ca)) is (
        EndorsementProblem.BAD_SIGNATURE
    )
    e = decode_unverified(data)
    forged = cbor2.dumps([e.body.replace(b"payments/ledger", b"payments/ledgex"), e.signature])
    assert code_of(forged, bundles(ca)) is EndorsementProblem.BAD_SIGNATURE


def test_rsa_pkcs1v15_signature_is_not_accepted(ca: SvidAuthority) -> None:
    svid = issue(ca, "rsa")
    e = decode_unverified(default_endorsement(svid))
    assert isinstance(svid.private_key, rsa.RSAPrivateKey)
    pkcs1 = svid.private_key.sign(CONTEXT + e.body, padding.PKCS1v15(), hashes.SHA256())
    assert code_of(cbor2.dumps([e.body, pkcs1]), bundles(ca)) is EndorsementProblem.BAD_SIGNATURE


def test_truncations_and_trailing_bytes(ca: SvidAuthority, ec_svid: X509SVID) -> None:
    data = default_endorsement(ec_svid)
    for end in range(len(data)):
        with pytest.raises(InvalidEndorsement):
            decode_unverified(data[:end])
    assert code_of(data + b"\x00", bundles(ca)) is EndorsementProblem.NON_CANONICAL


def test_non_canonical_cbor(ca: SvidAuthority, ec_svid: X509SVID) -> None:
    data = default_endorsement(ec_svid)
    e = decode_unverified(data)
    # The signature (64 bytes) with a 2-byte length where 1 would do: 0x59 0x00 0x40.
    assert len(e.signature) == 64
    tail = b"\x58\x40" + e.signature
    assert data.endswith(tail)
    reencoded = data.replace(tail, b"\x59\x00\x40" + e.signature)
    assert reencoded != data
    assert code_of(reencoded, bundles(ca)) is EndorsementProblem.NON_CANONICAL
    # An indefinite-length outer array.
    indefinite = b"\x9f" + data[1:] + b"\xff"
    assert code_of(indefinite, bundles(ca)) is EndorsementProblem.NON_CANONICAL


def test_size_bound() -> None:
    with pytest.raises(InvalidEndorsement) as info:
        decode_unverified(b"\x00" * (MAX_ENDORSEMENT_BYTES + 1))
    assert info.value.code is EndorsementProblem.TOO_LARGE


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_only_raise_invalid_endorsement(data: bytes) -> None:
    try:
        decode_unverified(data)
    except InvalidEndorsement:
        return
    pytest.fail("random bytes decoded as an endorsement")


# -- negative: trust -------------------------------------------------------------------------


def test_wrong_bundle_for_the_trust_domain(ec_svid: X509SVID) -> None:
    data = default_endorsement(ec_svid)
    impostor_root = authority()  # same trust domain name, another key
    assert code_of(data, bundles(impostor_root)) is EndorsementProblem.CHAIN_INVALID


def test_no_bundle_for_the_trust_domain(ca: SvidAuthority) -> None:
    other = authority("other.org")
    svid = issue(other, spiffe_id=parse_spiffe_id("spiffe://other.org/w"))
    data = default_endorsement(svid)
    assert code_of(data, bundles(ca)) is EndorsementProblem.CHAIN_INVALID
    verify_endorsement(data, bundles(ca, other), now=NOW)


def test_chain_from_another_domain_cannot_speak_for_this_one(ca: SvidAuthority) -> None:
    # other.org's CA issues an SVID claiming example.org's ID: both bundles are known, but only
    # example.org's own bundle may validate an example.org ID.
    other = authority("other.org")
    forged = issue(other, spiffe_id=WORKLOAD)
    data = default_endorsement(forged)
    assert code_of(data, bundles(ca, other)) is EndorsementProblem.CHAIN_INVALID


def test_spiffe_id_mismatch(ca: SvidAuthority, ec_svid: X509SVID) -> None:
    anchor = AnchorKeyPair.generate().public_key
    m = body_map(ec_svid, anchor, l4="spiffe://example.org/ns/payments/sa/admin")
    assert code_of(_encode_by_hand(ec_svid, m), bundles(ca)) is (
        EndorsementProblem.SPIFFE_ID_MISMATCH
    )


def test_expired_svid(ca: SvidAuthority, ec_svid: X509SVID) -> None:
    data = default_endorsement(ec_svid)
    assert code_of(data, bundles(ca), now=NOW + 2 * HOUR) is EndorsementProblem.CHAIN_INVALID


def test_window_outside_the_svid(ca: SvidAuthority, ec_svid: X509SVID) -> None:
    anchor = AnchorKeyPair.generate().public_key
    data = endorse(anchor, ec_svid, ["a"], 0, NOW + 2 * HOUR, NOW + 3 * HOUR)
    assert code_of(data, bundles(ca)) is EndorsementProblem.OUTSIDE_SVID_VALIDITY


# -- negative: structure, each re-signed so only that rule fails --------------------------------


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"l2": SMALL_ORDER_KEY, "l3": key_id(SMALL_ORDER_KEY)}, EndorsementProblem.BAD_ANCHOR_KEY),
        ({"l3": b"\x00" * 16}, EndorsementProblem.KID_MISMATCH),
        ({"l1": 2}, EndorsementProblem.UNSUPPORTED_VERSION),
        ({"l10": 0}, EndorsementProblem.MALFORMED),
        ({"l6": _DROP}, EndorsementProblem.MALFORMED),
        ({"l4": "spiffe://Example.org/w"}, EndorsementProblem.BAD_SPIFFE_ID),
        ({"l5": ["b", "a"]}, EndorsementProblem.BAD_SCOPE),
        ({"l5": ["a", "a"]}, EndorsementProblem.BAD_SCOPE),
        ({"l5": []}, EndorsementProblem.BAD_SCOPE),
        ({"l5": ["a/**"]}, EndorsementProblem.BAD_SCOPE),
        ({"l5": ["x" * 256]}, EndorsementProblem.BAD_SCOPE),
        ({"l5": [f"s{i:03}" for i in range(65)]}, EndorsementProblem.BAD_SCOPE),
        ({"l6": 256}, EndorsementProblem.BAD_TIER),
        ({"l6": True}, EndorsementProblem.BAD_TIER),
        ({"l8": NOW}, EndorsementProblem.BAD_VALIDITY),
        ({"l7": -1}, EndorsementProblem.BAD_VALIDITY),
        ({"l8": NOW + MAX_ENDORSEMENT_LIFETIME + 1}, EndorsementProblem.LIFETIME_TOO_LONG),
        ({"l9": []}, EndorsementProblem.BAD_CERTIFICATE),
        ({"l9": [b"not a certificate"]}, EndorsementProblem.BAD_CERTIFICATE),
    ],
)
def test_structural_rules(
    ca: SvidAuthority, ec_svid: X509SVID, overrides: dict[str, object], code: EndorsementProblem
) -> None:
    m = body_map(ec_svid, AnchorKeyPair.generate().public_key, **overrides)
    assert code_of(_encode_by_hand(ec_svid, m), bundles(ca)) is code


def test_endorse_refuses_what_the_verifier_would(ec_svid: X509SVID) -> None:
    with pytest.raises(InvalidEndorsement) as info:
        endorse(SMALL_ORDER_KEY, ec_svid, ["a"], 0, NOW, NOW + 60)
    assert info.value.code is EndorsementProblem.BAD_ANCHOR_KEY
    anchor = AnchorKeyPair.generate().public_key
    for scopes, max_tier, end, code in [
        (["bad scope"], 0, NOW + 60, EndorsementProblem.BAD_SCOPE),
        (["a"], 300, NOW + 60, EndorsementProblem.BAD_TIER),
        (["a"], 0, NOW, EndorsementProblem.BAD_VALIDITY),
        (["a"], 0, NOW + 91 * 86400, EndorsementProblem.LIFETIME_TOO_LONG),
    ]:
        with pytest.raises(InvalidEndorsement) as info:
            endorse(anchor, ec_svid, scopes, max_tier, NOW, end)
        assert info.value.code is code


def test_error_message_carries_the_stable_code(ca: SvidAuthority, ec_svid: X509SVID) -> None:
    data = default_endorsement(ec_svid)
    with pytest.raises(InvalidEndorsement, match=r"^chain_invalid: "):
        verify_endorsement(data, bundles(authority()), now=NOW)


@pytest.mark.parametrize(
    ("pattern", "ok"),
    [
        ("*", True),
        ("payments", True),
        ("payments/ledger", True),
        ("payments/*", True),
        ("payments/*/x", False),
        ("/payments", False),
        ("payments/", False),
        (".hidden", False),
        ("", False),
        ("pay ments", False),
        ("paymënts", False),
    ],
)
def test_scope_patterns(pattern: str, ok: bool) -> None:
    assert valid_scope_pattern(pattern) is ok
