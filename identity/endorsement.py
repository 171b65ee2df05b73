"""Endorsements: a workload's X.509-SVID key vouching for a governance anchor key.

Theory of operation. An endorsement says "the anchor key K speaks for SPIFFE ID I, for scopes S,
up to trust tier T, from ``not_before`` until ``not_after``", and is signed with I's X.509-SVID
private key. It carries the SVID chain (leaf first, without the root), so a verifier that holds
only the trust bundles can check it: the chain must validate against the bundle of I's **own**
trust domain, the leaf's SPIFFE ID must be I, and the signature must verify with the leaf key.

Wire format (canonical CBOR, RFC 8949 section 4.2; see docs/identity.md "Governance anchors")::

    endorsement = [ body: bstr, signature: bstr ]      ; a 2-element array
    body        = bstr containing the canonical CBOR map below; all labels required, no others
        1: version      uint, = 1
        2: anchor key   bstr, 32 bytes: raw Ed25519 public key
        3: kid          bstr, 16 bytes: identity.anchor_contract.key_id(anchor key)
        4: spiffe id    tstr, a strict SPIFFE ID
        5: scopes       array of 1..MAX_SCOPES tstr scope patterns, sorted, no duplicates
        6: max tier     uint 0..255
        7: not before   uint, unix seconds
        8: not after    uint, unix seconds; not_before < not_after <= not_before + 90 days
        9: chain        array of 1..MAX_CHAIN_CERTS bstr: DER certificates, leaf first
    signature   = sign(leaf key, CONTEXT || body)

The signature algorithm is fixed by the leaf key's type (no negotiation, no algorithm field):
ECDSA P-256 with SHA-256 or P-384 with SHA-384, the signature as fixed-width ``r || s``;
RSA (at least 2048 bits) RSASSA-PSS with SHA-256, MGF1-SHA-256 and a 32-byte salt; Ed25519 as in
RFC 8032 (verified with libsodium, never OpenSSL).

The anchor may never outlive the SVID that endorsed it: the *effective* window is the endorsed one
clamped to the chain certificates' validity (see :attr:`VerifiedEndorsement.effective_not_after`).
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from identity.anchor_contract import KEY_ID_BYTES, ResolvedAnchor, key_id
from identity.anchors import InvalidAnchorKey, check_anchor_public_key
from identity.bundle import BundleSet
from identity.spiffe_id import InvalidSpiffeID, SpiffeID, parse_spiffe_id
from identity.x509svid import X509SVID, ChainVerificationError, InvalidSVID, verify_chain

ENDORSEMENT_VERSION = 1
CONTEXT = b"sluice endorsement v1\x00"  # domain separation: never a valid prefix of anything else

MAX_ENDORSEMENT_BYTES = 32 * 1024
MAX_CHAIN_CERTS = 8
MAX_CERT_BYTES = 8 * 1024
MAX_SCOPES = 64
MAX_SCOPE_BYTES = 255
MAX_TIER = 255
MAX_TIMESTAMP = 2**40
MAX_ENDORSEMENT_LIFETIME = 90 * 24 * 3600  # seconds
MIN_RSA_BITS = 2048
RSA_PSS_SALT_BYTES = 32

L_VERSION, L_ANCHOR, L_KID, L_SPIFFE_ID, L_SCOPES, L_MAX_TIER = 1, 2, 3, 4, 5, 6
L_NOT_BEFORE, L_NOT_AFTER, L_CHAIN = 7, 8, 9
_LABELS = frozenset(range(1, 10))

# The envelope's scope grammar ('/'-separated segments), plus the two pattern forms of
# identity.anchor_contract.scope_matches: a trailing '/*' (subtree) or '*' alone (everything).
_SCOPE_NAME = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9._\-]*(?:/[A-Za-z0-9_\-][A-Za-z0-9._\-]*)*")


class EndorsementProblem(enum.StrEnum):
    """Stable codes for :class:`InvalidEndorsement` (they appear in logs and CLI output)."""

    TOO_LARGE = "too_large"
    MALFORMED = "malformed"
    NON_CANONICAL = "non_canonical"
    UNSUPPORTED_VERSION = "unsupported_version"
    BAD_ANCHOR_KEY = "bad_anchor_key"
    KID_MISMATCH = "kid_mismatch"
    BAD_SPIFFE_ID = "bad_spiffe_id"
    BAD_SCOPE = "bad_scope"
    BAD_TIER = "bad_tier"
    BAD_VALIDITY = "bad_validity"
    LIFETIME_TOO_LONG = "lifetime_too_long"
    BAD_CERTIFICATE = "bad_certificate"
    UNSUPPORTED_KEY = "unsupported_key"
    CHAIN_INVALID = "chain_invalid"
    SPIFFE_ID_MISMATCH = "spiffe_id_mismatch"
    OUTSIDE_SVID_VALIDITY = "outside_svid_validity"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"  # used by the registry and the CLI: authentic, but over
    KID_CONFLICT = "kid_conflict"  # registry: the same anchor key endorsed for another SPIFFE ID
    TOO_MANY = "too_many"  # registry: more live endorsements of one kid than it keeps


class InvalidEndorsement(ValueError):
    """An endorsement was refused; ``code`` is stable, ``detail`` says what exactly."""

    def __init__(self, code: EndorsementProblem, detail: str) -> None:
        super().__init__(f"{code.value}: {detail}")
        self.code = code
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Endorsement:
    """A structurally valid endorsement whose signature and chain are NOT yet verified."""

    anchor_public_key: bytes
    kid: bytes
    spiffe_id: SpiffeID
    scopes: tuple[str, ...]
    max_tier: int
    not_before: int
    not_after: int
    chain: tuple[x509.Certificate, ...]  # leaf first
    body: bytes  # the signed CBOR map, as received
    signature: bytes

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]


@dataclass(frozen=True, slots=True)
class VerifiedEndorsement:
    """An endorsement whose chain, identity and signature verified.

    The effective window ``[effective_not_before, effective_not_after)`` is the endorsed window
    clamped to the validity of every certificate of the chain, so the anchor cannot outlive the
    SVID that endorsed it.
    """

    endorsement: Endorsement
    effective_not_before: int
    effective_not_after: int

    @property
    def kid(self) -> bytes:
        return self.endorsement.kid

    @property
    def spiffe_id(self) -> SpiffeID:
        return self.endorsement.spiffe_id

    def resolved(self) -> ResolvedAnchor:
        """The anchor as the envelope verifier sees it, with the effective window."""
        e = self.endorsement
        return ResolvedAnchor(
            kid=e.kid,
            public_key=e.anchor_public_key,
            spiffe_id=e.spiffe_id,
            scopes=e.scopes,
            max_tier=e.max_tier,
            not_before=self.effective_not_before,
            not_after=self.effective_not_after,
        )


def valid_scope_pattern(pattern: object) -> bool:
    """True for ``*``, a scope name, or ``<scope name>/*`` within MAX_SCOPE_BYTES (ASCII)."""
    if not isinstance(pattern, str) or not pattern.isascii() or pattern == "":
        return False
    if len(pattern) > MAX_SCOPE_BYTES:
        return False
    if pattern == "*":
        return True
    name = pattern[:-2] if pattern.endswith("/*") else pattern
    return _SCOPE_NAME.fullmatch(name) is not None and not any(
        seg.startswith(".") for seg in name.split("/")
    )


# -- producing ----------------------------------------------------------------------------------


def endorse(
    anchor_public: bytes,
    svid: X509SVID,
    scopes: Iterable[str],
    max_tier: int,
    not_before: int,
    not_after: int,
) -> bytes:
    """Sign an endorsement of ``anchor_public`` with the SVID's private key.

    Args:
        anchor_public: the raw 32-byte Ed25519 anchor public key.
        svid: the workload's X.509-SVID (chain leaf first, without the root, and its key).
        scopes: scope patterns (sorted and de-duplicated here).
        max_tier: the highest trust tier the anchor may assert, 0..255.
        not_before: start of validity, unix seconds.
        not_after: end of validity (exclusive), unix seconds.

    Returns:
        The encoded endorsement.

    Raises:
        InvalidEndorsement: an argument breaks a rule of the format (same codes as the verifier),
            or the SVID key type is not supported.
        TypeError: ``scopes`` is a single string.
    """
    if isinstance(scopes, str):  # a lone string would be taken as a set of one-letter scopes
        raise TypeError("scopes must be an iterable of scope patterns, not a string")
    body = cbor2.dumps(
        {
            L_VERSION: ENDORSEMENT_VERSION,
            L_ANCHOR: bytes(anchor_public),
            L_KID: key_id(anchor_public) if len(anchor_public) == 32 else b"",
            L_SPIFFE_ID: str(svid.spiffe_id),
            L_SCOPES: sorted(set(scopes)),
            L_MAX_TIER: max_tier,
            L_NOT_BEFORE: not_before,
            L_NOT_AFTER: not_after,
            L_CHAIN: [c.public_bytes(serialization.Encoding.DER) for c in svid.chain],
        },
        canonical=True,
    )
    data = cbor2.dumps([body, _sign(svid.private_key, CONTEXT + body)], canonical=True)
    # Never emit what a verifier would refuse: run the same structural checks on the result.
    decode_unverified(data)
    return data


def _sign(key: object, message: bytes) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(message)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        size, digest = _ec_parameters(key.curve)
        r, s = decode_dss_signature(key.sign(message, ec.ECDSA(digest)))
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise InvalidEndorsement(
                EndorsementProblem.UNSUPPORTED_KEY, f"RSA keys need >= {MIN_RSA_BITS} bits"
            )
        return key.sign(message, _PSS, hashes.SHA256())
    raise InvalidEndorsement(
        EndorsementProblem.UNSUPPORTED_KEY, f"cannot sign with a {type(key).__name__}"
    )


_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=RSA_PSS_SALT_BYTES)


def _ec_parameters(curve: ec.EllipticCurve) -> tuple[int, hashes.HashAlgorithm]:
    if isinstance(curve, ec.SECP256R1):
        return 32, hashes.SHA256()
    if isinstance(curve, ec.SECP384R1):
        return 48, hashes.SHA384()
    raise InvalidEndorsement(
        EndorsementProblem.UNSUPPORTED_KEY, f"EC curve {curve.name} (P-256 or P-384 only)"
    )


# -- decoding (untrusted) -----------------------------------------------------------------------


def decode_unverified(data: bytes) -> Endorsement:
    """Decode and check the structure of an endorsement, without trusting it.

    Checks sizes, canonical CBOR, exact labels and types, the anchor key
    (:func:`identity.anchors.check_anchor_public_key`) and its kid, the SPIFFE ID, scope
    patterns, tier, window sanity and that every chain entry is a DER certificate.

    Raises:
        InvalidEndorsement: with the code of the first rule broken.
    """
    if len(data) > MAX_ENDORSEMENT_BYTES:
        raise _bad(EndorsementProblem.TOO_LARGE, f"{len(data)} bytes > {MAX_ENDORSEMENT_BYTES}")
    outer = _loads_canonical(bytes(data), "endorsement")
    if not (isinstance(outer, list) and len(outer) == 2 and all(type(x) is bytes for x in outer)):
        raise _bad(
            EndorsementProblem.MALFORMED, "expected a CBOR array [body bstr, signature bstr]"
        )
    body, signature = outer
    m = _loads_canonical(body, "endorsement body")
    if not isinstance(m, dict) or any(type(k) is not int for k in m):
        raise _bad(EndorsementProblem.MALFORMED, "the body is not a map with integer labels")
    if (version := m.get(L_VERSION)) != ENDORSEMENT_VERSION or type(version) is not int:
        raise _bad(EndorsementProblem.UNSUPPORTED_VERSION, f"version {version!r}, expected 1")
    if set(m) != _LABELS:
        missing, unknown = sorted(_LABELS - set(m)), sorted(set(m) - _LABELS)
        raise _bad(EndorsementProblem.MALFORMED, f"labels missing {missing}, unknown {unknown}")

    anchor = _bytes(m[L_ANCHOR], "anchor key", EndorsementProblem.BAD_ANCHOR_KEY)
    try:
        check_anchor_public_key(anchor)
    except InvalidAnchorKey as exc:
        raise _bad(EndorsementProblem.BAD_ANCHOR_KEY, str(exc)) from None
    kid = _bytes(m[L_KID], "kid", EndorsementProblem.MALFORMED)
    if len(kid) != KEY_ID_BYTES or kid != key_id(anchor):
        raise _bad(EndorsementProblem.KID_MISMATCH, "kid is not key_id(anchor key)")
    spiffe_text = m[L_SPIFFE_ID]
    if type(spiffe_text) is not str:
        raise _bad(EndorsementProblem.BAD_SPIFFE_ID, "the SPIFFE ID is not a text string")
    try:
        spiffe_id = parse_spiffe_id(spiffe_text)
    except InvalidSpiffeID as exc:
        raise _bad(EndorsementProblem.BAD_SPIFFE_ID, str(exc)) from None
    scopes = _scopes(m[L_SCOPES])
    max_tier = _uint(m[L_MAX_TIER], "max tier", MAX_TIER, EndorsementProblem.BAD_TIER)
    not_before = _uint(
        m[L_NOT_BEFORE], "not_before", MAX_TIMESTAMP, EndorsementProblem.BAD_VALIDITY
    )
    not_after = _uint(m[L_NOT_AFTER], "not_after", MAX_TIMESTAMP, EndorsementProblem.BAD_VALIDITY)
    if not_after <= not_before:
        raise _bad(EndorsementProblem.BAD_VALIDITY, "not_after must be after not_before")
    if not_after - not_before > MAX_ENDORSEMENT_LIFETIME:
        raise _bad(
            EndorsementProblem.LIFETIME_TOO_LONG,
            f"{not_after - not_before} s > {MAX_ENDORSEMENT_LIFETIME} s (90 days)",
        )
    return Endorsement(
        anchor_public_key=anchor,
        kid=kid,
        spiffe_id=spiffe_id,
        scopes=scopes,
        max_tier=max_tier,
        not_before=not_before,
        not_after=not_after,
        chain=_chain(m[L_CHAIN]),
        body=body,
        signature=signature,
    )


def _loads_canonical(data: bytes, what: str) -> object:
    # cbor2 decodes; re-encoding canonically and comparing rejects indefinite lengths, long-form
    # integers and lengths, unsorted or duplicate keys, trailing bytes and decoded tags in one go.
    try:
        value = cbor2.loads(data)
        again = cbor2.dumps(value, canonical=True)
    # cbor2 raises CBORDecodeError for most garbage but ValueError, TypeError, OverflowError or
    # RecursionError for some; all of them mean "not a well-formed item" here.
    except Exception as exc:
        raise _bad(
            EndorsementProblem.MALFORMED, f"{what} is not well-formed CBOR ({exc})"
        ) from None
    if again != data:
        offset = next(
            (i for i, (a, b) in enumerate(zip(again, data, strict=False)) if a != b),
            min(len(again), len(data)),
        )
        raise _bad(
            EndorsementProblem.NON_CANONICAL,
            f"{what} is not canonical CBOR (first difference at byte {offset})",
        )
    return value


def _bytes(value: object, what: str, code: EndorsementProblem) -> bytes:
    if type(value) is not bytes:
        raise _bad(code, f"{what} must be a byte string")
    return value


def _uint(value: object, what: str, high: int, code: EndorsementProblem) -> int:
    if type(value) is not int or not 0 <= value <= high:
        raise _bad(code, f"{what} must be an integer 0..{high}, found {value!r}")
    return value


def _scopes(value: object) -> tuple[str, ...]:
    if type(value) is not list or not 1 <= len(value) <= MAX_SCOPES:
        raise _bad(EndorsementProblem.BAD_SCOPE, f"scopes must be an array of 1..{MAX_SCOPES}")
    for item in value:
        if not valid_scope_pattern(item):
            raise _bad(EndorsementProblem.BAD_SCOPE, f"not a scope pattern: {item!r}")
    if value != sorted(set(value)):
        raise _bad(EndorsementProblem.BAD_SCOPE, "scopes must be sorted and without duplicates")
    return tuple(value)


def _chain(value: object) -> tuple[x509.Certificate, ...]:
    if type(value) is not list or not 1 <= len(value) <= MAX_CHAIN_CERTS:
        raise _bad(
            EndorsementProblem.BAD_CERTIFICATE, f"chain must be an array of 1..{MAX_CHAIN_CERTS}"
        )
    certs = []
    for index, der in enumerate(value):
        if type(der) is not bytes or len(der) > MAX_CERT_BYTES:
            raise _bad(
                EndorsementProblem.BAD_CERTIFICATE,
                f"chain[{index}] must be a byte string of at most {MAX_CERT_BYTES} bytes",
            )
        try:
            cert = x509.load_der_x509_certificate(der)
            # cryptography parses lazily; touch every part used later so that a malformed
            # field fails here, as BAD_CERTIFICATE, and not deep inside chain validation.
            cert.public_key()
            _ = cert.extensions, cert.not_valid_before_utc, cert.not_valid_after_utc
            _ = cert.subject, cert.issuer, cert.serial_number
        # ValueError, x509.InvalidVersion, UnsupportedAlgorithm, DuplicateExtension...: all
        # mean "not a usable certificate".
        except Exception as exc:
            raise _bad(
                EndorsementProblem.BAD_CERTIFICATE, f"chain[{index}] is not DER X.509 ({exc})"
            ) from None
        if cert.serial_number <= 0:  # RFC 5280 section 4.1.2.2
            raise _bad(EndorsementProblem.BAD_CERTIFICATE, f"chain[{index}] serial is not positive")
        if cert.public_bytes(serialization.Encoding.DER) != der:
            raise _bad(EndorsementProblem.BAD_CERTIFICATE, f"chain[{index}] has trailing bytes")
        certs.append(cert)
    return tuple(certs)


def _bad(code: EndorsementProblem, detail: str) -> InvalidEndorsement:
    return InvalidEndorsement(code, detail)


# -- verifying ----------------------------------------------------------------------------------


def verify_endorsement(data: bytes, bundles: BundleSet, *, now: int) -> VerifiedEndorsement:
    """Verify an endorsement against trust bundles at time ``now``.

    Order: structure (:func:`decode_unverified`); the chain against the bundle of the endorsed
    SPIFFE ID's own trust domain, valid at ``now``; the leaf's SPIFFE ID equals the endorsed one;
    the signature with the leaf key; the endorsed window overlaps the chain's validity.
    An endorsement whose window has not started yet is valid (rotation publishes the next anchor
    ahead of time); whether it is usable at a given time is the registry's question.

    Args:
        data: the encoded endorsement (untrusted).
        bundles: trust bundles by trust domain.
        now: unix seconds.

    Returns:
        The verified endorsement with its effective (chain-clamped) window.

    Raises:
        InvalidEndorsement: with a stable code.
    """
    e = decode_unverified(data)
    try:
        chain_id = verify_chain(e.chain, bundles, now=dt.datetime.fromtimestamp(now, dt.UTC))
    # verify_chain documents ValueError too (it also surfaces some parse errors as one).
    except (InvalidSVID, ChainVerificationError, ValueError) as exc:
        raise _bad(EndorsementProblem.CHAIN_INVALID, _first_line(exc)) from None
    if chain_id != e.spiffe_id:
        raise _bad(
            EndorsementProblem.SPIFFE_ID_MISMATCH,
            f"the SVID is {chain_id}, the endorsement names {e.spiffe_id}",
        )
    _verify_signature(e.leaf.public_key(), CONTEXT + e.body, e.signature)
    start = max(e.not_before, *(_unix(c.not_valid_before_utc) for c in e.chain))
    end = min(e.not_after, *(_unix(c.not_valid_after_utc) for c in e.chain))
    if end <= start:
        raise _bad(
            EndorsementProblem.OUTSIDE_SVID_VALIDITY,
            "the endorsed window does not overlap the SVID chain's validity",
        )
    return VerifiedEndorsement(e, start, end)


def _verify_signature(key: object, message: bytes, signature: bytes) -> None:
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            VerifyKey(raw).verify(message, signature)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            size, digest = _ec_parameters(key.curve)
            if len(signature) != 2 * size:
                raise InvalidSignature
            r = int.from_bytes(signature[:size], "big")
            s = int.from_bytes(signature[size:], "big")
            key.verify(encode_dss_signature(r, s), message, ec.ECDSA(digest))
        elif isinstance(key, rsa.RSAPublicKey):
            if key.key_size < MIN_RSA_BITS:
                raise _bad(
                    EndorsementProblem.UNSUPPORTED_KEY, f"RSA keys need >= {MIN_RSA_BITS} bits"
                )
            key.verify(signature, message, _PSS, hashes.SHA256())
        else:
            raise _bad(EndorsementProblem.UNSUPPORTED_KEY, f"SVID key type {type(key).__name__}")
    except (InvalidSignature, BadSignatureError, ValueError) as exc:
        if isinstance(exc, InvalidEndorsement):
            raise
        raise _bad(
            EndorsementProblem.BAD_SIGNATURE, "the signature does not verify with the SVID key"
        ) from None


def _unix(when: dt.datetime) -> int:
    return int(when.timestamp())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
