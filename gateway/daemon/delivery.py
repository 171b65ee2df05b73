"""Delivery to the next hop: at-least-once, through the link or the spool.

Theory of operation: an envelope the gateway decided to forward is answered upstream only when
(a) the next hop acknowledged it, or (b) it is durably in the spool. If the link is down, has no
window slot, or the receipt does not come in time, the envelope is spooled (fsync) and a drainer
task per route target re-sends spooled envelopes once the link is back, in FIFO order, removing
each one when the next hop answers. A receipt is final either way: ACK means delivered, NACK
means the next hop refused it for good (``replayed`` means it already had it).

The final receiver deduplicates by envelope id, so the duplicates that at-least-once delivery can
produce (a receipt lost in a crash, a late receipt after a timeout) never reach an application
twice.

Resource handling: one :class:`Link` and one drainer per target, both owned by the nursery passed
to :meth:`Delivery.start`. Spool calls run in worker threads (they fsync).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from gateway.daemon.links import Connector, Link, LinkUnavailable
from gateway.envelope.wire import decode_unverified
from gateway.errors import RemoteProtocolError
from gateway.framing import Hello, ReceiptStatus
from gateway.metrics import GatewayMetrics
from gateway.reasons import Reason
from gateway.router import HOLD, Router, RouteTarget
from gateway.spool import Spool, SpoolEntry, SpoolFull

log = logging.getLogger("sluice.delivery")

DRAIN_BATCH = 64
DRAIN_PARALLEL = 16
DRAIN_POLL = 1.0
# NACK reasons that mean "not now" rather than "never": a spooled envelope stays and is retried.
TRANSIENT = frozenset({Reason.OVERLOADED, Reason.UNAVAILABLE})


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a delivery ended: ``ack`` (delivered or safely spooled) or a NACK reason."""

    ack: bool
    reason: Reason | None = None
    spooled: bool = False
    detail: str = ""


_DELIVERED = Outcome(ack=True)
_SPOOLED = Outcome(ack=True, spooled=True)
_SPOOL_FULL = Outcome(ack=False, reason=Reason.OVERLOADED, detail="spool full")

SpoolDrop = Callable[[bytes, str, Reason, str], Awaitable[None]]


class Delivery:
    """Links, spool and drainers for every route target."""

    def __init__(
        self,
        spool: Spool,
        connector: Connector,
        hello: Hello,
        metrics: GatewayMetrics,
        *,
        receipt_timeout: float,
        clock: Callable[[], float],
        on_drop: SpoolDrop,
        router: Callable[[], Router] | None = None,
    ) -> None:
        self.spool = spool
        self._router = router  # the current routes, for re-routing held or stale envelopes
        self._connector = connector
        self._hello = hello
        self._metrics = metrics
        self._receipt_timeout = receipt_timeout
        self._clock = clock
        self._on_drop = on_drop
        self.links: dict[str, Link] = {}
        self._wakeups: dict[str, trio.Event] = {}
        self._nursery: trio.Nursery | None = None

    def start(self, nursery: trio.Nursery, targets: tuple[RouteTarget, ...]) -> None:
        """Start links and drainers for ``targets`` (and later ones through :meth:`ensure`)."""
        self._nursery = nursery
        for target in targets:
            self.ensure(target)
        if self._router is not None:
            nursery.start_soon(self._reroute)
        self._metrics.spool_depth.set(len(self.spool))

    def ensure(self, target: RouteTarget) -> Link:
        """The link for ``target``, started on first use."""
        link = self.links.get(target.key)
        if link is None:
            if self._nursery is None:
                raise RuntimeError("Delivery.start was not called")
            gauge = self._metrics.peer_up.labels(target=target.key)

            def on_state(up: bool, _wake: str = target.key) -> None:
                gauge.set(1 if up else 0)
                if up:
                    self._wake(_wake)

            link = Link(target, self._connector, self._hello, on_state=on_state)
            self.links[target.key] = link
            if target.kind == HOLD:  # never connected: `deliver` spools, `_reroute` sends on
                return link
            self._wakeups[target.key] = trio.Event()
            self._nursery.start_soon(link.run)
            self._nursery.start_soon(self._drain, link)
        return link

    def _current_route(self, data: bytes) -> RouteTarget | None:
        if self._router is None:
            return None
        try:
            return self._router().route(decode_unverified(data).claims)
        except RemoteProtocolError:
            return None

    def _batch(self, key: str) -> list[SpoolEntry]:
        return list(itertools.islice(self.spool.pending(key), DRAIN_BATCH))

    async def _reroute(self) -> None:
        """Send spooled envelopes whose destination is no longer routed on to their current
        route: envelopes held for a migrating workload (:data:`HOLD`), and envelopes spooled for
        an address the workload has left. Each leaves the spool only when the new next hop
        answered (:meth:`_resend`); one that is still held stays."""
        while True:
            await trio.sleep(DRAIN_POLL)
            assert self._router is not None
            live = {t.key for t in self._router().targets() if t.kind != HOLD}
            stale = [
                key
                for key in await trio.to_thread.run_sync(self.spool.destinations)
                if key not in live and not (key in self.links and self.links[key].up)
            ]
            limiter = trio.CapacityLimiter(DRAIN_PARALLEL)
            retry_later: list[bytes] = []
            for key in stale:
                entries = await trio.to_thread.run_sync(self._batch, key)
                async with trio.open_nursery() as nursery:
                    for entry in entries:
                        target = self._current_route(entry.data)
                        if target is None or target.kind == HOLD or target.key == key:
                            continue
                        link = self.ensure(target)
                        if link.up:
                            nursery.start_soon(
                                self._resend,
                                link,
                                entry.envelope_id,
                                entry.data,
                                limiter,
                                retry_later,
                            )
            self._metrics.spool_depth.set(len(self.spool))

    def _wake(self, key: str) -> None:
        event = self._wakeups.get(key)
        if event is not None:
            event.set()

    async def deliver_many(
        self, target: RouteTarget, envelopes: list[tuple[bytes, bytes]]
    ) -> list[Outcome]:
        """Hand ``(envelope_id, data)`` pairs to ``target`` together (one write, one wait for
        their receipts), spooling those the link could not deliver (one fsync); an outcome per
        envelope, in order. See the module docstring."""
        link = self.ensure(target)
        outcomes: list[Outcome | None] = [None] * len(envelopes)
        if link.up and not self._has_backlog(target.key):
            submitted = await link.submit_many(
                [data for _, data in envelopes], timeout=self._receipt_timeout
            )
            delivered = self._metrics.delivered.labels(target=target.key)
            for i, receipt in enumerate(submitted.receipts):
                if receipt is None:
                    continue
                if receipt.status is ReceiptStatus.ACK:
                    delivered.inc()
                    outcomes[i] = _DELIVERED
                else:
                    outcomes[i] = Outcome(
                        ack=False, reason=receipt.reason or Reason.INTERNAL, detail=receipt.detail
                    )
            if any(o is None for o in outcomes):
                log.debug("spooling for %s: %s", target.key, submitted.problem)
        unsent = [i for i, outcome in enumerate(outcomes) if outcome is None]
        if unsent:
            spooled = await self._spool(target, [envelopes[i] for i in unsent])
            for i, outcome in zip(unsent, spooled, strict=True):
                outcomes[i] = outcome
        return [o for o in outcomes if o is not None]

    async def _spool(
        self, target: RouteTarget, envelopes: list[tuple[bytes, bytes]]
    ) -> list[Outcome]:
        """Store envelopes durably for the drainer: one fsync for all when they fit together,
        else one by one (as many as fit)."""

        def put() -> list[Outcome]:
            items = [(envelope_id, target.key, data) for envelope_id, data in envelopes]
            try:
                self.spool.put_many(items)
                return [_SPOOLED] * len(items)
            except SpoolFull:
                pass
            outcomes = []
            for item in items:
                try:
                    self.spool.put(*item)
                    outcomes.append(_SPOOLED)
                except SpoolFull as exc:
                    log.warning("spool full: %s", exc)
                    outcomes.append(_SPOOL_FULL)
            return outcomes

        outcomes = await trio.to_thread.run_sync(put)
        stored = sum(1 for o in outcomes if o.spooled)
        if stored:
            self._metrics.spooled.labels(target=target.key).inc(stored)
            self._metrics.spool_depth.set(len(self.spool))
            self._wake(target.key)
        return outcomes

    def _has_backlog(self, key: str) -> bool:
        # While older envelopes for this target wait in the spool, new ones queue behind them, so a
        # returning destination receives each sender's envelopes in order.
        return self.spool.waiting_for(key) > 0

    async def _drain(self, link: Link) -> None:
        key = link.target.key
        while True:
            with trio.move_on_after(DRAIN_POLL):
                await self._wakeups[key].wait()
            self._wakeups[key] = trio.Event()
            if not link.up:
                continue
            entries = await trio.to_thread.run_sync(
                lambda: list(itertools.islice(self.spool.pending(key), DRAIN_BATCH))
            )
            if not entries:
                continue
            limiter = trio.CapacityLimiter(DRAIN_PARALLEL)
            retry_later: list[bytes] = []
            async with trio.open_nursery() as nursery:
                for entry in entries:
                    nursery.start_soon(
                        self._resend, link, entry.envelope_id, entry.data, limiter, retry_later
                    )
            self._metrics.spool_depth.set(len(self.spool))
            if not retry_later:
                self._wake(key)  # more may be waiting; otherwise retry at the next poll

    async def _resend(
        self,
        link: Link,
        envelope_id: bytes,
        data: bytes,
        limiter: trio.CapacityLimiter,
        retry_later: list[bytes],
    ) -> None:
        async with limiter:
            if _expired(data, int(self._clock())):
                await self._on_drop(data, link.target.key, Reason.EXPIRED, "expired in the spool")
                await trio.to_thread.run_sync(self.spool.ack, envelope_id)
                return
            try:
                receipt = await link.submit(data, timeout=self._receipt_timeout)
            except LinkUnavailable:
                await trio.to_thread.run_sync(self.spool.bump, envelope_id)
                retry_later.append(envelope_id)
                return
            if receipt.status is ReceiptStatus.ACK or receipt.reason is Reason.REPLAYED:
                self._metrics.delivered.labels(target=link.target.key).inc()
            elif receipt.reason in TRANSIENT:
                # The next hop is busy, not refusing: keep it and try again later.
                await trio.to_thread.run_sync(self.spool.bump, envelope_id)
                retry_later.append(envelope_id)
                return
            else:
                await self._on_drop(
                    data, link.target.key, receipt.reason or Reason.INTERNAL, receipt.detail
                )
            await trio.to_thread.run_sync(self.spool.ack, envelope_id)


def _expired(data: bytes, now: int) -> bool:
    try:
        return decode_unverified(data).claims.expires_at < now
    except RemoteProtocolError:
        return True  # the spool only holds envelopes we verified; unreadable means damaged
