"""Signed policy documents: round trip, tamper rejection, and interop with pycose (independent)."""

from __future__ import annotations

import cbor2
import nacl.signing
import pytest
from pycose.headers import KID, Algorithm, ContentType
from pycose.keys.curves import Ed25519
from pycose.keys.okp import OKPKey
from pycose.messages.sign1message import Sign1Message

from gateway.envelope.cose import ALG_EDDSA, HEADER_ALG, HEADER_CONTENT_TYPE, HEADER_KID, sign1
from gateway.errors import RemoteProtocolError
from gateway.policy import export_revision, import_revision
from gateway.policy.model import revision_content
from gateway.policy.signed import CONTENT_TYPE, HEADER_REVISION_HASH
from gateway.reasons import Reason
from identity.anchor_contract import key_id
from tests.gateway.test_policy_helpers import LEDGER_RULES, Spec, chain

SIGNING_KEY = nacl.signing.SigningKey(bytes(range(32)))
PUBLIC_KEY = bytes(SIGNING_KEY.verify_key)
REVISION = chain("payments/ledger", [Spec(rules=LEDGER_RULES), Spec(rules=LEDGER_RULES[:1])])[1]


def test_round_trip_keeps_the_revision_and_its_hash() -> None:
    document = export_revision(REVISION, SIGNING_KEY)
    imported = import_revision(document, PUBLIC_KEY, expected_hash=REVISION.digest)
    assert imported == REVISION
    assert imported.digest == REVISION.digest and imported.previous == REVISION.previous


def test_header_names_kid_content_type_and_hash() -> None:
    tag = cbor2.loads(export_revision(REVISION, SIGNING_KEY))
    assert tag.tag == 18
    protected = cbor2.loads(tag.value[0])
    assert protected == {
        HEADER_ALG: ALG_EDDSA,
        HEADER_CONTENT_TYPE: CONTENT_TYPE,
        HEADER_KID: key_id(PUBLIC_KEY),
        HEADER_REVISION_HASH: REVISION.digest,
    }
    assert tag.value[2] == REVISION.content
    custom = cbor2.loads(cbor2.loads(export_revision(REVISION, SIGNING_KEY, b"ops-2026")).value[0])
    assert custom[HEADER_KID] == b"ops-2026"


def test_every_single_byte_flip_is_rejected() -> None:
    document = export_revision(REVISION, SIGNING_KEY)
    for offset in range(len(document)):
        tampered = bytearray(document)
        tampered[offset] ^= 0x01
        with pytest.raises(RemoteProtocolError):
            import_revision(bytes(tampered), PUBLIC_KEY)


def test_wrong_key_is_a_bad_signature() -> None:
    document = export_revision(REVISION, SIGNING_KEY)
    other = bytes(nacl.signing.SigningKey(b"\x01" * 32).verify_key)
    with pytest.raises(RemoteProtocolError) as caught:
        import_revision(document, other)
    assert caught.value.reason is Reason.BAD_SIGNATURE


def test_unexpected_hash_is_refused() -> None:
    document = export_revision(REVISION, SIGNING_KEY)
    with pytest.raises(RemoteProtocolError) as caught:
        import_revision(document, PUBLIC_KEY, expected_hash=REVISION.previous)
    assert caught.value.reason is Reason.POLICY_HASH_MISMATCH


def _signed(header_hash: bytes, payload: bytes, content_type: str = CONTENT_TYPE) -> bytes:
    header = {
        HEADER_ALG: ALG_EDDSA,
        HEADER_CONTENT_TYPE: content_type,
        HEADER_KID: b"k",
        HEADER_REVISION_HASH: header_hash,
    }
    return sign1(header, payload, SIGNING_KEY)


def test_validly_signed_but_inconsistent_documents_are_refused() -> None:
    # The signer put another revision's hash in the header.
    with pytest.raises(RemoteProtocolError) as caught:
        import_revision(_signed(REVISION.previous, REVISION.content), PUBLIC_KEY)
    assert caught.value.reason is Reason.POLICY_HASH_MISMATCH
    # A payload in non-canonical CBOR would hash differently from the same content re-encoded.
    loose = cbor2.dumps(revision_content(REVISION))
    with pytest.raises(RemoteProtocolError) as caught:
        import_revision(_signed(REVISION.digest, loose), PUBLIC_KEY)
    assert caught.value.reason is Reason.NON_CANONICAL
    # Another kind of COSE document (an envelope, say) is not a policy document.
    with pytest.raises(RemoteProtocolError) as caught:
        import_revision(_signed(REVISION.digest, REVISION.content, "application/cwt"), PUBLIC_KEY)
    assert caught.value.reason is Reason.MALFORMED


def test_pycose_verifies_our_document() -> None:
    message = Sign1Message.decode(export_revision(REVISION, SIGNING_KEY))
    message.key = OKPKey(crv=Ed25519, x=PUBLIC_KEY)
    assert message.verify_signature()
    assert message.payload == REVISION.content


def test_we_import_a_document_signed_by_pycose() -> None:
    message = Sign1Message(
        phdr={
            Algorithm: "EdDSA",
            ContentType: CONTENT_TYPE,
            KID: b"peer",
            HEADER_REVISION_HASH: REVISION.digest,
        },
        payload=REVISION.content,
    )
    message.key = OKPKey(crv=Ed25519, x=PUBLIC_KEY, d=bytes(SIGNING_KEY))
    document = message.encode(tag=True)
    try:
        imported = import_revision(document, PUBLIC_KEY)
    except RemoteProtocolError as exc:  # pycose may not write canonical header maps
        pytest.fail(f"pycose document refused: {exc}")
    assert imported == REVISION
