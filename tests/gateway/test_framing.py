"""The framing protocol, without sockets: wire vectors fed whole and byte by byte, every frame type
round-tripped, bounds enforced at the header, non-canonical bodies refused, and the state machine's
rules for both the peer (RemoteProtocolError) and our own caller (LocalProtocolError)."""

from __future__ import annotations

import struct

import pytest

from gateway.errors import LocalProtocolError, RemoteProtocolError
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
    SideState,
    limits,
)
from gateway.reasons import Reason

# A shim's side of a conversation, byte for byte (the format in docs/framing.md):
# HELLO, ENVELOPE, PING, GOAWAY.
SHIM_STREAM = bytes.fromhex(
    "534c0101" "0000001f" "01" "00001000" "00000002" "0014" + b"spiffe://a.example/w".hex()
    + "534c0102" "0000000d" "0000000000000001" + b"\xd2\x84env".hex()
    + "534c0104" "00000008" "0102030405060708"
    + "534c0106" "00000010" "0a" + b"going_away".hex() + "0003" + b"bye".hex()
)  # fmt: skip
SHIM_EVENTS: list[Event] = [
    Hello(Role.SHIM, "spiffe://a.example/w", 4096, 2),
    EnvelopeFrame(1, b"\xd2\x84env"),
    Ping(0x0102030405060708),
    GoAway(Reason.GOING_AWAY, "bye"),
]
GATEWAY_HELLO = Hello(Role.GATEWAY, "spiffe://a.example/gw", 8192, 4)


def _header(frame_type: int, length: int, *, magic: bytes = b"SL", version: int = 1) -> bytes:
    return struct.pack(">2sBBI", magic, version, frame_type, length)


def _gateway_side() -> Connection:
    """A gateway that has sent its HELLO and waits for the shim's stream."""
    conn = Connection()
    conn.send(GATEWAY_HELLO)
    return conn


def _drain(conn: Connection) -> list[Event]:
    events: list[Event] = []
    while (event := conn.next_event()) is not NEED_DATA:
        assert not isinstance(event, type(NEED_DATA))
        events.append(event)
        if isinstance(event, ConnectionClosed):
            break
    return events


SHIM_HELLO = Hello(Role.SHIM, "shim")
GW_HELLO = Hello(Role.GATEWAY, "gw")


def _pair(a_hello: Hello = SHIM_HELLO, b_hello: Hello = GW_HELLO) -> tuple[Connection, Connection]:
    a, b = Connection(), Connection()
    b.receive_data(a.send(a_hello))
    a.receive_data(b.send(b_hello))
    assert a.next_event() == b_hello
    assert b.next_event() == a_hello
    return a, b


def _relay(sender: Connection, receiver: Connection, event: Event) -> Event:
    receiver.receive_data(sender.send(event))
    got = receiver.next_event()
    assert receiver.next_event() is NEED_DATA
    return got  # type: ignore[return-value]


# -- wire vectors -------------------------------------------------------------------------------


def test_encoding_matches_the_vector() -> None:
    shim = Connection()
    out = shim.send(SHIM_EVENTS[0])
    shim.receive_data(Connection().send(GATEWAY_HELLO))
    assert shim.next_event() == GATEWAY_HELLO
    out += b"".join(shim.send(e) for e in SHIM_EVENTS[1:])
    assert out == SHIM_STREAM


def test_vector_fed_whole() -> None:
    gw = _gateway_side()
    gw.receive_data(SHIM_STREAM)
    assert _drain(gw) == SHIM_EVENTS
    assert gw.their_state is SideState.CLOSING
    assert gw.in_flight_received == 1


def test_vector_fed_one_byte_at_a_time() -> None:
    gw = _gateway_side()
    events: list[Event] = []
    for i in range(len(SHIM_STREAM)):
        gw.receive_data(SHIM_STREAM[i : i + 1])
        events.extend(_drain(gw))
    assert events == SHIM_EVENTS


def test_every_strict_prefix_needs_data() -> None:
    boundaries = []
    gw = _gateway_side()
    for i in range(len(SHIM_STREAM)):
        gw.receive_data(SHIM_STREAM[i : i + 1])
        if _drain(gw):
            boundaries.append(i + 1)
    for cut in range(len(SHIM_STREAM)):
        conn = _gateway_side()
        if cut:  # b"" would mean the end of the stream
            conn.receive_data(SHIM_STREAM[:cut])
        whole_frames = sum(1 for b in boundaries if b <= cut)
        assert len(_drain(conn)) == whole_frames  # then NEED_DATA, never an error
        assert conn.next_event() is NEED_DATA


# -- round trips --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event",
    [
        EnvelopeFrame(0, b"x"),
        EnvelopeFrame(2**64 - 1, bytes(range(256)) * 10),
        Ping(0),
        Ping(2**64 - 1),
        GoAway(Reason.UNAVAILABLE),
        GoAway(Reason.GOING_AWAY, "draining for upgrade \u00e9"),
    ],
    ids=repr,
)
def test_round_trip(event: Event) -> None:
    a, b = _pair()
    assert _relay(a, b, event) == event


def test_round_trip_receipts_and_pong() -> None:
    a, b = _pair()
    _relay(a, b, EnvelopeFrame(1, b"e1"))
    _relay(a, b, EnvelopeFrame(2, b"e2"))
    assert (a.in_flight_sent, b.in_flight_received) == (2, 2)
    assert _relay(b, a, Receipt.ack(1)) == Receipt.ack(1)
    nack = Receipt.nack(2, Reason.TIER_TOO_LOW, "tier 1 < 2")
    assert _relay(b, a, nack) == nack
    assert (a.in_flight_sent, b.in_flight_received) == (0, 0)
    _relay(a, b, Ping(9))
    assert _relay(b, a, Pong(9)) == Pong(9)


def test_hello_round_trip_with_limits() -> None:
    hello = Hello(Role.GATEWAY, "spiffe://weave.example/gw", limits.MIN_FRAME_BODY, 65536)
    a, b = Connection(), Connection()
    b.receive_data(a.send(hello))
    assert b.next_event() == hello
    assert b.their_hello == hello


# -- bounds, checked at the header -------------------------------------------------------------


def test_oversize_rejected_from_the_header_alone() -> None:
    gw = _gateway_side()  # announced 8192
    gw.receive_data(SHIM_STREAM[:39])  # the HELLO
    assert isinstance(gw.next_event(), Hello)
    gw.receive_data(_header(2, 8193))  # no body follows: the header is enough
    with pytest.raises(FramingError) as info:
        gw.next_event()
    assert info.value.reason is Reason.TOO_LARGE
    assert info.value.offset == 39 + 4
    assert info.value.error_hint == GoAway(Reason.TOO_LARGE)
    assert gw.bytes_buffered == 8


def test_before_our_hello_only_small_frames() -> None:
    conn = Connection()
    conn.receive_data(_header(1, limits.PRE_HELLO_FRAME_BODY + 1))
    with pytest.raises(FramingError) as info:
        conn.next_event()
    assert info.value.reason is Reason.TOO_LARGE


def test_hard_cap_above_any_hello() -> None:
    with pytest.raises(LocalProtocolError):
        Connection().send(Hello(Role.GATEWAY, "gw", limits.MAX_FRAME_BODY_CAP + 1))
    conn = Connection()
    conn.send(Hello(Role.GATEWAY, "gw"))
    conn.receive_data(_header(2, 0xFFFFFFFF))
    with pytest.raises(FramingError) as info:
        conn.next_event()
    assert info.value.reason is Reason.TOO_LARGE


@pytest.mark.parametrize(
    ("header", "reason", "offset"),
    [
        (_header(1, 10, magic=b"GE"), Reason.MALFORMED, 0),
        (b"GET / HTTP/1.1\r\n", Reason.MALFORMED, 0),
        (_header(1, 10, version=2), Reason.UNSUPPORTED_VERSION, 2),
        (_header(7, 10), Reason.MALFORMED, 3),
        (_header(0, 10), Reason.MALFORMED, 3),
    ],
)
def test_bad_header(header: bytes, reason: Reason, offset: int) -> None:
    conn = Connection()
    conn.receive_data(header)
    with pytest.raises(FramingError) as info:
        conn.next_event()
    assert (info.value.reason, info.value.offset) == (reason, offset)


# -- canonical bodies only ----------------------------------------------------------------------


def _after_handshake(frame: bytes) -> FramingError:
    a, b = _pair()
    _relay(b, a, EnvelopeFrame(5, b"e"))  # so that a receipt for 5 is legitimate
    b.receive_data(frame)
    with pytest.raises(FramingError) as info:
        b.next_event()
    return info.value


def _body(frame_type: int, body: bytes) -> bytes:
    return _header(frame_type, len(body)) + body


def _receipt(status: int, rest: bytes, *, code_len: int | None = None) -> bytes:
    """A RECEIPT for correlation id 5: status, reason-code length, then ``rest`` verbatim."""
    code_len = len(rest.split(b"\x00")[0]) if code_len is None else code_len
    return _body(3, struct.pack(">QBB", 5, status, code_len) + rest)


NC, BAD = Reason.NON_CANONICAL, Reason.MALFORMED


@pytest.mark.parametrize(
    ("frame", "reason", "message"),
    [
        (_body(4, bytes(9)), NC, "1 trailing bytes in frame body"),
        (_body(4, bytes(7)), BAD, "body ends inside nonce"),
        (_receipt(0, b"\x00\x01", code_len=0), NC, "an ACK carries no detail"),
        (_receipt(0, b"x\x00\x00"), NC, "an ACK carries no reason code"),
        (_receipt(2, b"\x00\x00", code_len=0), BAD, "receipt status 2, expected 0 or 1"),
        (_receipt(1, b"\x00\x00", code_len=0), BAD, "a NACK needs a reason code"),
        (_receipt(1, b"allowed\x00\x00"), BAD, "unknown reason code b'allowed'"),
        (_receipt(1, b"nope\x00\x00"), BAD, "unknown reason code b'nope'"),
        (_receipt(1, b"expired\x00\x01\xff"), BAD, "detail is not UTF-8"),
        (_receipt(1, b"expired\x00\x01\n"), BAD, "detail contains a control character"),
        (
            _receipt(1, b"expired\x01\x01" + b"a" * 257, code_len=7),
            BAD,
            "detail length 257 exceeds 256",
        ),
        (_body(6, b"\x00\x00\x00"), BAD, "a GOAWAY needs a reason code"),
        (_body(6, b"\x07expired\x00\x00\x00"), NC, "1 trailing bytes in frame body"),
        (_body(2, bytes(8)), BAD, "envelope frame carries no envelope"),
        (_body(2, bytes(5)), BAD, "body ends inside correlation id"),
    ],
)
def test_refused_bodies(frame: bytes, reason: Reason, message: str) -> None:
    error = _after_handshake(frame)
    assert (error.reason, error.detail) == (reason, message)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (struct.pack(">BIIH", 3, 4096, 1, 2) + b"gw", "unknown role 3"),
        (struct.pack(">BIIH", 1, 4095, 1, 2) + b"gw", "max_frame_size must be an integer"),
        (struct.pack(">BIIH", 1, 4096, 0, 2) + b"gw", "max_in_flight must be an integer"),
        (struct.pack(">BIIH", 1, 4096, 1, 0), "name is empty"),
        (struct.pack(">BIIH", 1, 4096, 1, 2) + b"\xc0\xaf", "name is not UTF-8"),  # overlong '/'
        (struct.pack(">BIIH", 1, 4096, 1, 3) + b"a\x1bb", "name contains a control character"),
        (struct.pack(">BIIH", 1, 4096, 1, 2049) + b"a" * 2049, "name length 2049 exceeds 2048"),
        (struct.pack(">BIIH", 1, 4096, 1, 3) + b"gw", "body ends inside name"),
    ],
)
def test_refused_hellos(body: bytes, message: str) -> None:
    conn = Connection()
    conn.receive_data(_body(1, body))
    with pytest.raises(FramingError) as info:
        conn.next_event()
    assert info.value.reason is Reason.MALFORMED
    assert info.value.detail.startswith(message)


# -- the peer breaking the state machine ---------------------------------------------------------


def _remote_error(conn: Connection, frame: bytes) -> FramingError:
    conn.receive_data(frame)
    with pytest.raises(FramingError) as info:
        conn.next_event()
    assert conn.their_state is SideState.ERROR
    return info.value


def test_envelope_before_hello_is_refused_without_reading_its_body() -> None:
    conn = _gateway_side()
    error = _remote_error(conn, _header(2, 100))  # body not even sent
    assert error.detail == "ENVELOPE frame not allowed in state AWAIT_HELLO"


def test_envelope_before_our_hello() -> None:
    shim = Connection()
    gw = Connection()
    gw.receive_data(shim.send(Hello(Role.SHIM, "shim")))
    assert isinstance(gw.next_event(), Hello)
    error = _remote_error(gw, _body(2, bytes(8) + b"e"))
    assert error.detail == "ENVELOPE before our HELLO was sent"


def test_second_hello() -> None:
    _a, b = _pair()
    error = _remote_error(b, _body(1, struct.pack(">BIIH", 1, 4096, 1, 2) + b"gw"))
    assert error.detail == "HELLO frame not allowed in state OPEN"


def test_receipt_for_unknown_correlation_id() -> None:
    a, _b = _pair()
    error = _remote_error(a, _body(3, struct.pack(">QBB", 99, 0, 0) + b"\x00\x00"))
    assert error.detail == "receipt for unknown correlation id 99"


def test_unsolicited_pong() -> None:
    a, _b = _pair()
    assert _remote_error(a, _body(5, bytes(8))).detail == "PONG 0 answers no PING"


def test_duplicate_correlation_id_in_flight() -> None:
    _a, b = _pair()
    frame = _body(2, struct.pack(">Q", 3) + b"e")
    b.receive_data(frame)
    assert b.next_event() == EnvelopeFrame(3, b"e")
    assert _remote_error(b, frame).detail == "correlation id 3 is already in flight"


def test_in_flight_window_exceeded_is_overloaded() -> None:
    _a, b = _pair(b_hello=Hello(Role.GATEWAY, "gw", max_in_flight=2))
    for cid in (1, 2):
        b.receive_data(_body(2, struct.pack(">Q", cid) + b"e"))
        assert isinstance(b.next_event(), EnvelopeFrame)
    b.send(Receipt.ack(1))  # answering one frees one slot
    b.receive_data(_body(2, struct.pack(">Q", 3) + b"e"))
    assert b.next_event() == EnvelopeFrame(3, b"e")
    error = _remote_error(b, _body(2, struct.pack(">Q", 4) + b"e"))
    assert error.reason is Reason.OVERLOADED
    assert error.error_hint == GoAway(Reason.OVERLOADED)


def test_envelope_after_their_goaway() -> None:
    a, b = _pair()
    _relay(a, b, GoAway(Reason.GOING_AWAY))
    assert (
        _remote_error(b, _body(2, bytes(8) + b"e")).detail
        == "ENVELOPE frame not allowed in state CLOSING"
    )


def test_errors_are_sticky_and_the_hint_can_be_sent() -> None:
    conn = _gateway_side()
    conn.receive_data(b"garbage!")
    with pytest.raises(RemoteProtocolError) as first:
        conn.next_event()
    with pytest.raises(RemoteProtocolError) as second:
        conn.next_event()
    assert first.value is second.value
    hint = first.value.error_hint  # type: ignore[attr-defined]
    data = conn.send(hint)
    peer = Connection()
    peer.send(Hello(Role.SHIM, "s"))
    peer.receive_data(data)
    assert peer.next_event() == GoAway(Reason.MALFORMED)  # no detail for an unauthenticated peer


# -- end of stream ------------------------------------------------------------------------------


def test_graceful_close() -> None:
    a, b = _pair()
    _relay(a, b, EnvelopeFrame(1, b"e"))
    _relay(a, b, GoAway(Reason.GOING_AWAY))
    _relay(b, a, Receipt.ack(1))  # CLOSING still answers and accepts receipts
    b.receive_data(b"")
    assert b.next_event() == ConnectionClosed(graceful=True)
    assert b.next_event() == ConnectionClosed(graceful=True)
    assert b.their_state is SideState.CLOSED


def test_abrupt_close_with_envelopes_in_flight() -> None:
    a, b = _pair()
    _relay(a, b, EnvelopeFrame(1, b"e"))
    b.receive_data(b"")
    assert b.next_event() == ConnectionClosed(graceful=False)


@pytest.mark.parametrize("cut", [3, 8, 12])
def test_close_inside_a_frame(cut: int) -> None:
    a, b = _pair()
    b.receive_data(a.send(EnvelopeFrame(1, b"envelope"))[:cut])
    assert b.next_event() is NEED_DATA
    b.receive_data(b"")
    with pytest.raises(FramingError) as info:
        b.next_event()
    assert info.value.reason is Reason.MALFORMED
    assert info.value.detail.startswith("stream ended inside a frame")


def test_data_after_end_of_stream_is_misuse() -> None:
    conn = Connection()
    conn.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        conn.receive_data(b"x")


# -- our own caller misusing the API ------------------------------------------------------------


def test_local_misuse() -> None:
    conn = Connection()
    with pytest.raises(LocalProtocolError, match="cannot send ENVELOPE in state AWAIT_HELLO"):
        conn.send(EnvelopeFrame(1, b"e"))
    conn.send(Hello(Role.SHIM, "s"))
    with pytest.raises(LocalProtocolError, match="before the peer's HELLO"):
        conn.send(EnvelopeFrame(1, b"e"))
    with pytest.raises(LocalProtocolError, match="cannot send HELLO in state OPEN"):
        conn.send(Hello(Role.SHIM, "s"))
    with pytest.raises(LocalProtocolError, match="no envelope 4 awaits a receipt"):
        conn.send(Receipt.ack(4))
    assert conn.our_state is SideState.OPEN  # refused sends change nothing


def test_local_window_and_ids() -> None:
    a, _b = _pair(b_hello=Hello(Role.GATEWAY, "gw", max_in_flight=2))
    assert a.send_window == 2
    a.send(EnvelopeFrame(1, b"e"))
    with pytest.raises(LocalProtocolError, match="already in flight"):
        a.send(EnvelopeFrame(1, b"e"))
    a.send(EnvelopeFrame(2, b"e"))
    assert a.send_window == 0
    assert a.unanswered_sent() == {1, 2}
    with pytest.raises(LocalProtocolError, match="send window full"):
        a.send(EnvelopeFrame(3, b"e"))


def test_local_frame_size_respects_the_peer() -> None:
    a, _b = _pair(b_hello=Hello(Role.GATEWAY, "gw", max_frame_size=4096))
    a.send(EnvelopeFrame(1, bytes(4096 - 8)))
    with pytest.raises(LocalProtocolError, match="exceeds the peer's 4096"):
        a.send(EnvelopeFrame(2, bytes(4096 - 7)))


def test_no_new_envelopes_after_goaway_either_way() -> None:
    a, b = _pair()
    _relay(a, b, GoAway(Reason.GOING_AWAY))
    with pytest.raises(LocalProtocolError, match="cannot send ENVELOPE in state CLOSING"):
        a.send(EnvelopeFrame(1, b"e"))
    with pytest.raises(LocalProtocolError, match="peer is CLOSING"):
        b.send(EnvelopeFrame(1, b"e"))
    assert b.send_window == 0


@pytest.mark.parametrize(
    "event",
    [
        Receipt(1, Receipt.ack(1).status, Reason.EXPIRED),
        Receipt.nack(1, Reason.ALLOWED),
        GoAway(Reason.ALLOWED),
        GoAway(Reason.GOING_AWAY, "x" * 257),
        GoAway(Reason.GOING_AWAY, "line\nbreak"),
        Ping(-1),
        Ping(2**64),
        EnvelopeFrame(1, b""),
    ],
    ids=repr,
)
def test_fields_we_would_refuse_are_never_sent(event: Event) -> None:
    a, b = _pair()
    b.receive_data(a.send(EnvelopeFrame(1, b"e")))
    b.next_event()
    with pytest.raises(LocalProtocolError):
        b.send(event)


def test_ping_bound() -> None:
    a, _b = _pair()
    for nonce in range(limits.MAX_OUTSTANDING_PINGS):
        a.send(Ping(nonce))
    with pytest.raises(LocalProtocolError, match="PINGs outstanding"):
        a.send(Ping(100))
    with pytest.raises(LocalProtocolError, match="already outstanding"):
        a.send(Ping(0))


def test_send_after_close() -> None:
    a, _b = _pair()
    assert a.send(ConnectionClosed()) == b""
    assert a.our_state is SideState.CLOSED
    with pytest.raises(LocalProtocolError):
        a.send(Ping(1))
