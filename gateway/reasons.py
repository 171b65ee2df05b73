"""Stable reason codes for every refusal sluice can make.

The string values are part of the wire format (NACK receipts), the audit log and the metrics
labels: never rename or reuse one; add new codes at the end of their group.
"""

from __future__ import annotations

import enum


class Reason(enum.StrEnum):
    """Why an envelope, frame or stamp was refused (or, for ``ALLOWED``, accepted)."""

    ALLOWED = "allowed"

    # Codec: the bytes are not a well-formed envelope / stamp / frame.
    MALFORMED = "malformed"
    NON_CANONICAL = "non_canonical"
    UNSUPPORTED_VERSION = "unsupported_version"
    UNKNOWN_CRITICAL = "unknown_critical"
    TOO_LARGE = "too_large"
    BAD_ALGORITHM = "bad_algorithm"

    # Time and replay.
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    LIFETIME_TOO_LONG = "lifetime_too_long"
    REPLAYED = "replayed"

    # Anchor lookup (kid -> endorsement -> SVID chain -> bundle).
    UNKNOWN_ANCHOR = "unknown_anchor"
    ANCHOR_REVOKED = "anchor_revoked"
    ANCHOR_EXPIRED = "anchor_expired"
    ANCHOR_NOT_YET_VALID = "anchor_not_yet_valid"
    ENDORSEMENT_INVALID = "endorsement_invalid"

    # Origin signature and claims bound to the endorsement.
    BAD_SIGNATURE = "bad_signature"
    ISSUER_MISMATCH = "issuer_mismatch"
    SCOPE_NOT_ENDORSED = "scope_not_endorsed"
    TIER_EXCEEDS_ENDORSEMENT = "tier_exceeds_endorsement"
    PAYLOAD_MISMATCH = "payload_mismatch"

    # Transit stamps.
    BAD_STAMP = "bad_stamp"
    STAMP_CHAIN_BROKEN = "stamp_chain_broken"
    TOO_MANY_STAMPS = "too_many_stamps"

    # Routing constraint carried in the envelope.
    HOP_LIMIT_EXCEEDED = "hop_limit_exceeded"
    TRANSIT_NOT_ALLOWED = "transit_not_allowed"

    # Destination policy.
    NO_POLICY = "no_policy"
    NO_MATCHING_RULE = "no_matching_rule"
    ORIGIN_NOT_ALLOWED = "origin_not_allowed"
    TIER_TOO_LOW = "tier_too_low"
    LINEAGE_REVOKED = "lineage_revoked"
    LINEAGE_UNKNOWN = "lineage_unknown"
    LINEAGE_OUTSIDE_GRACE = "lineage_outside_grace"
    POLICY_TRANSIT_DENIED = "policy_transit_denied"
    POLICY_HOP_LIMIT = "policy_hop_limit"
    DESTINATION_MISMATCH = "destination_mismatch"
    POLICY_HASH_MISMATCH = "policy_hash_mismatch"  # signed policy document: unexpected hash

    # Gateway operation.
    NO_ROUTE = "no_route"
    UNAVAILABLE = "unavailable"
    OVERLOADED = "overloaded"
    UNAUTHENTICATED = "unauthenticated"
    INTERNAL = "internal"
    SCOPE_NOT_FEDERATED = "scope_not_federated"
    GOING_AWAY = "going_away"  # a GOAWAY for an orderly shutdown or drain, not a fault
