"""One envelope through one gateway, without I/O: open, replay, decide, route, stamp.

Theory of operation: the daemon hands :func:`process` the bytes of an envelope frame, where they
came from, an immutable :class:`GatewayState` snapshot and the mutable replay window, and gets back
either a :class:`Forward` (the stamped bytes and where to send them) or a :class:`Refuse`. Both
carry what the audit log records. Nothing here blocks, so the daemon can run it inline in its
connection task and tests can run it with a fixed clock.

The order is DESIGN.md section 4's: the envelope codec checks sizes, times, replay, anchor,
signature, stamps and routing constraint (cheap to expensive); then federation scope filters, the
destination policy, the route, and last the stamp (a signature, so it comes after every refusal).
An envelope id enters the replay window only once it is forwarded, so a refusal never burns it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import nacl.signing

from gateway.envelope.model import Claims, VerifiedEnvelope
from gateway.envelope.recipe import open_envelope, stamp
from gateway.envelope.wire import decode_unverified
from gateway.errors import LocalProtocolError, RemoteProtocolError
from gateway.policy.decide import Decision, decide
from gateway.policy.store import PolicyStore
from gateway.reasons import Reason
from gateway.replay import ReplayWindow
from gateway.router import Router, RouteTarget
from identity.anchor_contract import AnchorResolver, scope_matches
from identity.spiffe_id import SpiffeID

# Gateways endorse their anchors for this scope only (gateway.daemon.runtime): it lets them sign
# stamps and never lets them originate envelopes.
RESERVED_TRANSIT_SCOPE = "sluice/transit"

# Refusals decided before the origin signature verified. Toward the sender these all become one
# uniform reason (UNAUTHENTICATED): details about unauthenticated input go only to the audit log
# and metrics (DESIGN.md section 4, WireGuard's silence toward unauthenticated peers).
PRE_AUTHENTICATION = frozenset(
    {
        Reason.MALFORMED,
        Reason.NON_CANONICAL,
        Reason.UNSUPPORTED_VERSION,
        Reason.UNKNOWN_CRITICAL,
        Reason.TOO_LARGE,
        Reason.BAD_ALGORITHM,
        Reason.EXPIRED,
        Reason.NOT_YET_VALID,
        Reason.LIFETIME_TOO_LONG,
        Reason.UNKNOWN_ANCHOR,
        Reason.ANCHOR_REVOKED,
        Reason.ANCHOR_EXPIRED,
        Reason.ANCHOR_NOT_YET_VALID,
        Reason.ENDORSEMENT_INVALID,
        Reason.BAD_SIGNATURE,
    }
)


@dataclass(frozen=True, slots=True)
class FederationScopes:
    """What a federation peer may reach here (``exports``) and what we send it (``imports``)."""

    exports: tuple[str, ...]
    imports: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class GatewayState:
    """Everything a decision depends on, swapped as a whole on reload or identity rotation."""

    gateway_id: SpiffeID
    signing_key: nacl.signing.SigningKey
    resolver: AnchorResolver
    policies: PolicyStore
    router: Router
    peers: Mapping[str, FederationScopes]


@dataclass(frozen=True, slots=True)
class Arrival:
    """Where an envelope came from: the listener's network, and the peer name when a federation
    peer authenticated the connection."""

    network: str
    peer: str | None = None

    @property
    def hop_name(self) -> str:
        return self.peer or self.network


@dataclass(frozen=True, slots=True)
class Forward:
    envelope: VerifiedEnvelope
    decision: Decision
    target: RouteTarget
    data: bytes  # the envelope with this gateway's stamp appended


@dataclass(frozen=True, slots=True)
class Refuse:
    """A refusal. ``claims`` are the verified claims when the envelope verified, else the claims
    as decoded without trust (for the audit log, marked unverified), else None."""

    reason: Reason
    detail: str
    claims: Claims | None
    verified: bool
    decision: Decision | None = None

    @property
    def reason_for_sender(self) -> Reason:
        """What the NACK says: uniform before authentication, precise after."""
        return Reason.UNAUTHENTICATED if self.reason in PRE_AUTHENTICATION else self.reason


Outcome = Forward | Refuse


def process(
    data: bytes, *, arrival: Arrival, state: GatewayState, replay: ReplayWindow, now: int
) -> Outcome:
    """Decide what to do with one envelope.

    Args:
        data: the untrusted envelope bytes from an ENVELOPE frame.
        arrival: the listener (and peer) it came from.
        state: the current snapshot of keys, anchors, policies and routes.
        replay: the gateway's replay window; the id is recorded only when forwarding.
        now: unix seconds.

    Returns:
        :class:`Forward` or :class:`Refuse`; never raises for bad input.
    """
    try:
        envelope = open_envelope(data, resolver=state.resolver, now=now, replay=replay)
    except RemoteProtocolError as exc:
        return Refuse(exc.reason, exc.detail, _claims_without_trust(data), verified=False)
    claims = envelope.claims
    if claims.origin_scope == RESERVED_TRANSIT_SCOPE:
        return Refuse(
            Reason.SCOPE_NOT_ENDORSED,
            f"{RESERVED_TRANSIT_SCOPE!r} is reserved for gateway stamps",
            claims,
            verified=True,
        )

    if arrival.peer is not None:
        scopes = state.peers.get(arrival.peer)
        if scopes is None or not any(
            scope_matches(p, claims.destination_scope) for p in scopes.exports
        ):
            return Refuse(
                Reason.SCOPE_NOT_FEDERATED,
                f"scope {claims.destination_scope!r} is not exported to peer {arrival.peer!r}",
                claims,
                verified=True,
            )

    decision = decide(envelope, state.policies, now)
    if not decision.allow:
        return Refuse(decision.reason, decision.detail, claims, verified=True, decision=decision)

    target = state.router.route(claims)
    if target is None:
        return Refuse(
            Reason.NO_ROUTE,
            f"no route to {claims.destination_id or claims.destination_scope}",
            claims,
            verified=True,
            decision=decision,
        )
    if target.kind == "peer":
        scopes = state.peers.get(target.name)
        if scopes is None or not any(
            scope_matches(p, claims.destination_scope) for p in scopes.imports
        ):
            return Refuse(
                Reason.SCOPE_NOT_FEDERATED,
                f"scope {claims.destination_scope!r} is not imported from peer {target.name!r}",
                claims,
                verified=True,
                decision=decision,
            )

    if not _may_carry(claims, state.gateway_id):
        return Refuse(
            Reason.TRANSIT_NOT_ALLOWED,
            f"the envelope's routing constraint does not allow gateway {state.gateway_id}",
            claims,
            verified=True,
            decision=decision,
        )
    try:
        stamped = stamp(
            envelope,
            gateway_id=state.gateway_id,
            signing_key=state.signing_key,
            from_network=arrival.hop_name,
            to_network=target.name,
            rule=decision.rule,
            policy_revision=decision.revision,
            now=now,
        )
        replay.record(claims.envelope_id, claims.expires_at, now)
    except LocalProtocolError as exc:
        # One more stamp would break the envelope's own hop limit.
        return Refuse(Reason.HOP_LIMIT_EXCEEDED, str(exc), claims, verified=True, decision=decision)
    except RemoteProtocolError as exc:
        # The window filled up, or a racing copy of the same envelope was recorded first.
        return Refuse(exc.reason, exc.detail, claims, verified=True, decision=decision)
    return Forward(envelope, decision, target, stamped)


def _may_carry(claims: Claims, gateway_id: SpiffeID) -> bool:
    """Refuse before stamping rather than let the next hop find our stamp out of bounds."""
    routing = claims.routing
    return (
        gateway_id.trust_domain in routing.transit_domains or gateway_id in routing.transit_gateways
    )


def _claims_without_trust(data: bytes) -> Claims | None:
    """The claims as written, for the audit record of a refused envelope; never trusted."""
    try:
        return decode_unverified(data).claims
    except RemoteProtocolError:
        return None
