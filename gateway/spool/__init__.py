"""Durable store-and-forward for envelopes (:class:`Spool`) and the receiving side's dedup memory
(:class:`DeliveredSet`). Synchronous and blocking: the trio daemon calls them from a worker
thread (``trio.to_thread.run_sync``). Format and guarantees: docs/audit.md, "Spool"."""

from gateway.spool.delivered import DeliveredSet
from gateway.spool.errors import SpoolCorrupt, SpoolError, SpoolFull, SpoolLocked
from gateway.spool.records import TornTail
from gateway.spool.spool import RecoveryReport, Spool, SpoolEntry

__all__ = [
    "DeliveredSet",
    "RecoveryReport",
    "Spool",
    "SpoolCorrupt",
    "SpoolEntry",
    "SpoolError",
    "SpoolFull",
    "SpoolLocked",
    "TornTail",
]
