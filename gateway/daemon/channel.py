"""A framing :class:`~gateway.framing.Connection` driven over a trio stream.

The sans-I/O connection decides what bytes mean; this class only moves them. One task reads
(``receive``); any number of tasks may send. Sends are coalesced: frames are queued in the order
their ``send`` calls encoded them, and whichever sender finds no write in progress becomes the
flusher and writes everything queued so far with one ``send_all``, again and again until the queue
is empty; the others wait until a flush that contains their frame completed. Under load that turns
one syscall per receipt into one per batch, and a ``send`` still returns only once its frame was
handed to the kernel (backpressure is unchanged).

Resource handling: the channel owns the stream; ``aclose`` closes it (forcefully when the peer
stalls). Error handling: the peer's garbage surfaces as :class:`FramingError` from ``receive``,
after which the caller sends ``error.error_hint`` (``send_goaway``) and closes; transport failures
surface as ``trio.BrokenResourceError`` / ``trio.ClosedResourceError``, kept distinct as in trio.
"""

from __future__ import annotations

from collections.abc import Sequence

import trio

from gateway.errors import LocalProtocolError
from gateway.framing import NEED_DATA, ConnectionClosed, Event, FramingError, GoAway, Hello
from gateway.framing import Connection as FramingConnection
from gateway.reasons import Reason

RECEIVE_CHUNK = 64 * 1024
SEND_TIMEOUT = 10.0  # a peer that stops reading for this long is cut off (backpressure bound)


class HandshakeError(Exception):
    """The peer did not open with a HELLO (or not in time)."""


class FramedChannel:
    """One framed connection over ``stream``."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.protocol = FramingConnection()
        self._queue: list[bytes] = []
        self._flushing = False
        self._flushes_started = 0
        self._flushes_done = 0
        self._flushed = trio.Event()
        self._broken: BaseException | None = None

    @property
    def their_hello(self) -> Hello | None:
        return self.protocol.their_hello

    async def send(self, event: Event) -> None:
        """Encode ``event`` and write it; raises LocalProtocolError on misuse (state unchanged).

        A peer that does not drain its socket for SEND_TIMEOUT gets BrokenResourceError, so one
        stalled reader cannot hold the senders forever; after any failed or cancelled write the
        stream is unusable and every later ``send`` raises BrokenResourceError.
        """
        if self._broken is not None:
            raise trio.BrokenResourceError("an earlier write failed") from self._broken
        data = self.protocol.send(event)
        if data:
            await self._write(data)

    async def send_many(self, events: Sequence[Event]) -> list[LocalProtocolError | None]:
        """Encode several events and write them together (one write unless other senders'
        frames join the same flush), as :meth:`send` does for one.

        Returns:
            Per event, ``None`` when it was written, or the :class:`LocalProtocolError` that kept
            it from being encoded (the connection's state is unchanged for that event; the others
            are still sent).

        Raises:
            trio.BrokenResourceError: as :meth:`send`; then none of them is known to be sent.
        """
        if self._broken is not None:
            raise trio.BrokenResourceError("an earlier write failed") from self._broken
        problems: list[LocalProtocolError | None] = []
        chunks: list[bytes] = []
        for event in events:
            try:
                chunks.append(self.protocol.send(event))
            except LocalProtocolError as exc:
                problems.append(exc)
            else:
                problems.append(None)
        data = b"".join(chunks)
        if data:
            await self._write(data)
        return problems

    async def _write(self, data: bytes) -> None:
        self._queue.append(data)
        # Our frame goes out with the flush that starts after any flush now in progress.
        wanted = self._flushes_started + 1
        while self._flushes_done < wanted:
            if self._broken is not None:
                raise trio.BrokenResourceError("the write carrying this frame failed") from (
                    self._broken
                )
            if not self._flushing:
                await self._flush()
            else:
                await self._flushed.wait()

    async def _flush(self) -> None:
        self._flushing = True
        try:
            while self._queue:
                chunk = b"".join(self._queue) if len(self._queue) > 1 else self._queue[0]
                self._queue.clear()
                self._flushes_started += 1
                with trio.fail_after(SEND_TIMEOUT):
                    await self.stream.send_all(chunk)
                self._flushes_done += 1
                self._wake()
        except BaseException as exc:
            # A partial or cancelled write leaves the byte stream in an unknown state.
            self._broken = exc
            raise
        finally:
            self._flushing = False
            self._wake()

    def _wake(self) -> None:
        self._flushed.set()
        self._flushed = trio.Event()

    def receive_nowait(self) -> Event | None:
        """The next event already buffered, or ``None`` when a read is needed first.

        Raises:
            FramingError: as :meth:`receive`.
        """
        event = self.protocol.next_event()
        return None if event is NEED_DATA else event

    async def receive(self) -> Event:
        """The next event from the peer; ``ConnectionClosed`` once the stream ended."""
        while True:
            event = self.protocol.next_event()
            if event is not NEED_DATA:
                return event
            data = await self.stream.receive_some(RECEIVE_CHUNK)
            self.protocol.receive_data(bytes(data))

    async def handshake(self, ours: Hello, *, timeout: float) -> Hello:
        """Send our HELLO and wait for theirs.

        Raises:
            HandshakeError: the first event was not a HELLO, or it did not come in ``timeout``.
            FramingError: the peer sent garbage.
        """
        with trio.move_on_after(timeout) as scope:
            await self.send(ours)
            event = await self.receive()
        if scope.cancelled_caught:
            raise HandshakeError("no HELLO within the handshake timeout")
        if not isinstance(event, Hello):
            raise HandshakeError(f"expected HELLO, got {type(event).__name__}")
        return event

    async def send_goaway(self, reason: Reason, detail: str = "") -> None:
        """Best effort: tell the peer why we are closing. Never raises."""
        try:
            with trio.move_on_after(1.0):
                await self.send(GoAway(reason, detail[:200]))
        except (trio.BrokenResourceError, trio.ClosedResourceError, LocalProtocolError):
            pass

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


def is_end(event: Event) -> bool:
    return isinstance(event, ConnectionClosed)


__all__ = ["FramedChannel", "FramingError", "HandshakeError", "is_end"]
