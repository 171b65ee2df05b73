"""Where an allowed envelope goes next: a pure lookup from its destination to a route target.

Theory of operation: routes come from the config (``[[routes]]``) and, during a migration, from
per-workload overrides written by the migration journal (a workload that moved to Cilium is
reached on the Cilium side from then on). Lookup order, most specific first:

1. an override for the destination SPIFFE ID (migration state);
2. a route for the destination SPIFFE ID (``workload = ...``);
3. a route whose scope pattern is the exact destination scope;
4. the longest subtree pattern (``payments/*``) that contains it;
5. ``*``.

Ties cannot happen for 1-3 (the config rejects duplicates); for 4 the longer prefix wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from gateway.envelope.model import Claims
from identity.spiffe_id import SpiffeID

# A route target kind the delivery layer never connects to: envelopes for it wait in the spool
# until the route changes (a migrating node's workloads in cutover: gateway.migration.placement).
HOLD = "hold"


@dataclass(frozen=True, slots=True)
class RouteTarget:
    """One next hop.

    ``kind`` is ``network`` (a workload's receiver on a network side, reached at ``address``),
    ``peer`` (a federated gateway, reached over mutual TLS and checked against ``peer_id``) or
    ``hold`` (:data:`HOLD`: spooled until the route changes; ``name`` is the network it will be
    delivered on).
    """

    name: str  # the network or peer name; also the stamp's ``to_network``
    kind: str
    host: str
    port: int
    peer_id: SpiffeID | None = None

    @property
    def key(self) -> str:
        """What links, spool entries and metrics are keyed by: one link per distinct address."""
        return f"{self.kind}:{self.name}@{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class RouteEntry:
    """A route as configured: exactly one of ``scope`` (pattern) and ``workload``."""

    target: RouteTarget
    scope: str | None = None
    workload: SpiffeID | None = None


@dataclass(frozen=True, slots=True)
class Router:
    """An immutable routing table; build a new one on reload or migration progress."""

    by_workload: Mapping[SpiffeID, RouteTarget] = field(default_factory=dict)
    by_scope: Mapping[str, RouteTarget] = field(default_factory=dict)
    by_subtree: tuple[tuple[str, RouteTarget], ...] = ()  # (prefix ending in "/", target)
    default: RouteTarget | None = None
    overrides: Mapping[SpiffeID, RouteTarget] = field(default_factory=dict)

    @classmethod
    def build(cls, entries: Iterable[RouteEntry]) -> Router:
        by_workload: dict[SpiffeID, RouteTarget] = {}
        by_scope: dict[str, RouteTarget] = {}
        subtrees: list[tuple[str, RouteTarget]] = []
        default: RouteTarget | None = None
        for entry in entries:
            if entry.workload is not None:
                by_workload.setdefault(entry.workload, entry.target)
            elif entry.scope == "*":
                default = default or entry.target
            elif entry.scope is not None and entry.scope.endswith("/*"):
                subtrees.append((entry.scope[:-1], entry.target))
            elif entry.scope is not None:
                by_scope.setdefault(entry.scope, entry.target)
        # Longest prefix first, so the first match is the most specific.
        subtrees.sort(key=lambda item: len(item[0]), reverse=True)
        return cls(by_workload, by_scope, tuple(subtrees), default)

    def with_overrides(self, overrides: Mapping[SpiffeID, RouteTarget]) -> Router:
        """The same table with per-workload overrides (migration state) taking precedence."""
        return Router(
            self.by_workload, self.by_scope, self.by_subtree, self.default, dict(overrides)
        )

    def route(self, claims: Claims) -> RouteTarget | None:
        """The next hop for an envelope with these claims, or None when nothing matches."""
        destination_id = claims.destination_id
        if destination_id is not None:
            target = self.overrides.get(destination_id) or self.by_workload.get(destination_id)
            if target is not None:
                return target
        scope = claims.destination_scope
        target = self.by_scope.get(scope)
        if target is not None:
            return target
        for prefix, subtree_target in self.by_subtree:
            if scope.startswith(prefix):
                return subtree_target
        return self.default

    def targets(self) -> tuple[RouteTarget, ...]:
        """Every distinct target, for starting links and spool drainers."""
        seen: dict[str, RouteTarget] = {}
        for target in (
            *self.by_workload.values(),
            *self.by_scope.values(),
            *(t for _, t in self.by_subtree),
            *((self.default,) if self.default else ()),
            *self.overrides.values(),
        ):
            seen.setdefault(target.key, target)
        return tuple(seen.values())
