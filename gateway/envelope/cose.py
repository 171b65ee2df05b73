"""A minimal COSE_Sign1 (RFC 9052 section 4.2) for EdDSA with Ed25519, and nothing else.

Theory of operation: one algorithm (EdDSA, alg -8), a required ``kid`` in the protected header,
no detached payloads, no external AAD. Encoding is canonical CBOR; decoding accepts only canonical
CBOR (see ``_cbor``), so a message has exactly one byte representation. Decoding never trusts:
:func:`decode_sign1_unverified` returns an :class:`UnverifiedSign1`, and only :func:`verify_sign1`
with a public key the caller resolved from ``kid`` says the signature holds. Signatures are made
and checked with libsodium through PyNaCl.

The Sig_structure ``["Signature1", protected, h'', payload]`` is written byte by byte here rather
than through cbor2 because it is built on every seal, open and stamp; tests check it equals cbor2's
canonical encoding.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import cbor2
import nacl.bindings
import nacl.exceptions
import nacl.signing

from gateway.envelope import limits
from gateway.envelope._cbor import bstr, head, loads_canonical, read_bstr, reconcile
from gateway.errors import LocalProtocolError, RemoteProtocolError
from gateway.reasons import Reason

COSE_SIGN1_TAG = 18
ALG_EDDSA = -8

HEADER_ALG = 1
HEADER_CRIT = 2
HEADER_CONTENT_TYPE = 3
HEADER_KID = 4
# Header labels this implementation understands, hence the only ones ``crit`` may name.
UNDERSTOOD_HEADERS = frozenset({HEADER_ALG, HEADER_CRIT, HEADER_CONTENT_TYPE, HEADER_KID})

_TAG_AND_ARRAY = b"\xd2\x84"  # tag 18, array of 4
_SIG1_CONTEXT = b"\x84\x6aSignature1"  # array of 4, tstr "Signature1"
_EMPTY_BSTR = b"\x40"
_EMPTY_MAP = b"\xa0"
_SIGNATURE_HEAD = b"\x58\x40"  # bstr of 64 bytes
_NO_HEADERS: Mapping[int, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class UnverifiedSign1:
    """A decoded, well-formed but NOT verified COSE_Sign1. Nothing in it is trustworthy yet."""

    protected_bytes: bytes  # the serialized protected header, as signed
    protected: Mapping[int, Any]
    unprotected: Mapping[int, Any]
    payload: bytes
    signature: bytes
    kid: bytes


def encode_protected(protected: Mapping[int, Any]) -> bytes:
    """Serialize a protected header map (canonical CBOR) after checking we could decode it back.

    Raises:
        LocalProtocolError: alg is not EdDSA, kid is missing or too long, or crit names a label
            we would not understand.
    """
    if protected.get(HEADER_ALG) != ALG_EDDSA or type(protected.get(HEADER_ALG)) is not int:
        raise LocalProtocolError("protected header must have alg = -8 (EdDSA)")
    kid = protected.get(HEADER_KID)
    if not isinstance(kid, bytes) or not 0 < len(kid) <= limits.MAX_KID_BYTES:
        raise LocalProtocolError(f"protected header needs a kid of 1..{limits.MAX_KID_BYTES} bytes")
    crit = protected.get(HEADER_CRIT)
    if crit is not None and (
        not isinstance(crit, list | tuple)
        or not crit
        or any(label not in UNDERSTOOD_HEADERS or label not in protected for label in crit)
    ):
        raise LocalProtocolError("crit must list understood labels present in the protected header")
    encoded = cbor2.dumps(dict(protected), canonical=True)
    if len(encoded) > limits.MAX_PROTECTED_BYTES:
        raise LocalProtocolError(f"protected header exceeds {limits.MAX_PROTECTED_BYTES} bytes")
    return encoded


def sig_structure(protected_bytes: bytes, payload: bytes) -> bytes:
    """The bytes signed for a COSE_Sign1: ``["Signature1", protected, h'', payload]`` (RFC 9052
    section 4.4), with an empty external AAD."""
    return b"".join(
        (
            _SIG1_CONTEXT,
            head(2, len(protected_bytes)),
            protected_bytes,
            _EMPTY_BSTR,
            head(2, len(payload)),
            payload,
        )
    )


def sign1_with_protected(
    protected_bytes: bytes, payload: bytes, signing_key: nacl.signing.SigningKey
) -> tuple[bytes, bytes]:
    """Sign with an already serialized protected header and an empty unprotected header.

    The hot-path form of :func:`sign1` for callers that serialize their header once per key.

    Returns:
        ``(cose_sign1_bytes, signature)``.
    """
    signature = signing_key.sign(sig_structure(protected_bytes, payload)).signature
    encoded = b"".join(
        (
            _TAG_AND_ARRAY,
            bstr(protected_bytes),
            _EMPTY_MAP,
            head(2, len(payload)),
            payload,
            _SIGNATURE_HEAD,
            signature,
        )
    )
    return encoded, signature


def sign1_with_secret(protected_bytes: bytes, payload: bytes, secret_key: bytes) -> bytes:
    """:func:`sign1_with_protected` for callers that hold libsodium's 64-byte secret key
    (``crypto_sign_seed_keypair(seed)[1]``), as a reusable sealer does: one libsodium call, no
    per-message PyNaCl objects. Same bytes as :func:`sign1_with_protected` (Ed25519 is
    deterministic).

    Returns:
        The tagged COSE_Sign1 bytes.
    """
    protected_head = head(2, len(protected_bytes))
    payload_head = head(2, len(payload))
    # The Sig_structure and the message share their heads; each is written with one join.
    signed = nacl.bindings.crypto_sign(
        b"".join(
            (_SIG1_CONTEXT, protected_head, protected_bytes, _EMPTY_BSTR, payload_head, payload)
        ),
        secret_key,
    )
    return b"".join(
        (
            _TAG_AND_ARRAY,
            protected_head,
            protected_bytes,
            _EMPTY_MAP,
            payload_head,
            payload,
            _SIGNATURE_HEAD,
            signed[: limits.SIGNATURE_BYTES],
        )
    )


class Sign1Signer:
    """Signs many COSE_Sign1 messages under one serialized protected header and one key, as a
    reusable sealer does: the constant prefixes of the Sig_structure (context, protected bstr,
    empty external AAD) and of the message (tag, array head, protected bstr, empty unprotected
    map) are joined once here, so each message costs two joins and one libsodium call. Same bytes
    as :func:`sign1_with_protected` (Ed25519 is deterministic); tests check this.
    """

    __slots__ = ("_message_prefix", "_secret_key", "_sig_prefix", "overhead")

    def __init__(self, protected_bytes: bytes, secret_key: bytes) -> None:
        """Join the constant prefixes once.

        Args:
            protected_bytes: the serialized protected header (from :func:`encode_protected`).
            secret_key: libsodium's 64-byte secret key (``crypto_sign_seed_keypair(seed)[1]``).
        """
        protected = bstr(protected_bytes)
        self._sig_prefix = _SIG1_CONTEXT + protected + _EMPTY_BSTR
        self._message_prefix = _TAG_AND_ARRAY + protected + _EMPTY_MAP
        self._secret_key = secret_key
        # Bytes a message adds around its payload bstr: the prefix and the signature bstr.
        self.overhead = len(self._message_prefix) + len(_SIGNATURE_HEAD) + limits.SIGNATURE_BYTES

    def __repr__(self) -> str:  # never show the secret key
        return f"{type(self).__name__}(overhead={self.overhead})"

    def sign(self, payload: bytes) -> bytes:
        """The tagged COSE_Sign1 over ``payload``, with the empty unprotected header."""
        payload_head = head(2, len(payload))
        signature = nacl.bindings.crypto_sign(
            b"".join((self._sig_prefix, payload_head, payload)), self._secret_key
        )[: limits.SIGNATURE_BYTES]
        return b"".join((self._message_prefix, payload_head, payload, _SIGNATURE_HEAD, signature))


def sign1(
    protected: Mapping[int, Any],
    payload: bytes,
    signing_key: nacl.signing.SigningKey,
    *,
    unprotected: Mapping[int, Any] | None = None,
) -> bytes:
    """Make a tagged COSE_Sign1 over ``payload``.

    Args:
        protected: header labels to protect; must hold alg (-8) and kid (bytes).
        payload: the bytes to sign (attached).
        signing_key: the Ed25519 key whose public key ``kid`` names.
        unprotected: optional unprotected header; must not repeat alg, crit, kid or any
            protected label.

    Returns:
        The canonical CBOR encoding of the tagged COSE_Sign1.

    Raises:
        LocalProtocolError: a header does not satisfy the rules above.
    """
    protected_bytes = encode_protected(protected)
    if not unprotected:
        return sign1_with_protected(protected_bytes, payload, signing_key)[0]
    clash = {HEADER_ALG, HEADER_CRIT, HEADER_KID} | set(protected)
    if any(label in clash for label in unprotected):
        raise LocalProtocolError("unprotected header repeats alg, crit, kid or a protected label")
    signature = signing_key.sign(sig_structure(protected_bytes, payload)).signature
    message = cbor2.CBORTag(
        COSE_SIGN1_TAG, [protected_bytes, dict(unprotected), payload, signature]
    )
    return cbor2.dumps(message, canonical=True)


def decode_sign1_unverified(
    data: bytes, *, max_size: int = limits.MAX_SIGN1_BYTES
) -> UnverifiedSign1:
    """Decode a tagged COSE_Sign1 without verifying it.

    Args:
        data: untrusted bytes.
        max_size: refuse anything longer (TOO_LARGE) before decoding.

    Returns:
        An :class:`UnverifiedSign1`.

    Raises:
        RemoteProtocolError: TOO_LARGE, MALFORMED (not a tagged 4-array of the right types, kid
            missing, header labels misplaced), NON_CANONICAL, BAD_ALGORITHM (alg is not -8) or
            UNKNOWN_CRITICAL (crit names a label we do not understand).
    """
    if not isinstance(data, bytes):
        raise RemoteProtocolError(Reason.MALFORMED, "COSE_Sign1 must be bytes")
    if len(data) > max_size:
        raise RemoteProtocolError(Reason.TOO_LARGE, f"COSE_Sign1 exceeds {max_size} bytes")
    try:
        return _decode_sign1_fast(data)
    except RemoteProtocolError as fast:
        try:
            return _decode_sign1_reference(data)
        except RemoteProtocolError as reference:
            raise reconcile(fast, reference) from None


def _decode_sign1_fast(data: bytes) -> UnverifiedSign1:
    """The strict walk for the shape sluice itself writes: ``d2 84``, protected bstr, the empty
    unprotected map, payload bstr, 64-byte signature bstr, nothing after. It accepts exactly the
    canonical encodings of that shape; anything else is refused here and re-examined by
    :func:`_decode_sign1_reference` (which also handles non-empty unprotected headers)."""
    if data[:2] != _TAG_AND_ARRAY:
        raise RemoteProtocolError(
            Reason.MALFORMED, "expected a tagged COSE_Sign1 array of 4 (d2 84)", offset=0
        )
    protected_bytes, pos = read_bstr(data, 2, "protected header")
    if data[pos : pos + 1] != _EMPTY_MAP:
        raise RemoteProtocolError(
            Reason.MALFORMED, "unprotected header is not the empty map", offset=pos
        )
    payload, pos = read_bstr(data, pos + 1, "payload")
    signature, end = read_bstr(data, pos, "signature")
    if len(signature) != limits.SIGNATURE_BYTES:
        raise RemoteProtocolError(Reason.MALFORMED, "signature must be a 64-byte bstr", offset=pos)
    if end != len(data):
        raise RemoteProtocolError(Reason.NON_CANONICAL, "bytes after the COSE_Sign1", offset=end)
    if not protected_bytes:
        raise RemoteProtocolError(
            Reason.MALFORMED, "protected header must be a non-empty bstr", offset=2
        )
    if len(protected_bytes) > limits.MAX_PROTECTED_BYTES:
        raise RemoteProtocolError(Reason.TOO_LARGE, "protected header too large", offset=2)
    protected = decode_protected(protected_bytes)
    return UnverifiedSign1(
        protected_bytes=protected_bytes,
        protected=protected,
        unprotected=_NO_HEADERS,
        payload=payload,
        signature=signature,
        kid=protected[HEADER_KID],
    )


def _decode_sign1_reference(data: bytes) -> UnverifiedSign1:
    """The generic decoder: cbor2 plus the canonical re-encoding check (see ``_cbor``)."""
    value = loads_canonical(data, "COSE_Sign1")
    if not isinstance(value, cbor2.CBORTag) or value.tag != COSE_SIGN1_TAG:
        raise RemoteProtocolError(Reason.MALFORMED, "not a tagged COSE_Sign1 (tag 18)", offset=0)
    items = value.value
    if not isinstance(items, list) or len(items) != 4:
        raise RemoteProtocolError(Reason.MALFORMED, "COSE_Sign1 must be an array of 4", offset=1)
    protected_bytes, unprotected, payload, signature = items
    if not isinstance(protected_bytes, bytes) or not protected_bytes:
        raise RemoteProtocolError(Reason.MALFORMED, "protected header must be a non-empty bstr")
    if len(protected_bytes) > limits.MAX_PROTECTED_BYTES:
        raise RemoteProtocolError(Reason.TOO_LARGE, "protected header too large")
    if not isinstance(unprotected, dict):
        raise RemoteProtocolError(Reason.MALFORMED, "unprotected header must be a map")
    if not isinstance(payload, bytes):
        raise RemoteProtocolError(Reason.MALFORMED, "payload must be an attached bstr")
    if not isinstance(signature, bytes) or len(signature) != limits.SIGNATURE_BYTES:
        raise RemoteProtocolError(Reason.MALFORMED, "signature must be a 64-byte bstr")
    protected = decode_protected(protected_bytes)
    if any(type(label) is not int for label in unprotected):
        raise RemoteProtocolError(Reason.MALFORMED, "unprotected header labels must be integers")
    clash = {HEADER_ALG, HEADER_CRIT, HEADER_KID} | set(protected)
    if any(label in clash for label in unprotected):
        raise RemoteProtocolError(
            Reason.MALFORMED, "unprotected header repeats alg, crit, kid or a protected label"
        )
    return UnverifiedSign1(
        protected_bytes=protected_bytes,
        protected=protected,
        unprotected=MappingProxyType(unprotected),
        payload=payload,
        signature=signature,
        kid=protected[HEADER_KID],
    )


def decode_protected(protected_bytes: bytes) -> Mapping[int, Any]:
    """Decode and check a serialized protected header (a pure function of its bytes).

    Headers whose values are all immutable (ints, bytes, text: the ``{1: -8, 4: kid}`` every
    envelope and stamp carries) are memoised in a bounded LRU cache, since each anchor key repeats
    one header on every message; others (``crit`` lists, nested maps) are decoded every time so a
    caller can never alter a cached value. Failures are never cached.

    Raises:
        RemoteProtocolError: MALFORMED, NON_CANONICAL, BAD_ALGORITHM or UNKNOWN_CRITICAL.
    """
    cached = _immutable_protected(protected_bytes)
    return cached if cached is not None else _decode_protected(protected_bytes)


@functools.lru_cache(maxsize=1024)
def _immutable_protected(protected_bytes: bytes) -> Mapping[int, Any] | None:
    header = _decode_protected(protected_bytes)
    if all(type(value) in (int, bytes, str) for value in header.values()):
        return header
    return None


def _decode_protected(protected_bytes: bytes) -> Mapping[int, Any]:
    header = loads_canonical(protected_bytes, "protected header")
    if not isinstance(header, dict) or any(type(label) is not int for label in header):
        raise RemoteProtocolError(Reason.MALFORMED, "protected header must be a map of int labels")
    alg = header.get(HEADER_ALG)
    if alg is None:
        raise RemoteProtocolError(Reason.MALFORMED, "protected header has no alg")
    if type(alg) is not int or alg != ALG_EDDSA:
        raise RemoteProtocolError(Reason.BAD_ALGORITHM, f"alg {alg!r} is not EdDSA (-8)")
    if HEADER_CRIT in header:
        crit = header[HEADER_CRIT]
        if not isinstance(crit, list) or not crit:
            raise RemoteProtocolError(Reason.MALFORMED, "crit must be a non-empty array")
        for label in crit:
            if label not in UNDERSTOOD_HEADERS or type(label) is not int:
                raise RemoteProtocolError(
                    Reason.UNKNOWN_CRITICAL, f"critical header {label!r} is not understood"
                )
            if label not in header:
                raise RemoteProtocolError(Reason.MALFORMED, f"crit names absent header {label}")
    kid = header.get(HEADER_KID)
    if not isinstance(kid, bytes) or not 0 < len(kid) <= limits.MAX_KID_BYTES:
        raise RemoteProtocolError(
            Reason.MALFORMED, f"protected header needs a kid of 1..{limits.MAX_KID_BYTES} bytes"
        )
    content_type = header.get(HEADER_CONTENT_TYPE)
    if content_type is not None and not (
        isinstance(content_type, str) or (type(content_type) is int and content_type >= 0)
    ):
        raise RemoteProtocolError(Reason.MALFORMED, "content type must be a uint or tstr")
    # Other labels are not critical, so RFC 9052 section 3.1 lets us ignore them; they are signed.
    return MappingProxyType(header)


def verify_sign1(msg: UnverifiedSign1, public_key: bytes) -> None:
    """Check ``msg``'s signature with the raw Ed25519 ``public_key`` (libsodium's rules: canonical
    S, no small-order R or key).

    Raises:
        RemoteProtocolError: BAD_SIGNATURE if the signature does not verify.
    """
    verify_parts(msg.protected_bytes, msg.payload, msg.signature, public_key)


def verify_parts(
    protected_bytes: bytes, payload: bytes, signature: bytes, public_key: bytes
) -> None:
    """:func:`verify_sign1` on the parts of a COSE_Sign1 (for callers that walked the frame
    themselves, as ``recipe.open_envelope`` does on its fast path).

    Raises:
        RemoteProtocolError: BAD_SIGNATURE if the signature does not verify.
    """
    if len(public_key) != limits.PUBLIC_KEY_BYTES or len(signature) != limits.SIGNATURE_BYTES:
        raise RemoteProtocolError(Reason.BAD_SIGNATURE, "wrong key or signature length")
    # libsodium's combined form (signature || Sig_structure), built in one join rather than
    # building the Sig_structure and then copying it again behind the signature.
    signed = b"".join(
        (
            signature,
            _SIG1_CONTEXT,
            head(2, len(protected_bytes)),
            protected_bytes,
            _EMPTY_BSTR,
            head(2, len(payload)),
            payload,
        )
    )
    _crypto_sign_open(signed, public_key)


def verify_detached(message: bytes, signature: bytes, public_key: bytes) -> None:
    """Verify an Ed25519 ``signature`` over ``message`` with libsodium.

    Raises:
        RemoteProtocolError: BAD_SIGNATURE if it does not verify or a length is wrong.
    """
    if len(public_key) != limits.PUBLIC_KEY_BYTES or len(signature) != limits.SIGNATURE_BYTES:
        raise RemoteProtocolError(Reason.BAD_SIGNATURE, "wrong key or signature length")
    _crypto_sign_open(signature + message, public_key)


def _crypto_sign_open(signed: bytes, public_key: bytes) -> None:
    try:
        # crypto_sign_open is libsodium's crypto_sign_verify_detached behind PyNaCl's VerifyKey,
        # called directly to avoid building a VerifyKey per message.
        nacl.bindings.crypto_sign_open(signed, public_key)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
        raise RemoteProtocolError(Reason.BAD_SIGNATURE, "signature does not verify") from None
