"""The sidecar's sans-I/O core: chunk records and the reorder buffer, without sockets."""

from __future__ import annotations

import cbor2
import pytest

from gateway.errors import RemoteProtocolError
from gateway.reasons import Reason
from gateway.shim_stream import (
    MAX_CHUNK_BYTES,
    MAX_RECORD_BYTES,
    Chunk,
    Offer,
    Reassembly,
    RecentIds,
    decode_chunk,
    encode_chunk,
)

SID = bytes(range(16))


def _c(seq: int, data: bytes = b"", fin: bool = False) -> Chunk:
    return Chunk(SID, seq, data or f"<{seq}>".encode(), fin)


def _drain(r: Reassembly) -> list[int]:
    out = []
    while (chunk := r.take()) is not None:
        out.append(chunk.seq)
    return out


def test_record_round_trip_and_bounds() -> None:
    for chunk in (
        _c(0),
        Chunk(SID, 2**63 - 1, b"", True),
        Chunk(SID, 7, b"x" * MAX_CHUNK_BYTES, False),
    ):
        record = encode_chunk(chunk)
        assert len(record) <= MAX_RECORD_BYTES
        assert decode_chunk(record) == chunk
    with pytest.raises(ValueError):
        encode_chunk(Chunk(SID, 0, b"x" * (MAX_CHUNK_BYTES + 1), False))
    with pytest.raises(ValueError):
        encode_chunk(Chunk(b"short", 0, b"", False))


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ([1, 2], Reason.MALFORMED),
        ({1: SID, 2: 0, 3: b""}, Reason.MALFORMED),  # no fin
        ({1: SID, 2: 0, 3: b"", 4: False, 5: 1}, Reason.MALFORMED),  # extra key
        ({1: SID[:8], 2: 0, 3: b"", 4: False}, Reason.MALFORMED),
        ({1: SID, 2: -1, 3: b"", 4: False}, Reason.MALFORMED),
        ({1: SID, 2: True, 3: b"", 4: False}, Reason.MALFORMED),
        ({1: SID, 2: 0, 3: "text", 4: False}, Reason.MALFORMED),
        ({1: SID, 2: 0, 3: b"", 4: 0}, Reason.MALFORMED),
    ],
)
def test_bad_records_are_refused(value: object, reason: Reason) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        decode_chunk(cbor2.dumps(value))
    assert caught.value.reason is reason


def test_non_canonical_garbage_and_oversize_records_are_refused() -> None:
    canonical = encode_chunk(_c(1))
    # The same map with keys in another order is valid CBOR but not canonical.
    reordered = b"\xa4" + b"".join(
        cbor2.dumps(k) + cbor2.dumps(v) for k, v in ((4, False), (1, SID), (2, 1), (3, b"<1>"))
    )
    assert cbor2.loads(reordered) == cbor2.loads(canonical)
    with pytest.raises(RemoteProtocolError) as caught:
        decode_chunk(reordered)
    assert caught.value.reason is Reason.NON_CANONICAL
    with pytest.raises(RemoteProtocolError) as caught:
        decode_chunk(b"\xff\x00garbage")
    assert caught.value.reason is Reason.MALFORMED
    with pytest.raises(RemoteProtocolError) as caught:
        decode_chunk(b"\x00" * (MAX_RECORD_BYTES + 1))
    assert caught.value.reason is Reason.TOO_LARGE
    for cut in range(len(canonical)):  # every truncation
        with pytest.raises(RemoteProtocolError):
            decode_chunk(canonical[:cut])


def test_in_order() -> None:
    r = Reassembly(window=4)
    for seq in range(3):
        assert r.offer(_c(seq)) is Offer.ACCEPTED
        assert _drain(r) == [seq]
    assert r.offer(_c(3, b"end", fin=True)) is Offer.ACCEPTED
    assert not r.finished
    assert _drain(r) == [3]
    assert r.finished and r.taken == 4


def test_out_of_order_is_released_in_order() -> None:
    r = Reassembly(window=8)
    for seq in (3, 1, 2):
        assert r.offer(_c(seq)) is Offer.ACCEPTED
        assert _drain(r) == []  # chunk 0 has not arrived
    assert r.buffered == 3
    assert r.offer(_c(0)) is Offer.ACCEPTED
    assert _drain(r) == [0, 1, 2, 3]
    assert r.buffered == 0


def test_duplicates_before_and_after_take() -> None:
    r = Reassembly(window=8)
    assert r.offer(_c(2)) is Offer.ACCEPTED
    assert r.offer(_c(2)) is Offer.DUPLICATE  # buffered, not yet taken
    assert r.offer(_c(0)) is Offer.ACCEPTED
    assert _drain(r) == [0]
    assert r.offer(_c(0)) is Offer.DUPLICATE  # already taken
    assert r.buffered == 1


def test_window_overflow_bounces_then_fits_after_take() -> None:
    r = Reassembly(window=3)
    assert r.offer(_c(3)) is Offer.OUT_OF_WINDOW  # 0..2 only
    assert r.buffered == 0  # a refused chunk is not kept
    for seq in (2, 1):
        assert r.offer(_c(seq)) is Offer.ACCEPTED
    assert r.offer(_c(3)) is Offer.OUT_OF_WINDOW
    assert r.offer(_c(0)) is Offer.ACCEPTED
    assert _drain(r) == [0, 1, 2]
    assert r.offer(_c(3)) is Offer.ACCEPTED  # the retry fits now
    assert r.offer(_c(6)) is Offer.OUT_OF_WINDOW
    assert r.offer(_c(5)) is Offer.ACCEPTED


def test_fin_rules() -> None:
    r = Reassembly(window=8)
    assert r.offer(_c(2, fin=True)) is Offer.ACCEPTED
    assert r.offer(_c(3)) is Offer.INVALID  # after the end
    assert r.offer(_c(1, fin=True)) is Offer.INVALID  # a second end
    assert r.offer(_c(2, fin=True)) is Offer.DUPLICATE  # the same end again
    assert r.offer(_c(1)) is Offer.ACCEPTED
    assert r.offer(_c(0)) is Offer.ACCEPTED
    assert _drain(r) == [0, 1, 2]
    assert r.finished
    early = Reassembly(window=8)
    assert early.offer(_c(5)) is Offer.ACCEPTED
    assert early.offer(_c(3, fin=True)) is Offer.INVALID  # an end before data already received


def test_recent_ids_are_bounded() -> None:
    ids = RecentIds(capacity=3)
    for n in range(5):
        ids.add(bytes([n]))
    assert len(ids) == 3
    assert bytes([0]) not in ids and bytes([1]) not in ids
    assert all(bytes([n]) in ids for n in (2, 3, 4))
    ids.add(bytes([2]))  # already there: nothing forgotten
    assert bytes([3]) in ids and len(ids) == 3
