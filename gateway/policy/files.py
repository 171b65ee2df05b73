"""From policy files (``config.policy``) to hash-chained revisions and a store.

A file lists a scope's revisions by number; here each one is given the hash of the one before it
as ``previous`` (or the hash the file states, for a first listed revision above number 1), and its
``revokes = [numbers]`` become the hashes of those revisions.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from config.errors import ConfigError, ConfigProblem
from config.policy import DEFAULT_TIERS, PolicyFile, TierNames, load_policy_file
from gateway.policy.model import ZERO_HASH, InvalidPolicy, PolicyRevision
from gateway.policy.store import PolicyStore


def revisions_from_file(policy: PolicyFile) -> tuple[PolicyRevision, ...]:
    """Chain the revisions of one validated policy file.

    Returns:
        The revisions, oldest first, each with ``previous`` set to its predecessor's hash.

    Raises:
        ConfigError: a revision breaks a model rule the schema could not see (file and revision
            named).
    """
    out: list[PolicyRevision] = []
    by_number: dict[int, bytes] = {}
    for index, spec in enumerate(policy.revisions):
        previous = out[-1].digest if out else (spec.previous or ZERO_HASH)
        try:
            revision = PolicyRevision(
                scope=policy.scope,
                number=spec.number,
                previous=previous,
                issued_at=spec.issued_at,
                rules=spec.rules,
                lineage=spec.lineage,
                workloads=spec.workloads,
                revokes=tuple(by_number[n] for n in spec.revokes),
            )
        except (InvalidPolicy, KeyError) as exc:
            raise ConfigError([ConfigProblem(policy.path, f"revision[{index}]", str(exc))]) from exc
        by_number[spec.number] = revision.digest
        out.append(revision)
    return tuple(out)


def load_policy_store(
    paths: Iterable[Path | str],
    *,
    tiers: TierNames = DEFAULT_TIERS,
    extra: Iterable[PolicyRevision] = (),
    revoked: Iterable[bytes] = (),
) -> PolicyStore:
    """Load policy files (one scope each) into a store.

    Args:
        paths: the policy files.
        tiers: trust tier names the files may use.
        extra: revisions from elsewhere (imported signed documents of peer scopes).
        revoked: hashes the operator revokes.

    Raises:
        ConfigError: a file is invalid, or two files define the same scope.
        LineageError: the combined revisions do not chain (see ``PolicyStore.build``).
    """
    revisions: list[PolicyRevision] = []
    owners: dict[str, Path] = {}
    for path in paths:
        policy = load_policy_file(path, tiers=tiers)
        if policy.scope in owners:
            raise ConfigError(
                [
                    ConfigProblem(
                        policy.path,
                        "scope",
                        f"scope {policy.scope!r} is already defined in {owners[policy.scope]}",
                    )
                ]
            )
        owners[policy.scope] = policy.path
        revisions.extend(revisions_from_file(policy))
    revisions.extend(extra)
    return PolicyStore.build(revisions, revoked=revoked, tiers=tiers)
