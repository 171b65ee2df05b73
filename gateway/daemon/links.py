"""Outbound links: one framed connection per next hop, kept up with backoff.

Theory of operation: :meth:`Link.run` is a supervisor task. It connects (through a *connector*
that yields a plain TCP or an mTLS stream whose peer SPIFFE ID was already checked), exchanges
HELLOs, then reads receipts and resolves the matching :meth:`Link.submit` calls until the
connection breaks; then it fails every unanswered submission with :class:`LinkUnavailable` (their
envelopes get spooled by the caller) and reconnects after a jittered exponential backoff.

Backpressure: ``submit`` holds one slot of the peer's advertised in-flight window from send to
receipt, so at most that many envelopes are unanswered; callers that cannot get a slot within
their timeout get :class:`LinkUnavailable` and spool, so a slow peer never grows memory.

Resource handling: the supervisor owns the connection and closes it in a ``finally``. Error
handling: transport errors, handshake failures, TLS identity mismatches and protocol errors from
the peer all mean "link down" and are retried; none escapes ``run``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from gateway.daemon.channel import FramedChannel, HandshakeError
from gateway.errors import LocalProtocolError, RemoteProtocolError
from gateway.framing import ConnectionClosed, EnvelopeFrame, GoAway, Hello, Ping, Pong, Receipt
from gateway.router import RouteTarget

log = logging.getLogger("sluice.link")

Connector = Callable[[RouteTarget], Awaitable[trio.abc.Stream]]

BACKOFF_MIN = 0.05
BACKOFF_MAX = 5.0
CONNECT_TIMEOUT = 5.0
HANDSHAKE_TIMEOUT = 5.0
KEEPALIVE_INTERVAL = 15.0


class LinkUnavailable(Exception):
    """The envelope could not be handed to the next hop; it was not (known to be) received."""


class _Group:
    """The envelopes of one :meth:`Link.submit_many` call: ``done`` is set once every one has its
    receipt, or the connection ended (those left without a receipt stay ``None``)."""

    __slots__ = ("done", "remaining")

    def __init__(self, size: int) -> None:
        self.remaining = size
        self.done = trio.Event()

    def answered(self) -> None:
        self.remaining -= 1
        if self.remaining <= 0:
            self.done.set()


@dataclass(slots=True)
class _Pending:
    group: _Group
    receipt: Receipt | None = None


@dataclass(slots=True)
class _Session:
    channel: FramedChannel
    window: trio.Semaphore
    pending: dict[int, _Pending] = field(default_factory=dict)
    next_id: int = 1
    broken: bool = False


class Link:
    """The connection to one route target."""

    def __init__(
        self,
        target: RouteTarget,
        connector: Connector,
        hello: Hello,
        *,
        on_state: Callable[[bool], None] | None = None,
    ) -> None:
        self.target = target
        self._connector = connector
        self._hello = hello
        self._on_state = on_state or (lambda up: None)
        self._session: _Session | None = None
        self._up = trio.Event()
        self.last_error = ""

    @property
    def up(self) -> bool:
        return self._session is not None and not self._session.broken

    async def wait_up(self) -> None:
        """Return once the link is connected (immediately if it is)."""
        while not self.up:
            await self._up.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the link connected until cancelled."""
        task_status.started()
        backoff = BACKOFF_MIN
        while True:
            try:
                await self._connect_and_serve()
                backoff = BACKOFF_MIN
            # except*: the reader runs in a nursery (with keepalive), so its transport errors
            # arrive wrapped in an ExceptionGroup.
            except* (
                OSError,
                trio.BrokenResourceError,
                trio.ClosedResourceError,
                trio.TooSlowError,
                HandshakeError,
                RemoteProtocolError,
                LocalProtocolError,
            ) as group:
                exc = group.exceptions[0]
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.info("link %s down: %s", self.target.key, self.last_error)
            await trio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _connect_and_serve(self) -> None:
        with trio.fail_after(CONNECT_TIMEOUT):
            stream = await self._connector(self.target)
        channel = FramedChannel(stream)
        try:
            theirs = await channel.handshake(self._hello, timeout=HANDSHAKE_TIMEOUT)
            session = _Session(channel, trio.Semaphore(theirs.max_in_flight))
            self._session = session
            self._up.set()
            self._on_state(True)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._keepalive, channel)
                    await self._read_receipts(session)
                    nursery.cancel_scope.cancel()
            finally:
                session.broken = True
                self._session = None
                self._up = trio.Event()
                self._on_state(False)
                for pending in session.pending.values():
                    pending.group.done.set()  # receipt stays None: the caller spools
        finally:
            await channel.aclose()

    async def _read_receipts(self, session: _Session) -> None:
        channel = session.channel
        while True:
            event = await channel.receive()
            match event:
                case Receipt(correlation_id=cid):
                    pending = session.pending.pop(cid, None)
                    if pending is not None:
                        pending.receipt = event
                        pending.group.answered()
                        session.window.release()
                case Ping(nonce=nonce):
                    await channel.send(Pong(nonce))
                case Pong():
                    pass
                case GoAway():
                    # The peer takes nothing new; reconnect (its replacement may be up).
                    return
                case ConnectionClosed():
                    return
                case _:
                    raise LocalProtocolError(
                        f"unexpected {type(event).__name__} on an outbound link"
                    )

    async def _keepalive(self, channel: FramedChannel) -> None:
        nonce = 0
        while True:
            await trio.sleep(KEEPALIVE_INTERVAL)
            nonce += 1
            try:
                await channel.send(Ping(nonce))
            except LocalProtocolError:
                # Too many pings unanswered: the peer is alive at TCP level but not answering.
                raise trio.BrokenResourceError("keepalive unanswered") from None

    async def submit(self, envelope: bytes, *, timeout: float) -> Receipt:
        """Send one envelope and wait for its receipt (:meth:`submit_many` of one).

        Raises:
            LinkUnavailable: not connected, no window slot, or no receipt within ``timeout``, or
                the connection broke first. The next hop may or may not have it; the caller
                spools it and the final receiver deduplicates by envelope id.
        """
        submitted = await self.submit_many([envelope], timeout=timeout)
        receipt = submitted.receipts[0]
        if receipt is None:
            raise LinkUnavailable(submitted.problem)
        return receipt

    async def submit_many(self, envelopes: list[bytes], *, timeout: float) -> Submitted:
        """Send envelopes (in this order, coalesced into as few writes as the window allows)
        and wait, up to ``timeout`` in all, for their receipts.

        A window slot is held per envelope from sending until its receipt arrives (the reader
        releases it), as the peer counts it in flight until it answers. Slots are taken without
        waiting while they are free; when the window is full, the envelopes already holding slots
        are sent before waiting for another, so concurrent callers never hold unsent slots
        against each other. A submission that times out leaves its slots to the late receipts or
        to the end of the connection.

        Returns:
            A receipt per envelope, in order; ``None`` where none came (not connected, no slot in
            time, write failed, timed out, or the connection broke): the next hop may or may not
            have those, so the caller spools them and the final receiver deduplicates by id.
        """
        if not envelopes:
            return Submitted([])
        pendings: list[_Pending] = []
        problem = f"no receipt from {self.target.key} within {timeout}s"
        with trio.move_on_after(timeout):
            await self.wait_up()
            session = self._session
            if session is None:
                return Submitted([None] * len(envelopes), "link went down")
            group = _Group(len(envelopes))
            frames: list[EnvelopeFrame] = []
            try:
                for envelope in envelopes:
                    try:
                        session.window.acquire_nowait()
                    except trio.WouldBlock:
                        await self._send(session, frames)
                        frames = []
                        await session.window.acquire()
                    if session.broken:
                        raise LinkUnavailable("link went down")
                    cid = session.next_id
                    session.next_id += 1
                    pending = _Pending(group)
                    session.pending[cid] = pending
                    pendings.append(pending)
                    frames.append(EnvelopeFrame(cid, envelope))
                await self._send(session, frames)
            except LinkUnavailable as exc:
                return Submitted(self._answers(pendings, len(envelopes)), str(exc))
            await group.done.wait()
            problem = "connection closed before the receipt"
        return Submitted(self._answers(pendings, len(envelopes)), problem)

    @staticmethod
    def _answers(pendings: list[_Pending], count: int) -> list[Receipt | None]:
        receipts: list[Receipt | None] = [p.receipt for p in pendings]
        receipts.extend([None] * (count - len(receipts)))
        return receipts

    @staticmethod
    async def _send(session: _Session, frames: list[EnvelopeFrame]) -> None:
        """Write ``frames`` (each holding a window slot and a pending entry). A frame the
        protocol refuses (too large for the peer, say) is answered at once with no receipt and
        gives its slot back; a failed write fails them all."""
        if not frames:
            return
        try:
            problems = await session.channel.send_many(frames)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError) as exc:
            for frame in frames:
                session.pending.pop(frame.correlation_id, None)
            raise LinkUnavailable(str(exc) or type(exc).__name__) from exc
        for frame, problem in zip(frames, problems, strict=True):
            if problem is not None:
                log.debug("envelope not sent: %s", problem)
                pending = session.pending.pop(frame.correlation_id)
                session.window.release()
                pending.group.answered()


@dataclass(frozen=True, slots=True)
class Submitted:
    """What :meth:`Link.submit_many` got: a receipt per envelope (``None``: none came), and
    why the first missing one is missing."""

    receipts: list[Receipt | None]
    problem: str = ""
