"""The sans-I/O framing connection: bytes in, events out; events in, bytes out.

A driver (the daemon, the shim, a test) owns the socket and runs a short loop::

    conn = Connection()
    await stream.send_all(conn.send(Hello(Role.GATEWAY, "spiffe://...")))
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))   # b"" at end of stream
            continue
        ...                                                       # act on the event

Resource handling: the receive buffer holds at most one frame header plus the body it announces,
and that body is bounded (by our HELLO's ``max_frame_size``, or by PRE_HELLO_FRAME_BODY before
it) and checked as soon as the header is complete, so a peer announcing or trickling a huge frame
is refused after eight bytes. The driver must drain ``next_event`` until NEED_DATA before it feeds
more data, or the buffer grows by what it feeds.

Error handling: incomplete input is never an error (NEED_DATA). Garbage from the peer raises
:class:`FramingError` (a ``RemoteProtocolError``) carrying a Reason and an ``error_hint``, the
GOAWAY to send before closing; every later ``next_event`` raises the same error. Misuse by our own
caller (an ENVELOPE before the HELLOs, a receipt nobody asked for, a full window) raises
``LocalProtocolError`` and leaves the state unchanged.
"""

from __future__ import annotations

from gateway.errors import LocalProtocolError
from gateway.framing import limits
from gateway.framing.codec import FRAME_TYPE_OF, decode_body, encode, parse_header
from gateway.framing.events import (
    NEED_DATA,
    ConnectionClosed,
    EnvelopeFrame,
    Event,
    FrameEvent,
    FramingError,
    Hello,
    NeedData,
    Ping,
    Pong,
    Receipt,
)
from gateway.framing.state import CLOSABLE, SideState, next_state
from gateway.reasons import Reason

# Compact the receive buffer once this many consumed bytes sit at its front; below that, slicing
# an index is cheaper than moving memory for every frame.
_COMPACT_AT = 64 * 1024


class Connection:
    """One framing connection, seen from our side. Symmetric: shims and gateways use the same
    class; each side sends its HELLO first."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._start = 0  # index in _buffer of the first unconsumed byte
        self._stream_offset = 0  # stream offset of _buffer[0]
        self._eof = False
        self._error: FramingError | None = None
        self._graceful = False
        self.our_state = SideState.AWAIT_HELLO
        self.their_state = SideState.AWAIT_HELLO
        self.our_hello: Hello | None = None
        self.their_hello: Hello | None = None
        self._sent_unanswered: set[int] = set()
        self._received_unanswered: set[int] = set()
        self._pings: set[int] = set()

    # -- introspection -------------------------------------------------------------------------

    @property
    def in_flight_sent(self) -> int:
        """Our envelopes the peer has not answered yet."""
        return len(self._sent_unanswered)

    @property
    def in_flight_received(self) -> int:
        """The peer's envelopes we have not answered yet."""
        return len(self._received_unanswered)

    @property
    def send_window(self) -> int:
        """How many more envelopes we may send now (0 before the peer HELLO or after GOAWAY)."""
        if (
            self.their_hello is None
            or self.their_state is not SideState.OPEN
            or self.our_state is not SideState.OPEN
        ):
            return 0
        return max(0, self.their_hello.max_in_flight - len(self._sent_unanswered))

    def unanswered_sent(self) -> frozenset[int]:
        """Correlation ids of our unanswered envelopes (to requeue them if the connection dies)."""
        return frozenset(self._sent_unanswered)

    @property
    def bytes_buffered(self) -> int:
        return len(self._buffer) - self._start

    # -- receiving -----------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the stream; ``b""`` means the stream ended.

        Raises:
            LocalProtocolError: data fed after the end of the stream.
        """
        if self._eof and data:
            raise LocalProtocolError("data received after the end of the stream")
        if not data:
            self._eof = True
            return
        if self._start >= _COMPACT_AT:
            del self._buffer[: self._start]
            self._stream_offset += self._start
            self._start = 0
        self._buffer += data

    def next_event(self) -> Event | NeedData:
        """The next event from the peer, or NEED_DATA when no whole frame is buffered.

        Raises:
            FramingError: the peer broke the protocol (also on every later call).
        """
        if self._error is not None:
            raise self._error
        if self.their_state is SideState.CLOSED:
            return ConnectionClosed(self._graceful)
        try:
            return self._next_event()
        except FramingError as exc:
            self._error = exc
            self.their_state = SideState.ERROR
            raise

    def _next_event(self) -> Event | NeedData:
        available = len(self._buffer) - self._start
        offset = self._stream_offset + self._start
        if available < limits.HEADER_BYTES:
            if not self._eof:
                return NEED_DATA
            if available:
                raise FramingError(
                    Reason.MALFORMED, "stream ended inside a frame header", offset=offset
                )
            return self._closed()
        max_body = (
            self.our_hello.max_frame_size
            if self.our_hello is not None
            else limits.PRE_HELLO_FRAME_BODY
        )
        frame_type, length = parse_header(self._buffer, offset, max_body, self._start)
        # Cheap checks first: a frame the peer may not send now is refused before its body is read.
        new_state = next_state(self.their_state, frame_type)
        if new_state is None:
            raise FramingError(
                Reason.MALFORMED,
                f"{frame_type.name} frame not allowed in state {self.their_state.value}",
                offset=offset,
            )
        if available < limits.HEADER_BYTES + length:
            if self._eof:
                raise FramingError(
                    Reason.MALFORMED, "stream ended inside a frame body", offset=offset
                )
            return NEED_DATA
        body_start = self._start + limits.HEADER_BYTES
        with memoryview(self._buffer) as view:  # one copy, and the view is released at once
            body = bytes(view[body_start : body_start + length])
        event = decode_body(frame_type, body, offset + limits.HEADER_BYTES)
        self._accept(event, offset)
        self._start = body_start + length
        self.their_state = new_state
        return event

    def _accept(self, event: FrameEvent, offset: int) -> None:
        """The rules that tie a received frame to the rest of the connection's state."""
        match event:
            case EnvelopeFrame(correlation_id=cid):
                if self.our_hello is None:
                    raise FramingError(
                        Reason.MALFORMED, "ENVELOPE before our HELLO was sent", offset=offset
                    )
                if cid in self._received_unanswered:
                    raise FramingError(
                        Reason.MALFORMED,
                        f"correlation id {cid} is already in flight",
                        offset=offset,
                    )
                if len(self._received_unanswered) >= self.our_hello.max_in_flight:
                    raise FramingError(
                        Reason.OVERLOADED,
                        f"more than {self.our_hello.max_in_flight} envelopes in flight",
                        offset=offset,
                    )
                self._received_unanswered.add(cid)
            case Receipt(correlation_id=cid):
                if cid not in self._sent_unanswered:
                    raise FramingError(
                        Reason.MALFORMED, f"receipt for unknown correlation id {cid}", offset=offset
                    )
                self._sent_unanswered.discard(cid)
            case Hello():
                self.their_hello = event
            case Pong(nonce=nonce):
                if nonce not in self._pings:
                    raise FramingError(
                        Reason.MALFORMED, f"PONG {nonce} answers no PING", offset=offset
                    )
                self._pings.discard(nonce)
            case _:
                pass

    def _closed(self) -> ConnectionClosed:
        self._graceful = (
            self.their_state is SideState.CLOSING
            and not self._sent_unanswered
            and not self._received_unanswered
        )
        if self.their_state in CLOSABLE:
            self.their_state = SideState.CLOSED
        return ConnectionClosed(self._graceful)

    # -- sending -------------------------------------------------------------------------------

    def send(self, event: Event) -> bytes:
        """The bytes to write for ``event``; ``ConnectionClosed`` gives ``b""`` and closes our side.

        Raises:
            LocalProtocolError: the event is not allowed now or a field is out of range; the
                connection's state is unchanged.
        """
        if isinstance(event, ConnectionClosed):
            self.our_state = SideState.CLOSED
            return b""
        frame_type = FRAME_TYPE_OF.get(type(event))
        if frame_type is None:
            raise LocalProtocolError(f"not a framing event: {event!r}")
        new_state = next_state(self.our_state, frame_type)
        if new_state is None:
            raise LocalProtocolError(
                f"cannot send {frame_type.name} in state {self.our_state.value}"
            )
        self._check_send(event)
        data = encode(event)
        limit = (
            self.their_hello.max_frame_size
            if self.their_hello is not None
            else limits.PRE_HELLO_FRAME_BODY
        )
        if len(data) - limits.HEADER_BYTES > limit:
            raise LocalProtocolError(
                f"frame body of {len(data) - limits.HEADER_BYTES} bytes exceeds the peer's {limit}"
            )
        match event:
            case EnvelopeFrame(correlation_id=cid):
                self._sent_unanswered.add(cid)
            case Receipt(correlation_id=cid):
                self._received_unanswered.discard(cid)
            case Hello():
                self.our_hello = event
            case Ping(nonce=nonce):
                self._pings.add(nonce)
            case _:
                pass
        self.our_state = new_state
        return data

    def _check_send(self, event: FrameEvent) -> None:
        match event:
            case EnvelopeFrame(correlation_id=cid):
                if self.their_hello is None:
                    raise LocalProtocolError("cannot send ENVELOPE before the peer's HELLO")
                if self.their_state is not SideState.OPEN:
                    raise LocalProtocolError(
                        f"cannot send ENVELOPE: peer is {self.their_state.value}"
                    )
                if cid in self._sent_unanswered:
                    raise LocalProtocolError(f"correlation id {cid} is already in flight")
                if len(self._sent_unanswered) >= self.their_hello.max_in_flight:
                    raise LocalProtocolError(
                        f"send window full ({self.their_hello.max_in_flight} in flight)"
                    )
            case Receipt(correlation_id=cid):
                if cid not in self._received_unanswered:
                    raise LocalProtocolError(f"no envelope {cid} awaits a receipt")
            case Ping(nonce=nonce):
                if nonce in self._pings:
                    raise LocalProtocolError(f"PING {nonce} is already outstanding")
                if len(self._pings) >= limits.MAX_OUTSTANDING_PINGS:
                    raise LocalProtocolError(
                        f"more than {limits.MAX_OUTSTANDING_PINGS} PINGs outstanding"
                    )
            case _:
                pass
