"""Signed policy documents: a revision as a COSE_Sign1 that other clusters and auditors can hold.

Format (docs/policy.md, "Signed revisions"): a tagged COSE_Sign1 (RFC 9052), EdDSA, made with
``gateway.envelope.cose``. Protected header: alg -8, content type
``application/sluice-policy-revision+cbor`` (label 3), kid (label 4), and the revision hash under
the private-use label -65701 so a reader sees which revision it holds before decoding the payload.
Payload: the revision's canonical CBOR content (``PolicyRevision.content``), whose BLAKE2b-256
with personalisation ``sluice-policy-v1`` is that hash.
"""

from __future__ import annotations

import nacl.signing

from gateway.envelope.cose import (
    ALG_EDDSA,
    HEADER_ALG,
    HEADER_CONTENT_TYPE,
    HEADER_KID,
    decode_sign1_unverified,
    sign1,
    verify_sign1,
)
from gateway.errors import RemoteProtocolError
from gateway.policy.codec import MAX_CONTENT_BYTES, decode_revision
from gateway.policy.model import PolicyRevision
from gateway.reasons import Reason
from identity.anchor_contract import key_id

CONTENT_TYPE = "application/sluice-policy-revision+cbor"
HEADER_REVISION_HASH = -65701
MAX_DOCUMENT_BYTES = MAX_CONTENT_BYTES + 1024


def export_revision(
    revision: PolicyRevision, signing_key: nacl.signing.SigningKey, kid: bytes | None = None
) -> bytes:
    """Sign ``revision`` as a policy document.

    Args:
        revision: the revision to publish.
        signing_key: the publisher's Ed25519 key (a governance anchor of the scope's owner).
        kid: key id for the header; defaults to the anchor key id of ``signing_key``.

    Returns:
        The tagged COSE_Sign1 bytes.

    Raises:
        LocalProtocolError: the kid is empty or longer than the COSE limit.
    """
    header = {
        HEADER_ALG: ALG_EDDSA,
        HEADER_CONTENT_TYPE: CONTENT_TYPE,
        HEADER_KID: kid if kid is not None else key_id(bytes(signing_key.verify_key)),
        HEADER_REVISION_HASH: revision.digest,
    }
    return sign1(header, revision.content, signing_key)


def import_revision(
    data: bytes, public_key: bytes, *, expected_hash: bytes | None = None
) -> PolicyRevision:
    """Verify a policy document and return the revision it carries.

    Args:
        data: the document bytes (untrusted).
        public_key: the raw 32-byte Ed25519 key of the expected publisher.
        expected_hash: when given, the revision must have exactly this hash (for example the
            lineage hash an envelope named, or the ``previous`` of a later revision).

    Returns:
        The revision, its hash recomputed from the signed payload.

    Raises:
        RemoteProtocolError: TOO_LARGE / MALFORMED / NON_CANONICAL / BAD_ALGORITHM (not a valid
            COSE_Sign1 or revision), BAD_SIGNATURE, or POLICY_HASH_MISMATCH (the header's hash or
            ``expected_hash`` differs from the payload's hash).
    """
    message = decode_sign1_unverified(data, max_size=MAX_DOCUMENT_BYTES)
    if message.protected.get(HEADER_CONTENT_TYPE) != CONTENT_TYPE:
        raise RemoteProtocolError(
            Reason.MALFORMED, f"content type is not {CONTENT_TYPE!r}: not a policy document"
        )
    verify_sign1(message, public_key)
    revision = decode_revision(message.payload)
    if message.protected.get(HEADER_REVISION_HASH) != revision.digest:
        raise RemoteProtocolError(
            Reason.POLICY_HASH_MISMATCH,
            "the revision hash in the protected header does not match the payload",
        )
    if expected_hash is not None and expected_hash != revision.digest:
        raise RemoteProtocolError(
            Reason.POLICY_HASH_MISMATCH,
            f"revision hash {revision.digest.hex()} is not the expected {expected_hash.hex()}",
        )
    return revision
