"""From an evidence bundle to the gateway's decision state at any recorded time, offline.

Theory of operation. :class:`EvidenceState` verifies the bundle once and keeps what verified:

- each anchor endorsement, against the bundle's trust bundles. An endorsement is verified at a
  time inside its own effective window (its start, else its middle, else its last second),
  because the SVID chain is only valid then; the window is then what the registry enforces;
- the gateway's own endorsement, which gives the key the policy revisions must be signed with;
- each signed policy revision, with that key (and its scope must be the one it is filed under).

Whatever fails is an :class:`EvidenceProblem`, reported by the replay as a finding.

:meth:`EvidenceState.at` gives the :class:`~gateway.pipeline.GatewayState` for a unix time ``t``:
an :class:`~identity.registry.AnchorRegistry` built with every endorsement still live at ``t``
(``RegistryBuilder.add_verified(..., now=t)``, so the registry's own rules apply), the evidence's
revocations, and a :class:`~gateway.policy.PolicyStore` of the revisions issued at or before ``t``
(a revision is in force from its ``issued_at``; later ones did not exist yet). States are cached:
they only change when an endorsement expires or a revision is issued, not every second.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as dt
import enum
from dataclasses import dataclass

import nacl.signing

from gateway.audit.evidence import Evidence
from gateway.errors import RemoteProtocolError
from gateway.pipeline import FederationScopes, GatewayState
from gateway.policy.model import PolicyRevision
from gateway.policy.signed import import_revision
from gateway.policy.store import LineageError, PolicyStore, verify_chain
from gateway.router import RouteEntry, Router, RouteTarget
from identity.endorsement import (
    InvalidEndorsement,
    VerifiedEndorsement,
    decode_unverified,
    verify_endorsement,
)
from identity.registry import AnchorRegistry, RegistryBuilder


class ProblemKind(enum.StrEnum):
    SIGNATURE = "signature_invalid"  # an endorsement or revision does not verify
    INCONSISTENT = "inconsistent"  # verifies, but contradicts the rest (fork, conflict)


@dataclass(frozen=True, slots=True)
class EvidenceProblem:
    kind: ProblemKind
    item: str  # "endorsements[3]", "policy_revisions.payments/ledger[0]"
    detail: str


class EvidenceState:
    """Verified evidence of one gateway, and its decision state at any time."""

    def __init__(self, evidence: Evidence) -> None:
        self.evidence = evidence
        self.problems: list[EvidenceProblem] = []
        self.endorsements: list[VerifiedEndorsement] = []
        self.rejected_kids: dict[bytes, str] = {}  # kid -> why its endorsement did not verify
        for index, data in enumerate(evidence.endorsements):
            self._add_endorsement(f"endorsements[{index}]", data)
        self.revisions: dict[bytes, PolicyRevision] = {}
        self._verify_revisions()
        self._ends = sorted(e.effective_not_after for e in self.endorsements)
        self._by_issue = sorted(self.revisions.values(), key=lambda r: (r.issued_at, r.number))
        self._issued = [r.issued_at for r in self._by_issue]
        self._router = _router(evidence)
        self._peers = {
            p.name: FederationScopes(p.export_scopes, p.import_scopes) for p in evidence.peers
        }
        # Stamps made during replay are thrown away; a fresh key keeps the real one out of it.
        self._signing_key = nacl.signing.SigningKey.generate()
        self._registries: dict[int, AnchorRegistry] = {}
        self._stores: dict[int, PolicyStore] = {}
        self._states: dict[tuple[int, int], GatewayState] = {}
        self._store_problems: set[str] = set()

    # -- verification --------------------------------------------------------------------------

    def _add_endorsement(self, item: str, data: bytes) -> VerifiedEndorsement | None:
        verified = verify_in_window(data, self.evidence)
        if isinstance(verified, str):
            self.problems.append(EvidenceProblem(ProblemKind.SIGNATURE, item, verified))
            with contextlib.suppress(InvalidEndorsement):
                self.rejected_kids[decode_unverified(data).kid] = verified
            return None
        if all(v.endorsement.body != verified.endorsement.body for v in self.endorsements):
            self.endorsements.append(verified)
        return verified

    def _verify_revisions(self) -> None:
        gateway = verify_in_window(self.evidence.gateway_endorsement, self.evidence)
        if isinstance(gateway, str):
            self.problems.append(
                EvidenceProblem(ProblemKind.SIGNATURE, "gateway_endorsement", gateway)
            )
            return
        if gateway.spiffe_id != self.evidence.gateway:
            self.problems.append(
                EvidenceProblem(
                    ProblemKind.INCONSISTENT,
                    "gateway_endorsement",
                    f"endorses an anchor of {gateway.spiffe_id}, not of the gateway "
                    f"{self.evidence.gateway}",
                )
            )
            return
        key = gateway.endorsement.anchor_public_key
        for scope, documents in self.evidence.policy_revisions:
            for index, document in enumerate(documents):
                item = f"policy_revisions.{scope}[{index}]"
                try:
                    revision = import_revision(document, key)
                except RemoteProtocolError as exc:
                    self.problems.append(
                        EvidenceProblem(
                            ProblemKind.SIGNATURE,
                            item,
                            f"{exc.reason.value}: {exc.detail} (the gateway's anchor "
                            f"{gateway.kid.hex()} did not sign this revision)",
                        )
                    )
                    continue
                if revision.scope != scope:
                    self.problems.append(
                        EvidenceProblem(
                            ProblemKind.INCONSISTENT, item, f"is a revision of {revision.scope!r}"
                        )
                    )
                    continue
                self.revisions[revision.digest] = revision

    # -- queries -------------------------------------------------------------------------------

    def endorsements_of(self, kid: bytes) -> list[VerifiedEndorsement]:
        return [e for e in self.endorsements if e.kid == kid]

    def at(self, t: int) -> GatewayState:
        """The gateway's decision state at unix time ``t``, rebuilt from the evidence."""
        epoch = bisect.bisect_right(self._ends, t)  # endorsements over by t
        issued = bisect.bisect_right(self._issued, t)  # revisions in force at t
        state = self._states.get((epoch, issued))
        if state is None:
            state = GatewayState(
                gateway_id=self.evidence.gateway,
                signing_key=self._signing_key,
                resolver=self._registry(epoch, t),
                policies=self._store(issued),
                router=self._router,
                peers=self._peers,
            )
            self._states[(epoch, issued)] = state
        return state

    def _registry(self, epoch: int, t: int) -> AnchorRegistry:
        registry = self._registries.get(epoch)
        if registry is None:
            builder = RegistryBuilder()
            for verified in self.endorsements:
                if verified.effective_not_after <= t:
                    continue
                try:
                    builder.add_verified(verified, now=t)
                except InvalidEndorsement as exc:
                    self._note(f"anchor {verified.kid.hex()}: {exc}")
            builder.set_revocations(self.evidence.revocations)
            registry = builder.build()
            self._registries[epoch] = registry
        return registry

    def _store(self, issued: int) -> PolicyStore:
        store = self._stores.get(issued)
        if store is None:
            by_scope: dict[str, list[PolicyRevision]] = {}
            for revision in self._by_issue[:issued]:
                by_scope.setdefault(revision.scope, []).append(revision)
            usable: list[PolicyRevision] = []
            for scope, revisions in sorted(by_scope.items()):
                revisions.sort(key=lambda r: r.number)
                try:
                    verify_chain(revisions)
                    PolicyStore.build(revisions, tiers=self.evidence.tiers)
                except LineageError as exc:
                    self._note(f"scope {scope!r} left out: {exc}")
                    continue
                usable.extend(revisions)
            store = PolicyStore.build(usable, tiers=self.evidence.tiers)
            self._stores[issued] = store
        return store

    def _note(self, detail: str) -> None:
        if detail not in self._store_problems:
            self._store_problems.add(detail)
            self.problems.append(EvidenceProblem(ProblemKind.INCONSISTENT, "(evidence)", detail))


def verify_in_window(data: bytes, evidence: Evidence) -> VerifiedEndorsement | str:
    """Verify an endorsement against the evidence's bundles at a time inside its window.

    Returns:
        The verified endorsement, or why it does not verify (one line).
    """
    try:
        unverified = decode_unverified(data)
    except InvalidEndorsement as exc:
        return str(exc)
    chain = unverified.chain
    start = max(unverified.not_before, *(_unix(c.not_valid_before_utc) for c in chain))
    end = min(unverified.not_after, *(_unix(c.not_valid_after_utc) for c in chain))
    error = "the endorsed window does not overlap the SVID chain's validity"
    for when in dict.fromkeys((start, (start + end) // 2, end - 1)):
        if when < 0:
            continue
        try:
            return verify_endorsement(data, evidence.bundles, now=when)
        except InvalidEndorsement as exc:
            error = str(exc)
    return error


def _unix(when: dt.datetime) -> int:
    return int(when.timestamp())


def _router(evidence: Evidence) -> Router:
    peers = {p.name: p for p in evidence.peers}
    entries = []
    for route in evidence.routes:
        if route.peer is not None:
            peer = peers.get(route.peer)
            target = RouteTarget(route.peer, "peer", "", 0, peer.spiffe_id if peer else None)
        else:
            target = RouteTarget(route.network or "", "network", "", 0)
        entries.append(RouteEntry(target, scope=route.scope, workload=route.workload))
    return Router.build(entries)
