"""Every size and count limit of the framing protocol, in one place (documented in
``docs/framing.md``). Changing one changes the wire contract."""

from __future__ import annotations

from gateway.envelope import limits as envelope_limits

PROTOCOL_VERSION = 1
MAGIC = b"SL"

# Header: magic (2) + version (1) + frame type (1) + body length (4, big-endian).
HEADER_BYTES = 8

# The ENVELOPE body is an 8-byte correlation id followed by the envelope bytes.
CORRELATION_ID_BYTES = 8
MAX_CORRELATION_ID = 2**64 - 1
MAX_NONCE = 2**64 - 1

# Largest body any frame may ever have, whatever a HELLO announces: one maximal envelope plus its
# correlation id. ``config.gateway`` repeats this number (config may not import gateway); a test
# keeps the two equal.
MAX_FRAME_BODY_CAP = envelope_limits.MAX_ENVELOPE_BYTES + CORRELATION_ID_BYTES
# Smallest receive limit a HELLO may announce: enough for every control frame.
MIN_FRAME_BODY = 4096
DEFAULT_MAX_FRAME_BODY = MAX_FRAME_BODY_CAP

# Before we have sent our HELLO the peer cannot know our limit, so it may only send control frames
# (HELLO, GOAWAY); those always fit in MIN_FRAME_BODY.
PRE_HELLO_FRAME_BODY = MIN_FRAME_BODY

# In-flight window: envelopes sent and not yet answered by a receipt.
DEFAULT_MAX_IN_FLIGHT = 64
MAX_IN_FLIGHT_CAP = 65536

# Text fields.
MAX_NAME_BYTES = 2048  # HELLO sender name: a SPIFFE ID fits (identity.spiffe_id.MAX_ID_BYTES)
MAX_REASON_BYTES = 64  # a Reason value
MAX_DETAIL_BYTES = 256  # RECEIPT / GOAWAY human-readable detail

# Pings we may have outstanding (sent, no PONG yet); bounds the state a keepalive loop can build.
MAX_OUTSTANDING_PINGS = 8
