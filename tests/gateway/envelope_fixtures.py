"""Keys, anchors and a fixed-table resolver shared by the envelope tests, vectors and benchmark.

The resolver is a plain dict of verified anchors: the real registry (identity.registry) verifies
endorsements first; here the table stands in for that already-verified state.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import nacl.public
import nacl.signing

from gateway.envelope.model import RoutingConstraint
from identity.anchor_contract import AnchorLookupError, AnchorProblem, ResolvedAnchor, key_id
from identity.spiffe_id import parse_spiffe_id, parse_trust_domain

T0 = 1_750_000_000  # fixed "now" for tests and vectors


def seeded_signing_key(label: str) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(hashlib.sha256(b"sluice-test-key:" + label.encode()).digest())


def seeded_box_key(label: str) -> nacl.public.PrivateKey:
    return nacl.public.PrivateKey(hashlib.sha256(b"sluice-test-box:" + label.encode()).digest())


def anchor_for(
    key: nacl.signing.SigningKey,
    spiffe_id: str,
    scopes: tuple[str, ...] = ("payments/*",),
    max_tier: int = 3,
    not_before: int = T0 - 86_400,
    not_after: int = T0 + 86_400,
) -> ResolvedAnchor:
    raw = key.verify_key.encode()
    return ResolvedAnchor(
        kid=key_id(raw),
        public_key=raw,
        spiffe_id=parse_spiffe_id(spiffe_id),
        scopes=scopes,
        max_tier=max_tier,
        not_before=not_before,
        not_after=not_after,
    )


@dataclass
class TableResolver:
    """AnchorResolver over a fixed table; ``problems`` forces a lookup failure for a kid."""

    anchors: dict[bytes, ResolvedAnchor] = field(default_factory=dict)
    problems: dict[bytes, AnchorProblem] = field(default_factory=dict)

    def add(self, anchor: ResolvedAnchor) -> TableResolver:
        self.anchors[anchor.kid] = anchor
        return self

    def resolve(self, kid: bytes, now: int) -> ResolvedAnchor:
        if kid in self.problems:
            raise AnchorLookupError(self.problems[kid], "forced by the test")
        anchor = self.anchors.get(kid)
        if anchor is None:
            raise AnchorLookupError(AnchorProblem.UNKNOWN, f"no anchor {kid.hex()}")
        if now < anchor.not_before:
            raise AnchorLookupError(AnchorProblem.NOT_YET_VALID, "anchor not yet valid")
        if now >= anchor.not_after:
            raise AnchorLookupError(AnchorProblem.EXPIRED, "anchor expired")
        return anchor


ORIGIN_KEY = seeded_signing_key("origin")
GATEWAY_KEYS = [seeded_signing_key(f"gateway-{i}") for i in range(3)]
DESTINATION_BOX = seeded_box_key("payments/ledger")
ORIGIN_ID = "spiffe://weave.prod.example/ns/shop/sa/checkout"
GATEWAY_IDS = [
    "spiffe://weave.prod.example/gateway/a",
    "spiffe://cilium.prod.example/gateway/b",
    "spiffe://partner.example/gateway/c",
]
ROUTING = RoutingConstraint(
    transit_domains=(
        parse_trust_domain("weave.prod.example"),
        parse_trust_domain("cilium.prod.example"),
    ),
    transit_gateways=(parse_spiffe_id("spiffe://partner.example/gateway/c"),),
    max_hops=3,
)
LINEAGE = hashlib.blake2b(b"payments/checkout rev 7", digest_size=32).digest()
POLICY_REV = hashlib.blake2b(b"payments/ledger rev 3", digest_size=32).digest()


def standard_resolver() -> TableResolver:
    resolver = TableResolver().add(anchor_for(ORIGIN_KEY, ORIGIN_ID))
    for key, gid in zip(GATEWAY_KEYS, GATEWAY_IDS, strict=True):
        resolver.add(anchor_for(key, gid, scopes=()))
    return resolver
