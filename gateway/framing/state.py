"""The framing state machine, as data.

Theory of operation
-------------------
Each side of a connection (ours and theirs) has its own state, moved only by the frames that side
sends, after h11's ``_state.py``:

    AWAIT_HELLO --HELLO--> OPEN --GOAWAY--> CLOSING
         |                                     ^
         +-------------GOAWAY------------------+     (refuse before or instead of a HELLO)

    any state --end of stream--> CLOSED;  a protocol error puts the receiving side in ERROR.

OPEN allows ENVELOPE, RECEIPT, PING, PONG; CLOSING allows RECEIPT, PING, PONG and a further GOAWAY
(for example an error after a graceful GOAWAY) but no new ENVELOPE: a side that sent GOAWAY drains,
it does not start new work.

A few rules couple the two sides and live in ``Connection`` rather than in this table:
- an ENVELOPE may be sent only to a peer whose HELLO we have (we need its limits) and that has not
  sent GOAWAY; so a peer that sends an ENVELOPE before we sent our HELLO broke the protocol;
- a RECEIPT answers exactly one unanswered ENVELOPE of the other side; a PONG answers one of our
  PINGs;
- unanswered envelopes per direction are bounded by the receiver's announced ``max_in_flight``.
"""

from __future__ import annotations

import enum

from gateway.framing.codec import FrameType


class SideState(enum.Enum):
    AWAIT_HELLO = "AWAIT_HELLO"
    OPEN = "OPEN"
    CLOSING = "CLOSING"
    CLOSED = "CLOSED"
    ERROR = "ERROR"

    # Members are singletons compared by identity, so the identity hash (in C) is consistent with
    # equality; Enum's default hashes the name in Python, on every frame's transition lookup.
    __hash__ = object.__hash__


_S = SideState
_F = FrameType

# (state, frame type sent by this side) -> next state. Pairs not listed are protocol violations.
TRANSITIONS: dict[tuple[SideState, FrameType], SideState] = {
    (_S.AWAIT_HELLO, _F.HELLO): _S.OPEN,
    (_S.AWAIT_HELLO, _F.GOAWAY): _S.CLOSING,
    (_S.OPEN, _F.ENVELOPE): _S.OPEN,
    (_S.OPEN, _F.RECEIPT): _S.OPEN,
    (_S.OPEN, _F.PING): _S.OPEN,
    (_S.OPEN, _F.PONG): _S.OPEN,
    (_S.OPEN, _F.GOAWAY): _S.CLOSING,
    (_S.CLOSING, _F.RECEIPT): _S.CLOSING,
    (_S.CLOSING, _F.PING): _S.CLOSING,
    (_S.CLOSING, _F.PONG): _S.CLOSING,
    (_S.CLOSING, _F.GOAWAY): _S.CLOSING,
}

# The end of the byte stream closes a side from any state but ERROR (which stays ERROR).
CLOSABLE = frozenset({_S.AWAIT_HELLO, _S.OPEN, _S.CLOSING})


def next_state(state: SideState, frame_type: FrameType) -> SideState | None:
    """The state after this side sends ``frame_type``, or None when it may not."""
    return TRANSITIONS.get((state, frame_type))
