"""Properties of the framing connection: whatever bytes arrive, in whatever chunks, it yields only
events, NEED_DATA or a RemoteProtocolError; and valid conversations survive any chunking."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import RemoteProtocolError
from gateway.framing import (
    NEED_DATA,
    Connection,
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
    limits,
)
from gateway.reasons import Reason

EVENT_TYPES = (Hello, EnvelopeFrame, Receipt, Ping, Pong, GoAway, ConnectionClosed)


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


def _feed(
    conn: Connection, chunks: list[bytes], *, eof: bool
) -> tuple[list[Event], FramingError | None]:
    events: list[Event] = []
    for chunk in [*chunks, b""] if eof else chunks:
        conn.receive_data(chunk)
        while True:
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                assert isinstance(exc, FramingError)
                assert isinstance(exc.reason, Reason)
                assert isinstance(exc.error_hint, GoAway)
                return events, exc
            if event is NEED_DATA:
                break
            assert isinstance(event, EVENT_TYPES)
            events.append(event)
            if isinstance(event, ConnectionClosed):
                return events, None
    return events, None


# A valid preamble makes random bytes after it reach the body decoders, not just the header check.
PREAMBLE = Connection().send(Hello(Role.SHIM, "shim", limits.MIN_FRAME_BODY, 4))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.binary(max_size=600),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
    with_preamble=st.booleans(),
    eof=st.booleans(),
)
def test_any_bytes_give_events_need_data_or_remote_error(
    data: bytes, cuts: list[int], with_preamble: bool, eof: bool
) -> None:
    conn = Connection()
    conn.send(Hello(Role.GATEWAY, "gw", limits.MIN_FRAME_BODY, 4))
    stream = (PREAMBLE if with_preamble else b"") + data
    _feed(conn, _chunks(stream, cuts), eof=eof)
    assert conn.bytes_buffered <= limits.HEADER_BYTES + limits.MIN_FRAME_BODY + len(stream)


@st.composite
def _frame_bodies(draw: st.DrawFn) -> bytes:
    """Well-formed headers with random bodies, to reach every decoder branch often."""
    frame_type = draw(st.integers(min_value=1, max_value=6))
    body = draw(st.binary(max_size=40))
    return b"SL\x01" + bytes([frame_type]) + len(body).to_bytes(4, "big") + body


@settings(max_examples=400)
@given(frames=st.lists(_frame_bodies(), max_size=6), cuts=st.lists(st.integers(0, 500), max_size=6))
def test_random_frames_after_hello(frames: list[bytes], cuts: list[int]) -> None:
    conn = Connection()
    conn.send(Hello(Role.GATEWAY, "gw"))
    _feed(conn, _chunks(PREAMBLE + b"".join(frames), cuts), eof=False)


_events = st.one_of(
    st.builds(EnvelopeFrame, st.integers(0, 2**64 - 1), st.binary(min_size=1, max_size=300)),
    st.builds(Ping, st.integers(0, 2**64 - 1)),
)


@settings(max_examples=200)
@given(
    events=st.lists(
        _events,
        max_size=8,
        unique_by=lambda e: (type(e), getattr(e, "correlation_id", getattr(e, "nonce", 0))),
    ),
    cuts=st.lists(st.integers(0, 5000), max_size=10),
)
def test_valid_conversation_survives_any_chunking(events: list[Event], cuts: list[int]) -> None:
    sender, receiver = Connection(), Connection()
    wire = sender.send(Hello(Role.SHIM, "shim"))
    receiver.send(Hello(Role.GATEWAY, "gw", max_in_flight=64))
    sender.receive_data(Connection().send(Hello(Role.GATEWAY, "gw", max_in_flight=64)))
    assert isinstance(sender.next_event(), Hello)
    wire += b"".join(sender.send(e) for e in events)
    got, error = _feed(receiver, _chunks(wire, cuts), eof=True)
    assert error is None
    assert got == [Hello(Role.SHIM, "shim"), *events, ConnectionClosed(graceful=False)]
