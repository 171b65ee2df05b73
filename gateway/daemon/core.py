"""The gateway at run time (DESIGN.md section 6): listeners, per-connection envelope handling,
audit, delivery, and the local HTTP port.

Theory of operation: each listener serves one network side. A connection is a framed channel; its
reader task runs :func:`gateway.pipeline.process` inline for every ENVELOPE frame (pure CPU, no
awaits) and hands the outcome to a task of its own, which writes the decision to the audit log,
delivers (link or spool) and answers upstream with a RECEIPT. So receipts can complete out of
order, the reader never waits on a downstream hop, and the number of those tasks is bounded by
the in-flight window our HELLO advertised (the framing layer refuses a peer that exceeds it).

Ordering of effects per envelope: decide -> audit record (committed) -> deliver (next hop ACK or
spool fsync) -> RECEIPT upstream. A receipt therefore implies both the audit record and the
at-least-once hand-off. Refused envelopes are audited, then NACKed.

Resource handling: every connection lives in the listener's handler nursery, is closed in a
``finally``, and its failures stay in its own task (one bad peer cannot stall or crash others).
Connections beyond ``max_connections`` per listener are closed at once. Shutdown: ``drain`` stops
the listeners, sends GOAWAY to every connection, and waits (bounded) for in-flight envelopes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import trio
from prometheus_client import Counter

from gateway.audit.graph import GraphBuilder
from gateway.audit.html import render_html
from gateway.audit.record import AuditRecord
from gateway.audit.record import Decision as AuditDecision
from gateway.audit.render import render_json
from gateway.daemon.audit_sink import AuditSink, AuditUnavailable
from gateway.daemon.channel import FramedChannel, HandshakeError
from gateway.daemon.delivery import Delivery
from gateway.daemon.http import Page, serve_http, text_page
from gateway.daemon.links import Connector
from gateway.envelope.recipe import digest
from gateway.envelope.wire import decode_unverified
from gateway.errors import LocalProtocolError, RemoteProtocolError
from gateway.framing import (
    ConnectionClosed,
    EnvelopeFrame,
    Event,
    FramingError,
    GoAway,
    Hello,
    Ping,
    Pong,
    Receipt,
    Role,
)
from gateway.metrics import GatewayMetrics
from gateway.pipeline import Arrival, Forward, GatewayState, Refuse, process
from gateway.reasons import Reason
from gateway.replay import ReplayWindow
from gateway.spool import Spool

log = logging.getLogger("sluice.gateway")

DRAIN_TIMEOUT = 10.0
LIVE_GRAPH_FLOWS = 20_000
TLS_HANDSHAKE_TIMEOUT = 10.0

# Authenticates a TLS peer after the handshake; returns the federation peer's configured name.
PeerAuthenticator = Callable[[trio.SSLStream[trio.SocketStream]], str]


@dataclass(frozen=True, slots=True)
class ListenerSpec:
    """One network side: where to listen, and (for federation) TLS and peer authentication."""

    network: str
    host: str
    port: int
    ssl_context: Callable[[], ssl.SSLContext] | None = None  # called per connection (rotation)
    authenticate: PeerAuthenticator | None = None


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    name: str  # our SPIFFE ID, sent in HELLO
    listeners: tuple[ListenerSpec, ...]
    http: tuple[str, int] | None = ("127.0.0.1", 0)
    handshake_timeout: float = 10.0
    idle_timeout: float = 300.0
    receipt_timeout: float = 5.0
    max_connections: int = 1024
    max_in_flight: int = 64
    max_frame_bytes: int = 1089608
    replay_capacity: int = 1_000_000
    keep_envelopes: bool = False  # [audit] keep_envelopes: raw bytes in each record, for replay


@dataclass(slots=True)
class _Live:
    """Connections and envelopes in progress, for readiness and draining."""

    channels: set[FramedChannel] = field(default_factory=set)
    in_flight: int = 0
    idle: trio.Event = field(default_factory=trio.Event)


class Gateway:
    """A running gateway. Build it, then ``await nursery.start(gateway.serve)``."""

    def __init__(
        self,
        settings: GatewaySettings,
        state: GatewayState,
        *,
        audit: AuditSink,
        spool: Spool,
        connector: Connector,
        metrics: GatewayMetrics | None = None,
        clock: Callable[[], float] = time.time,
        extra_pages: Mapping[str, Callable[[], Page | Awaitable[Page]]] | None = None,
    ) -> None:
        self.settings = settings
        self.state = state
        self.audit = audit
        self.metrics = metrics or GatewayMetrics()
        self.clock = clock
        self.replay = ReplayWindow(capacity=settings.replay_capacity)
        # Ids put back into the replay window from the audit log after a restart: decided
        # before the crash, but whether the next hop got them is unknown (see _decide).
        self.recovered: set[bytes] = set()
        self.ready = False
        self.draining = False
        self.bound: dict[str, int] = {}
        self._live = _Live()
        self._listener_scopes: list[trio.CancelScope] = []
        self._extra_pages = dict(extra_pages or {})
        self._decision_counters: dict[tuple[str, str, str], Counter] = {}
        # The live governance-flow view: fed from committed audit entries, bounded in memory.
        self.graph = GraphBuilder(max_samples=5, max_flows=LIVE_GRAPH_FLOWS)
        audit.observe(self.graph.add)
        hello = Hello(Role.GATEWAY, settings.name, settings.max_frame_bytes, settings.max_in_flight)
        self._hello = hello
        self.delivery = Delivery(
            spool,
            connector,
            hello,
            self.metrics,
            receipt_timeout=settings.receipt_timeout,
            clock=clock,
            on_drop=self._audit_drop,
            router=lambda: self.state.router,
        )

    # -- lifecycle -----------------------------------------------------------------------------

    async def serve(
        self, *, task_status: trio.TaskStatus[dict[str, int]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run until cancelled. ``task_status.started`` gets the bound ports by network name
        (and ``"http"``), so tests can bind port 0."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.audit.run)
            self.delivery.start(nursery, self.state.router.targets())
            for spec in self.settings.listeners:
                self.bound[spec.network] = await nursery.start(self._listen, spec)
            if self.settings.http is not None:
                host, port = self.settings.http
                self.bound["http"] = await nursery.start(serve_http, host, port, self._pages())
            self.ready = True
            log.info("gateway %s ready: %s", self.settings.name, self.bound)
            task_status.started(dict(self.bound))

    def update_state(self, state: GatewayState) -> None:
        """Swap in a new snapshot (reload, rotation); in-progress envelopes keep the old one."""
        self.state = state
        for target in state.router.targets():
            self.delivery.ensure(target)

    async def drain(self, timeout: float = DRAIN_TIMEOUT) -> None:
        """Stop accepting, tell every peer GOAWAY, wait for in-flight envelopes (bounded)."""
        self.draining = True
        self.ready = False
        for scope in self._listener_scopes:
            scope.cancel()
        for channel in list(self._live.channels):
            await channel.send_goaway(Reason.GOING_AWAY, "gateway shutting down")
        with trio.move_on_after(timeout):
            while self._live.in_flight:
                await self._live.idle.wait()

    # -- listeners -----------------------------------------------------------------------------

    async def _listen(
        self, spec: ListenerSpec, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(spec.port, host=spec.host)
        port = listeners[0].socket.getsockname()[1]
        open_count = self.metrics.connections.labels(network=spec.network)
        active = 0

        async def handler(stream: trio.SocketStream) -> None:
            nonlocal active
            if active >= self.settings.max_connections or self.draining:
                self.metrics.connections_refused.labels(network=spec.network).inc()
                await trio.aclose_forcefully(stream)
                return
            active += 1
            open_count.inc()
            try:
                await self._accept(stream, spec)
            finally:
                active -= 1
                open_count.dec()

        scope = trio.CancelScope()
        self._listener_scopes.append(scope)
        async with trio.open_nursery() as handlers:
            task_status.started(port)
            with scope:
                await trio.serve_listeners(handler, listeners, handler_nursery=handlers)
            # Listeners closed (drain); established connections finish in `handlers`.

    async def _accept(self, stream: trio.SocketStream, spec: ListenerSpec) -> None:
        transport: trio.abc.Stream = stream
        peer: str | None = None
        try:
            if spec.ssl_context is not None:
                tls = trio.SSLStream(stream, spec.ssl_context(), server_side=True)
                with trio.fail_after(TLS_HANDSHAKE_TIMEOUT):
                    await tls.do_handshake()
                if spec.authenticate is not None:
                    try:
                        peer = spec.authenticate(tls)
                    except ValueError as exc:
                        log.warning("refused TLS peer on %s: %s", spec.network, exc)
                        self.metrics.frames_rejected.labels(
                            reason=Reason.UNAUTHENTICATED.value, network=spec.network
                        ).inc()
                        await trio.aclose_forcefully(tls)
                        return
                transport = tls
            await self._serve_connection(FramedChannel(transport), Arrival(spec.network, peer))
        # except*: the connection's reader runs in a nursery, so transport errors come wrapped
        # in an ExceptionGroup; unwrapped they would cancel the listener and the whole gateway.
        except* (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, OSError):
            pass
        finally:
            await trio.aclose_forcefully(transport)

    # -- one connection ------------------------------------------------------------------------

    async def _serve_connection(self, channel: FramedChannel, arrival: Arrival) -> None:
        settings = self.settings
        try:
            await channel.handshake(self._hello, timeout=settings.handshake_timeout)
        except (HandshakeError, FramingError) as exc:
            self._reject(arrival, exc)
            await channel.send_goaway(getattr(exc, "reason", Reason.MALFORMED))
            return
        self._live.channels.add(channel)
        try:
            async with trio.open_nursery() as tasks:
                await self._read(channel, arrival, tasks)
        except* FramingError as group:  # raised inside the nursery: always wrapped
            framing_error = group.exceptions[0]
            assert isinstance(framing_error, FramingError)
            self._reject(arrival, framing_error)
            await channel.send_goaway(framing_error.error_hint.reason)
        except* LocalProtocolError as group:
            self._reject(arrival, group.exceptions[0])
            await channel.send_goaway(Reason.MALFORMED)
        finally:
            self._live.channels.discard(channel)

    async def _read(self, channel: FramedChannel, arrival: Arrival, tasks: trio.Nursery) -> None:
        """Read frames until the upstream ends, breaks the protocol or stays idle too long;
        envelopes are decided here and settled in ``tasks``."""
        while True:
            try:
                event: Event | None = None
                with trio.move_on_after(self.settings.idle_timeout) as idle:
                    event = await channel.receive()
                if isinstance(event, EnvelopeFrame):
                    event = self._take_envelopes(channel, event, arrival, tasks)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                # The upstream is gone. Envelopes already decided (their ids are in the replay
                # window) still finish their hand-off; only the receipt is lost, and the
                # sender's retry then truthfully hears "replayed".
                return
            except FramingError as exc:
                self._reject(arrival, exc)
                await channel.send_goaway(exc.error_hint.reason)
                return
            if idle.cancelled_caught:
                await channel.send_goaway(Reason.UNAVAILABLE, "idle timeout")
                return
            match event:
                case None | Pong() | GoAway():
                    pass  # after GOAWAY the peer sends nothing new; read on until it closes
                case Ping(nonce=nonce):
                    await channel.send(Pong(nonce))
                case ConnectionClosed():
                    return
                case _:
                    raise LocalProtocolError(f"unexpected {type(event).__name__}")

    def _take_envelopes(
        self,
        channel: FramedChannel,
        first: EnvelopeFrame,
        arrival: Arrival,
        tasks: trio.Nursery,
    ) -> Event | None:
        """Decide ``first`` and every envelope frame already buffered behind it (pure CPU, no
        awaits), then settle them together in one task: one audit commit, one write per next
        hop, one write of their receipts. Under load a read carries many frames, so the per-task
        and per-wakeup costs are paid per batch instead of per envelope.

        Returns:
            The first buffered event that is not an envelope, or ``None`` when a read is needed.

        Raises:
            FramingError: a buffered frame broke the protocol; the envelopes before it are still
                settled.
        """
        batch: list[_Item] = []
        event: Event | None = first
        try:
            while isinstance(event, EnvelopeFrame):
                self._begin()
                data = event.envelope
                batch.append(_Item(event.correlation_id, data, self._decide(data, arrival)))
                event = channel.receive_nowait()
        finally:
            if batch:
                tasks.start_soon(self._complete, channel, arrival, batch)
        return event

    def _reject(self, arrival: Arrival, exc: Exception) -> None:
        reason = exc.reason.value if isinstance(exc, RemoteProtocolError) else "handshake"
        self.metrics.frames_rejected.labels(reason=reason, network=arrival.network).inc()
        log.info("connection on %s cut: %s", arrival.hop_name, exc)

    def _decide(self, data: bytes, arrival: Arrival) -> Forward | Refuse:
        started = time.perf_counter()
        outcome = process(
            data, arrival=arrival, state=self.state, replay=self.replay, now=int(self.clock())
        )
        if (
            isinstance(outcome, Refuse)
            and outcome.reason is Reason.REPLAYED
            and outcome.claims is not None
            and outcome.claims.envelope_id in self.recovered
        ):
            # Allowed before a crash, but the sender never got a receipt and the hand-off may
            # not have happened: refusing the retry as "replayed" would tell the sender it was
            # delivered and lose it. Forward it once more (fully re-verified); the final
            # receiver deduplicates by envelope id.
            self.recovered.discard(outcome.claims.envelope_id)
            self.replay.forget(outcome.claims.envelope_id)
            outcome = process(
                data, arrival=arrival, state=self.state, replay=self.replay, now=int(self.clock())
            )
        self.metrics.processing_seconds.observe(time.perf_counter() - started)
        return outcome

    def _begin(self) -> None:
        self._live.in_flight += 1

    def _end(self) -> None:
        self._live.in_flight -= 1
        if not self._live.in_flight:
            self._live.idle.set()
            self._live.idle = trio.Event()

    async def _complete(self, channel: FramedChannel, arrival: Arrival, batch: list[_Item]) -> None:
        try:
            answers = await self._settle(arrival, batch)
        finally:
            for _ in batch:
                self._end()
        # If the upstream went away it retries later and gets `replayed` (already handled).
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await channel.send_many(
                [answer.for_id(item.cid) for item, answer in zip(batch, answers, strict=True)]
            )

    async def _settle(self, arrival: Arrival, batch: list[_Item]) -> list[_Answer]:
        """Audit every decision of ``batch`` (one commit), then deliver the forwarded ones (one
        hand-off per next hop, concurrently); the answer for each envelope, in order."""
        records = []
        for item in batch:
            outcome = item.outcome
            if isinstance(outcome, Refuse):
                self._count("deny", outcome.reason.value, arrival.network)
                records.append(self._refusal_record(item.data, arrival, outcome))
            else:
                self._count("allow", "allowed", arrival.network)
                records.append(self._forward_record(item.data, arrival, outcome))
        try:
            await self.audit.record_many(records)
        except AuditUnavailable:
            for item in batch:
                if isinstance(item.outcome, Forward):
                    self.replay.forget(item.outcome.envelope.claims.envelope_id)
            return [_AUDIT_DOWN] * len(batch)
        answers = [_ACK] * len(batch)
        by_target: dict[str, list[tuple[int, Forward]]] = {}
        for i, item in enumerate(batch):
            outcome = item.outcome
            if isinstance(outcome, Refuse):
                answers[i] = _Answer(
                    outcome.reason_for_sender, outcome.detail if outcome.verified else ""
                )
            else:
                by_target.setdefault(outcome.target.key, []).append((i, outcome))
        groups = list(by_target.values())
        if len(groups) == 1:
            await self._deliver(arrival, batch, groups[0], answers)
        elif groups:
            async with trio.open_nursery() as nursery:
                for group in groups:
                    nursery.start_soon(self._deliver, arrival, batch, group, answers)
        return answers

    async def _deliver(
        self,
        arrival: Arrival,
        batch: list[_Item],
        group: list[tuple[int, Forward]],
        answers: list[_Answer],
    ) -> None:
        """Deliver ``group``'s forwards (one next hop; each paired with its index in ``batch``)
        and fill their ``answers``; a failed delivery is audited as a denial, then answered."""
        outcomes = await self.delivery.deliver_many(
            group[0][1].target, [(fwd.envelope.claims.envelope_id, fwd.data) for _, fwd in group]
        )
        failed = [
            (i, fwd, delivered.reason or Reason.INTERNAL, delivered.detail)
            for (i, fwd), delivered in zip(group, outcomes, strict=True)
            if not delivered.ack
        ]
        if not failed:
            return
        records = [
            _as_denial(self._forward_record(batch[i].data, arrival, fwd), reason.value, "delivery")
            for i, fwd, reason, _ in failed
        ]
        try:
            await self.audit.record_many(records)
        except AuditUnavailable:
            for i, fwd, _, _ in failed:
                self.replay.forget(fwd.envelope.claims.envelope_id)
                answers[i] = _AUDIT_DOWN
            return
        for i, fwd, reason, detail in failed:
            if reason is Reason.OVERLOADED:
                self.replay.forget(fwd.envelope.claims.envelope_id)
            answers[i] = _Answer(reason, detail)

    def _count(self, decision: str, reason: str, network: str) -> None:
        # prometheus_client's labels() costs microseconds; the children are cached per label set
        # (bounded: decisions x reason codes x networks).
        key = (decision, reason, network)
        counter = self._decision_counters.get(key)
        if counter is None:
            counter = self.metrics.decisions.labels(
                decision=decision, reason=reason, network=network
            )
            self._decision_counters[key] = counter
        counter.inc()

    # -- audit records -------------------------------------------------------------------------

    def _forward_record(self, data: bytes, arrival: Arrival, fwd: Forward) -> AuditRecord:
        claims = fwd.envelope.claims
        return AuditRecord(
            gateway=str(self.state.gateway_id),
            envelope_id=claims.envelope_id,
            issuer=str(claims.issuer),
            origin_scope=claims.origin_scope,
            destination_scope=claims.destination_scope,
            tier=claims.tier,
            lineage=claims.lineage,
            from_=_hop("peer" if arrival.peer else "net", arrival.hop_name),
            to=_hop(fwd.target.kind if fwd.target.kind == "peer" else "net", fwd.target.name),
            decision=AuditDecision.ALLOW,
            reason=Reason.ALLOWED.value,
            rule=fwd.decision.rule,
            policy_revision=fwd.decision.revision,
            stamps=fwd.envelope.hops,
            envelope_digest=digest(data),
            envelope=data if self.settings.keep_envelopes else None,
        )

    def _refusal_record(self, data: bytes, arrival: Arrival, refuse: Refuse) -> AuditRecord:
        claims = refuse.claims
        decision = refuse.decision
        return AuditRecord(
            gateway=str(self.state.gateway_id),
            envelope_id=claims.envelope_id if claims else b"",
            issuer=str(claims.issuer) if claims else "",
            origin_scope=claims.origin_scope if claims else "",
            destination_scope=claims.destination_scope if claims else "",
            tier=claims.tier if claims else 0,
            lineage=claims.lineage if claims else b"",
            from_=_hop("peer" if arrival.peer else "net", arrival.hop_name),
            to="",
            decision=AuditDecision.DENY,
            reason=refuse.reason.value,
            rule=decision.rule if decision else "",
            policy_revision=decision.revision if decision else b"",
            stamps=_stamp_count(data),
            envelope_digest=digest(data),
            envelope=data if self.settings.keep_envelopes else None,
        )

    async def _audit_drop(self, data: bytes, target: str, reason: Reason, detail: str) -> None:
        """A spooled envelope that will never be delivered (expired, or refused downstream)."""
        log.warning("dropping spooled envelope for %s: %s %s", target, reason.value, detail)
        try:
            claims = decode_unverified(data).claims
        except RemoteProtocolError:
            return
        record = AuditRecord(
            gateway=str(self.state.gateway_id),
            envelope_id=claims.envelope_id,
            issuer=str(claims.issuer),
            origin_scope=claims.origin_scope,
            destination_scope=claims.destination_scope,
            tier=claims.tier,
            lineage=claims.lineage,
            from_="spool",
            to=target,
            decision=AuditDecision.DENY,
            reason=reason.value,
            rule="delivery",
            policy_revision=b"",
            stamps=_stamp_count(data),
            envelope_digest=digest(data),
            envelope=data if self.settings.keep_envelopes else None,
        )
        await self.audit.record(record)

    # -- HTTP ----------------------------------------------------------------------------------

    def _pages(self) -> dict[str, Callable[[], Page | Awaitable[Page]]]:
        def readyz() -> Page:
            if self.ready and not self.draining:
                return text_page(200, "ready\n")
            return text_page(503, "draining\n" if self.draining else "starting\n")

        pages: dict[str, Callable[[], Page | Awaitable[Page]]] = {
            "/metrics": lambda: Page(
                200, "text/plain; version=0.0.4; charset=utf-8", self.metrics.render()
            ),
            "/healthz": lambda: text_page(200, "ok\n"),
            "/readyz": readyz,
        }
        pages["/graph"] = lambda: Page(
            200, "text/html; charset=utf-8", render_html(self.graph.snapshot())
        )
        pages["/graph.json"] = lambda: Page(
            200, "application/json", render_json(self.graph.snapshot()).encode()
        )
        pages.update(self._extra_pages)
        return pages


@dataclass(frozen=True, slots=True)
class _Item:
    """One envelope of a batch: its correlation id upstream, its bytes and what was decided."""

    cid: int
    data: bytes
    outcome: Forward | Refuse


@dataclass(frozen=True, slots=True)
class _Answer:
    """The receipt to send once an envelope is settled: ACK when ``reason`` is None."""

    reason: Reason | None
    detail: str = ""

    def for_id(self, cid: int) -> Receipt:
        if self.reason is None:
            return Receipt.ack(cid)
        return Receipt.nack(cid, self.reason, self.detail[:200])


_ACK = _Answer(None)
_AUDIT_DOWN = _Answer(Reason.UNAVAILABLE, "audit log unavailable")


def _hop(kind: str, name: str) -> str:
    return f"{kind}:{name}"


def _stamp_count(data: bytes) -> int:
    try:
        return len(decode_unverified(data).stamps)
    except RemoteProtocolError:
        return 0


def _as_denial(record: AuditRecord, reason: str, rule: str) -> AuditRecord:
    return dataclasses.replace(record, decision=AuditDecision.DENY, reason=reason, rule=rule)
