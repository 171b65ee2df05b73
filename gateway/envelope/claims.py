"""The claims maps carried as COSE_Sign1 payloads: the origin's claims and a transit stamp's.

Labels follow CWT (RFC 8392) where a registered claim fits (iss 1, exp 4, iat 6, cti 7); the rest
are in CWT's private-use range (below -65536), one block per map so that an origin claims map can
never decode as a stamp or the reverse. Decoding is exact: every required label present, no unknown
label (an unknown label is UNKNOWN_CRITICAL: sluice has no extension range, a new claim means a new
version), strict types (bool is not int), bounded lengths. docs/envelope.md is the reference.
"""

from __future__ import annotations

import functools
import re
import struct
from typing import Any

import cbor2

from gateway.envelope import limits
from gateway.envelope._cbor import bstr, head, loads_canonical, read_head
from gateway.envelope.frozen import positional_builder
from gateway.envelope.model import (
    Claims,
    RoutingConstraint,
    StampClaims,
    StampDecision,
)
from gateway.errors import LocalProtocolError, RemoteProtocolError
from gateway.reasons import Reason
from identity.spiffe_id import InvalidSpiffeID, SpiffeID, TrustDomain, parse_spiffe_id

# Registered CWT claims.
ISS = 1
EXP = 4
IAT = 6
CTI = 7

# Origin claims, private use.
C_VERSION = -65537
C_ORIGIN_SCOPE = -65538
C_DESTINATION_SCOPE = -65539
C_DESTINATION_ID = -65540  # optional
C_TIER = -65541
C_LINEAGE = -65542
C_ROUTING = -65543
C_PAYLOAD_DIGEST = -65544
C_PAYLOAD_LENGTH = -65545
C_SEALED = -65546

# Routing constraint map (value of C_ROUTING).
R_TRANSIT_DOMAINS = 1
R_TRANSIT_GATEWAYS = 2
R_MAX_HOPS = 3

# Stamp claims, private use. iss is the gateway's SPIFFE ID, iat the stamping time.
S_VERSION = -65601
S_HOP = -65602
S_FROM_NETWORK = -65603
S_TO_NETWORK = -65604
S_DECISION = -65605
S_RULE = -65606
S_POLICY_REVISION = -65607
S_ENVELOPE_SIGNATURE_HASH = -65608
S_PREVIOUS_STAMP_HASH = -65609

_CLAIMS_REQUIRED = frozenset(
    {ISS, EXP, IAT, CTI, C_VERSION, C_ORIGIN_SCOPE, C_DESTINATION_SCOPE, C_TIER, C_LINEAGE,
     C_ROUTING, C_PAYLOAD_DIGEST, C_PAYLOAD_LENGTH, C_SEALED}
)  # fmt: skip
_CLAIMS_ALLOWED = _CLAIMS_REQUIRED | {C_DESTINATION_ID}
# The labels of the fixed middle of a claims map (see encode_claims_middle), destination id aside.
_MIDDLE_LABELS = frozenset({C_VERSION, C_ORIGIN_SCOPE, C_DESTINATION_SCOPE, C_TIER, C_LINEAGE,
                            C_ROUTING})  # fmt: skip
_ROUTING_LABELS = frozenset({R_TRANSIT_DOMAINS, R_TRANSIT_GATEWAYS, R_MAX_HOPS})
_STAMP_LABELS = frozenset(
    {ISS, IAT, S_VERSION, S_HOP, S_FROM_NETWORK, S_TO_NETWORK, S_DECISION, S_RULE,
     S_POLICY_REVISION, S_ENVELOPE_SIGNATURE_HASH, S_PREVIOUS_STAMP_HASH}
)  # fmt: skip

_DECISIONS = tuple(d.value for d in StampDecision)

# A scope is '/'-separated segments of letters, digits, '.', '_', '-'; no '*' (that is a pattern).
_SCOPE = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9._\-]*(?:/[A-Za-z0-9_\-][A-Za-z0-9._\-]*)*")
# Network names and rule ids: printable ASCII without spaces.
_TOKEN = re.compile(r"[\x21-\x7e]+")


def valid_scope(scope: object) -> bool:
    """True when ``scope`` is a well-formed scope name within MAX_SCOPE_BYTES."""
    return (
        isinstance(scope, str)
        and scope.isascii()
        and 0 < len(scope) <= limits.MAX_SCOPE_BYTES
        and _SCOPE.fullmatch(scope) is not None
        and not any(seg in (".", "..") or seg.startswith(".") for seg in scope.split("/"))
    )


# Parsing a SPIFFE ID is a pure function of its text, so memoising it is safe; issuers and
# gateways repeat, and this keeps the regex work off the hot path.
@functools.lru_cache(maxsize=4096)
def _cached_spiffe_id(text: str) -> SpiffeID:
    return parse_spiffe_id(text)


def _spiffe_id(value: object, what: str) -> SpiffeID:
    if not isinstance(value, str):
        raise RemoteProtocolError(Reason.MALFORMED, f"{what} must be a tstr SPIFFE ID")
    try:
        return _cached_spiffe_id(value)
    except InvalidSpiffeID as exc:
        raise RemoteProtocolError(Reason.MALFORMED, f"{what}: {exc}") from None


def _trust_domain(value: object) -> TrustDomain:
    parsed = _spiffe_id(value, "transit trust domain")
    if parsed.path:
        raise RemoteProtocolError(Reason.MALFORMED, "transit trust domain ID must have no path")
    return parsed.trust_domain


def _uint(value: object, what: str, maximum: int) -> int:
    if type(value) is not int or not 0 <= value <= maximum:
        raise RemoteProtocolError(Reason.MALFORMED, f"{what} must be a uint <= {maximum}")
    return value


def _hash(value: object, what: str, size: int = limits.HASH_BYTES) -> bytes:
    if not isinstance(value, bytes) or len(value) != size:
        raise RemoteProtocolError(Reason.MALFORMED, f"{what} must be a {size}-byte bstr")
    return value


def _token(value: object, what: str, maximum: int) -> str:
    if not isinstance(value, str) or len(value) > maximum or _TOKEN.fullmatch(value) is None:
        raise RemoteProtocolError(
            Reason.MALFORMED, f"{what} must be 1..{maximum} printable ASCII characters"
        )
    return value


def _scope(value: object, what: str) -> str:
    if not valid_scope(value):
        raise RemoteProtocolError(Reason.MALFORMED, f"{what} is not a valid scope name")
    assert isinstance(value, str)
    return value


def _exact_map(
    value: object, what: str, required: frozenset[int], allowed: frozenset[int]
) -> dict[int, Any]:
    if not isinstance(value, dict):
        raise RemoteProtocolError(Reason.MALFORMED, f"{what} must be a map")
    labels = value.keys()
    if not labels <= allowed:
        unknown = sorted(repr(x) for x in labels - allowed)
        raise RemoteProtocolError(Reason.UNKNOWN_CRITICAL, f"{what} has unknown labels {unknown}")
    if not required <= labels:
        raise RemoteProtocolError(
            Reason.MALFORMED, f"{what} lacks labels {sorted(required - labels)}"
        )
    # True and 1 are equal as dict keys; the canonical check already rejected a bool/int clash,
    # but a lone bool label would still pass the set test above.
    if any(type(label) is not int for label in labels):
        raise RemoteProtocolError(Reason.MALFORMED, f"{what} labels must be integers")
    return value


def _unique_list(value: object, what: str) -> list[object]:
    if not isinstance(value, list) or len(value) > limits.MAX_ROUTING_ENTRIES:
        raise RemoteProtocolError(
            Reason.MALFORMED, f"{what} must be an array of at most {limits.MAX_ROUTING_ENTRIES}"
        )
    return value


def decode_claims(data: bytes) -> Claims:
    """Decode an origin claims map (the envelope's COSE payload). The result is NOT verified:
    only ``gateway.envelope.recipe`` may put it into a VerifiedEnvelope.

    Two paths, one answer. The fast path (:func:`_decode_claims_fast`) walks the exact layout
    :func:`encode_claims_unchecked` writes and accepts only bytes that are, segment by segment,
    the canonical encoding of the claims it returns. Whatever it does not accept goes to the
    reference path (cbor2 decode, canonical re-encoding compared byte for byte, then the checks),
    which alone decides the reason code of a refusal.

    Raises:
        RemoteProtocolError: MALFORMED, NON_CANONICAL, UNKNOWN_CRITICAL (unknown label) or
            UNSUPPORTED_VERSION.
    """
    claims = decode_claims_fast(data)
    if claims is not None:
        return claims
    return _claims_from_value(loads_canonical(data, "claims"))


def decode_claims_fast(data: bytes) -> Claims | None:
    """The fast path of :func:`decode_claims` alone: the claims when ``data`` is in the layout
    sluice writes (and then exactly what :func:`decode_claims` returns), else None. Never raises,
    so a caller can fall back to :func:`decode_claims` for the reason code."""
    try:
        return _decode_claims_fast(data)
    # Any failure at all means "not the fast case"; the reference path decides what is wrong.
    except Exception:
        return None


# Length of the part after the fixed middle: digest label and value (39), length label (5), the
# length's uint head (1, 2, 3 or 5 bytes, since it is at most 1 MiB), sealed label and value (6).
# At most one can match (the digest label does not overlap a shifted copy of itself), so they are
# tried most common first: payloads of 24..255 bytes, then 256..65535.
_TAIL_LENGTHS = (52, 53, 55, 51)


def _decode_claims_fast(data: bytes) -> Claims | None:
    """Walk ``{1: iss, 4: exp, 6: iat, 7: cti, <fixed middle>, digest, length, sealed}``.

    Every per-envelope field is read with the strict head reader (shortest form only, so its bytes
    are its canonical encoding); the middle (version, scopes, destination id, tier, lineage,
    routing) is checked by :func:`_decode_middle`, which requires it to equal its canonical
    re-encoding. So the input is accepted only if it equals ``encode_claims_unchecked`` of the
    result. Returns None (or raises anything) when the input is not in that form.
    """
    size = len(data)
    with_destination = data[0] == _MAP_HEAD[True][0]
    if not (with_destination or data[0] == _MAP_HEAD[False][0]) or data[1:2] != _L_ISS:
        return None
    length, pos = read_head(data, 2, 3, "iss")
    issuer = _cached_spiffe_id(data[pos : pos + length].decode("ascii"))
    pos += length
    if data[pos : pos + 1] != _L_EXP:
        return None
    expires_at, pos = read_head(data, pos + 1, 0, "exp")
    if data[pos : pos + 1] != _L_IAT:
        return None
    issued_at, pos = read_head(data, pos + 1, 0, "iat")
    if data[pos : pos + 2] != _L_CTI:
        return None
    envelope_id = data[pos + 2 : pos + 2 + limits.ENVELOPE_ID_BYTES]
    pos += 2 + limits.ENVELOPE_ID_BYTES
    for tail in _TAIL_LENGTHS:
        start = size - tail
        if data[start : start + len(_L_PAYLOAD_DIGEST)] != _L_PAYLOAD_DIGEST:
            continue
        at = start + len(_L_PAYLOAD_DIGEST)
        payload_digest = data[at : at + limits.HASH_BYTES]
        at += limits.HASH_BYTES
        if data[at : at + len(_L_PAYLOAD_LENGTH)] != _L_PAYLOAD_LENGTH:
            continue
        payload_length, at = read_head(data, at + len(_L_PAYLOAD_LENGTH), 0, "payload length")
        if at + len(_L_SEALED) + 1 != size or data[at : at + len(_L_SEALED)] != _L_SEALED:
            continue
        sealed_byte = data[size - 1 :]
        if sealed_byte not in (_SEALED[False], _SEALED[True]):
            return None
        if (
            pos > start
            or len(envelope_id) != limits.ENVELOPE_ID_BYTES
            or expires_at > limits.MAX_TIMESTAMP
            or issued_at > limits.MAX_TIMESTAMP
            or payload_length > limits.MAX_PAYLOAD_BYTES
        ):
            return None
        origin, destination, destination_id, tier, lineage, routing = _decode_middle(
            data[pos:start], with_destination
        )
        # Positional, in Claims' field order; the Hypothesis tests compare every field with the
        # reference decoder's keyword-built Claims.
        return _build_claims(
            issuer, origin, destination, destination_id, tier, lineage, routing, issued_at,
            expires_at, envelope_id, payload_digest, payload_length, sealed_byte == _SEALED[True],
        )  # fmt: skip
    return None


_Middle = tuple[str, str, SpiffeID | None, int, bytes, RoutingConstraint]
_build_claims = positional_builder(Claims)  # ~0.7 us cheaper than Claims(...) per envelope


# A pure function of its bytes, repeated on every envelope of a workload: memoised, bounded.
# Failures are not cached (they raise); an attacker varying the middle only gets the uncached cost.
@functools.lru_cache(maxsize=512)
def _decode_middle(middle: bytes, with_destination: bool) -> _Middle:
    labels = _MIDDLE_LABELS | {C_DESTINATION_ID} if with_destination else _MIDDLE_LABELS
    m = _exact_map(cbor2.loads(head(5, len(labels)) + middle), "claims", labels, labels)
    if m[C_VERSION] != limits.CLAIMS_VERSION or type(m[C_VERSION]) is not int:
        raise ValueError("not claims version 1")
    r = _exact_map(m[C_ROUTING], "routing constraint", _ROUTING_LABELS, _ROUTING_LABELS)
    routing = RoutingConstraint(
        transit_domains=tuple(
            _trust_domain(v) for v in _unique_list(r[R_TRANSIT_DOMAINS], "domains")
        ),
        transit_gateways=tuple(
            _spiffe_id(v, "transit gateway")
            for v in _unique_list(r[R_TRANSIT_GATEWAYS], "gateways")
        ),
        max_hops=_uint(r[R_MAX_HOPS], "max hops", limits.MAX_STAMPS),
    )
    if len(set(routing.transit_domains)) != len(routing.transit_domains) or len(
        set(routing.transit_gateways)
    ) != len(routing.transit_gateways):
        raise ValueError("routing lists repeat an entry")
    fields: _Middle = (
        _scope(m[C_ORIGIN_SCOPE], "origin scope"),
        _scope(m[C_DESTINATION_SCOPE], "destination scope"),
        _spiffe_id(m[C_DESTINATION_ID], "destination id") if with_destination else None,
        _uint(m[C_TIER], "tier", limits.MAX_TIER),
        _hash(m[C_LINEAGE], "lineage"),
        routing,
    )
    if encode_claims_middle(*fields) != middle:
        raise ValueError("middle is not canonical")
    return fields


def _claims_from_value(value: object) -> Claims:
    m = _exact_map(value, "claims", _CLAIMS_REQUIRED, _CLAIMS_ALLOWED)
    if m[C_VERSION] != limits.CLAIMS_VERSION or type(m[C_VERSION]) is not int:
        raise RemoteProtocolError(
            Reason.UNSUPPORTED_VERSION, f"claims version {m[C_VERSION]!r} is not supported"
        )
    r = _exact_map(m[C_ROUTING], "routing constraint", _ROUTING_LABELS, _ROUTING_LABELS)
    domains = tuple(_trust_domain(v) for v in _unique_list(r[R_TRANSIT_DOMAINS], "domains"))
    gateways = tuple(
        _spiffe_id(v, "transit gateway") for v in _unique_list(r[R_TRANSIT_GATEWAYS], "gateways")
    )
    if len(set(domains)) != len(domains) or len(set(gateways)) != len(gateways):
        raise RemoteProtocolError(Reason.MALFORMED, "routing lists must not repeat an entry")
    sealed = m[C_SEALED]
    if not isinstance(sealed, bool):
        raise RemoteProtocolError(Reason.MALFORMED, "sealed must be a bool")
    # Present means a SPIFFE ID: a null here would be a second encoding of "no destination id".
    destination_id = (
        _spiffe_id(m[C_DESTINATION_ID], "destination id") if C_DESTINATION_ID in m else None
    )
    return Claims(
        issuer=_spiffe_id(m[ISS], "issuer"),
        origin_scope=_scope(m[C_ORIGIN_SCOPE], "origin scope"),
        destination_scope=_scope(m[C_DESTINATION_SCOPE], "destination scope"),
        destination_id=destination_id,
        tier=_uint(m[C_TIER], "tier", limits.MAX_TIER),
        lineage=_hash(m[C_LINEAGE], "lineage"),
        routing=RoutingConstraint(
            transit_domains=domains,
            transit_gateways=gateways,
            max_hops=_uint(r[R_MAX_HOPS], "max hops", limits.MAX_STAMPS),
        ),
        issued_at=_uint(m[IAT], "iat", limits.MAX_TIMESTAMP),
        expires_at=_uint(m[EXP], "exp", limits.MAX_TIMESTAMP),
        envelope_id=_hash(m[CTI], "cti (envelope id)", limits.ENVELOPE_ID_BYTES),
        payload_digest=_hash(m[C_PAYLOAD_DIGEST], "payload digest"),
        payload_length=_uint(m[C_PAYLOAD_LENGTH], "payload length", limits.MAX_PAYLOAD_BYTES),
        sealed=sealed,
    )


def check_claims(claims: Claims) -> None:
    """Check that ``claims`` can be encoded and would decode back to themselves.

    Raises:
        LocalProtocolError: naming the first claim out of range.
    """
    routing = claims.routing
    if not valid_scope(claims.origin_scope):
        raise LocalProtocolError("origin_scope is not a valid scope name")
    if not valid_scope(claims.destination_scope):
        raise LocalProtocolError("destination_scope is not a valid scope")
    if not _in_uint(claims.tier, limits.MAX_TIER):
        raise LocalProtocolError("tier must be 0..255")
    if _bad_bytes(claims.lineage, limits.HASH_BYTES):
        raise LocalProtocolError("lineage must be 32 bytes")
    check_envelope_fields(
        claims.issued_at, claims.expires_at, claims.envelope_id, claims.payload_digest,
        claims.payload_length,
    )  # fmt: skip
    if not isinstance(claims.sealed, bool):
        raise LocalProtocolError("sealed must be a bool")
    if not _in_uint(routing.max_hops, limits.MAX_STAMPS):
        raise LocalProtocolError("max_hops must be 0..16")
    if (
        len(routing.transit_domains) > limits.MAX_ROUTING_ENTRIES
        or len(routing.transit_gateways) > limits.MAX_ROUTING_ENTRIES
    ):
        raise LocalProtocolError(f"routing lists hold at most {limits.MAX_ROUTING_ENTRIES} entries")
    if len(set(routing.transit_domains)) != len(routing.transit_domains) or len(
        set(routing.transit_gateways)
    ) != len(routing.transit_gateways):
        raise LocalProtocolError("routing lists must not repeat an entry")


def check_envelope_fields(
    issued_at: int, expires_at: int, envelope_id: bytes, payload_digest: bytes, payload_length: int
) -> None:
    """Check the claims that change with every envelope (shared with the reusable sealer).

    Raises:
        LocalProtocolError: naming the first field out of range.
    """
    # The common case in one expression (exact types, every bound at once; ~0.2 us cheaper per
    # seal). Anything it does not accept, bytes subclasses included, goes through the checks
    # below, which accept or refuse it exactly as before and name the first field at fault.
    if (
        type(envelope_id) is bytes
        and len(envelope_id) == limits.ENVELOPE_ID_BYTES
        and type(payload_digest) is bytes
        and len(payload_digest) == limits.HASH_BYTES
        and type(payload_length) is int
        and 0 <= payload_length <= limits.MAX_PAYLOAD_BYTES
        and type(issued_at) is int
        and type(expires_at) is int
        and 0 <= issued_at < expires_at <= limits.MAX_TIMESTAMP
        and expires_at - issued_at <= limits.MAX_LIFETIME
    ):
        return
    if _bad_bytes(envelope_id, limits.ENVELOPE_ID_BYTES):
        raise LocalProtocolError("envelope_id must be 16 bytes")
    if _bad_bytes(payload_digest, limits.HASH_BYTES):
        raise LocalProtocolError("payload_digest must be 32 bytes")
    if not _in_uint(payload_length, limits.MAX_PAYLOAD_BYTES):
        raise LocalProtocolError("payload too long")
    if not _in_uint(issued_at, limits.MAX_TIMESTAMP):
        raise LocalProtocolError("issued_at out of range")
    if not _in_uint(expires_at, limits.MAX_TIMESTAMP):
        raise LocalProtocolError("expires_at out of range")
    if expires_at <= issued_at:
        raise LocalProtocolError("expires_at must be after issued_at")
    if expires_at - issued_at > limits.MAX_LIFETIME:
        raise LocalProtocolError(f"lifetime exceeds {limits.MAX_LIFETIME} s")


def _in_uint(value: object, maximum: int) -> bool:
    return type(value) is int and 0 <= value <= maximum


def _bad_bytes(value: object, size: int) -> bool:
    return not isinstance(value, bytes) or len(value) != size


def encode_claims(claims: Claims) -> bytes:
    """Serialize origin claims as canonical CBOR (checks them first).

    Raises:
        LocalProtocolError: a claim is out of range (see :func:`check_claims`).
    """
    check_claims(claims)
    return encode_claims_unchecked(claims)


def claims_as_map(claims: Claims) -> dict[int, object]:
    """The CBOR data model of ``claims`` (what :func:`encode_claims` writes): the reference for the
    specialised encoder, which tests compare against ``cbor2.dumps(..., canonical=True)``."""
    m: dict[int, object] = {
        ISS: str(claims.issuer),
        EXP: claims.expires_at,
        IAT: claims.issued_at,
        CTI: claims.envelope_id,
        C_VERSION: limits.CLAIMS_VERSION,
        C_ORIGIN_SCOPE: claims.origin_scope,
        C_DESTINATION_SCOPE: claims.destination_scope,
        C_TIER: claims.tier,
        C_LINEAGE: claims.lineage,
        C_ROUTING: {
            R_TRANSIT_DOMAINS: [td.id_string for td in claims.routing.transit_domains],
            R_TRANSIT_GATEWAYS: [str(g) for g in claims.routing.transit_gateways],
            R_MAX_HOPS: claims.routing.max_hops,
        },
        C_PAYLOAD_DIGEST: claims.payload_digest,
        C_PAYLOAD_LENGTH: claims.payload_length,
        C_SEALED: claims.sealed,
    }
    if claims.destination_id is not None:
        m[C_DESTINATION_ID] = str(claims.destination_id)
    return m


# The specialised encoder. Canonical order sorts the one-byte labels (1, 4, 6, 7) before the
# five-byte private-use ones (3a 00 01 00 00 = -65537, 3a 00 01 00 01 = -65538, ...), and those
# by magnitude; both RFC 7049 and RFC 8949 orders agree. Label prefixes are pre-encoded, so
# encoding is concatenation. The split into a fixed middle and per-envelope fields is what
# ``recipe.Sealer`` reuses.
def _label(label: int) -> bytes:
    return head(1, -1 - label) if label < 0 else head(0, label)


_L_ISS, _L_EXP, _L_IAT = _label(ISS), _label(EXP), _label(IAT)
_L_CTI = _label(CTI) + head(2, limits.ENVELOPE_ID_BYTES)
_L_VERSION = _label(C_VERSION) + head(0, limits.CLAIMS_VERSION)
_L_ORIGIN_SCOPE, _L_DESTINATION_SCOPE = _label(C_ORIGIN_SCOPE), _label(C_DESTINATION_SCOPE)
_L_DESTINATION_ID, _L_TIER = _label(C_DESTINATION_ID), _label(C_TIER)
_L_LINEAGE = _label(C_LINEAGE) + head(2, limits.HASH_BYTES)
_L_ROUTING = _label(C_ROUTING) + head(5, 3)
_L_PAYLOAD_DIGEST = _label(C_PAYLOAD_DIGEST) + head(2, limits.HASH_BYTES)
_L_PAYLOAD_LENGTH = _label(C_PAYLOAD_LENGTH)
_L_SEALED = _label(C_SEALED)
_SEALED = {False: b"\xf4", True: b"\xf5"}
# exp and iat of any date from 1970-01-01T18:12 to 2106 as one C call (``head`` would take two
# Python calls and ~0.3 us more per envelope): label, uint head 0x1a, 4-byte big-endian value.
_PACK_TIMES = struct.Struct(">BBIBBI").pack
_MAP_HEAD = {False: head(5, len(_CLAIMS_REQUIRED)), True: head(5, len(_CLAIMS_ALLOWED))}


def _tstr(text: str) -> bytes:
    raw = text.encode()
    return head(3, len(raw)) + raw


def _tstr_array(texts: list[str]) -> bytes:
    return head(4, len(texts)) + b"".join(_tstr(t) for t in texts)


def encode_claims_head(issuer: SpiffeID, destination_id: SpiffeID | None) -> bytes:
    """The bytes before ``exp``: the map head and ``iss``."""
    return _MAP_HEAD[destination_id is not None] + _L_ISS + _tstr(str(issuer))


def encode_claims_middle(
    origin_scope: str,
    destination_scope: str,
    destination_id: SpiffeID | None,
    tier: int,
    lineage: bytes,
    routing: RoutingConstraint,
) -> bytes:
    """The bytes between ``cti`` and ``payload_digest``: every claim fixed for a workload."""
    return b"".join(
        (
            _L_VERSION,
            _L_ORIGIN_SCOPE,
            _tstr(origin_scope),
            _L_DESTINATION_SCOPE,
            _tstr(destination_scope),
            b"" if destination_id is None else _L_DESTINATION_ID + _tstr(str(destination_id)),
            _L_TIER,
            head(0, tier),
            _L_LINEAGE,
            lineage,
            _L_ROUTING,
            b"\x01",
            _tstr_array([td.id_string for td in routing.transit_domains]),
            b"\x02",
            _tstr_array([str(g) for g in routing.transit_gateways]),
            b"\x03",
            head(0, routing.max_hops),
        )
    )


def encode_claims_unchecked(claims: Claims) -> bytes:
    """Canonical CBOR of ``claims`` without range checks (they must already hold, as after
    :func:`check_claims` or decoding): identical to ``cbor2.dumps(claims_as_map(claims),
    canonical=True)``."""
    return splice_claims(
        encode_claims_head(claims.issuer, claims.destination_id),
        encode_claims_middle(
            claims.origin_scope,
            claims.destination_scope,
            claims.destination_id,
            claims.tier,
            claims.lineage,
            claims.routing,
        ),
        claims.issued_at,
        claims.expires_at,
        claims.envelope_id,
        claims.payload_digest,
        claims.payload_length,
        claims.sealed,
    )


def splice_claims(
    head_bytes: bytes,
    middle: bytes,
    issued_at: int,
    expires_at: int,
    envelope_id: bytes,
    payload_digest: bytes,
    payload_length: int,
    sealed: bool,
) -> bytes:
    """Assemble a claims map from :func:`encode_claims_head`, :func:`encode_claims_middle` and the
    per-envelope fields (already checked). The one place the claims layout is written.

    Positional (in the order of :func:`check_envelope_fields`, then ``sealed``) because the
    reusable sealer calls it once per envelope and keyword passing costs ~0.2 us there.
    """
    if 0x10000 <= issued_at <= expires_at <= 0xFFFFFFFF:  # both take 4-byte heads
        times = _PACK_TIMES(_L_EXP[0], 0x1A, expires_at, _L_IAT[0], 0x1A, issued_at)
    else:
        times = b"".join((_L_EXP, head(0, expires_at), _L_IAT, head(0, issued_at)))
    return b"".join(
        (
            head_bytes,
            times,
            _L_CTI,
            envelope_id,
            middle,
            _L_PAYLOAD_DIGEST,
            payload_digest,
            _L_PAYLOAD_LENGTH,
            head(0, payload_length),
            _L_SEALED,
            _SEALED[sealed],
        )
    )


def decode_stamp_claims(data: bytes) -> StampClaims:
    """Decode a transit stamp's claims map (NOT verified).

    Raises:
        RemoteProtocolError: MALFORMED, NON_CANONICAL, UNKNOWN_CRITICAL or UNSUPPORTED_VERSION.
    """
    m = _exact_map(
        loads_canonical(data, "stamp claims"), "stamp claims", _STAMP_LABELS, _STAMP_LABELS
    )
    if m[S_VERSION] != limits.STAMP_VERSION or type(m[S_VERSION]) is not int:
        raise RemoteProtocolError(
            Reason.UNSUPPORTED_VERSION, f"stamp version {m[S_VERSION]!r} is not supported"
        )
    if not isinstance(m[S_DECISION], str) or m[S_DECISION] not in _DECISIONS:
        raise RemoteProtocolError(Reason.MALFORMED, f"stamp decision must be one of {_DECISIONS}")
    decision = StampDecision(m[S_DECISION])
    return StampClaims(
        gateway=_spiffe_id(m[ISS], "stamp gateway"),
        hop=_uint(m[S_HOP], "hop", limits.MAX_STAMPS),
        from_network=_token(m[S_FROM_NETWORK], "from network", limits.MAX_NETWORK_NAME_BYTES),
        to_network=_token(m[S_TO_NETWORK], "to network", limits.MAX_NETWORK_NAME_BYTES),
        decision=decision,
        rule=_token(m[S_RULE], "rule", limits.MAX_RULE_BYTES),
        policy_revision=_hash(m[S_POLICY_REVISION], "policy revision"),
        stamped_at=_uint(m[IAT], "stamp iat", limits.MAX_TIMESTAMP),
        envelope_signature_hash=_hash(m[S_ENVELOPE_SIGNATURE_HASH], "envelope signature hash"),
        previous_stamp_hash=_hash(m[S_PREVIOUS_STAMP_HASH], "previous stamp hash"),
    )


def encode_stamp_claims(stamp: StampClaims) -> bytes:
    """Serialize stamp claims as canonical CBOR.

    Raises:
        LocalProtocolError: a field is out of range (the first, in the order the fields are
            listed in :class:`StampClaims`, decision aside).
    """
    if not _in_uint(stamp.hop, limits.MAX_STAMPS) or stamp.hop < 1:
        raise LocalProtocolError("hop must be 1..16")
    route = (str(stamp.gateway), stamp.from_network, stamp.to_network, stamp.rule)
    revision = stamp.policy_revision
    if all(type(value) is str for value in route) and type(revision) is bytes:
        around_hop, after_hop = _cached_stamp_segments(*route, stamp.decision, revision)
    else:  # unhashable or odd types: the same checks, uncached, refuse them
        around_hop, after_hop = _stamp_segments(*route, stamp.decision, revision)
    if not _in_uint(stamp.stamped_at, limits.MAX_TIMESTAMP):
        raise LocalProtocolError("stamped_at out of range")
    if _bad_bytes(stamp.envelope_signature_hash, limits.HASH_BYTES):
        raise LocalProtocolError("bad signature hash")
    if _bad_bytes(stamp.previous_stamp_hash, limits.HASH_BYTES):
        raise LocalProtocolError("bad previous stamp hash")
    return b"".join(
        (
            around_hop[0],
            head(0, stamp.stamped_at),
            around_hop[1],
            head(0, stamp.hop),
            after_hop,
            stamp.envelope_signature_hash,
            _L_STAMP_PREVIOUS,
            stamp.previous_stamp_hash,
        )
    )


def encode_stamp_claims_reference(stamp: StampClaims) -> bytes:
    """The same bytes as :func:`encode_stamp_claims`, through cbor2's canonical encoder (the
    reference the fast encoder is tested against; no range checks)."""
    return cbor2.dumps(
        {
            ISS: str(stamp.gateway),
            IAT: stamp.stamped_at,
            S_VERSION: limits.STAMP_VERSION,
            S_HOP: stamp.hop,
            S_FROM_NETWORK: stamp.from_network,
            S_TO_NETWORK: stamp.to_network,
            S_DECISION: stamp.decision.value,
            S_RULE: stamp.rule,
            S_POLICY_REVISION: stamp.policy_revision,
            S_ENVELOPE_SIGNATURE_HASH: stamp.envelope_signature_hash,
            S_PREVIOUS_STAMP_HASH: stamp.previous_stamp_hash,
        },
        canonical=True,
    )


# The stamp claims layout, labels in canonical order (1-byte labels, then -65601..-65609 by
# magnitude; both RFC 7049 and RFC 8949 orders agree): iss, iat, version, hop, from network,
# to network, decision, rule, policy revision, envelope signature hash, previous stamp hash.
# A gateway stamps many envelopes on few routes, so the part fixed by the route (gateway, networks,
# rule, revision) is checked and encoded once per route (_cached_stamp_segments); tests compare
# the result with encode_stamp_claims_reference (cbor2's canonical encoder).
_STAMP_MAP_HEAD = head(5, len(_STAMP_LABELS))
_L_STAMP_VERSION_HOP = _label(S_VERSION) + head(0, limits.STAMP_VERSION) + _label(S_HOP)
_L_STAMP_SIGNATURE = _label(S_ENVELOPE_SIGNATURE_HASH) + head(2, limits.HASH_BYTES)
_L_STAMP_PREVIOUS = _label(S_PREVIOUS_STAMP_HASH) + head(2, limits.HASH_BYTES)


def _stamp_segments(
    gateway: str,
    from_network: str,
    to_network: str,
    rule: str,
    decision: StampDecision,
    policy_revision: bytes,
) -> tuple[tuple[bytes, bytes], bytes]:
    """The route's fixed bytes: ((up to iat's value, from iat to hop's value), from the from
    network to the envelope signature hash's value).

    Raises:
        LocalProtocolError: a network name, the rule id or the revision is out of range.
    """
    if _bad_token(from_network, limits.MAX_NETWORK_NAME_BYTES):
        raise LocalProtocolError("bad from_network")
    if _bad_token(to_network, limits.MAX_NETWORK_NAME_BYTES):
        raise LocalProtocolError("bad to_network")
    if _bad_token(rule, limits.MAX_RULE_BYTES):
        raise LocalProtocolError("bad rule id")
    if _bad_bytes(policy_revision, limits.HASH_BYTES):
        raise LocalProtocolError("policy_revision must be 32 bytes")
    before_iat = _STAMP_MAP_HEAD + _label(ISS) + _text(gateway) + _label(IAT)
    after_hop = b"".join(
        (
            _label(S_FROM_NETWORK),
            _text(from_network),
            _label(S_TO_NETWORK),
            _text(to_network),
            _label(S_DECISION),
            _text(decision.value),
            _label(S_RULE),
            _text(rule),
            _label(S_POLICY_REVISION),
            bstr(policy_revision),
            _L_STAMP_SIGNATURE,
        )
    )
    return (before_iat, _L_STAMP_VERSION_HOP), after_hop


# Failures raise and are never cached; 256 routes is far more than a gateway has.
_cached_stamp_segments = functools.lru_cache(maxsize=256)(_stamp_segments)


def _text(value: str) -> bytes:
    raw = value.encode()
    return head(3, len(raw)) + raw


def _bad_token(value: object, maximum: int) -> bool:
    return not isinstance(value, str) or len(value) > maximum or _TOKEN.fullmatch(value) is None
