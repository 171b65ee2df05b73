"""The sans-I/O stream protocol between shims, gateways and federation peers (``docs/framing.md``).

Frames in, events out; events in, bytes out; no I/O. See :mod:`gateway.framing.connection` for the
driving loop and :mod:`gateway.framing.state` for the state machine.
"""

from gateway.framing.codec import FrameType
from gateway.framing.connection import Connection
from gateway.framing.events import (
    NEED_DATA,
    ConnectionClosed,
    EnvelopeFrame,
    Event,
    FramingError,
    GoAway,
    Hello,
    NeedData,
    Ping,
    Pong,
    Receipt,
    ReceiptStatus,
    Role,
)
from gateway.framing.state import SideState

__all__ = [
    "NEED_DATA",
    "Connection",
    "ConnectionClosed",
    "EnvelopeFrame",
    "Event",
    "FrameType",
    "FramingError",
    "GoAway",
    "Hello",
    "NeedData",
    "Ping",
    "Pong",
    "Receipt",
    "ReceiptStatus",
    "Role",
    "SideState",
]
