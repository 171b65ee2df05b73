"""The whole envelope on the wire: ``[version, origin COSE_Sign1, payload, [stamp COSE_Sign1...]]``.

Decoding here is structural only and returns an :class:`UnverifiedEnvelope`: sizes, version,
canonical CBOR, header and claims shapes. Nothing in it may be trusted until
``gateway.envelope.recipe.open_envelope`` has verified it.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.envelope import limits
from gateway.envelope._cbor import bstr, head, loads_canonical, read_bstr, read_head, reconcile
from gateway.envelope.claims import decode_claims, decode_stamp_claims
from gateway.envelope.cose import UnverifiedSign1, decode_sign1_unverified
from gateway.envelope.model import Claims, StampClaims
from gateway.errors import RemoteProtocolError
from gateway.reasons import Reason

_ARRAY_OF_4_V1 = b"\x84" + bytes((limits.ENVELOPE_VERSION,))


@dataclass(frozen=True, slots=True)
class UnverifiedStamp:
    """A transit stamp that decoded cleanly; its signature and chain are NOT verified."""

    encoded: bytes
    sign1: UnverifiedSign1
    claims: StampClaims


@dataclass(frozen=True, slots=True)
class UnverifiedEnvelope:
    """An envelope that decoded cleanly; NOT verified. Never hand this to policy code."""

    origin_bytes: bytes
    origin: UnverifiedSign1
    claims: Claims
    payload: bytes
    stamps: tuple[UnverifiedStamp, ...]


def encode(origin: bytes, payload: bytes, stamps: tuple[bytes, ...] | list[bytes] = ()) -> bytes:
    """Assemble an envelope from an origin COSE_Sign1, the carried payload and stamp COSE_Sign1s.

    The caller provides already-signed parts; this only frames them (canonical CBOR).
    """
    parts = [_ARRAY_OF_4_V1, bstr(origin), bstr(payload), head(4, len(stamps))]
    parts.extend(bstr(s) for s in stamps)
    return b"".join(parts)


def decode_unverified(data: bytes) -> UnverifiedEnvelope:
    """Decode an envelope without verifying anything cryptographic.

    Args:
        data: untrusted bytes, the whole envelope.

    Returns:
        An :class:`UnverifiedEnvelope` whose parts have the right shapes and sizes.

    Raises:
        RemoteProtocolError: TOO_LARGE, MALFORMED, NON_CANONICAL, UNSUPPORTED_VERSION,
            TOO_MANY_STAMPS, BAD_ALGORITHM or UNKNOWN_CRITICAL.
    """
    if not isinstance(data, bytes):
        raise RemoteProtocolError(Reason.MALFORMED, "envelope must be bytes")
    if len(data) > limits.MAX_ENVELOPE_BYTES:
        raise RemoteProtocolError(
            Reason.TOO_LARGE, f"envelope exceeds {limits.MAX_ENVELOPE_BYTES} bytes"
        )
    origin_bytes, payload, stamps = _split(data)
    if len(origin_bytes) > limits.MAX_HEADER_BYTES:
        raise RemoteProtocolError(Reason.TOO_LARGE, "origin header too large")
    if len(payload) > limits.MAX_PAYLOAD_BYTES:
        raise RemoteProtocolError(Reason.TOO_LARGE, "payload too large")
    if len(stamps) > limits.MAX_STAMPS:
        raise RemoteProtocolError(
            Reason.TOO_MANY_STAMPS, f"{len(stamps)} stamps exceed {limits.MAX_STAMPS}"
        )
    if any(len(s) > limits.MAX_STAMP_BYTES for s in stamps):
        raise RemoteProtocolError(Reason.TOO_LARGE, "a stamp is too large")
    origin = decode_sign1_unverified(origin_bytes, max_size=limits.MAX_HEADER_BYTES)
    if origin.unprotected:
        raise RemoteProtocolError(Reason.MALFORMED, "origin unprotected header must be empty")
    claims = decode_claims(origin.payload)
    return UnverifiedEnvelope(
        origin_bytes=origin_bytes,
        origin=origin,
        claims=claims,
        payload=payload,
        stamps=tuple(_decode_stamp(i, s) for i, s in enumerate(stamps, start=1)),
    )


def _split(data: bytes) -> tuple[bytes, bytes, list[bytes]]:
    """The envelope's parts: origin bytes, payload bytes, stamp bytes (not yet size-checked)."""
    try:
        return _split_fast(data)
    except RemoteProtocolError as fast:
        try:
            return _split_reference(data)
        except RemoteProtocolError as reference:
            raise reconcile(fast, reference) from None


def _split_fast(data: bytes) -> tuple[bytes, bytes, list[bytes]]:
    """Strict walk of ``84 01 bstr bstr [bstr...]``: accepts exactly the canonical encodings of
    that shape (see ``_cbor.read_head``); anything else goes to :func:`_split_reference`."""
    count, pos = read_head(data, 0, 4, "envelope")
    if count != 4:
        raise RemoteProtocolError(Reason.MALFORMED, "envelope must be an array of 4", offset=0)
    version, pos = read_head(data, pos, 0, "envelope version")
    if version != limits.ENVELOPE_VERSION:
        raise RemoteProtocolError(
            Reason.UNSUPPORTED_VERSION, f"envelope version {version} is not supported", offset=1
        )
    origin_bytes, pos = read_bstr(data, pos, "origin")
    payload, pos = read_bstr(data, pos, "payload")
    count_at = pos
    count, pos = read_head(data, pos, 4, "stamps")
    if count > limits.MAX_STAMPS:
        raise RemoteProtocolError(
            Reason.TOO_MANY_STAMPS, f"{count} stamps exceed {limits.MAX_STAMPS}", offset=count_at
        )
    stamps = []
    for hop in range(1, count + 1):
        stamp, pos = read_bstr(data, pos, f"stamp {hop}")
        stamps.append(stamp)
    if pos != len(data):
        raise RemoteProtocolError(Reason.NON_CANONICAL, "bytes after the envelope", offset=pos)
    return origin_bytes, payload, stamps


def _split_reference(data: bytes) -> tuple[bytes, bytes, list[bytes]]:
    """The generic decoder: cbor2 plus the canonical re-encoding check (see ``_cbor``)."""
    items = loads_canonical(data, "envelope")
    if not isinstance(items, list) or not items:
        raise RemoteProtocolError(Reason.MALFORMED, "envelope must be a CBOR array", offset=0)
    version = items[0]
    if type(version) is not int:
        raise RemoteProtocolError(Reason.MALFORMED, "envelope version must be a uint", offset=1)
    if version != limits.ENVELOPE_VERSION:
        raise RemoteProtocolError(
            Reason.UNSUPPORTED_VERSION, f"envelope version {version} is not supported", offset=1
        )
    if len(items) != 4:
        raise RemoteProtocolError(Reason.MALFORMED, "envelope must be an array of 4", offset=0)
    _, origin_bytes, payload, stamps = items
    if not isinstance(origin_bytes, bytes) or not isinstance(payload, bytes):
        raise RemoteProtocolError(Reason.MALFORMED, "origin and payload must be bstr")
    if not isinstance(stamps, list) or not all(isinstance(s, bytes) for s in stamps):
        raise RemoteProtocolError(Reason.MALFORMED, "stamps must be an array of bstr")
    return origin_bytes, payload, stamps


def _decode_stamp(hop: int, encoded: bytes) -> UnverifiedStamp:
    try:
        sign1 = decode_sign1_unverified(encoded, max_size=limits.MAX_STAMP_BYTES)
        if sign1.unprotected:
            raise RemoteProtocolError(Reason.MALFORMED, "stamp unprotected header must be empty")
        return UnverifiedStamp(encoded, sign1, decode_stamp_claims(sign1.payload))
    except RemoteProtocolError as exc:
        raise RemoteProtocolError(exc.reason, f"stamp {hop}: {exc.detail}") from None
