"""The two kinds of protocol error, after h11: the peer sent garbage, or we misused an API."""

from __future__ import annotations

from gateway.reasons import Reason


class RemoteProtocolError(Exception):
    """The bytes or claims we received are unacceptable.

    Attributes:
        reason: the stable code to put in a NACK, the audit log and metrics.
        detail: a human-readable explanation for logs; never sent to unauthenticated peers.
        offset: the byte offset in the input where the problem was found, when known.
    """

    def __init__(self, reason: Reason, detail: str, *, offset: int | None = None) -> None:
        where = f" at byte {offset}" if offset is not None else ""
        super().__init__(f"{reason.value}: {detail}{where}")
        self.reason = reason
        self.detail = detail
        self.offset = offset


class LocalProtocolError(Exception):
    """Our own caller misused an API (for example sealing an envelope with a claim out of range)."""
