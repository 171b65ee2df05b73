"""The shim's byte-stream layer, sans-I/O: the chunk record codec and the reorder buffer.

A TCP connection accepted by the sending shim becomes a *stream*: 16 random bytes of stream id,
and its bytes cut into chunks numbered 0, 1, 2, ... Each chunk travels as the payload of its own
governed envelope, encoded as a small canonical CBOR map (docs/shim.md)::

    {1: stream id (bstr 16), 2: seq (uint), 3: data (bstr <= 64 KiB), 4: fin (bool)}

The chunk with ``fin`` set is the last one (it may carry data, often none). Envelopes may arrive
out of order (a sending window, a gateway's spool drain) and more than once (at-least-once
delivery), so the receiving side puts each stream back together with a :class:`Reassembly`:
duplicates are recognised by seq, chunks beyond a bounded window are refused (the sender retries
them later), and chunks are released strictly in order.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import cbor2

from gateway.errors import RemoteProtocolError
from gateway.reasons import Reason

STREAM_ID_BYTES = 16
MAX_CHUNK_BYTES = 64 * 1024
MAX_SEQ = 2**63 - 1
# The map header, four one-byte keys, a 16-byte bstr, a uint64, a bstr header of up to 5 bytes
# and a bool: 1 + 4 + 17 + 9 + 5 + 1 = 37 bytes at most around the data.
MAX_RECORD_BYTES = MAX_CHUNK_BYTES + 37

_K_STREAM, _K_SEQ, _K_DATA, _K_FIN = 1, 2, 3, 4


@dataclass(frozen=True, slots=True)
class Chunk:
    """One piece of a stream."""

    stream_id: bytes
    seq: int
    data: bytes
    fin: bool


def encode_chunk(chunk: Chunk) -> bytes:
    """The canonical CBOR record of ``chunk``.

    Raises:
        ValueError: a field is out of range (stream id length, seq, data size).
    """
    if len(chunk.stream_id) != STREAM_ID_BYTES:
        raise ValueError(f"stream id must be {STREAM_ID_BYTES} bytes")
    if not 0 <= chunk.seq <= MAX_SEQ:
        raise ValueError("seq out of range")
    if len(chunk.data) > MAX_CHUNK_BYTES:
        raise ValueError(f"chunk data exceeds {MAX_CHUNK_BYTES} bytes")
    record = {
        _K_STREAM: chunk.stream_id,
        _K_SEQ: chunk.seq,
        _K_DATA: chunk.data,
        _K_FIN: chunk.fin,
    }
    return cbor2.dumps(record, canonical=True)


def decode_chunk(record: bytes) -> Chunk:
    """Parse a chunk record strictly: exactly the four keys, their types and bounds, canonical.

    Raises:
        RemoteProtocolError: MALFORMED (or TOO_LARGE / NON_CANONICAL) with what was wrong.
    """
    if len(record) > MAX_RECORD_BYTES:
        raise RemoteProtocolError(Reason.TOO_LARGE, f"chunk record exceeds {MAX_RECORD_BYTES}")
    try:
        value = cbor2.loads(record)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError) as exc:
        raise RemoteProtocolError(Reason.MALFORMED, f"chunk record is not CBOR: {exc}") from None
    if not isinstance(value, dict) or set(value) != {_K_STREAM, _K_SEQ, _K_DATA, _K_FIN}:
        raise RemoteProtocolError(Reason.MALFORMED, "chunk record must be a map of keys 1..4")
    stream_id, seq, data, fin = value[_K_STREAM], value[_K_SEQ], value[_K_DATA], value[_K_FIN]
    if not isinstance(stream_id, bytes) or len(stream_id) != STREAM_ID_BYTES:
        raise RemoteProtocolError(Reason.MALFORMED, "chunk stream id must be 16 bytes")
    if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
        raise RemoteProtocolError(Reason.MALFORMED, "chunk seq must be an unsigned integer")
    if not isinstance(data, bytes) or len(data) > MAX_CHUNK_BYTES:
        raise RemoteProtocolError(Reason.MALFORMED, f"chunk data must be <= {MAX_CHUNK_BYTES} B")
    if not isinstance(fin, bool):
        raise RemoteProtocolError(Reason.MALFORMED, "chunk fin must be a boolean")
    chunk = Chunk(stream_id, seq, data, fin)
    if encode_chunk(chunk) != record:
        raise RemoteProtocolError(Reason.NON_CANONICAL, "chunk record is not canonical CBOR")
    return chunk


class Offer(enum.Enum):
    """What :meth:`Reassembly.offer` did with a chunk."""

    ACCEPTED = "accepted"  # buffered (and possibly ready now); count it as delivered
    DUPLICATE = "duplicate"  # this seq was already accepted: nothing changed
    OUT_OF_WINDOW = "out_of_window"  # too far ahead of what the application has taken: retry
    INVALID = "invalid"  # contradicts the stream (a seq after fin, a second fin): refuse


class Reassembly:
    """One stream's reorder buffer.

    ``window`` bounds the chunks held in memory: a chunk is accepted only if its seq is below
    ``taken + window``, where ``taken`` counts chunks already handed out by :meth:`take`. So the
    buffer never holds more than ``window`` chunks (``window * 64 KiB`` bytes), and a reader that
    stops taking chunks makes the sender's further chunks bounce as OUT_OF_WINDOW (backpressure).
    """

    __slots__ = ("_buffer", "_fin_seq", "_taken", "window")

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self.window = window
        self._taken = 0  # seq of the next chunk take() will return
        self._buffer: dict[int, Chunk] = {}
        self._fin_seq: int | None = None

    @property
    def taken(self) -> int:
        """How many chunks :meth:`take` has returned (they are seq 0 .. taken-1)."""
        return self._taken

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    @property
    def finished(self) -> bool:
        """The fin chunk has been taken: the stream is complete."""
        return self._fin_seq is not None and self._taken > self._fin_seq

    def offer(self, chunk: Chunk) -> Offer:
        """Take in one arriving chunk (any order, possibly again)."""
        seq = chunk.seq
        if seq < self._taken or seq in self._buffer:
            return Offer.DUPLICATE
        if self._fin_seq is not None and (seq > self._fin_seq or chunk.fin):
            return Offer.INVALID  # beyond the end, or a second, different end
        if chunk.fin and self._buffer and max(self._buffer) > seq:
            return Offer.INVALID  # an end before chunks already received
        if seq >= self._taken + self.window:
            return Offer.OUT_OF_WINDOW
        self._buffer[seq] = chunk
        if chunk.fin:
            self._fin_seq = seq
        return Offer.ACCEPTED

    def take(self) -> Chunk | None:
        """The next chunk in order, or None if it has not arrived yet."""
        chunk = self._buffer.pop(self._taken, None)
        if chunk is not None:
            self._taken += 1
        return chunk


class RecentIds:
    """A bounded set of recently seen ids: the oldest is forgotten once ``capacity`` is reached.

    Used for envelope ids and finished stream ids; an id forgotten here is still caught by the
    per-stream seq check while its stream is open.
    """

    __slots__ = ("_ids", "capacity")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._ids: dict[bytes, None] = {}  # insertion-ordered

    def __contains__(self, key: object) -> bool:
        return key in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, key: bytes) -> None:
        if key in self._ids:
            return
        if len(self._ids) >= self.capacity:
            del self._ids[next(iter(self._ids))]
        self._ids[key] = None
