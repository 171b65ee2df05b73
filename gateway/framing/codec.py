"""Frame bytes <-> events, with no state: the header, and one body layout per frame type.

Every body is fixed binary: big-endian integers of fixed width and length-prefixed UTF-8 text.
There is therefore exactly one encoding of each event, and the decoder enforces it: no trailing
bytes, no status byte other than 0 or 1, an ACK carries neither reason nor detail, text is strict
UTF-8 without control characters. Checks are cheap-first and every length is compared with its
bound before the bytes it announces are looked at.
"""

from __future__ import annotations

import enum
import struct

from gateway.errors import LocalProtocolError
from gateway.framing import limits
from gateway.framing.events import (
    EnvelopeFrame,
    FrameEvent,
    FramingError,
    GoAway,
    Hello,
    Ping,
    Pong,
    Receipt,
    ReceiptStatus,
    Role,
)
from gateway.reasons import Reason

_HEADER = struct.Struct(">2sBBI")
_U64 = struct.Struct(">Q")
_HELLO_FIXED = struct.Struct(">BIIH")
_RECEIPT_FIXED = struct.Struct(">QBB")
_U16 = struct.Struct(">H")

_REASONS = {r.value: r for r in Reason if r is not Reason.ALLOWED}


class FrameType(enum.IntEnum):
    HELLO = 1
    ENVELOPE = 2
    RECEIPT = 3
    PING = 4
    PONG = 5
    GOAWAY = 6

    # Enum's own __hash__ is Python code (hash of the name); these members are looked up in a
    # dict for every frame, and an IntEnum equals its int, so the int's C hash is the right one.
    __hash__ = int.__hash__


_FRAME_TYPES = {int(t): t for t in FrameType}


FRAME_TYPE_OF: dict[type[FrameEvent], FrameType] = {
    Hello: FrameType.HELLO,
    EnvelopeFrame: FrameType.ENVELOPE,
    Receipt: FrameType.RECEIPT,
    Ping: FrameType.PING,
    Pong: FrameType.PONG,
    GoAway: FrameType.GOAWAY,
}


# -- header --------------------------------------------------------------------------------------


def parse_header(
    header: bytes | bytearray, offset: int, max_body: int, at: int = 0
) -> tuple[FrameType, int]:
    """Check one 8-byte header before anything it announces is buffered.

    Args:
        header: holds the HEADER_BYTES header bytes at index ``at`` (a whole receive buffer may
            be passed, so the header is not copied out first).
        offset: stream offset of the header, for error messages.
        max_body: the largest body the receiver accepts right now.
        at: index of the header in ``header``.

    Returns:
        The frame type and the body length.

    Raises:
        FramingError: bad magic (MALFORMED), other version (UNSUPPORTED_VERSION), unknown type
            (MALFORMED), or a length above ``max_body`` (TOO_LARGE).
    """
    magic, version, type_byte, length = _HEADER.unpack_from(header, at)
    if magic != limits.MAGIC:
        raise FramingError(
            Reason.MALFORMED, f"bad magic {magic!r}, expected {limits.MAGIC!r}", offset=offset
        )
    if version != limits.PROTOCOL_VERSION:
        raise FramingError(
            Reason.UNSUPPORTED_VERSION,
            f"protocol version {version}, expected {limits.PROTOCOL_VERSION}",
            offset=offset + 2,
        )
    frame_type = _FRAME_TYPES.get(type_byte)
    if frame_type is None:
        raise FramingError(
            Reason.MALFORMED, f"unknown frame type {type_byte:#04x}", offset=offset + 3
        )
    if length > max_body:
        raise FramingError(
            Reason.TOO_LARGE,
            f"frame body of {length} bytes exceeds the limit of {max_body}",
            offset=offset + 4,
        )
    return frame_type, length


# -- encoding ------------------------------------------------------------------------------------


def encode(event: FrameEvent) -> bytes:
    """The frame bytes for ``event``.

    Raises:
        LocalProtocolError: a field is out of range or a text is not acceptable (the same rules
            the decoder applies, so we never send what we would refuse).
    """
    body = _encode_body(event)
    return (
        _HEADER.pack(limits.MAGIC, limits.PROTOCOL_VERSION, FRAME_TYPE_OF[type(event)], len(body))
        + body
    )


def _encode_body(event: FrameEvent) -> bytes:
    match event:  # the per-envelope frames first
        case EnvelopeFrame(correlation_id=cid, envelope=envelope):
            _local(_check_range("correlation_id", cid, 0, limits.MAX_CORRELATION_ID))
            if not envelope:
                raise LocalProtocolError("an envelope frame needs at least one byte of envelope")
            if len(envelope) > limits.MAX_FRAME_BODY_CAP - limits.CORRELATION_ID_BYTES:
                raise LocalProtocolError(
                    f"envelope of {len(envelope)} bytes is larger than any frame"
                )
            return _U64.pack(cid) + bytes(envelope)
        case Receipt(correlation_id=cid, status=status, reason=reason, detail=detail):
            _local(_check_range("correlation_id", cid, 0, limits.MAX_CORRELATION_ID))
            _local(_check_receipt(status, reason, detail))
            code = reason.value.encode() if reason is not None else b""
            raw = detail.encode()
            return _RECEIPT_FIXED.pack(cid, status, len(code)) + code + _U16.pack(len(raw)) + raw
        case Ping(nonce=nonce) | Pong(nonce=nonce):
            _local(_check_range("nonce", nonce, 0, limits.MAX_NONCE))
            return _U64.pack(nonce)
        case GoAway(reason=reason, detail=detail):
            _local(_check_reason(reason))
            _local(_check_text("detail", detail, limits.MAX_DETAIL_BYTES, allow_empty=True))
            code = reason.value.encode()
            raw = detail.encode()
            return bytes([len(code)]) + code + _U16.pack(len(raw)) + raw
        case Hello(role=role, name=name, max_frame_size=size, max_in_flight=window):
            _local(_check_role(role))
            _local(
                _check_range(
                    "max_frame_size", size, limits.MIN_FRAME_BODY, limits.MAX_FRAME_BODY_CAP
                )
            )
            _local(_check_range("max_in_flight", window, 1, limits.MAX_IN_FLIGHT_CAP))
            _local(_check_text("name", name, limits.MAX_NAME_BYTES, allow_empty=False))
            raw = name.encode()
            return _HELLO_FIXED.pack(role, size, window, len(raw)) + raw
    raise LocalProtocolError(f"not a frame event: {event!r}")


def _local(problem: str | None) -> None:
    if problem is not None:
        raise LocalProtocolError(problem)


# -- decoding ------------------------------------------------------------------------------------


class _Reader:
    """Reads one body front to back; every failure names the stream offset."""

    def __init__(self, body: bytes, offset: int) -> None:
        self.body = body
        self.pos = 0
        self.base = offset

    def fail(self, reason: Reason, message: str) -> FramingError:
        return FramingError(reason, message, offset=self.base + self.pos)

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.body):
            raise self.fail(Reason.MALFORMED, f"body ends inside {what}")
        chunk = self.body[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: struct.Struct, what: str) -> tuple[int, ...]:
        return fmt.unpack(self.take(fmt.size, what))

    def text(self, length: int, what: str, max_bytes: int, *, allow_empty: bool) -> str:
        if length > max_bytes:
            raise self.fail(Reason.MALFORMED, f"{what} length {length} exceeds {max_bytes}")
        raw = self.take(length, what)
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(Reason.MALFORMED, f"{what} is not UTF-8") from None
        if (problem := _check_text(what, value, max_bytes, allow_empty=allow_empty)) is not None:
            raise self.fail(Reason.MALFORMED, problem)
        return value

    def reason(self, length: int) -> Reason:
        code = self.take(length, "reason code")
        reason = _REASONS.get(code.decode("ascii", "replace"))
        if reason is None:
            raise self.fail(
                Reason.MALFORMED, f"unknown reason code {code[: limits.MAX_REASON_BYTES]!r}"
            )
        return reason

    def end(self) -> None:
        if self.pos != len(self.body):
            raise self.fail(
                Reason.NON_CANONICAL, f"{len(self.body) - self.pos} trailing bytes in frame body"
            )


def decode_body(frame_type: FrameType, body: bytes, offset: int) -> FrameEvent:
    """Decode one frame body (already bounded by :func:`parse_header`).

    Args:
        frame_type: from the header.
        body: exactly the body bytes.
        offset: stream offset of the body's first byte, for error messages.

    Raises:
        FramingError: MALFORMED or NON_CANONICAL, with the offset of the offending byte.
    """
    if frame_type is FrameType.ENVELOPE and len(body) > _U64.size:
        # The frame every envelope arrives in: a correlation id and at least one byte.
        return EnvelopeFrame(_U64.unpack_from(body)[0], body[_U64.size :])
    r = _Reader(body, offset)
    event: FrameEvent
    if frame_type is FrameType.ENVELOPE:
        (cid,) = r.unpack(_U64, "correlation id")
        if len(body) == r.pos:
            raise r.fail(Reason.MALFORMED, "envelope frame carries no envelope")
        return EnvelopeFrame(cid, body[r.pos :])
    if frame_type is FrameType.HELLO:
        role_byte, size, window, name_len = r.unpack(_HELLO_FIXED, "hello")
        if role_byte not in (Role.SHIM, Role.GATEWAY):
            raise FramingError(Reason.MALFORMED, f"unknown role {role_byte}", offset=offset)
        for what, value, low, high in (
            ("max_frame_size", size, limits.MIN_FRAME_BODY, limits.MAX_FRAME_BODY_CAP),
            ("max_in_flight", window, 1, limits.MAX_IN_FLIGHT_CAP),
        ):
            if (problem := _check_range(what, value, low, high)) is not None:
                raise FramingError(Reason.MALFORMED, problem, offset=offset + 1)
        name = r.text(name_len, "name", limits.MAX_NAME_BYTES, allow_empty=False)
        event = Hello(Role(role_byte), name, size, window)
    elif frame_type is FrameType.RECEIPT:
        cid, status_byte, reason_len = r.unpack(_RECEIPT_FIXED, "receipt")
        if status_byte == ReceiptStatus.ACK:
            if reason_len:
                raise r.fail(Reason.NON_CANONICAL, "an ACK carries no reason code")
            (detail_len,) = r.unpack(_U16, "detail length")
            if detail_len:
                raise r.fail(Reason.NON_CANONICAL, "an ACK carries no detail")
            event = Receipt.ack(cid)
        elif status_byte == ReceiptStatus.NACK:
            if reason_len == 0:
                raise r.fail(Reason.MALFORMED, "a NACK needs a reason code")
            reason = r.reason(reason_len)
            (detail_len,) = r.unpack(_U16, "detail length")
            detail = r.text(detail_len, "detail", limits.MAX_DETAIL_BYTES, allow_empty=True)
            event = Receipt.nack(cid, reason, detail)
        else:
            raise FramingError(
                Reason.MALFORMED,
                f"receipt status {status_byte}, expected 0 or 1",
                offset=offset + 8,
            )
    elif frame_type is FrameType.GOAWAY:
        (reason_len,) = r.take(1, "reason length")
        if reason_len == 0:
            raise r.fail(Reason.MALFORMED, "a GOAWAY needs a reason code")
        reason = r.reason(reason_len)
        (detail_len,) = r.unpack(_U16, "detail length")
        event = GoAway(
            reason, r.text(detail_len, "detail", limits.MAX_DETAIL_BYTES, allow_empty=True)
        )
    else:  # PING, PONG
        (nonce,) = r.unpack(_U64, "nonce")
        event = Ping(nonce) if frame_type is FrameType.PING else Pong(nonce)
    r.end()
    return event


# -- shared field rules (used for sending and receiving alike) -----------------------------------


def _check_range(what: str, value: object, low: int, high: int) -> str | None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        return f"{what} must be an integer from {low} to {high}, got {value!r}"
    return None


def _check_role(role: object) -> str | None:
    return None if isinstance(role, Role) else f"role must be a Role, got {role!r}"


def _check_reason(reason: object) -> str | None:
    if not isinstance(reason, Reason) or reason is Reason.ALLOWED:
        return f"reason must be a refusal Reason, got {reason!r}"
    return None


def _check_receipt(status: object, reason: object, detail: object) -> str | None:
    if status is ReceiptStatus.ACK:
        if reason is not None or detail != "":
            return "an ACK carries no reason and no detail"
        return None
    if status is not ReceiptStatus.NACK:
        return f"status must be a ReceiptStatus, got {status!r}"
    return _check_reason(reason) or _check_text(
        "detail", detail, limits.MAX_DETAIL_BYTES, allow_empty=True
    )


def _check_text(what: str, value: object, max_bytes: int, *, allow_empty: bool) -> str | None:
    if not isinstance(value, str):
        return f"{what} must be a string"
    if not value and not allow_empty:
        return f"{what} is empty"
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return f"{what} is not encodable as UTF-8"
    if size > max_bytes:
        return f"{what} is longer than {max_bytes} bytes"
    # Control characters would let a peer forge lines in our logs.
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in value):
        return f"{what} contains a control character"
    return None
