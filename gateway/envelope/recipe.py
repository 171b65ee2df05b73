"""The safe recipes: seal an envelope, open (verify) one, stamp one, unseal its payload.

Theory of operation: :func:`open_envelope` is the only constructor of
:class:`~gateway.envelope.model.VerifiedEnvelope`. It checks cheap things before expensive ones
(DESIGN.md section 4): sizes and version, then times, then the replay window, then the anchor, then
the origin signature, then the claims against the anchor's endorsement, then the payload digest,
then the transit stamps and finally the routing constraint. Each refusal is a
:class:`~gateway.errors.RemoteProtocolError` with a stable :class:`~gateway.reasons.Reason`.

Replay is two-step: ``open_envelope(..., replay=window)`` only *checks* the window; the caller
records the id (``window.record(claims.envelope_id, claims.expires_at, now)``) once it has decided
to accept the envelope, so a refused envelope never burns its id.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from hashlib import blake2b
from os import urandom

import nacl.bindings
import nacl.exceptions
import nacl.public
import nacl.signing

from gateway.envelope import limits
from gateway.envelope.claims import (
    check_claims,
    check_envelope_fields,
    encode_claims,
    encode_claims_head,
    encode_claims_middle,
    encode_stamp_claims,
    splice_claims,
)
from gateway.envelope.cose import (
    ALG_EDDSA,
    HEADER_ALG,
    HEADER_KID,
    Sign1Signer,
    encode_protected,
    sign1_with_protected,
    sign1_with_secret,
    verify_parts,
    verify_sign1,
)
from gateway.envelope.frozen import positional_builder
from gateway.envelope.model import (
    Claims,
    RoutingConstraint,
    StampClaims,
    StampDecision,
    VerifiedEnvelope,
    VerifiedStamp,
)
from gateway.envelope.wire import (
    UnverifiedStamp,
    decode_unstamped_fast,
    decode_unverified,
    encode,
)
from gateway.errors import LocalProtocolError, RemoteProtocolError
from gateway.reasons import Reason
from gateway.replay import ReplayWindow
from identity.anchor_contract import AnchorLookupError, AnchorResolver, ResolvedAnchor, key_id
from identity.spiffe_id import SpiffeID

ZERO_HASH = bytes(limits.HASH_BYTES)
SEALED_BOX_OVERHEAD = 48  # X25519 ephemeral public key (32) + Poly1305 tag (16)


def digest(data: bytes) -> bytes:
    """BLAKE2b-256 (unkeyed, no personalisation): payload digests and stamp chaining."""
    return hashlib.blake2b(data, digest_size=limits.HASH_BYTES).digest()


# The protected header is a pure function of the public key, so memoising it is safe.
@functools.lru_cache(maxsize=256)
def _protected_for(public_key: bytes) -> bytes:
    return encode_protected({HEADER_ALG: ALG_EDDSA, HEADER_KID: key_id(public_key)})


def seal(
    *,
    issuer: SpiffeID,
    origin_scope: str,
    destination_scope: str,
    tier: int,
    lineage: bytes,
    routing: RoutingConstraint,
    issued_at: int,
    expires_at: int,
    payload: bytes,
    signing_key: nacl.signing.SigningKey,
    destination_id: SpiffeID | None = None,
    envelope_id: bytes | None = None,
    seal_to: bytes | None = None,
) -> bytes:
    """Build and sign an envelope (no stamps).

    Args:
        issuer .. expires_at, destination_id: the claims (see docs/envelope.md).
        payload: the application bytes.
        signing_key: the governance anchor's Ed25519 key; its key id goes in ``kid``.
        envelope_id: 16 bytes; random when omitted (pass one only for tests and vectors).
        seal_to: the destination scope's X25519 public key: encrypt the payload to it with a NaCl
            SealedBox, and set the sealed flag. The digest then covers the ciphertext.

    Returns:
        The envelope bytes.

    Raises:
        LocalProtocolError: a claim is out of range or the payload is too large.
    """
    if envelope_id is None:
        envelope_id = secrets.token_bytes(limits.ENVELOPE_ID_BYTES)
    payload = _carried_payload(payload, seal_to)
    claims = Claims(
        issuer=issuer,
        origin_scope=origin_scope,
        destination_scope=destination_scope,
        destination_id=destination_id,
        tier=tier,
        lineage=lineage,
        routing=routing,
        issued_at=issued_at,
        expires_at=expires_at,
        envelope_id=envelope_id,
        payload_digest=digest(payload),
        payload_length=len(payload),
        sealed=seal_to is not None,
    )
    return _sign_claims(claims, payload, signing_key)


def _carried_payload(payload: bytes, seal_to: bytes | None) -> bytes:
    """The payload as carried: encrypted to ``seal_to`` when given; size-checked."""
    if seal_to is not None:
        if len(payload) > limits.MAX_PAYLOAD_BYTES - SEALED_BOX_OVERHEAD:
            raise LocalProtocolError("payload too large to seal")
        if not isinstance(seal_to, bytes) or len(seal_to) != 32:
            raise LocalProtocolError("seal_to must be a 32-byte X25519 public key")
        payload = nacl.public.SealedBox(nacl.public.PublicKey(seal_to)).encrypt(payload)
    if len(payload) > limits.MAX_PAYLOAD_BYTES:
        raise LocalProtocolError(f"payload exceeds {limits.MAX_PAYLOAD_BYTES} bytes")
    return payload


def seal_claims(claims: Claims, payload: bytes, signing_key: nacl.signing.SigningKey) -> bytes:
    """Sign ready-made ``claims`` for ``payload`` (whose digest and length they must carry).

    Raises:
        LocalProtocolError: a claim is out of range, or the digest/length do not match.
    """
    if claims.payload_length != len(payload) or claims.payload_digest != digest(payload):
        raise LocalProtocolError("claims payload digest/length do not match the payload")
    return _sign_claims(claims, payload, signing_key)


def _sign_claims(claims: Claims, payload: bytes, signing_key: nacl.signing.SigningKey) -> bytes:
    # The caller made the digest and length from ``payload`` (seal) or checked them (seal_claims).
    protected = _protected_for(signing_key.verify_key.encode())
    origin, _ = sign1_with_protected(protected, encode_claims(claims), signing_key)
    if len(origin) > limits.MAX_HEADER_BYTES:
        raise LocalProtocolError("claims too large for the envelope header")
    return encode(origin, payload)


# Hashing a copy of an empty BLAKE2b-256 state skips parsing digest_size on every seal (~0.13 us);
# the state itself is never updated, so copies are independent (and copy() is thread-safe).
_EMPTY_DIGEST = blake2b(digest_size=limits.HASH_BYTES)


class Sealer:
    """Seals many envelopes that share one workload's fixed claims (issuer, scopes, destination
    id, tier, lineage, routing) and signing key.

    The fixed claims are checked and encoded once, at construction; :meth:`seal` checks the
    per-envelope fields (times, envelope id, payload) exactly as :func:`seal` does and splices
    them into the pre-encoded claims (``claims.splice_claims``, the same writer the generic path
    uses). The bytes are identical to :func:`seal` with the same arguments; tests check this.
    Build a new sealer when a fixed claim changes (a new lineage, say).
    """

    __slots__ = ("_claims_head", "_claims_middle", "_signer")

    def __init__(
        self,
        *,
        issuer: SpiffeID,
        origin_scope: str,
        destination_scope: str,
        tier: int,
        lineage: bytes,
        routing: RoutingConstraint,
        signing_key: nacl.signing.SigningKey,
        destination_id: SpiffeID | None = None,
    ) -> None:
        """Check and pre-encode the fixed claims.

        Raises:
            LocalProtocolError: a fixed claim is out of range (as :func:`seal` would raise).
        """
        check_claims(
            Claims(
                issuer=issuer,
                origin_scope=origin_scope,
                destination_scope=destination_scope,
                destination_id=destination_id,
                tier=tier,
                lineage=lineage,
                routing=routing,
                issued_at=0,  # per-envelope placeholders, checked again on every seal
                expires_at=1,
                envelope_id=bytes(limits.ENVELOPE_ID_BYTES),
                payload_digest=ZERO_HASH,
                payload_length=0,
                sealed=False,
            )
        )
        self._claims_head = encode_claims_head(issuer, destination_id)
        self._claims_middle = encode_claims_middle(
            origin_scope, destination_scope, destination_id, tier, lineage, routing
        )
        # libsodium's expanded secret key, derived once through PyNaCl's public API.
        self._signer = Sign1Signer(
            _protected_for(signing_key.verify_key.encode()),
            nacl.bindings.crypto_sign_seed_keypair(signing_key.encode())[1],
        )

    def __repr__(self) -> str:  # never show key material
        return f"{type(self).__name__}()"

    def seal(
        self,
        payload: bytes,
        *,
        issued_at: int,
        expires_at: int,
        envelope_id: bytes | None = None,
        seal_to: bytes | None = None,
    ) -> bytes:
        """Build and sign one envelope; the arguments mean what they mean for :func:`seal`.

        Returns:
            The envelope bytes, identical to :func:`seal` given the same claims.

        Raises:
            LocalProtocolError: a per-envelope field is out of range or the payload too large.
        """
        # Per envelope this is the Python around one libsodium call, so it avoids needless calls
        # (benchmarks/envelope.py measures it against raw signing). The checks and their order
        # are :func:`seal`'s: the payload (``_carried_payload``), then the claims fields.
        if envelope_id is None:
            envelope_id = urandom(limits.ENVELOPE_ID_BYTES)  # the OS CSPRNG, as secrets uses
        if seal_to is not None or len(payload) > limits.MAX_PAYLOAD_BYTES:
            payload = _carried_payload(payload, seal_to)
        payload_length = len(payload)
        hasher = _EMPTY_DIGEST.copy()
        hasher.update(payload)
        payload_digest = hasher.digest()
        check_envelope_fields(issued_at, expires_at, envelope_id, payload_digest, payload_length)
        origin = self._signer.sign(
            splice_claims(
                self._claims_head,
                self._claims_middle,
                issued_at,
                expires_at,
                envelope_id,
                payload_digest,
                payload_length,
                seal_to is not None,
            )
        )
        if len(origin) > limits.MAX_HEADER_BYTES:
            raise LocalProtocolError("claims too large for the envelope header")
        return encode(origin, payload)


def open_envelope(
    data: bytes,
    *,
    resolver: AnchorResolver,
    now: int,
    replay: ReplayWindow | None = None,
) -> VerifiedEnvelope:
    """Verify an envelope completely; the only way to obtain a :class:`VerifiedEnvelope`.

    Args:
        data: untrusted envelope bytes.
        resolver: resolves origin and gateway key ids to verified anchors at ``now``.
        now: the verifier's clock, unix seconds.
        replay: if given, refuse ids already in the window (check only; see module docstring).

    Returns:
        The verified envelope. Its payload is still ciphertext when ``claims.sealed``.

    Raises:
        RemoteProtocolError: with the reason of the first check that failed, in the order of
            docs/envelope.md ("Verification order").
    """
    parts = decode_unstamped_fast(data)
    if parts is None:  # stamps, or anything unusual: the general decoder (or its refusal)
        env = decode_unverified(data)
        origin = env.origin
        parts = (env.origin_bytes, origin.protected_bytes, origin.kid, origin.payload,
                 origin.signature, env.claims, env.payload)  # fmt: skip
        stamps = env.stamps
    else:
        stamps = ()
    origin_bytes, protected_bytes, kid, claims_bytes, signature, claims, payload = parts
    check_times(claims, now)
    if replay is not None:
        replay.check(claims.envelope_id, now)
    anchor = _resolve(resolver, kid, now, "origin")
    verify_parts(protected_bytes, claims_bytes, signature, anchor.public_key)
    _check_endorsement(claims, anchor)
    if len(payload) != claims.payload_length or not hmac.compare_digest(
        digest(payload), claims.payload_digest
    ):
        raise RemoteProtocolError(Reason.PAYLOAD_MISMATCH, "payload does not match its digest")
    # No stamps: nothing to chain, and the hop and routing checks cannot fail (max_hops >= 0).
    verified = _verify_stamps(stamps, claims, signature, resolver, now) if stamps else ()
    if verified:
        _check_routing(claims.routing, verified)
    # Fields in VerifiedEnvelope's order: claims, anchor, stamps, payload, signed_header, signature.
    return _build_verified(claims, anchor, verified, payload, origin_bytes, signature)


_build_verified = positional_builder(VerifiedEnvelope)  # ~0.5 us cheaper per envelope


def check_times(claims: Claims, now: int) -> None:
    """Refuse envelopes outside their validity window (with CLOCK_SKEW either way).

    Raises:
        RemoteProtocolError: MALFORMED (exp <= iat), LIFETIME_TOO_LONG, NOT_YET_VALID or EXPIRED.
    """
    if claims.expires_at <= claims.issued_at:
        raise RemoteProtocolError(Reason.MALFORMED, "exp must be after iat")
    if claims.expires_at - claims.issued_at > limits.MAX_LIFETIME:
        raise RemoteProtocolError(
            Reason.LIFETIME_TOO_LONG, f"lifetime exceeds {limits.MAX_LIFETIME} s"
        )
    if claims.issued_at > now + limits.CLOCK_SKEW:
        raise RemoteProtocolError(Reason.NOT_YET_VALID, "issued in the future")
    if now >= claims.expires_at + limits.CLOCK_SKEW:
        raise RemoteProtocolError(Reason.EXPIRED, "envelope expired")


def _resolve(resolver: AnchorResolver, kid: bytes, now: int, whose: str) -> ResolvedAnchor:
    try:
        anchor = resolver.resolve(kid, now)
    except AnchorLookupError as exc:
        raise RemoteProtocolError(
            Reason(exc.problem.value), f"{whose} anchor: {exc.detail}"
        ) from None
    if not hmac.compare_digest(anchor.kid, kid):
        # A resolver bug must never let one key verify under another key's id.
        raise RemoteProtocolError(Reason.UNKNOWN_ANCHOR, f"{whose} anchor resolved to another kid")
    return anchor


def _check_endorsement(claims: Claims, anchor: ResolvedAnchor) -> None:
    if claims.issuer != anchor.spiffe_id:
        raise RemoteProtocolError(
            Reason.ISSUER_MISMATCH, f"issuer {claims.issuer} is not the anchor's {anchor.spiffe_id}"
        )
    if not anchor.grants_scope(claims.origin_scope):
        raise RemoteProtocolError(
            Reason.SCOPE_NOT_ENDORSED, f"scope {claims.origin_scope!r} is not endorsed"
        )
    if claims.tier > anchor.max_tier:
        raise RemoteProtocolError(
            Reason.TIER_EXCEEDS_ENDORSEMENT, f"tier {claims.tier} > endorsed {anchor.max_tier}"
        )


def _verify_stamps(
    stamps: tuple[UnverifiedStamp, ...],
    claims: Claims,
    origin_signature: bytes,
    resolver: AnchorResolver,
    now: int,
) -> tuple[VerifiedStamp, ...]:
    if len(stamps) > claims.routing.max_hops:
        raise RemoteProtocolError(
            Reason.HOP_LIMIT_EXCEEDED,
            f"{len(stamps)} stamps exceed max_hops {claims.routing.max_hops}",
        )
    signature_hash = digest(origin_signature)
    previous = ZERO_HASH
    # Chain first (hashes only), signatures second: cheap before expensive.
    for hop, stamp in enumerate(stamps, start=1):
        sc = stamp.claims
        if (
            sc.hop != hop
            or sc.envelope_signature_hash != signature_hash
            or sc.previous_stamp_hash != previous
        ):
            raise RemoteProtocolError(Reason.STAMP_CHAIN_BROKEN, f"stamp {hop} is out of chain")
        if not claims.issued_at - limits.CLOCK_SKEW <= sc.stamped_at <= now + limits.CLOCK_SKEW:
            raise RemoteProtocolError(Reason.BAD_STAMP, f"stamp {hop} time is out of range")
        previous = digest(stamp.encoded)
    verified = []
    for hop, stamp in enumerate(stamps, start=1):
        anchor = _resolve(resolver, stamp.sign1.kid, now, f"stamp {hop}")
        if anchor.spiffe_id != stamp.claims.gateway:
            raise RemoteProtocolError(Reason.BAD_STAMP, f"stamp {hop} gateway is not its anchor's")
        try:
            verify_sign1(stamp.sign1, anchor.public_key)
        except RemoteProtocolError:
            raise RemoteProtocolError(Reason.BAD_STAMP, f"stamp {hop} signature") from None
        verified.append(VerifiedStamp(claims=stamp.claims, anchor=anchor, encoded=stamp.encoded))
    return tuple(verified)


def _check_routing(routing: RoutingConstraint, stamps: tuple[VerifiedStamp, ...]) -> None:
    for stamp in stamps:
        gateway = stamp.claims.gateway
        if gateway not in routing.transit_gateways and gateway.trust_domain not in (
            routing.transit_domains
        ):
            raise RemoteProtocolError(
                Reason.TRANSIT_NOT_ALLOWED, f"gateway {gateway} may not carry this envelope"
            )


def stamp(
    verified: VerifiedEnvelope,
    *,
    gateway_id: SpiffeID,
    signing_key: nacl.signing.SigningKey,
    from_network: str,
    to_network: str,
    rule: str,
    policy_revision: bytes,
    now: int,
) -> bytes:
    """Append this gateway's transit stamp and re-emit the envelope.

    Args:
        verified: the envelope as :func:`open_envelope` returned it.
        gateway_id: this gateway's SPIFFE ID (its anchor's endorsed ID).
        signing_key: this gateway's anchor key.
        from_network, to_network: where the envelope came from and goes to (names, no spaces).
        rule: id of the policy rule that allowed forwarding.
        policy_revision: 32-byte hash of the destination policy revision applied.
        now: stamping time, unix seconds.

    Returns:
        The envelope bytes with the new stamp appended.

    Raises:
        LocalProtocolError: the envelope already holds its maximum number of stamps, or a field
            is out of range.
    """
    hop = len(verified.stamps) + 1
    if hop > min(verified.claims.routing.max_hops, limits.MAX_STAMPS):
        raise LocalProtocolError(f"stamp {hop} would exceed the envelope's hop limit")
    # Fields in StampClaims' order: gateway, hop, from_network, to_network, decision, rule,
    # policy_revision, stamped_at, envelope_signature_hash, previous_stamp_hash.
    claims = _build_stamp_claims(
        gateway_id, hop, from_network, to_network, StampDecision.ALLOW, rule, policy_revision, now,
        digest(verified.signature),
        digest(verified.stamps[-1].encoded) if verified.stamps else ZERO_HASH,
    )  # fmt: skip
    protected, secret_key = _signer_for(signing_key.encode())
    encoded = sign1_with_secret(protected, encode_stamp_claims(claims), secret_key)
    if len(encoded) > limits.MAX_STAMP_BYTES:
        raise LocalProtocolError("stamp too large")
    stamps = [s.encoded for s in verified.stamps]
    stamps.append(encoded)
    return encode(verified.signed_header, verified.payload, stamps)


_build_stamp_claims = positional_builder(StampClaims)


# The gateway stamps every forwarded envelope with its one anchor key: its protected header and
# libsodium's expanded secret key are derived once per key seed (through PyNaCl's public API) and
# kept in a small bounded cache, which therefore holds the secret keys of the last few keys used.
@functools.lru_cache(maxsize=8)
def _signer_for(seed: bytes) -> tuple[bytes, bytes]:
    public_key, secret_key = nacl.bindings.crypto_sign_seed_keypair(seed)
    return _protected_for(public_key), secret_key


def unseal_payload(envelope: VerifiedEnvelope, private_key: nacl.public.PrivateKey) -> bytes:
    """Decrypt a sealed payload with the destination scope's X25519 private key.

    Raises:
        LocalProtocolError: the envelope is not sealed.
        RemoteProtocolError: PAYLOAD_MISMATCH if the ciphertext does not open with this key.
    """
    if not envelope.claims.sealed:
        raise LocalProtocolError("the envelope's payload is not sealed")
    try:
        return nacl.public.SealedBox(private_key).decrypt(envelope.payload)
    except nacl.exceptions.CryptoError:
        raise RemoteProtocolError(
            Reason.PAYLOAD_MISMATCH, "sealed payload does not open with this key"
        ) from None
