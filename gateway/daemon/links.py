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


@dataclass(slots=True)
class _Pending:
    done: trio.Event = field(default_factory=trio.Event)
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
                    pending.done.set()  # receipt stays None: the caller spools
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
                        pending.done.set()
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
        """Send one envelope and wait for its receipt.

        A window slot is held from sending until the receipt arrives (the reader releases it), as
        the peer counts the envelope as in flight until it answers; a submission that times out
        leaves its slot to the late receipt or to the end of the connection.

        Raises:
            LinkUnavailable: not connected, no window slot, or no receipt within ``timeout``, or
                the connection broke first. The next hop may or may not have it; the caller
                spools it and the final receiver deduplicates by envelope id.
        """
        with trio.move_on_after(timeout):
            await self.wait_up()
            session = self._session
            if session is None:
                raise LinkUnavailable("link went down")
            await session.window.acquire()
            if session.broken:
                raise LinkUnavailable("link went down")
            cid = session.next_id
            session.next_id += 1
            pending = _Pending()
            session.pending[cid] = pending
            try:
                await session.channel.send(EnvelopeFrame(cid, envelope))
            except (
                trio.BrokenResourceError,
                trio.ClosedResourceError,
                trio.TooSlowError,
                LocalProtocolError,
            ) as exc:
                session.pending.pop(cid, None)
                raise LinkUnavailable(str(exc) or type(exc).__name__) from exc
            await pending.done.wait()
            if pending.receipt is None:
                raise LinkUnavailable("connection closed before the receipt")
            return pending.receipt
        raise LinkUnavailable(f"no receipt from {self.target.key} within {timeout}s")
