"""What the envelope verifier needs from the anchor registry, and nothing more.

An anchor is an Ed25519 key bound by an endorsement to a SPIFFE ID, the scopes it may speak for
and the highest trust tier it may assert. The registry (``identity.registry``) turns a key id into
a :class:`ResolvedAnchor` only after the endorsement and its SVID chain verified against the bundle
of the SPIFFE ID's own trust domain.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from typing import Protocol

from identity.spiffe_id import SpiffeID

KEY_ID_BYTES = 16


def key_id(raw_public_key: bytes) -> bytes:
    """The anchor key id carried in the COSE ``kid`` header: BLAKE2b-128 of the raw 32-byte key."""
    if len(raw_public_key) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return hashlib.blake2b(
        raw_public_key, digest_size=KEY_ID_BYTES, person=b"sluice-kid-v1"
    ).digest()


def scope_matches(pattern: str, scope: str) -> bool:
    """True when ``scope`` is granted by ``pattern``.

    Patterns are scope names (``payments/ledger``), a subtree (``payments/*`` matches
    ``payments/ledger`` and deeper, not ``payments`` itself) or ``*`` (every scope).
    """
    if pattern == "*":
        return True
    if pattern.endswith("/*"):
        return scope.startswith(pattern[:-1])
    return pattern == scope


class AnchorProblem(enum.StrEnum):
    """Why a key id did not resolve; mapped one-to-one onto gateway reason codes."""

    UNKNOWN = "unknown_anchor"
    REVOKED = "anchor_revoked"
    EXPIRED = "anchor_expired"
    NOT_YET_VALID = "anchor_not_yet_valid"
    ENDORSEMENT_INVALID = "endorsement_invalid"


class AnchorLookupError(Exception):
    """The key id does not resolve to a usable anchor at the given time."""

    def __init__(self, problem: AnchorProblem, detail: str) -> None:
        super().__init__(f"{problem.value}: {detail}")
        self.problem = problem
        self.detail = detail


@dataclass(frozen=True, slots=True)
class ResolvedAnchor:
    """A verified anchor: the raw key and what its endorsement grants.

    Valid in ``[not_before, not_after)``.
    """

    kid: bytes
    public_key: bytes  # raw 32-byte Ed25519 key, already checked canonical and not small-order
    spiffe_id: SpiffeID
    scopes: tuple[str, ...]  # scope patterns, see scope_matches
    max_tier: int
    not_before: int  # unix seconds
    not_after: int

    def grants_scope(self, scope: str) -> bool:
        return any(scope_matches(p, scope) for p in self.scopes)


class AnchorResolver(Protocol):
    """Anything that resolves key ids: the registry, or a fixed table in tests and vectors."""

    def resolve(self, kid: bytes, now: int) -> ResolvedAnchor:
        """Return the anchor for ``kid`` valid at ``now``; raise :class:`AnchorLookupError`."""
        ...
