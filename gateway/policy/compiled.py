"""Rules pre-digested for the hot path: sets and prefix tuples of plain strings.

``decide`` runs for every envelope, so the store compiles each destination scope's current
revision once, when the store is built. Every pattern becomes string work on the issuer's text
form: exact names go in a frozenset, subtree patterns become prefixes (``payments/*`` ->
``payments/``; ``spiffe://td/ns/a/*`` -> ``spiffe://td/ns/a/``). Trust domain names cannot contain
``/``, so a prefix ending in ``/`` never matches across a trust domain boundary.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from config.policy import IdPattern, LineageMode, LineageWindow, Rule
from gateway.policy.model import PolicyRevision
from identity.anchor_contract import scope_matches


@dataclass(frozen=True, slots=True)
class NameSet:
    """A set of exact names plus prefixes; ``everything`` for the ``*`` scope pattern."""

    exact: frozenset[str]
    prefixes: tuple[str, ...]
    everything: bool = False

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return self.everything or name in self.exact or name.startswith(self.prefixes)

    @property
    def empty(self) -> bool:
        return not (self.exact or self.prefixes or self.everything)


def scope_set(patterns: Iterable[str]) -> NameSet:
    patterns = tuple(patterns)
    return NameSet(
        exact=frozenset(p for p in patterns if p != "*" and not p.endswith("/*")),
        prefixes=tuple(p[:-1] for p in patterns if p.endswith("/*")),
        everything="*" in patterns,
    )


def id_set(patterns: Iterable[IdPattern]) -> NameSet:
    patterns = tuple(patterns)
    return NameSet(
        exact=frozenset(str(p.spiffe_id) for p in patterns if not p.subtree),
        prefixes=tuple(f"{p.spiffe_id}/" for p in patterns if p.subtree),
    )


@dataclass(frozen=True, slots=True)
class CompiledRule:
    rule: Rule
    scopes: NameSet | None  # None: the field is not set, so it does not constrain
    ids: NameSet | None
    domains: frozenset[str] | None
    min_tier: int
    transit_ids: NameSet | None  # None when neither transit list is set
    transit_domains: frozenset[str]
    max_hops: int  # -1 when the rule sets no hop limit
    lineage_checked: bool


def compile_rule(rule: Rule) -> CompiledRule:
    has_transit = bool(rule.transit_gateways or rule.transit_domains)
    return CompiledRule(
        rule=rule,
        scopes=scope_set(rule.from_scopes) if rule.from_scopes else None,
        ids=id_set(rule.from_ids) if rule.from_ids else None,
        domains=frozenset(d.name for d in rule.from_domains) if rule.from_domains else None,
        min_tier=rule.min_tier,
        transit_ids=id_set(rule.transit_gateways) if has_transit else None,
        transit_domains=frozenset(d.name for d in rule.transit_domains),
        max_hops=-1 if rule.max_hops is None else rule.max_hops,
        lineage_checked=rule.lineage is LineageMode.MANAGED,
    )


@dataclass(frozen=True, slots=True)
class CompiledScope:
    """A destination scope's current revision, ready for ``decide``."""

    revision: PolicyRevision
    revoked: bool  # the current revision itself was revoked: the scope has no usable policy
    rules: tuple[CompiledRule, ...]
    workloads: NameSet
    # The revision's lineage windows with their origin patterns compiled; they are few, so they
    # are matched in order (first match wins) rather than cached per origin scope.
    windows: tuple[tuple[NameSet, LineageWindow], ...]

    def window_for(self, origin_scope: str) -> LineageWindow | None:
        for origins, window in self.windows:
            if origin_scope in origins:
                return window
        return None


def compile_scope(revision: PolicyRevision, revoked: bool) -> CompiledScope:
    return CompiledScope(
        revision=revision,
        revoked=revoked,
        rules=tuple(compile_rule(rule) for rule in revision.rules),
        workloads=id_set(revision.workloads),
        windows=tuple((scope_set(w.origins), w) for w in revision.lineage),
    )


def window_for(revision: PolicyRevision, origin_scope: str) -> LineageWindow | None:
    """The first lineage window of ``revision`` whose origins match ``origin_scope`` (slow path,
    straight from the model; ``explain`` and tests use it to cross-check the compiled form)."""
    for window in revision.lineage:
        if any(scope_matches(p, origin_scope) for p in window.origins):
            return window
    return None
