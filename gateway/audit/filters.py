"""Record selection for ``sluice audit show`` (and, later, replay and graphs): pure."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.audit.record import AuditEntry, Decision


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Criteria that must all hold; ``None`` means "any".

    ``scope`` matches the origin or the destination scope; ``peer`` the ``from`` or the ``to``
    side; ``since_ms`` is inclusive and ``until_ms`` exclusive (unix milliseconds).
    """

    scope: str | None = None
    peer: str | None = None
    decision: Decision | None = None
    envelope_id: bytes | None = None
    since_ms: int | None = None
    until_ms: int | None = None

    def matches(self, entry: AuditEntry) -> bool:
        r = entry.record
        return (
            (self.scope is None or self.scope in (r.origin_scope, r.destination_scope))
            and (self.peer is None or self.peer in (r.from_, r.to))
            and (self.decision is None or r.decision == self.decision)
            and (self.envelope_id is None or r.envelope_id == self.envelope_id)
            and (self.since_ms is None or entry.ts_ms >= self.since_ms)
            and (self.until_ms is None or entry.ts_ms < self.until_ms)
        )
