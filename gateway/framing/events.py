"""The events of the framing protocol: what ``Connection.next_event`` returns and what
``Connection.send`` accepts. Each event is one frame on the wire (``ConnectionClosed`` is the end
of the byte stream and has no frame)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final, Literal

from gateway.errors import RemoteProtocolError
from gateway.framing import limits
from gateway.reasons import Reason


class Role(enum.IntEnum):
    """Who is speaking: a workload's shim or a gateway (local or federation peer)."""

    SHIM = 1
    GATEWAY = 2


class ReceiptStatus(enum.IntEnum):
    ACK = 0
    NACK = 1


@dataclass(frozen=True, slots=True)
class Hello:
    """First frame each side sends. ``max_frame_size`` is the largest frame *body* the sender
    accepts; ``max_in_flight`` is how many unanswered envelopes it accepts at once."""

    role: Role
    name: str  # the sender's name or SPIFFE ID text; the daemon authenticates it, framing does not
    max_frame_size: int = limits.DEFAULT_MAX_FRAME_BODY
    max_in_flight: int = limits.DEFAULT_MAX_IN_FLIGHT


@dataclass(frozen=True, slots=True)
class EnvelopeFrame:
    """One governed envelope; ``envelope`` is opaque to framing. ``correlation_id`` is chosen by
    the sender, unique among its unanswered envelopes on this connection, and echoed by the
    receipt."""

    correlation_id: int
    envelope: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Receipt:
    """The answer to one envelope: ACK (``reason`` is None) or NACK with a reason code."""

    correlation_id: int
    status: ReceiptStatus
    reason: Reason | None = None
    detail: str = ""

    @classmethod
    def ack(cls, correlation_id: int) -> Receipt:
        return cls(correlation_id, ReceiptStatus.ACK)

    @classmethod
    def nack(cls, correlation_id: int, reason: Reason, detail: str = "") -> Receipt:
        return cls(correlation_id, ReceiptStatus.NACK, reason, detail)


@dataclass(frozen=True, slots=True)
class Ping:
    nonce: int


@dataclass(frozen=True, slots=True)
class Pong:
    nonce: int


@dataclass(frozen=True, slots=True)
class GoAway:
    """The sender sends no new envelopes from now on (it still answers and accepts receipts)."""

    reason: Reason
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The byte stream ended. ``graceful`` is true when the closing side had sent GOAWAY first and
    no envelope it sent was left unanswered."""

    graceful: bool = True


Event = Hello | EnvelopeFrame | Receipt | Ping | Pong | GoAway | ConnectionClosed
FrameEvent = Hello | EnvelopeFrame | Receipt | Ping | Pong | GoAway


class _NeedData(enum.Enum):
    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"


NeedData = Literal[_NeedData.NEED_DATA]
NEED_DATA: Final = _NeedData.NEED_DATA
"""Returned by ``next_event`` when the buffered bytes do not yet hold a whole frame."""


class FramingError(RemoteProtocolError):
    """The peer broke the framing protocol; the connection is unusable.

    Attributes:
        error_hint: the GOAWAY to send back before closing (its detail is empty on purpose: the
            peer may not be authenticated yet, so it learns only the reason code).
    """

    def __init__(self, reason: Reason, detail: str, *, offset: int | None = None) -> None:
        super().__init__(reason, detail, offset=offset)
        self.error_hint = GoAway(reason)
