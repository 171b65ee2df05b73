"""Builders shared by the policy tests: verified envelopes and revision chains.

The envelope codec is the only producer of ``VerifiedEnvelope`` in the product; policy tests
construct the value directly because the policy engine's contract starts at a verified envelope
(what verification checked is tested with the codec). This module holds no tests.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from config.policy import IdPattern, LineageWindow, Rule, parse_id_pattern
from gateway.envelope.model import (
    Claims,
    RoutingConstraint,
    StampClaims,
    StampDecision,
    VerifiedEnvelope,
    VerifiedStamp,
)
from gateway.policy import PolicyRevision, PolicyStore
from gateway.policy.model import ZERO_HASH
from identity import parse_spiffe_id
from identity.anchor_contract import ResolvedAnchor

NOW = 1_800_000_000
ISSUER = "spiffe://weave.prod.example/ns/payments/sa/api"
GATEWAY_A = "spiffe://weave.prod.example/gateway/a"
GATEWAY_B = "spiffe://cilium.prod.example/gateway/b"
LEDGER = "spiffe://cilium.prod.example/ns/payments/sa/ledger"


def anchor(issuer: str = ISSUER, scopes: tuple[str, ...] = ("payments/*",)) -> ResolvedAnchor:
    return ResolvedAnchor(
        kid=b"k" * 16,
        public_key=b"p" * 32,
        spiffe_id=parse_spiffe_id(issuer),
        scopes=scopes,
        max_tier=2,
        not_before=0,
        not_after=2**40,
    )


def stamp(gateway: str, hop: int) -> VerifiedStamp:
    claims = StampClaims(
        gateway=parse_spiffe_id(gateway),
        hop=hop,
        from_network="weave",
        to_network="cilium",
        decision=StampDecision.ALLOW,
        rule="r",
        policy_revision=bytes(32),
        stamped_at=NOW - 1,
        envelope_signature_hash=bytes(32),
        previous_stamp_hash=bytes(32),
    )
    return VerifiedStamp(claims=claims, anchor=anchor(gateway, ("*",)), encoded=b"\xd2")


def envelope(
    *,
    lineage: bytes,
    origin_scope: str = "payments/api",
    destination_scope: str = "payments/ledger",
    issuer: str = ISSUER,
    tier: int = 1,
    destination_id: str | None = None,
    gateways: tuple[str, ...] = (),
) -> VerifiedEnvelope:
    claims = Claims(
        issuer=parse_spiffe_id(issuer),
        origin_scope=origin_scope,
        destination_scope=destination_scope,
        destination_id=parse_spiffe_id(destination_id) if destination_id else None,
        tier=tier,
        lineage=lineage,
        routing=RoutingConstraint((), (), 8),
        issued_at=NOW - 10,
        expires_at=NOW + 600,
        envelope_id=b"e" * 16,
        payload_digest=bytes(32),
        payload_length=0,
        sealed=False,
    )
    return VerifiedEnvelope(
        claims=claims,
        anchor=anchor(issuer),
        stamps=tuple(stamp(g, i) for i, g in enumerate(gateways, start=1)),
        payload=b"",
        signed_header=b"",
        signature=bytes(64),
    )


def ids(*texts: str) -> tuple[IdPattern, ...]:
    return tuple(parse_id_pattern(t) for t in texts)


@dataclass(frozen=True)
class Spec:
    """One revision to chain: the PolicyRevision fields that are not computed."""

    rules: tuple[Rule, ...] = ()
    lineage: tuple[LineageWindow, ...] = ()
    workloads: tuple[IdPattern, ...] = ()
    issued_at: int | None = None
    revokes_numbers: tuple[int, ...] = ()


def chain(scope: str, specs: list[Spec]) -> tuple[PolicyRevision, ...]:
    """Revisions of ``scope`` numbered from 1 and chained by hash; by default revision n is
    issued at NOW - 10000 + 100 n."""
    out: list[PolicyRevision] = []
    for number, spec in enumerate(specs, start=1):
        out.append(
            PolicyRevision(
                scope=scope,
                number=number,
                previous=out[-1].digest if out else ZERO_HASH,
                issued_at=spec.issued_at
                if spec.issued_at is not None
                else NOW - 10_000 + number * 100,
                rules=spec.rules,
                lineage=spec.lineage,
                workloads=spec.workloads,
                revokes=tuple(out[n - 1].digest for n in spec.revokes_numbers),
            )
        )
    return tuple(out)


def origin_chain(count: int = 3, revokes: tuple[int, ...] = ()) -> tuple[PolicyRevision, ...]:
    """The origin scope ``payments/api``: ``count`` revisions; the last revokes ``revokes``."""
    specs = [Spec(rules=(Rule(f"api-r{n}", from_scopes=("payments/*",)),)) for n in range(1, count)]
    specs.append(
        Spec(rules=(Rule(f"api-r{count}", from_scopes=("payments/*",)),), revokes_numbers=revokes)
    )
    return chain("payments/api", specs)


LEDGER_RULES = (
    Rule("allow-ledger-from-payments", from_scopes=("payments/*",), min_tier=1),
    Rule(
        "allow-audit-restricted",
        from_domains=(parse_spiffe_id("spiffe://audit.example").trust_domain,),
        min_tier=2,
    ),
)


def ledger_store(
    rules: tuple[Rule, ...] = LEDGER_RULES,
    *,
    lineage: tuple[LineageWindow, ...] = (LineageWindow(("payments/*",), grace_revisions=1),),
    workloads: tuple[IdPattern, ...] = (),
    origin: tuple[PolicyRevision, ...] | None = None,
    revoked: tuple[bytes, ...] = (),
) -> tuple[PolicyStore, tuple[PolicyRevision, ...]]:
    """A store with the destination ``payments/ledger`` (one revision) and the origin chain."""
    origin = origin if origin is not None else origin_chain()
    ledger = chain("payments/ledger", [Spec(rules, lineage, workloads)])
    return PolicyStore.build([*ledger, *origin], revoked=revoked), origin


def with_lineage(env: VerifiedEnvelope, lineage: bytes) -> VerifiedEnvelope:
    return replace(env, claims=replace(env.claims, lineage=lineage))
