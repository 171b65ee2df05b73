"""Spool and DeliveredSet behaviour on real files (tmp_path), including recovery paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.spool import DeliveredSet, Spool, SpoolCorrupt, SpoolFull, SpoolLocked, records


def eid(n: int) -> bytes:
    return n.to_bytes(16, "big")


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_put_pending_ack_fifo_and_reopen(tmp_path: Path) -> None:
    clock = Clock()
    with Spool(tmp_path, 1 << 20, clock=clock) as spool:
        assert spool.put(eid(1), "peer:b", b"one")
        clock.t += 1.5
        assert spool.put(eid(2), "net:cilium", b"two")
        assert spool.put(eid(3), "peer:b", b"three")
        assert [e.envelope_id for e in spool.pending()] == [eid(1), eid(2), eid(3)]
        assert [e.data for e in spool.pending("peer:b")] == [b"one", b"three"]
        assert spool.ack(eid(1))
        assert not spool.ack(eid(1))
        assert spool.bump(eid(3)) == 1
        assert spool.bump(eid(3)) == 2
    with Spool(tmp_path, 1 << 20) as spool:
        got = list(spool.pending())
        assert [(e.envelope_id, e.destination, e.data, e.attempts) for e in got] == [
            (eid(2), "net:cilium", b"two", 0),
            (eid(3), "peer:b", b"three", 2),
        ]
        assert got[0].enqueued_at == pytest.approx(1_700_000_001.5)
        assert spool.recovery.torn_tail is None
        assert spool.destinations() == {"net:cilium", "peer:b"}


def test_duplicate_put_is_a_no_op(tmp_path: Path) -> None:
    with Spool(tmp_path, 1 << 20) as spool:
        assert spool.put(eid(7), "d", b"first")
        size = spool.disk_bytes
        assert not spool.put(eid(7), "d", b"second")
        assert spool.disk_bytes == size
        assert spool.put_many([(eid(8), "d", b"x"), (eid(8), "d", b"y"), (eid(7), "d", b"z")]) == [
            True, False, False,
        ]
        assert spool.get(eid(7)).data == b"first"  # type: ignore[union-attr]


def test_capacity_bound_raises_and_writes_nothing(tmp_path: Path) -> None:
    with Spool(tmp_path, 1000) as spool:
        assert spool.put(eid(1), "d", b"x" * 600)
        size = spool.disk_bytes
        with pytest.raises(SpoolFull, match="max_bytes 1000"):
            spool.put(eid(2), "d", b"x" * 600)
        assert spool.disk_bytes == size
        assert eid(2) not in spool
        with pytest.raises(SpoolFull):  # all or nothing for a batch
            spool.put_many([(eid(3), "d", b"a"), (eid(4), "d", b"b" * 600)])
        assert eid(3) not in spool
        spool.ack(eid(1))
        assert spool.put(eid(2), "d", b"x" * 600)


def test_bad_arguments(tmp_path: Path) -> None:
    with Spool(tmp_path, 1 << 20) as spool:
        with pytest.raises(ValueError, match="16 bytes"):
            spool.put(b"short", "d", b"")
        with pytest.raises(ValueError, match="destination"):
            spool.put(eid(1), "d" * 2000, b"")
        with pytest.raises(KeyError):
            spool.bump(eid(9))


def test_second_process_is_refused(tmp_path: Path) -> None:
    with Spool(tmp_path, 1 << 20), pytest.raises(SpoolLocked):
        Spool(tmp_path, 1 << 20)  # flock is per open file description: refused in-process too


def test_segments_roll_and_compaction_keeps_live_entries(tmp_path: Path) -> None:
    with Spool(tmp_path, 1 << 20, segment_bytes=4096, compact_min_bytes=8192) as spool:
        for n in range(100):
            spool.put(eid(n), "d", bytes([n]) * 200)
        assert len(segments(tmp_path)) > 3
        spool.ack_many(eid(n) for n in range(0, 100, 2))
        for n in range(100, 110):
            spool.put(eid(n), "d", bytes([n]) * 200)
        spool.compact()
        assert len(segments(tmp_path)) == 1
        expected = [n for n in range(110) if n >= 100 or n % 2]
        assert [e.envelope_id for e in spool.pending()] == [eid(n) for n in expected]
        spool.put(eid(500), "d", b"after")
    with Spool(tmp_path, 1 << 20) as spool:
        got = list(spool.pending())
        assert [e.envelope_id for e in got] == [eid(n) for n in expected] + [eid(500)]
        assert all(e.data == bytes([int.from_bytes(e.envelope_id)]) * 200 for e in got[:-1])


def test_automatic_compaction_bounds_the_disk(tmp_path: Path) -> None:
    with Spool(tmp_path, 1 << 20, segment_bytes=8192, compact_min_bytes=4096) as spool:
        for n in range(2000):
            spool.put(eid(n), "d", b"p" * 100)
            spool.ack(eid(n))
        assert spool.disk_bytes < 3 * 8192
        assert len(spool) == 0


def test_interrupted_compaction_is_finished_on_open(tmp_path: Path) -> None:
    with Spool(tmp_path, 1 << 20, segment_bytes=2048) as spool:
        for n in range(30):
            spool.put(eid(n), "d", b"q" * 100)
        spool.ack_many(eid(n) for n in range(10))
        old = {p.name: p.read_bytes() for p in segments(tmp_path)}
        spool.compact()
    # Put the old segments back, as if the crash came after the rename, before the deletions.
    for name, data in old.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "0000000000009999.seg.tmp").write_bytes(b"half a compaction")
    with Spool(tmp_path, 1 << 20) as spool:
        assert [e.envelope_id for e in spool.pending()] == [eid(n) for n in range(10, 30)]
    assert len(segments(tmp_path)) == 1
    assert not list(tmp_path.glob("*.tmp"))


def test_torn_tail_is_truncated_and_reported(tmp_path: Path) -> None:
    with Spool(tmp_path, 1 << 20) as spool:
        spool.put(eid(1), "d", b"kept")
        spool.put(eid(2), "d", b"torn" * 50)
    seg = segments(tmp_path)[-1]
    full = seg.stat().st_size
    for cut in (1, 11, 40, 150):  # inside the digest, the body, the header
        with seg.open("r+b") as f:
            f.truncate(full - cut)
        with Spool(tmp_path, 1 << 20) as spool:
            assert [e.envelope_id for e in spool.pending()] == [eid(1)]
            torn = spool.recovery.torn_tail
            assert torn is not None
            assert torn.path == seg
            assert torn.dropped == full - cut - torn.offset
            spool.put(eid(2), "d", b"torn" * 50)  # the repaired file takes appends again
        assert seg.stat().st_size == full


def test_zero_filled_tail_is_a_torn_tail(tmp_path: Path) -> None:
    with Spool(tmp_path, 1 << 20) as spool:
        spool.put(eid(1), "d", b"kept")
    seg = segments(tmp_path)[-1]
    with seg.open("ab") as f:
        f.write(bytes(4096))
    with Spool(tmp_path, 1 << 20) as spool:
        assert len(spool) == 1
        assert spool.recovery.torn_tail is not None


@pytest.mark.parametrize("where", ["header", "body", "digest"])
def test_corruption_in_the_middle_is_refused_with_offset(tmp_path: Path, where: str) -> None:
    with Spool(tmp_path, 1 << 20) as spool:
        for n in range(3):
            spool.put(eid(n), "d", b"data" * 10)
        second = records.FILE_HEADER_RECORD_BYTES + spool.get(eid(0)).data.__len__()  # type: ignore[union-attr]
    seg = segments(tmp_path)[-1]
    raw = bytearray(seg.read_bytes())
    # Records: header record, then three PUTs of equal size; damage the second PUT.
    put_size = (len(raw) - records.FILE_HEADER_RECORD_BYTES) // 3
    start = records.FILE_HEADER_RECORD_BYTES + put_size
    assert second < start
    index = {"header": start + 9, "body": start + 20, "digest": start + put_size - 1}[where]
    raw[index] ^= 0x40
    seg.write_bytes(bytes(raw))
    with pytest.raises(SpoolCorrupt) as info:
        Spool(tmp_path, 1 << 20)
    assert info.value.offset == start
    assert info.value.path == seg
    assert f"at byte {start}" in str(info.value)
    assert seg.read_bytes() == bytes(raw)  # nothing was "repaired"


def test_torn_record_in_an_older_segment_is_corruption(tmp_path: Path) -> None:
    with Spool(tmp_path, 1 << 20, segment_bytes=1024) as spool:
        for n in range(20):
            spool.put(eid(n), "d", b"r" * 100)
    first = segments(tmp_path)[0]
    with first.open("r+b") as f:
        f.truncate(first.stat().st_size - 5)
    with pytest.raises(SpoolCorrupt, match="closed segment"):
        Spool(tmp_path, 1 << 20)


def test_foreign_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "0000000000000001.seg").write_bytes(records.encode_file_header(b"DLVR", 1))
    with pytest.raises(SpoolCorrupt, match="expected b'SPOL'"):
        Spool(tmp_path, 1 << 20)


def test_delivered_set_dedups_expires_and_persists(tmp_path: Path) -> None:
    clock = Clock(1000.0)
    with DeliveredSet(tmp_path, 10, clock=clock) as seen:
        assert seen.add(eid(1), expires_at=1100)
        assert not seen.add(eid(1), expires_at=1100)
        assert seen.add_many([(eid(2), 1010), (eid(3), 2000), (eid(2), 1010)]) == [
            True, True, False,
        ]
    clock.t = 1050.0
    with DeliveredSet(tmp_path, 10, clock=clock) as seen:
        assert seen.contains(eid(1))
        assert not seen.contains(eid(2))  # expired
        assert seen.add(eid(2), expires_at=1200)  # may be delivered again once expired
        assert len(seen) == 3
        assert seen.torn_tail is None


def test_delivered_set_bound_refuses_rather_than_evicts(tmp_path: Path) -> None:
    clock = Clock(0.0)
    with DeliveredSet(tmp_path, 3, clock=clock) as seen:
        for n in range(3):
            seen.add(eid(n), expires_at=100 + n)
        with pytest.raises(SpoolFull):
            seen.add(eid(9), expires_at=500)
        assert all(seen.contains(eid(n)) for n in range(3))
        clock.t = 100.5  # eid(0) expired: its slot is reusable
        assert seen.add(eid(9), expires_at=500)


def test_delivered_set_rewrites_garbage_and_survives_torn_tail(tmp_path: Path) -> None:
    clock = Clock(0.0)
    with DeliveredSet(tmp_path, 100_000, clock=clock) as seen:
        for n in range(6000):
            clock.t = n
            seen.add(eid(n), expires_at=n + 10)
    log = tmp_path / "delivered.log"
    assert log.stat().st_size < 3000 * 52  # rewritten: far fewer than 6000 records remain
    with log.open("ab") as f:
        f.write(records.encode(5, eid(77777) + bytes(8))[:-3])
    clock.t = 5995
    with DeliveredSet(tmp_path, 100_000, clock=clock) as seen:
        assert seen.torn_tail is not None
        assert seen.contains(eid(5999))
        assert not seen.contains(eid(5000))


def test_file_descriptor_cleanup_on_corrupt_open(tmp_path: Path) -> None:
    (tmp_path / "0000000000000001.seg").write_bytes(b"garbage that is not a spool file")
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        with pytest.raises(SpoolCorrupt):
            Spool(tmp_path, 1 << 20)
    assert len(os.listdir("/proc/self/fd")) == before


def test_waiting_for_counts_per_destination_across_reopen(tmp_path: Path) -> None:
    with Spool(tmp_path / "s", 1 << 20) as spool:
        spool.put(b"a" * 16, "peer:x", b"1")
        spool.put(b"b" * 16, "peer:x", b"2")
        spool.put(b"c" * 16, "net:y", b"3")
        assert (spool.waiting_for("peer:x"), spool.waiting_for("net:y")) == (2, 1)
        spool.ack(b"a" * 16)
        assert spool.destinations() == {"peer:x", "net:y"}
        spool.ack(b"c" * 16)
        assert spool.waiting_for("net:y") == 0 and spool.destinations() == {"peer:x"}
    with Spool(tmp_path / "s", 1 << 20) as spool:
        assert spool.waiting_for("peer:x") == 1 and spool.waiting_for("net:y") == 0
        spool.compact()
        assert spool.destinations() == {"peer:x"}
