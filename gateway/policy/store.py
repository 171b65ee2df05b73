"""The policy store: every known scope's revision chain, verified and indexed for ``decide``.

A store is immutable. Reloading policy, importing a peer's signed revision or revoking one builds
a new store (:meth:`PolicyStore.build`, :meth:`PolicyStore.with_revisions`,
:meth:`PolicyStore.with_revoked`), so a decision in progress always sees one consistent snapshot.

A revision is revoked when a later revision of its scope lists its hash in ``revokes``, or when the
store is built with its hash in ``revoked`` (an operator's emergency revocation, which needs no new
revision). Revoked revisions stay in the chain (the chain must stay verifiable) but no lineage
check accepts them, and a scope whose current revision is revoked has no usable policy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from config.policy import DEFAULT_TIERS, LineageWindow, TierNames
from gateway.policy.compiled import CompiledScope, compile_scope
from gateway.policy.model import HASH_BYTES, PolicyRevision
from gateway.reasons import Reason


class LineageError(ValueError):
    """A scope's revisions do not form one unbroken hash chain; the message says where."""


@dataclass(frozen=True, slots=True)
class LineageFact:
    """What the store knows about one revision, keyed by its hash, for the lineage check."""

    scope: str
    number: int
    revoked: bool
    current_number: int  # the number of its scope's current revision
    superseded_at: int | None  # issued_at of the revision after it; None for the current one


def verify_chain(revisions: Sequence[PolicyRevision]) -> None:
    """Check that ``revisions`` (one scope, in order) form an unbroken lineage.

    The first revision may start above number 1 (history pruned); from there each revision's
    number is one more than the one before, its ``previous`` is that revision's hash, its
    ``issued_at`` is not earlier, and its ``revokes`` name only earlier revisions of the chain
    (hashes before a pruned start cannot be checked and are accepted).

    Raises:
        LineageError: naming the scope, the revision number and the broken link.
    """
    if not revisions:
        return
    scope = revisions[0].scope
    position = {r.digest: i for i, r in enumerate(revisions)}
    for index, revision in enumerate(revisions):
        where = f"scope {scope!r} revision {revision.number}"
        if revision.scope != scope:
            raise LineageError(f"{where}: belongs to scope {revision.scope!r}")
        if index > 0:
            before = revisions[index - 1]
            if revision.number != before.number + 1:
                raise LineageError(
                    f"{where}: follows revision {before.number} (numbers must be consecutive)"
                )
            if revision.previous != before.digest:
                raise LineageError(
                    f"{where}: previous is {revision.previous.hex()}, but revision {before.number} "
                    f"hashes to {before.digest.hex()} (a revision was altered or replaced)"
                )
            if revision.issued_at < before.issued_at:
                raise LineageError(f"{where}: issued before revision {before.number}")
        for revoked in revision.revokes:
            at = position.get(revoked)
            if at is not None and at >= index:
                raise LineageError(f"{where}: revokes itself or a later revision")
            if at is None and revisions[0].number == 1:
                raise LineageError(f"{where}: revokes {revoked.hex()}, not an earlier revision")


class PolicyStore:
    """Immutable: the verified revision chains of many scopes, the revocations, the tier names,
    and an index of each destination scope's current revision compiled for :func:`decide`."""

    __slots__ = ("_by_hash", "_chains", "_compiled", "_facts", "_revoked", "_tiers")

    def __init__(
        self,
        chains: Mapping[str, tuple[PolicyRevision, ...]],
        revoked: frozenset[bytes],
        tiers: TierNames,
    ) -> None:
        """Use :meth:`build`; this constructor trusts that ``chains`` were verified."""
        self._chains = MappingProxyType(dict(chains))
        self._revoked = revoked
        self._tiers = tiers
        self._by_hash = MappingProxyType({r.digest: r for chain in chains.values() for r in chain})
        facts: dict[bytes, LineageFact] = {}
        compiled: dict[str, CompiledScope] = {}
        for scope, chain in chains.items():
            current = chain[-1]
            for index, revision in enumerate(chain):
                successor = chain[index + 1] if index + 1 < len(chain) else None
                facts[revision.digest] = LineageFact(
                    scope=scope,
                    number=revision.number,
                    revoked=revision.digest in revoked,
                    current_number=current.number,
                    superseded_at=successor.issued_at if successor else None,
                )
            compiled[scope] = compile_scope(current, current.digest in revoked)
        self._facts = MappingProxyType(facts)
        self._compiled = MappingProxyType(compiled)

    @classmethod
    def build(
        cls,
        revisions: Iterable[PolicyRevision],
        *,
        revoked: Iterable[bytes] = (),
        tiers: TierNames = DEFAULT_TIERS,
    ) -> PolicyStore:
        """Group revisions by scope, order them, verify each chain and index the result.

        Args:
            revisions: revisions of any scopes, in any order; exact duplicates are merged.
            revoked: hashes revoked by the operator, in addition to those revisions revoke.
            tiers: trust tier names, used by ``explain`` and error messages.

        Returns:
            The store.

        Raises:
            LineageError: two different revisions share a scope and number (a fork), a chain is
                broken (see :func:`verify_chain`), or a ``revoked`` entry is not 32 bytes.
        """
        by_scope: dict[str, dict[int, PolicyRevision]] = {}
        for revision in revisions:
            slot = by_scope.setdefault(revision.scope, {})
            other = slot.get(revision.number)
            if other is not None and other.digest != revision.digest:
                raise LineageError(
                    f"scope {revision.scope!r} revision {revision.number}: two different "
                    f"revisions ({other.digest.hex()[:16]}..., {revision.digest.hex()[:16]}...)"
                )
            slot[revision.number] = revision
        chains: dict[str, tuple[PolicyRevision, ...]] = {}
        all_revoked: set[bytes] = set()
        for scope, numbered in sorted(by_scope.items()):
            chain = tuple(numbered[n] for n in sorted(numbered))
            verify_chain(chain)
            chains[scope] = chain
            all_revoked.update(h for r in chain for h in r.revokes)
        for digest in revoked:
            if not isinstance(digest, bytes) or len(digest) != HASH_BYTES:
                raise LineageError("revoked hashes are 32 bytes")
            all_revoked.add(digest)
        return cls(chains, frozenset(all_revoked), tiers)

    # -- building new stores -----------------------------------------------------------------

    def with_revisions(self, revisions: Iterable[PolicyRevision]) -> PolicyStore:
        """A new store with ``revisions`` added (new scopes, or later revisions of known ones).

        Raises:
            LineageError: as :meth:`build`.
        """
        return PolicyStore.build(
            [*self._by_hash.values(), *revisions], revoked=self._revoked, tiers=self._tiers
        )

    def with_revoked(self, digests: Iterable[bytes]) -> PolicyStore:
        """A new store in which the revisions (or unknown hashes) ``digests`` are also revoked.

        Raises:
            LineageError: a digest is not 32 bytes.
        """
        return PolicyStore.build(
            self._by_hash.values(), revoked=[*self._revoked, *digests], tiers=self._tiers
        )

    # -- queries -----------------------------------------------------------------------------

    @property
    def tiers(self) -> TierNames:
        return self._tiers

    @property
    def scopes(self) -> tuple[str, ...]:
        return tuple(self._chains)

    @property
    def revoked(self) -> frozenset[bytes]:
        return self._revoked

    def current(self, scope: str) -> PolicyRevision | None:
        """The latest revision of ``scope`` (even if revoked), or None for an unknown scope."""
        chain = self._chains.get(scope)
        return chain[-1] if chain else None

    def chain(self, scope: str) -> tuple[PolicyRevision, ...]:
        """Every known revision of ``scope``, oldest first (empty for an unknown scope)."""
        return self._chains.get(scope, ())

    def revision(self, digest: bytes) -> PolicyRevision | None:
        """The revision whose hash is ``digest``, if known."""
        return self._by_hash.get(digest)

    def is_revoked(self, digest: bytes) -> bool:
        return digest in self._revoked

    def lineage_fact(self, digest: bytes) -> LineageFact | None:
        return self._facts.get(digest)

    def compiled(self, scope: str) -> CompiledScope | None:
        """The destination index entry ``decide`` uses (internal, but read by ``explain``)."""
        return self._compiled.get(scope)


def lineage_problem(
    fact: LineageFact | None,
    origin_scope: str,
    window: LineageWindow | None,
    now: int,
) -> tuple[Reason, str] | None:
    """Why an envelope's lineage is not accepted, or None when it is.

    Args:
        fact: the store's record of the envelope's lineage hash (None: unknown hash).
        origin_scope: the envelope's origin scope; the lineage must be one of its revisions.
        window: the destination revision's lineage window for this origin (None: current only).
        now: unix seconds, for ``grace_seconds``.
    """
    if fact is None:
        return Reason.LINEAGE_UNKNOWN, "the lineage hash is not a known policy revision"
    if fact.scope != origin_scope:
        return (
            Reason.LINEAGE_UNKNOWN,
            f"the lineage hash is revision {fact.number} of scope {fact.scope!r}, "
            f"not of the origin scope {origin_scope!r}",
        )
    if fact.revoked:
        return Reason.LINEAGE_REVOKED, f"{origin_scope!r} revision {fact.number} is revoked"
    behind = fact.current_number - fact.number
    if behind == 0:
        return None
    outside = (
        Reason.LINEAGE_OUTSIDE_GRACE,
        f"{origin_scope!r} revision {fact.number} is {behind} behind current "
        f"revision {fact.current_number}",
    )
    if window is None or (window.grace_revisions is None and window.grace_seconds is None):
        return outside[0], outside[1] + " and no grace window applies to this origin"
    if window.grace_revisions is not None and behind > window.grace_revisions:
        return outside[0], outside[1] + f"; the window accepts {window.grace_revisions}"
    if window.grace_seconds is not None:
        superseded_at = fact.superseded_at if fact.superseded_at is not None else now
        age = now - superseded_at
        if age > window.grace_seconds:
            return (
                outside[0],
                outside[1] + f"; superseded {age}s ago, the window accepts {window.grace_seconds}s",
            )
    return None
