"""Policy revisions and their canonical content hash.

Theory of operation: a scope's policy is a chain of :class:`PolicyRevision` values. Each holds its
number, the hash of the revision before it (32 zero bytes for number 1), when it was issued, the
rules, the lineage windows and the hashes of earlier revisions it revokes. Its hash is BLAKE2b-256
(personalisation ``sluice-policy-v1``) over the canonical CBOR encoding of that content
(:func:`revision_content`), so the hash commits to everything a decision depends on and the
revisions form a tamper-evident lineage. Envelopes name the origin scope's revision at emission
by this hash (their ``lineage`` claim); stamps name the destination revision applied.

Canonical CBOR here is RFC 8949 core deterministic encoding as cbor2 writes it with
``canonical=True``: definite lengths, shortest integer heads, map keys sorted (every key is a short
text string, so length-first and bytewise order agree), no floats, no tags. Absent optional
values are CBOR ``null``, never omitted keys, so there is exactly one encoding per revision.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import cbor2

from config.policy import (
    MAX_HOPS,
    MAX_RULE_ID_BYTES,
    MAX_TIER,
    MAX_TIMESTAMP,
    IdPattern,
    LineageMode,
    LineageWindow,
    Rule,
    scope_pattern_problem,
    scope_problem,
)

HASH_BYTES = 32
ZERO_HASH = bytes(HASH_BYTES)
HASH_PERSON = b"sluice-policy-v1"
CONTENT_VERSION = 1


class InvalidPolicy(ValueError):
    """A policy value breaks a rule of the model (bad hash length, duplicate rule id, ...)."""


def policy_hash(content: bytes) -> bytes:
    """BLAKE2b-256 with the policy personalisation over canonical content bytes."""
    return hashlib.blake2b(content, digest_size=HASH_BYTES, person=HASH_PERSON).digest()


@dataclass(frozen=True, slots=True)
class PolicyRevision:
    """One revision of a destination scope's policy. ``digest`` is computed, never given.

    Raises (on construction):
        InvalidPolicy: a field is out of range, ``previous`` is not 32 bytes (or not zero for
            revision 1), a rule id repeats, or a scope or pattern is malformed.
    """

    scope: str
    number: int
    previous: bytes
    issued_at: int
    rules: tuple[Rule, ...]
    lineage: tuple[LineageWindow, ...] = ()
    workloads: tuple[IdPattern, ...] = ()
    revokes: tuple[bytes, ...] = ()
    digest: bytes = field(init=False, repr=False, compare=False)
    content: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _validate(self)
        content = cbor2.dumps(revision_content(self), canonical=True)
        object.__setattr__(self, "content", content)
        object.__setattr__(self, "digest", policy_hash(content))

    def rule(self, rule_id: str) -> Rule | None:
        """The rule with id ``rule_id``, if this revision has one."""
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        return None


def revision_content(revision: PolicyRevision) -> dict[str, Any]:
    """The CBOR data model of a revision, exactly what is hashed and signed (docs/policy.md)."""
    return {
        "v": CONTENT_VERSION,
        "scope": revision.scope,
        "number": revision.number,
        "previous": revision.previous,
        "issued_at": revision.issued_at,
        "workloads": [str(p) for p in revision.workloads],
        "lineage": [
            {
                "origins": list(w.origins),
                "grace_revisions": w.grace_revisions,
                "grace_seconds": w.grace_seconds,
            }
            for w in revision.lineage
        ],
        "rules": [_rule_content(rule) for rule in revision.rules],
        "revokes": list(revision.revokes),
    }


def _rule_content(rule: Rule) -> dict[str, Any]:
    return {
        "id": rule.id,
        "from_scopes": list(rule.from_scopes),
        "from_ids": [str(p) for p in rule.from_ids],
        "from_domains": [d.name for d in rule.from_domains],
        "min_tier": rule.min_tier,
        "transit_gateways": [str(p) for p in rule.transit_gateways],
        "transit_domains": [d.name for d in rule.transit_domains],
        "max_hops": rule.max_hops,
        "lineage": rule.lineage.value,
    }


def _validate(revision: PolicyRevision) -> None:
    if (why := scope_problem(revision.scope)) is not None:
        raise InvalidPolicy(f"scope: {why}")
    if not 1 <= revision.number <= 2**31:
        raise InvalidPolicy(f"revision number {revision.number} is outside 1..2^31")
    if not isinstance(revision.previous, bytes) or len(revision.previous) != HASH_BYTES:
        raise InvalidPolicy("previous must be a 32-byte hash")
    if revision.number == 1 and revision.previous != ZERO_HASH:
        raise InvalidPolicy("revision 1 must have previous = 32 zero bytes")
    if not 0 <= revision.issued_at <= MAX_TIMESTAMP:
        raise InvalidPolicy("issued_at is outside 0..2^40")
    if any(not isinstance(h, bytes) or len(h) != HASH_BYTES for h in revision.revokes):
        raise InvalidPolicy("revokes must hold 32-byte hashes")
    seen: set[str] = set()
    for rule in revision.rules:
        _validate_rule(rule)
        if rule.id in seen:
            raise InvalidPolicy(f"duplicate rule id {rule.id!r}")
        seen.add(rule.id)
    for window in revision.lineage:
        for pattern in window.origins:
            if (why := scope_pattern_problem(pattern)) is not None:
                raise InvalidPolicy(f"lineage origin: {why}")
        for limit in (window.grace_revisions, window.grace_seconds):
            if limit is not None and not 0 <= limit <= MAX_TIMESTAMP:
                raise InvalidPolicy("lineage grace limits must be non-negative")


def _validate_rule(rule: Rule) -> None:
    if not rule.id or len(rule.id.encode()) > MAX_RULE_ID_BYTES or not rule.id.isascii():
        raise InvalidPolicy(f"rule id {rule.id!r} must be 1..{MAX_RULE_ID_BYTES} ASCII bytes")
    if not (rule.from_scopes or rule.from_ids or rule.from_domains):
        raise InvalidPolicy(
            f"rule {rule.id!r} names no origin (from_scopes, from_ids, from_domains)"
        )
    for pattern in rule.from_scopes:
        if (why := scope_pattern_problem(pattern)) is not None:
            raise InvalidPolicy(f"rule {rule.id!r}: {why}")
    if not 0 <= rule.min_tier <= MAX_TIER:
        raise InvalidPolicy(f"rule {rule.id!r}: min_tier outside 0..{MAX_TIER}")
    if rule.max_hops is not None and not 0 <= rule.max_hops <= MAX_HOPS:
        raise InvalidPolicy(f"rule {rule.id!r}: max_hops outside 0..{MAX_HOPS}")
    if not isinstance(rule.lineage, LineageMode):
        raise InvalidPolicy(f"rule {rule.id!r}: lineage must be a LineageMode")
