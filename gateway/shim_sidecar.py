"""The sidecar: an unmodified TCP application talks through sluice (docs/shim.md).

Sending side (:func:`serve_stream_sender`): every local TCP connection is a stream; its bytes are
read in chunks of at most 64 KiB, each chunk is sealed into a governed envelope
(:mod:`gateway.shim_stream` record as payload) and sent through the gateway with
:class:`~gateway.shim.Sender` (retries included). At most ``window`` envelopes of a stream are
unacknowledged at a time, so a slow far side slows the local reader (backpressure); a final NACK
aborts the stream: the local connection is closed at once. After the client's EOF a ``fin`` chunk
is sent, and the local connection is closed once everything was acknowledged.

Receiving side (:class:`StreamSink`, a :class:`~gateway.shim.Sink` for
:func:`~gateway.shim.serve_receiver`): envelopes arrive verified; the sink deduplicates (recent
envelope ids, then the stream's seq), reorders within a bounded window, opens one TCP connection
to the application per stream (when chunk 0 arrives, before acknowledging it, so an unreachable
application refuses the stream), and a writer task per stream writes the bytes in order and closes
the connection after ``fin``.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from gateway.envelope import Sealer
from gateway.envelope.model import VerifiedEnvelope
from gateway.errors import LocalProtocolError, RemoteProtocolError
from gateway.reasons import Reason
from gateway.shim import Sender, SendResult, SinkRefusal
from gateway.shim_stream import (
    MAX_CHUNK_BYTES,
    STREAM_ID_BYTES,
    Chunk,
    Offer,
    Reassembly,
    RecentIds,
    decode_chunk,
    encode_chunk,
)

log = logging.getLogger("sluice.shim")

CONNECT_TIMEOUT = 5.0
APP_WRITE_TIMEOUT = 30.0  # an application that reads nothing for this long loses its stream
STREAM_IDLE_TIMEOUT = 300.0  # a stream with no new chunk for this long is closed
CLOSE_LINGER = 5.0  # after fin: how long the application may take to close its side


# -- sending side ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamReport:
    """How one local connection ended (for logs and tests)."""

    stream_id: bytes
    chunks: int
    bytes: int
    ok: bool
    reason: Reason | None = None
    detail: str = ""


SendFn = Callable[[bytes], Awaitable[SendResult]]


async def serve_stream_sender(
    host: str,
    port: int,
    *,
    sender: Sender,
    sealer: Sealer,
    lifetime: int = 300,
    window: int = 4,
    deadline: float = 30.0,
    clock: Callable[[], float] = time.time,
    on_stream: Callable[[StreamReport], None] | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept local TCP connections on ``host:port`` and carry each as a stream until cancelled.

    Args:
        sender: a running :class:`Sender` to the gateway.
        sealer: seals each chunk record (the workload's fixed claims and anchor key).
        lifetime: envelope lifetime in seconds.
        window: unacknowledged envelopes allowed per stream.
        deadline: per envelope, seconds of retrying before the stream is aborted.
        on_stream: called with each stream's report when it ends.
        task_status: ``started()`` gets the bound port.
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound: int = listeners[0].socket.getsockname()[1]

    async def send(envelope: bytes) -> SendResult:
        return await sender.send(envelope, deadline=deadline)

    async def handler(stream: trio.SocketStream) -> None:
        report = await carry_stream(
            stream, send, sealer, lifetime=lifetime, window=window, clock=clock
        )
        level = logging.DEBUG if report.ok else logging.INFO
        log.log(level, "stream %s ended: %s", report.stream_id.hex(), report)
        if on_stream is not None:
            on_stream(report)

    task_status.started(bound)
    await trio.serve_listeners(handler, listeners)


async def carry_stream(
    local: trio.abc.Stream,
    send: SendFn,
    sealer: Sealer,
    *,
    lifetime: int,
    window: int,
    clock: Callable[[], float],
) -> StreamReport:
    """Read ``local`` to its end, chunk by chunk, sending each chunk as an envelope; close it.

    Returns:
        The stream's report: ``ok`` when every chunk, ``fin`` included, was acknowledged.
    """
    stream_id = secrets.token_bytes(STREAM_ID_BYTES)
    slots = trio.Semaphore(window)
    failure: list[SendResult] = []
    seq = 0
    total = 0

    async def send_one(chunk: Chunk, cancel: trio.CancelScope) -> None:
        try:
            now = int(clock())
            envelope = sealer.seal(encode_chunk(chunk), issued_at=now, expires_at=now + lifetime)
            result = await send(envelope)
        finally:
            slots.release()
        if not result.delivered and not failure:
            failure.append(result)
            cancel.cancel()  # a final NACK (or the deadline) aborts the whole stream

    try:
        async with trio.open_nursery() as nursery:
            while True:
                await slots.acquire()
                try:
                    data = await local.receive_some(MAX_CHUNK_BYTES)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""  # the client reset: end the stream here
                chunk = Chunk(stream_id, seq, bytes(data), fin=not data)
                nursery.start_soon(send_one, chunk, nursery.cancel_scope)
                seq += 1
                total += len(data)
                if chunk.fin:
                    break
    finally:
        await trio.aclose_forcefully(local)
    if failure:
        result = failure[0]
        return StreamReport(stream_id, seq, total, False, result.reason, result.detail)
    return StreamReport(stream_id, seq, total, True)


# -- receiving side -------------------------------------------------------------------------------

Connector = Callable[[], Awaitable[trio.abc.Stream]]


@dataclass(eq=False, slots=True)
class _Stream:
    reassembly: Reassembly
    lock: trio.Lock = field(default_factory=trio.Lock)
    wake: trio.Event = field(default_factory=trio.Event)
    app: trio.abc.Stream | None = None
    failed: str = ""  # why the application side is gone, once it is


class StreamSink:
    """A :class:`~gateway.shim.Sink` that turns chunk envelopes back into TCP connections.

    Start :meth:`run` in a nursery before the receiver; it owns the per-stream writer tasks.
    """

    def __init__(
        self,
        connect: Connector,
        *,
        window: int = 32,
        max_streams: int = 128,
        remembered_envelopes: int = 65536,
        remembered_streams: int = 4096,
    ) -> None:
        """Args:
        connect: opens a new connection to the application.
        window: chunks buffered per stream (``window`` * 64 KiB of memory at most).
        max_streams: streams open at once; more are refused as OVERLOADED (retried).
        remembered_envelopes, remembered_streams: bounds of the dedup memories.
        """
        self._connect = connect
        self._window = window
        self._max_streams = max_streams
        self._streams: dict[bytes, _Stream] = {}
        self._seen = RecentIds(remembered_envelopes)
        self._finished = RecentIds(remembered_streams)
        self._failed = RecentIds(remembered_streams)
        self._nursery: trio.Nursery | None = None
        self.completed = 0  # streams whose fin was written

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Host the writer tasks until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    async def accept(self, envelope: VerifiedEnvelope) -> bool:
        """See the module docstring; raises :class:`SinkRefusal` to NACK."""
        envelope_id = envelope.claims.envelope_id
        if envelope_id in self._seen:
            return False
        if envelope.claims.sealed:
            raise SinkRefusal(Reason.MALFORMED, "the shim carries unsealed chunk records only")
        try:
            chunk = decode_chunk(envelope.payload)
        except RemoteProtocolError as exc:
            raise SinkRefusal(exc.reason, exc.detail) from None
        stream_id = chunk.stream_id
        if stream_id in self._finished:
            return False  # every chunk of a finished stream was delivered already
        if stream_id in self._failed:
            raise SinkRefusal(Reason.NO_ROUTE, "the application side of this stream is gone")
        state = self._streams.get(stream_id)
        if state is None:
            if len(self._streams) >= self._max_streams:
                raise SinkRefusal(Reason.OVERLOADED, "too many open streams")
            if self._nursery is None:
                raise LocalProtocolError("StreamSink.run is not running")
            state = _Stream(Reassembly(self._window))
            self._streams[stream_id] = state
            self._nursery.start_soon(self._serve_stream, stream_id, state)
        async with state.lock:
            if state.failed:
                raise SinkRefusal(Reason.NO_ROUTE, f"application side gone: {state.failed}")
            if chunk.seq == 0 and state.app is None:
                await self._open_app(stream_id, state)
            offer = state.reassembly.offer(chunk)
            if offer is Offer.DUPLICATE:
                return False
            if offer is Offer.OUT_OF_WINDOW:
                raise SinkRefusal(Reason.OVERLOADED, "chunk beyond the reorder window")
            if offer is Offer.INVALID:
                raise SinkRefusal(Reason.MALFORMED, f"chunk {chunk.seq} contradicts the stream")
            self._seen.add(envelope_id)
            state.wake.set()
        return True

    async def _open_app(self, stream_id: bytes, state: _Stream) -> None:
        """Connect to the application for a stream's first chunk; refuse the chunk if we can't."""
        try:
            with trio.fail_after(CONNECT_TIMEOUT):
                state.app = await self._connect()
        except (OSError, trio.TooSlowError) as exc:
            self._fail(stream_id, state, f"cannot connect to the application: {exc}")
            raise SinkRefusal(Reason.NO_ROUTE, state.failed) from None

    async def _serve_stream(self, stream_id: bytes, state: _Stream) -> None:
        """One stream's lifetime: wait for chunks, write them in order, close after fin."""
        try:
            while not state.reassembly.finished and not state.failed:
                # take() yields chunk 0 first, which is only accepted once state.app is open.
                chunk = state.reassembly.take()
                if chunk is None:
                    with trio.move_on_after(STREAM_IDLE_TIMEOUT) as idle:
                        await state.wake.wait()
                    state.wake = trio.Event()
                    if idle.cancelled_caught:
                        self._fail(stream_id, state, "no chunk for too long")
                    continue
                if chunk.data:
                    assert state.app is not None
                    with trio.fail_after(APP_WRITE_TIMEOUT):
                        await state.app.send_all(chunk.data)
            if not state.failed:
                self.completed += 1
                self._finished.add(stream_id)
                if state.app is not None:
                    await _half_close(state.app)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError) as exc:
            self._fail(stream_id, state, f"application connection: {type(exc).__name__}")
        finally:
            if self._streams.get(stream_id) is state:
                del self._streams[stream_id]
            if state.app is not None:
                await trio.aclose_forcefully(state.app)

    def _fail(self, stream_id: bytes, state: _Stream, why: str) -> None:
        state.failed = why
        state.wake.set()
        self._failed.add(stream_id)
        log.info("stream %s failed: %s", stream_id.hex(), why)


async def _half_close(app: trio.abc.Stream) -> None:
    """End our direction and let the application finish reading before the socket is closed
    (closing with unread data would send a RST, which can discard bytes the application has not
    read yet). Whatever the application sends back is discarded: one direction per shim pair."""
    if not isinstance(app, trio.abc.HalfCloseableStream):
        return
    with trio.move_on_after(CLOSE_LINGER):
        await app.send_eof()
        while await app.receive_some(MAX_CHUNK_BYTES):
            pass
