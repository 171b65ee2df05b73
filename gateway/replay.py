"""A sans-I/O replay window keyed by envelope id.

Theory of operation: an accepted envelope's id is remembered until its ``expires_at`` plus
CLOCK_SKEW; after that the envelope itself is refused as expired, so forgetting the id is safe.
Capacity is bounded. When the window is full of live ids it refuses new ones (OVERLOADED) rather
than evicting: evicting a live id would let that envelope be replayed. Checking and recording are
separate so a caller can check before verifying and record only after deciding to accept;
``record`` checks again, so two racing copies of one envelope cannot both be recorded.
"""

from __future__ import annotations

import heapq

from gateway.envelope import limits
from gateway.errors import RemoteProtocolError
from gateway.reasons import Reason


class ReplayWindow:
    """Envelope ids seen recently. Not thread-safe; one per event loop (or behind a lock)."""

    def __init__(
        self, *, capacity: int = limits.REPLAY_CAPACITY, skew: int = limits.CLOCK_SKEW
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self._capacity = capacity
        self._skew = skew
        self._retain_until: dict[bytes, int] = {}
        self._expiry_heap: list[tuple[int, bytes]] = []

    def __len__(self) -> int:
        return len(self._retain_until)

    def __contains__(self, envelope_id: object) -> bool:
        return envelope_id in self._retain_until

    def check(self, envelope_id: bytes, now: int) -> None:
        """Refuse an id already recorded and still retained at ``now``.

        Raises:
            RemoteProtocolError: REPLAYED.
        """
        until = self._retain_until.get(envelope_id)
        if until is not None and now <= until:
            raise RemoteProtocolError(Reason.REPLAYED, "envelope id already seen")

    def record(self, envelope_id: bytes, expires_at: int, now: int) -> None:
        """Remember ``envelope_id`` until ``expires_at`` + skew.

        Raises:
            RemoteProtocolError: REPLAYED if it is already retained; OVERLOADED if the window is
                full of live ids even after expiring old ones.
        """
        self.check(envelope_id, now)
        if envelope_id not in self._retain_until and len(self._retain_until) >= self._capacity:
            self.expire(now)
            if len(self._retain_until) >= self._capacity:
                raise RemoteProtocolError(Reason.OVERLOADED, "replay window is full")
        until = expires_at + self._skew
        self._retain_until[envelope_id] = until
        heapq.heappush(self._expiry_heap, (until, envelope_id))

    def forget(self, envelope_id: bytes) -> None:
        """Drop an id recorded for an envelope that was then not accepted after all (its hand-off
        failed and the sender was told so), so the sender's retry is not refused as a replay. The
        stale heap entry is skipped by :meth:`expire`."""
        self._retain_until.pop(envelope_id, None)

    def expire(self, now: int) -> int:
        """Forget ids whose retention ended before ``now``; return how many were forgotten."""
        forgotten = 0
        heap = self._expiry_heap
        while heap and heap[0][0] < now:
            until, envelope_id = heapq.heappop(heap)
            # A stale heap entry (the id was re-recorded later) must not drop the newer record.
            if self._retain_until.get(envelope_id) == until:
                del self._retain_until[envelope_id]
                forgotten += 1
        return forgotten
