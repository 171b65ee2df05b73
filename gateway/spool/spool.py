"""Theory of operation: a durable store-and-forward queue for envelopes awaiting their next hop.

The spool is a directory of *segments* (``0000000000000001.seg``, ...), each an append-only file of
framed records (:mod:`gateway.spool.records`): a file header, then ``PUT`` (an envelope and where
it goes), ``ACK`` (it was delivered: forget it) and ``BUMP`` (one more delivery attempt). The live
state is rebuilt in memory on open by replaying the segments in order; envelope bytes stay on disk
and are read back with ``pread`` when :meth:`Spool.pending` yields them.

Durability: ``put``/``put_many``/``ack``/``bump`` return only after ``fsync``; a new segment is
created with temp file + fsync + rename + directory fsync. A crash can only leave a torn final
record in the newest segment, which :class:`Spool` truncates on open (see ``recovery``); damage
anywhere else raises :class:`SpoolCorrupt` with the file and byte offset.

Compaction rewrites the live entries into a new segment whose header has the ``SUPERSEDES`` flag,
then deletes the older segments. If a crash interrupts the deletion, the next open sees the flag
and finishes it, so live entries are never counted twice and acknowledged ones never come back.

Bounds: the bytes of live ``PUT`` records never exceed ``max_bytes`` (:class:`SpoolFull` otherwise,
nothing written); garbage (acknowledged records) is compacted away once it exceeds the live bytes
(and ``compact_min_bytes``), so the disk holds at most about ``2 * max_bytes`` plus one segment.

Thread safety: one :class:`Spool` per directory per host (an ``flock`` on ``spool.lock`` refuses a
second process). Every public method takes an internal lock, so the daemon may call it from
several worker threads; the methods block on disk I/O, so never call them on the event loop.
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from gateway.spool import records
from gateway.spool._fs import TMP_SUFFIX, fsync_dir
from gateway.spool.errors import SpoolCorrupt, SpoolFull, SpoolLocked
from gateway.spool.recordfile import RecordFile
from gateway.spool.records import RawRecord, TornTail

ENVELOPE_ID_BYTES = 16
MAX_DESTINATION_BYTES = 1024
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
DEFAULT_COMPACT_MIN_BYTES = 1024 * 1024

_TAG = b"SPOL"
_SUPERSEDES = 0x01
_PUT = 2
_ACK = 3
_BUMP = 4
_KINDS = frozenset({records.KIND_FILE_HEADER, _PUT, _ACK, _BUMP})
_PUT_HEAD = struct.Struct(">16sQIH")  # envelope id, enqueued at (ms), attempts, destination length
_ACK_BODY = struct.Struct(">16s")
_BUMP_BODY = struct.Struct(">16sI")
_SEGMENT_SUFFIX = ".seg"
_LOCK_NAME = "spool.lock"


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """One envelope waiting for delivery."""

    envelope_id: bytes
    destination: str
    data: bytes
    enqueued_at: float  # unix seconds, millisecond resolution
    attempts: int


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What opening the spool found: live entries, and the torn tail it truncated (if any)."""

    segments: int
    live_entries: int
    torn_tail: TornTail | None


@dataclass(slots=True)
class _Live:
    destination: str
    enqueued_ms: int
    attempts: int
    segment: int
    data_offset: int
    data_length: int
    record_bytes: int


def _segment_name(number: int) -> str:
    return f"{number:016d}{_SEGMENT_SUFFIX}"


def _check_id(envelope_id: bytes) -> None:
    if len(envelope_id) != ENVELOPE_ID_BYTES:
        raise ValueError(f"envelope id must be {ENVELOPE_ID_BYTES} bytes, got {len(envelope_id)}")


def _put_body(envelope_id: bytes, destination: bytes, enqueued_ms: int, attempts: int) -> bytes:
    return _PUT_HEAD.pack(envelope_id, enqueued_ms, attempts, len(destination)) + destination


class Spool:
    """A bounded, durable FIFO of envelopes per destination with dedup by envelope id.

    Args:
        directory: created if missing; holds the segments and the lock file.
        max_bytes: bound on the on-disk size of live entries (28 + 30 bytes of framing plus the
            destination and the envelope bytes each).
        segment_bytes: a new segment is started once the current one would exceed this.
        compact_min_bytes: garbage below this is never worth compacting.
        clock: returns unix seconds; the enqueue time of new entries.

    Raises:
        SpoolLocked: another process has the spool open.
        SpoolCorrupt: a segment is damaged before its tail (file and byte offset named).
        OSError: the directory cannot be created or read.
    """

    def __init__(
        self,
        directory: Path | str,
        max_bytes: int,
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        compact_min_bytes: int = DEFAULT_COMPACT_MIN_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_bytes <= 0 or segment_bytes <= 0:
            raise ValueError("max_bytes and segment_bytes must be positive")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self._segment_bytes = segment_bytes
        self._compact_min = compact_min_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[bytes, _Live] = {}  # insertion order is FIFO order
        # Live entries per destination, so "is anything waiting for X?" is O(1) on the hot path.
        self._per_destination: Counter[str] = Counter()
        self._files: dict[int, RecordFile] = {}
        self._live_bytes = 0
        self._lock_fd = self._take_lock()
        try:
            self.recovery = self._recover()
        except BaseException:
            self._release()
            raise

    # Opening -------------------------------------------------------------------------------

    def _take_lock(self) -> int:
        if not self.directory.is_dir():
            self.directory.mkdir(parents=True)
            fsync_dir(self.directory.parent)
        fd = os.open(self.directory / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpoolLocked(f"{self.directory}: spool is open in another process") from None
        return fd

    def _segment_numbers(self) -> list[int]:
        numbers = []
        for path in self.directory.iterdir():
            if path.name.endswith(_SEGMENT_SUFFIX + TMP_SUFFIX):
                path.unlink()  # an interrupted segment creation or compaction: never renamed
            elif path.suffix == _SEGMENT_SUFFIX and path.stem.isdigit():
                numbers.append(int(path.stem))
        return sorted(numbers)

    def _header_flags(self, number: int) -> int:
        path = self.directory / _segment_name(number)
        with path.open("rb") as f:
            head = f.read(records.FILE_HEADER_RECORD_BYTES)
        found, _ = records.scan(path, head, _KINDS)
        flags, _number = records.decode_file_header(path, found[:1], _TAG)
        return flags

    def _recover(self) -> RecoveryReport:
        numbers = self._segment_numbers()
        superseding = [n for n in numbers if self._header_flags(n) & _SUPERSEDES]
        if superseding:
            # A compaction finished its rename but maybe not its deletions: finish them.
            obsolete = [n for n in numbers if n < superseding[-1]]
            for n in obsolete:
                (self.directory / _segment_name(n)).unlink()
            fsync_dir(self.directory)
            numbers = [n for n in numbers if n >= superseding[-1]]
        torn: TornTail | None = None
        for index, number in enumerate(numbers):
            path = self.directory / _segment_name(number)
            rf, found, torn_here = RecordFile.open(path, _KINDS)
            self._files[number] = rf
            records.decode_file_header(path, found, _TAG)
            if torn_here is not None and index != len(numbers) - 1:
                # Older segments were fsynced whole before the next one was created.
                raise SpoolCorrupt(path, torn_here.offset, "truncated record in a closed segment")
            torn = torn_here or torn
            for record in found[1:]:
                self._replay(path, number, record)
        return RecoveryReport(len(numbers), len(self._entries), torn)

    def _replay(self, path: Path, number: int, record: RawRecord) -> None:
        body = record.body
        try:
            if record.kind == _PUT:
                envelope_id, enqueued_ms, attempts, dest_len = _PUT_HEAD.unpack_from(body)
                destination = body[_PUT_HEAD.size : _PUT_HEAD.size + dest_len].decode()
                data_start = _PUT_HEAD.size + dest_len
                if data_start > len(body):
                    raise ValueError("destination runs past the record")
                live = self._entries.get(envelope_id)
                if live is not None:
                    self._live_bytes -= live.record_bytes
                    self._uncount(live.destination)
                self._per_destination[destination] += 1
                self._entries[envelope_id] = _Live(
                    destination,
                    enqueued_ms,
                    max(attempts, live.attempts if live else 0),
                    number,
                    record.body_offset + data_start,
                    len(body) - data_start,
                    record.size,
                )
                self._live_bytes += record.size
            elif record.kind == _ACK:
                (envelope_id,) = _ACK_BODY.unpack(body)
                gone = self._entries.pop(envelope_id, None)
                if gone is not None:
                    self._live_bytes -= gone.record_bytes
                    self._uncount(gone.destination)
            elif record.kind == _BUMP:
                envelope_id, attempts = _BUMP_BODY.unpack(body)
                if (live := self._entries.get(envelope_id)) is not None:
                    live.attempts = attempts
            else:
                raise ValueError(f"unexpected record kind {record.kind}")
        except (struct.error, ValueError) as exc:  # UnicodeDecodeError is a ValueError
            raise SpoolCorrupt(path, record.offset, f"bad record body: {exc}") from None

    # Writing -------------------------------------------------------------------------------

    def _active(self, incoming: int) -> RecordFile:
        """The segment to append ``incoming`` bytes to, starting a new one when needed."""
        if self._files:
            number = max(self._files)
            current = self._files[number]
            fresh = current.size <= records.FILE_HEADER_RECORD_BYTES
            if fresh or current.size + incoming <= self._segment_bytes:
                return current
        else:
            number = 0
        new = number + 1
        header = records.encode_file_header(_TAG, new)
        rf = RecordFile.create(self.directory / _segment_name(new), [header])
        self._files[new] = rf
        return rf

    def _disk_bytes(self) -> int:
        return sum(rf.size for rf in self._files.values())

    def put(self, envelope_id: bytes, destination: str, data: bytes) -> bool:
        """Store an envelope durably (fsync before returning).

        Returns:
            ``True`` when stored; ``False`` when an entry with this id is already present (dedup:
            nothing written).

        Raises:
            SpoolFull: storing it would exceed ``max_bytes``; nothing was written.
            ValueError: the id is not 16 bytes or the destination/data exceed the record bound.
        """
        return self.put_many([(envelope_id, destination, data)])[0]

    def put_many(self, items: Iterable[tuple[bytes, str, bytes]]) -> list[bool]:
        """Store several envelopes with a single fsync (group commit).

        All or nothing: if the new ones do not fit together, :class:`SpoolFull` is raised and none
        is written. Duplicates (already present, or repeated in ``items``) give ``False``.
        """
        with self._lock:
            now_ms = int(self._clock() * 1000)
            stored: list[bool] = []
            frames: list[bytes] = []
            fresh: list[tuple[bytes, str, int, int]] = []  # id, destination, data length, size
            seen: set[bytes] = set()
            for envelope_id, destination, data in items:
                _check_id(envelope_id)
                dest = destination.encode()
                if len(dest) > MAX_DESTINATION_BYTES:
                    raise ValueError(f"destination exceeds {MAX_DESTINATION_BYTES} bytes")
                if envelope_id in self._entries or envelope_id in seen:
                    stored.append(False)
                    continue
                seen.add(envelope_id)
                frame = records.encode(_PUT, _put_body(envelope_id, dest, now_ms, 0) + data)
                frames.append(frame)
                fresh.append((envelope_id, destination, len(data), len(frame)))
                stored.append(True)
            if not frames:
                return stored
            incoming = sum(len(f) for f in frames)
            if self._live_bytes + incoming > self.max_bytes:
                raise SpoolFull(
                    f"{self.directory}: {incoming} more bytes would exceed max_bytes"
                    f" {self.max_bytes} ({self._live_bytes} in use)"
                )
            self._maybe_compact()
            rf = self._active(incoming)
            number = max(self._files)
            offset = rf.append(b"".join(frames), sync=True)
            for envelope_id, destination, data_length, size in fresh:
                head = records.HEADER_BYTES + _PUT_HEAD.size + len(destination.encode())
                self._entries[envelope_id] = _Live(
                    destination, now_ms, 0, number, offset + head, data_length, size
                )
                self._per_destination[destination] += 1
                self._live_bytes += size
                offset += size
            return stored

    def ack(self, envelope_id: bytes) -> bool:
        """Forget a delivered envelope, durably. Returns ``False`` if it was not present."""
        return self.ack_many([envelope_id]) == 1

    def ack_many(self, envelope_ids: Iterable[bytes]) -> int:
        """Forget several delivered envelopes with one fsync. Returns how many were present."""
        with self._lock:
            present = []
            for envelope_id in envelope_ids:
                _check_id(envelope_id)
                if envelope_id in self._entries and envelope_id not in present:
                    present.append(envelope_id)
            if not present:
                return 0
            frames = b"".join(records.encode(_ACK, _ACK_BODY.pack(i)) for i in present)
            self._active(len(frames)).append(frames, sync=True)
            for envelope_id in present:
                gone = self._entries.pop(envelope_id)
                self._live_bytes -= gone.record_bytes
                self._uncount(gone.destination)
            self._maybe_compact()
            return len(present)

    def bump(self, envelope_id: bytes) -> int:
        """Count one more delivery attempt, durably.

        Returns:
            The new attempt count.

        Raises:
            KeyError: no such entry.
        """
        with self._lock:
            live = self._entries[envelope_id]
            frame = records.encode(_BUMP, _BUMP_BODY.pack(envelope_id, live.attempts + 1))
            self._active(len(frame)).append(frame, sync=True)
            live.attempts += 1
            return live.attempts

    # Reading -------------------------------------------------------------------------------

    def pending(self, destination: str | None = None) -> Iterator[SpoolEntry]:
        """The entries (for one destination, or all) in FIFO order.

        The order is fixed when iteration starts; an entry acknowledged meanwhile is skipped, one
        added meanwhile is not included. Each entry's bytes are read from disk when yielded.
        """
        with self._lock:
            order = [
                i for i, live in self._entries.items()
                if destination is None or live.destination == destination
            ]
        for envelope_id in order:
            entry = self.get(envelope_id)
            if entry is not None:
                yield entry

    def get(self, envelope_id: bytes) -> SpoolEntry | None:
        """The entry with this id, or ``None``."""
        with self._lock:
            live = self._entries.get(envelope_id)
            if live is None:
                return None
            data = self._files[live.segment].read(live.data_offset, live.data_length)
            return SpoolEntry(
                envelope_id, live.destination, data, live.enqueued_ms / 1000, live.attempts
            )

    def destinations(self) -> set[str]:
        """The destinations that have entries waiting."""
        with self._lock:
            return set(self._per_destination)

    def waiting_for(self, destination: str) -> int:
        """How many entries wait for ``destination`` (O(1))."""
        with self._lock:
            return self._per_destination.get(destination, 0)

    def _uncount(self, destination: str) -> None:
        left = self._per_destination[destination] - 1
        if left:
            self._per_destination[destination] = left
        else:
            del self._per_destination[destination]

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, envelope_id: object) -> bool:
        return envelope_id in self._entries

    @property
    def live_bytes(self) -> int:
        """On-disk bytes of the live entries' records (what ``max_bytes`` bounds)."""
        return self._live_bytes

    @property
    def disk_bytes(self) -> int:
        """Total size of the segments, garbage included."""
        with self._lock:
            return self._disk_bytes()

    # Compaction ----------------------------------------------------------------------------

    def _maybe_compact(self) -> None:
        garbage = self._disk_bytes() - self._live_bytes
        if garbage > max(self._live_bytes, self._compact_min):
            self._compact()

    def compact(self) -> None:
        """Rewrite the live entries into one new segment and delete the older ones."""
        with self._lock:
            self._compact()

    def _compact(self) -> None:
        number = max(self._files, default=0) + 1
        path = self.directory / _segment_name(number)
        moved: dict[bytes, tuple[int, int]] = {}  # id -> (data offset, record size) in new file

        def chunks() -> Iterator[bytes]:
            offset = 0
            header = records.encode_file_header(_TAG, number, _SUPERSEDES)
            yield header
            offset += len(header)
            for envelope_id, live in self._entries.items():
                data = self._files[live.segment].read(live.data_offset, live.data_length)
                dest = live.destination.encode()
                body = _put_body(envelope_id, dest, live.enqueued_ms, live.attempts)
                frame = records.encode(_PUT, body + data)
                moved[envelope_id] = (offset + records.HEADER_BYTES + len(body), len(frame))
                offset += len(frame)
                yield frame

        new = RecordFile.create(path, chunks())
        # From here the new segment supersedes the others, even if we crash before deleting them.
        for rf in self._files.values():
            rf.close()
            rf.path.unlink()
        fsync_dir(self.directory)
        self._files = {number: new}
        self._live_bytes = 0
        for envelope_id, live in self._entries.items():
            live.segment = number
            live.data_offset, live.record_bytes = moved[envelope_id]
            self._live_bytes += live.record_bytes

    # Closing -------------------------------------------------------------------------------

    def _release(self) -> None:
        for rf in self._files.values():
            rf.close()
        self._files = {}
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = -1

    def close(self) -> None:
        """Close the files and release the directory lock. Everything is already durable."""
        with self._lock:
            self._release()

    def __enter__(self) -> Spool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
