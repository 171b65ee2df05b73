"""The whole envelope on the wire: ``[version, origin COSE_Sign1, payload, [stamp COSE_Sign1...]]``.

Decoding here is structural only and returns an :class:`UnverifiedEnvelope`: sizes, version,
canonical CBOR, header and claims shapes. Nothing in it may be trusted until
``gateway.envelope.recipe.open_envelope`` has verified it.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.envelope import limits
from gateway.envelope._cbor import head, loads_canonical, read_bstr, read_head, reconcile
from gateway.envelope.claims import decode_claims, decode_claims_fast, decode_stamp_claims
from gateway.envelope.cose import (
    HEADER_KID,
    UnverifiedSign1,
    decode_protected,
    decode_sign1_unverified,
)
from gateway.envelope.model import Claims, StampClaims
from gateway.errors import RemoteProtocolError
from gateway.reasons import Reason

_ARRAY_OF_4_V1 = b"\x84" + bytes((limits.ENVELOPE_VERSION,))
_NO_STAMPS = b"\x80"  # the empty array
_SIGN1_START = b"\xd2\x84"  # tag 18, array of 4
_EMPTY_MAP = 0xA0
_SIGNATURE_HEAD = b"\x58\x40"  # bstr of 64 bytes


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
    # Heads and bodies are joined once (bstr() would copy each body, the payload included, twice).
    if not stamps:  # what every seal writes: one join, no list
        return b"".join(
            (
                _ARRAY_OF_4_V1,
                head(2, len(origin)),
                origin,
                head(2, len(payload)),
                payload,
                _NO_STAMPS,
            )
        )
    parts = [_ARRAY_OF_4_V1, head(2, len(origin)), origin, head(2, len(payload)), payload]
    parts.append(head(4, len(stamps)))
    for stamp in stamps:
        parts += (head(2, len(stamp)), stamp)
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


# The parts of an unstamped envelope that ``open_envelope`` needs: origin COSE_Sign1 bytes, its
# protected header bytes, kid, claims bytes (the COSE payload), signature, decoded claims, and the
# carried payload.
UnstampedParts = tuple[bytes, bytes, bytes, bytes, bytes, Claims, bytes]


def decode_unstamped_fast(data: object) -> UnstampedParts | None:
    """The common case of :func:`decode_unverified` in one pass: an envelope with no stamps in the
    exact layout sluice writes, walked without building the intermediate objects.

    It accepts only what the strict walkers behind :func:`decode_unverified` accept (``_split_fast``
    with no stamps, ``cose._decode_sign1_fast`` with the empty unprotected map,
    ``claims.decode_claims_fast``), after the same size checks, and returns the same values; tests
    compare the two on mutated and truncated envelopes.

    Returns:
        The parts, or None for anything else (stamps, another layout, any defect): the caller then
        uses :func:`decode_unverified`, which decodes or refuses with the reference reason.
    """
    if (
        type(data) is not bytes
        or len(data) > limits.MAX_ENVELOPE_BYTES
        or data[:2] != _ARRAY_OF_4_V1
        or data[-1:] != _NO_STAMPS
    ):
        return None
    try:
        start, end = _bstr_span(data, 2, len(data))
        origin = data[start:end]
        start, end = _bstr_span(data, end, len(data))
        if end + 1 != len(data):  # the stamps array is the last byte
            return None
        payload = data[start:end]
        if len(origin) > limits.MAX_HEADER_BYTES or len(payload) > limits.MAX_PAYLOAD_BYTES:
            return None
        sign1 = _walk_plain_sign1(origin)
    except (IndexError, ValueError, RemoteProtocolError):
        return None
    if sign1 is None:
        return None
    protected_bytes, kid, claims_bytes, signature = sign1
    claims = decode_claims_fast(claims_bytes)
    if claims is None:
        return None
    return origin, protected_bytes, kid, claims_bytes, signature, claims, payload


def _walk_plain_sign1(origin: bytes) -> tuple[bytes, bytes, bytes, bytes] | None:
    """``cose._decode_sign1_fast`` as parts: ``d2 84``, protected bstr, ``a0``, payload bstr,
    ``58 40`` signature, nothing after. Returns (protected, kid, payload, signature) or None;
    raises IndexError, ValueError or RemoteProtocolError (from the protected header) on defects."""
    size = len(origin)
    if origin[:2] != _SIGN1_START:
        return None
    start, end = _bstr_span(origin, 2, size)
    if not 0 < end - start <= limits.MAX_PROTECTED_BYTES or origin[end] != _EMPTY_MAP:
        return None
    protected_bytes = origin[start:end]
    start, end = _bstr_span(origin, end + 1, size)
    if end + 2 + limits.SIGNATURE_BYTES != size or origin[end : end + 2] != _SIGNATURE_HEAD:
        return None
    header = decode_protected(protected_bytes)
    return protected_bytes, header[HEADER_KID], origin[start:end], origin[end + 2 :]


def _bstr_span(data: bytes, pos: int, limit: int) -> tuple[int, int]:
    """(start, end) of the definite-length bstr whose head is at ``pos``, ending by ``limit``.

    Only shortest-form heads (what ``_cbor.read_head`` accepts) of up to 4 length bytes, which
    covers every size the envelope allows; indexing instead of ``read_bstr`` because this runs
    five times per envelope.

    Raises:
        ValueError or IndexError: not such a bstr (the caller falls back to the strict reader).
    """
    info = data[pos] - 0x40
    if 0 <= info < 24:
        start, length = pos + 1, info
    elif info == 24:
        start, length = pos + 2, data[pos + 1]
        if length < 24:
            raise ValueError("non-shortest head")
    elif info == 25:
        start, length = pos + 3, data[pos + 1] << 8 | data[pos + 2]
        if length < 0x100:
            raise ValueError("non-shortest head")
    elif info == 26:
        start, length = pos + 5, int.from_bytes(data[pos + 1 : pos + 5], "big")
        if length < 0x10000:
            raise ValueError("non-shortest head")
    else:
        raise ValueError("not a bstr with a short head")
    end = start + length
    if end > limit:
        raise ValueError("bstr runs past its container")
    return start, end
