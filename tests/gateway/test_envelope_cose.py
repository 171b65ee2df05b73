"""COSE_Sign1 codec: interoperability both ways with pycose and cwt, Ed25519 conformance vectors
(Wycheproof, speccheck) through our verify path, and the decoder's strictness."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import cbor2
import cwt
import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycose.algorithms import EdDSA
from pycose.headers import KID, Algorithm
from pycose.keys import OKPKey
from pycose.keys.curves import Ed25519
from pycose.messages import Sign1Message

from gateway.envelope import decode_unverified, encode, open_envelope
from gateway.envelope.cose import (
    decode_sign1_unverified,
    sig_structure,
    sign1,
    verify_detached,
    verify_sign1,
)
from gateway.errors import LocalProtocolError, RemoteProtocolError
from gateway.reasons import Reason
from identity.anchor_contract import key_id
from tests.gateway.envelope_fixtures import GATEWAY_KEYS, ORIGIN_KEY, T0, standard_resolver
from tests.gateway.test_envelope import PAYLOAD, make, stamped

KID_ORIGIN = key_id(ORIGIN_KEY.verify_key.encode())


def _pycose_key(key: nacl.signing.SigningKey, private: bool) -> OKPKey:
    return OKPKey(
        crv=Ed25519,
        x=key.verify_key.encode(),
        d=key.encode() if private else b"",
    )


# Interop: theirs verifies ours ----------------------------------------------------------------


def test_pycose_verifies_our_origin_and_stamps() -> None:
    env = decode_unverified(stamped(3))
    pairs = [(env.origin_bytes, ORIGIN_KEY)] + [
        (s.encoded, k) for s, k in zip(env.stamps, GATEWAY_KEYS, strict=True)
    ]
    for encoded, key in pairs:
        msg = Sign1Message.decode(encoded)
        msg.key = _pycose_key(key, private=False)
        assert msg.verify_signature()
        assert msg.phdr[KID] == key_id(key.verify_key.encode())
    # And pycose rejects a tampered one, so the check above is not vacuous.
    bad = bytearray(env.origin_bytes)
    bad[-1] ^= 1
    msg = Sign1Message.decode(bytes(bad))
    msg.key = _pycose_key(ORIGIN_KEY, private=False)
    assert not msg.verify_signature()


def test_cwt_library_verifies_and_reads_our_claims() -> None:
    env = decode_unverified(make())
    verifier = cwt.COSE.new(verify_kid=True)
    pub = cwt.COSEKey.from_jwk(
        {
            "kty": "OKP",
            "crv": "Ed25519",
            "kid": KID_ORIGIN.hex(),
            "x": _b64(ORIGIN_KEY.verify_key.encode()),
        }
    )
    # cwt matches kid bytes to the key's kid; give it the raw kid.
    pub._kid = KID_ORIGIN
    payload = verifier.decode(env.origin_bytes, keys=pub)
    claims = cbor2.loads(payload)
    assert claims[1] == str(env.claims.issuer)
    assert claims[7] == env.claims.envelope_id


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# Interop: ours verifies theirs ----------------------------------------------------------------


def test_we_verify_a_pycose_sign1_carrying_our_claims() -> None:
    ours = decode_unverified(make())
    msg = Sign1Message(
        phdr={Algorithm: EdDSA, KID: KID_ORIGIN},
        payload=ours.origin.payload,
        key=_pycose_key(ORIGIN_KEY, private=True),
    )
    theirs = msg.encode(tag=True)
    decoded = decode_sign1_unverified(theirs)
    verify_sign1(decoded, ORIGIN_KEY.verify_key.encode())
    # And as the origin of a full envelope through open_envelope.
    env = open_envelope(encode(theirs, PAYLOAD), resolver=standard_resolver(), now=T0)
    assert env.claims == ours.claims


def test_we_verify_a_cwt_library_token() -> None:
    priv = cwt.COSEKey.from_jwk(
        {
            "kty": "OKP",
            "crv": "Ed25519",
            "alg": "EdDSA",
            "d": _b64(ORIGIN_KEY.encode()),
            "x": _b64(ORIGIN_KEY.verify_key.encode()),
        }
    )
    # With alg_auto_inclusion cwt writes {4: kid, 1: -8} (kid first): not canonical, and we
    # refuse it. Given the header in canonical order it is byte-for-byte what we expect.
    sender = cwt.COSE.new(alg_auto_inclusion=True, kid_auto_inclusion=False)
    token = sender.encode_and_sign(b"claims-bytes", priv, protected={4: KID_ORIGIN})
    with pytest.raises(RemoteProtocolError) as info:
        decode_sign1_unverified(token)
    assert info.value.reason is Reason.NON_CANONICAL
    sender = cwt.COSE.new(alg_auto_inclusion=False, kid_auto_inclusion=False)
    token = sender.encode_and_sign(b"claims-bytes", priv, protected={1: -8, 4: KID_ORIGIN})
    msg = decode_sign1_unverified(token)
    assert msg.kid == KID_ORIGIN
    verify_sign1(msg, ORIGIN_KEY.verify_key.encode())


def test_sig_structure_matches_cbor2() -> None:
    prot = cbor2.dumps({1: -8, 4: b"k"}, canonical=True)
    for payload in (b"", b"x" * 23, b"x" * 24, b"x" * 300, b"x" * 70_000):
        assert sig_structure(prot, payload) == cbor2.dumps(["Signature1", prot, b"", payload])


def test_sign1_with_unprotected_header_round_trips() -> None:
    data = sign1({1: -8, 4: b"k", 3: "application/x"}, b"p", ORIGIN_KEY, unprotected={33: b"x"})
    msg = decode_sign1_unverified(data)
    assert dict(msg.unprotected) == {33: b"x"}
    assert msg.protected[3] == "application/x"
    verify_sign1(msg, ORIGIN_KEY.verify_key.encode())
    with pytest.raises(RemoteProtocolError) as info:
        verify_sign1(msg, GATEWAY_KEYS[0].verify_key.encode())
    assert info.value.reason is Reason.BAD_SIGNATURE


@pytest.mark.parametrize(
    ("protected", "unprotected"),
    [
        ({1: -7, 4: b"k"}, None),
        ({1: -8}, None),
        ({1: -8, 4: b""}, None),
        ({1: -8, 4: b"k", 2: [99]}, None),
        ({1: -8, 4: b"k"}, {4: b"other"}),
    ],
)
def test_sign1_refuses_headers_we_would_reject(
    protected: dict[int, object], unprotected: dict[int, object] | None
) -> None:
    with pytest.raises(LocalProtocolError):
        sign1(protected, b"p", ORIGIN_KEY, unprotected=unprotected)


def _raw_sign1(protected: dict[object, object], unprotected: object = None, tag: int = 18) -> bytes:
    prot = cbor2.dumps(protected, canonical=True)
    sig = ORIGIN_KEY.sign(sig_structure(prot, b"p")).signature
    return cbor2.dumps(
        cbor2.CBORTag(tag, [prot, {} if unprotected is None else unprotected, b"p", sig]),
        canonical=True,
    )


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (_raw_sign1({1: -8, 4: b"k"}, tag=98), Reason.MALFORMED),
        (_raw_sign1({1: "EdDSA", 4: b"k"}), Reason.BAD_ALGORITHM),
        (_raw_sign1({1: -8}), Reason.MALFORMED),
        (_raw_sign1({1: -8, 4: "text-kid"}), Reason.MALFORMED),
        (_raw_sign1({1: -8, 4: b"k", 2: [4, 77], 77: 0}), Reason.UNKNOWN_CRITICAL),
        (_raw_sign1({1: -8, 4: b"k", 2: [3]}), Reason.MALFORMED),
        (_raw_sign1({1: -8, 4: b"k", 2: []}), Reason.MALFORMED),
        (_raw_sign1({1: -8, 4: b"k"}, {1: -8}), Reason.MALFORMED),
        (_raw_sign1({1: -8, 4: b"k"}, {"x": 1}), Reason.MALFORMED),
        (_raw_sign1({1: -8, 4: b"k", "x": 1}), Reason.MALFORMED),
        (cbor2.dumps(cbor2.CBORTag(18, [b"", {}, b"p", b"s" * 64])), Reason.MALFORMED),
        (cbor2.dumps(cbor2.CBORTag(18, [b"\xa0", {}, None, b"s" * 64])), Reason.MALFORMED),
        (cbor2.dumps(cbor2.CBORTag(18, [b"\xa0", {}, b"p", b"s" * 63])), Reason.MALFORMED),
        (
            b"\xd2\x84" + b"\x5f\x41\xa0\xff" + b"\xa0\x41p\x58\x40" + b"s" * 64,
            Reason.NON_CANONICAL,
        ),
        (b"\x00" * 70_000, Reason.TOO_LARGE),
    ],
)
def test_decoder_refusals(data: bytes, reason: Reason) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_sign1_unverified(data)
    assert info.value.reason is reason


def test_sign1_every_strict_prefix_is_malformed() -> None:
    data = sign1({1: -8, 4: b"kid"}, b"payload", ORIGIN_KEY)
    decode_sign1_unverified(data)
    for end in range(len(data)):
        with pytest.raises(RemoteProtocolError) as info:
            decode_sign1_unverified(data[:end])
        assert info.value.reason is Reason.MALFORMED


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=512))
def test_sign1_decoder_arbitrary_bytes(data: bytes) -> None:
    try:
        decode_sign1_unverified(data)
    except RemoteProtocolError as exc:
        assert isinstance(exc.reason, Reason)


# Ed25519 conformance through verify_detached (the envelope's verify path) --------------------


def test_wycheproof_ed25519_agrees(shared_vectors: Path) -> None:
    doc = json.loads((shared_vectors / "ed25519-wycheproof.json").read_text())
    seen = 0
    for group in doc["testGroups"]:
        pk = bytes.fromhex(group["publicKey"]["pk"])
        for case in group["tests"]:
            msg, sig = bytes.fromhex(case["msg"]), bytes.fromhex(case["sig"])
            assert case["result"] in ("valid", "invalid"), case["tcId"]
            try:
                verify_detached(msg, sig, pk)
                verdict = "valid"
            except RemoteProtocolError as exc:
                assert exc.reason is Reason.BAD_SIGNATURE
                verdict = "invalid"
            assert verdict == case["result"], (case["tcId"], case["comment"])
            seen += 1
    assert seen == doc["numberOfTests"] == 151


def test_speccheck_only_case_3_verifies(shared_vectors: Path) -> None:
    doc = json.loads((shared_vectors / "ed25519-speccheck.json").read_text())
    expected = doc["libsodium_verdicts"].split()
    assert len(expected) == len(doc["cases"]) == 12
    verdicts = []
    for case in doc["cases"]:
        try:
            verify_detached(
                bytes.fromhex(case["message"]),
                bytes.fromhex(case["signature"]),
                bytes.fromhex(case["pub_key"]),
            )
            verdicts.append("V")
        except RemoteProtocolError:
            verdicts.append("X")
    assert verdicts == expected
    assert [i for i, v in enumerate(verdicts) if v == "V"] == [3]
