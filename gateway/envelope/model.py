"""The values an envelope carries, as the rest of sluice sees them after verification.

These types are the contract between the envelope codec (which alone produces
:class:`VerifiedEnvelope`) and the policy engine (which accepts nothing else). Wire labels, CBOR
types and limits are fixed in ``docs/envelope.md`` and ``gateway.envelope.limits``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from identity.anchor_contract import ResolvedAnchor
from identity.spiffe_id import SpiffeID, TrustDomain


@dataclass(frozen=True, slots=True)
class RoutingConstraint:
    """Where the envelope may travel.

    ``transit_domains`` and ``transit_gateways`` list the trust domains and gateway SPIFFE IDs
    whose gateways may stamp the envelope; a stamp is allowed when its gateway matches either
    list. Both empty means no gateway may carry it (direct delivery only). ``max_hops`` bounds the
    number of stamps.
    """

    transit_domains: tuple[TrustDomain, ...]
    transit_gateways: tuple[SpiffeID, ...]
    max_hops: int


@dataclass(frozen=True, slots=True)
class Claims:
    """The origin's signed claims (the COSE_Sign1 payload of the envelope)."""

    issuer: SpiffeID
    origin_scope: str
    destination_scope: str
    destination_id: SpiffeID | None
    tier: int  # 0..255
    lineage: bytes  # 32 bytes: hash of the origin scope's policy revision at emission
    routing: RoutingConstraint
    issued_at: int  # unix seconds
    expires_at: int  # unix seconds
    envelope_id: bytes  # 16 random bytes: the replay and dedup key
    payload_digest: bytes  # BLAKE2b-256 of the carried payload bytes (ciphertext when sealed)
    payload_length: int
    sealed: bool


class StampDecision(enum.StrEnum):
    """What the stamping gateway decided; only forwarded envelopes carry stamps, so today this is
    always ``allow``, but the field is explicit so a record of a hop never implies its outcome."""

    ALLOW = "allow"


@dataclass(frozen=True, slots=True)
class StampClaims:
    """One hop's record, signed by the gateway's anchor and chained to the previous stamp."""

    gateway: SpiffeID
    hop: int  # 1 for the first stamp
    from_network: str  # listener or peer the envelope came from
    to_network: str  # network side or peer it was sent on to
    decision: StampDecision
    rule: str  # id of the policy rule that allowed it
    policy_revision: bytes  # 32-byte hash of the destination policy revision applied
    stamped_at: int  # unix seconds
    envelope_signature_hash: bytes  # BLAKE2b-256 of the origin COSE signature
    previous_stamp_hash: bytes  # BLAKE2b-256 of the previous stamp's bytes, 32 zero bytes for hop 1


@dataclass(frozen=True, slots=True)
class VerifiedStamp:
    claims: StampClaims
    anchor: ResolvedAnchor
    encoded: bytes  # the stamp's COSE_Sign1 bytes, for re-emission and auditing


@dataclass(frozen=True, slots=True)
class VerifiedEnvelope:
    """An envelope whose origin signature, anchor, payload digest, stamps and routing constraint
    all verified. Only ``gateway.envelope`` verification constructs one."""

    claims: Claims
    anchor: ResolvedAnchor
    stamps: tuple[VerifiedStamp, ...]
    payload: bytes  # as carried: ciphertext when claims.sealed
    signed_header: bytes  # the origin COSE_Sign1 bytes
    signature: bytes  # the origin signature, 64 bytes

    @property
    def hops(self) -> int:
        return len(self.stamps)
