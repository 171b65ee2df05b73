"""Theory of operation: the receiving side's durable memory of what it already delivered.

At-least-once delivery means the same envelope can arrive twice (a sender retried because our
ACK was lost, or it restarted from its spool). :class:`DeliveredSet` remembers the ids delivered
to the application until they expire (the envelope's own ``expires_at`` plus clock skew: after
that the replay window refuses the envelope anyway), so the daemon hands each envelope to the
application at most once, across restarts.

Order of operations for the daemon: ``add`` (durable) *before* handing the bytes to the
application, then ACK upstream. A crash between ``add`` and delivery loses that one envelope only
if the application never received it; a daemon that needs exactly-once must deliver through an
application-level acknowledgement and ``add`` after it. Either way ``add`` says which case we
are in (``False``: already delivered, do not deliver again).

Format: one file ``delivered.log`` of framed records (:mod:`gateway.spool.records`): a header,
then ``DELIVERED(envelope id, expires at ms)``. When the file holds more than twice the live ids
(plus slack), it is rewritten with only the live ones (temp file, fsync, rename, directory fsync).

Bounds: at most ``max_entries`` unexpired ids; beyond that :class:`SpoolFull` (never evict a live
id, which would allow a duplicate). Thread safety: as :class:`gateway.spool.Spool`: an ``flock``
on the file's lock for one process, an internal lock for threads.
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType

from gateway.spool import records
from gateway.spool._fs import TMP_SUFFIX, fsync_dir
from gateway.spool.errors import SpoolCorrupt, SpoolFull, SpoolLocked
from gateway.spool.recordfile import RecordFile
from gateway.spool.records import TornTail

_TAG = b"DLVR"
_DELIVERED = 5
_KINDS = frozenset({records.KIND_FILE_HEADER, _DELIVERED})
_BODY = struct.Struct(">16sQ")
_FILE = "delivered.log"
_LOCK = "delivered.lock"
COMPACT_SLACK = 4096  # records of garbage always tolerated before rewriting


class DeliveredSet:
    """A bounded persistent set of recently delivered envelope ids with expiry.

    Args:
        directory: created if missing; holds ``delivered.log`` and ``delivered.lock``.
        max_entries: bound on unexpired ids held.
        clock: unix seconds, used when ``now`` is not passed.

    Raises:
        SpoolLocked: another process has the set open.
        SpoolCorrupt: the file is damaged before its tail.
    """

    def __init__(
        self,
        directory: Path | str,
        max_entries: int,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = Path(directory)
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._expiry: dict[bytes, int] = {}  # id -> expires at, ms
        self._records = 0
        self._next_check = COMPACT_SLACK
        if not self.directory.is_dir():
            self.directory.mkdir(parents=True)
            fsync_dir(self.directory.parent)
        self._lock_fd = os.open(self.directory / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise SpoolLocked(f"{self.directory}: delivered set is open elsewhere") from None
        try:
            self._file, self.torn_tail = self._open()
        except BaseException:
            os.close(self._lock_fd)
            raise

    def _open(self) -> tuple[RecordFile, TornTail | None]:
        path = self.directory / _FILE
        (self.directory / (_FILE + TMP_SUFFIX)).unlink(missing_ok=True)
        if not path.exists():
            return RecordFile.create(path, [records.encode_file_header(_TAG, 1)]), None
        rf, found, torn = RecordFile.open(path, _KINDS)
        try:
            records.decode_file_header(path, found, _TAG)
            now_ms = self._now_ms(None)
            for record in found[1:]:
                if record.kind != _DELIVERED or len(record.body) != _BODY.size:
                    raise SpoolCorrupt(path, record.offset, "not a DELIVERED record")
                envelope_id, expires_ms = _BODY.unpack(record.body)
                if expires_ms > now_ms:
                    self._expiry[envelope_id] = max(expires_ms, self._expiry.get(envelope_id, 0))
            self._records = len(found) - 1
        except BaseException:
            rf.close()
            raise
        return rf, torn

    def _now_ms(self, now: float | None) -> int:
        return int((self._clock() if now is None else now) * 1000)

    def add(self, envelope_id: bytes, expires_at: float, *, now: float | None = None) -> bool:
        """Record a delivery durably (fsync before returning).

        Returns:
            ``True`` if recorded now; ``False`` if the id was already delivered and has not expired
            (do not deliver it again).

        Raises:
            SpoolFull: ``max_entries`` unexpired ids are held; nothing written.
        """
        return self.add_many([(envelope_id, expires_at)], now=now)[0]

    def add_many(
        self, items: Iterable[tuple[bytes, float]], *, now: float | None = None
    ) -> list[bool]:
        """Record several deliveries with one fsync; as :meth:`add` for each (all or nothing on
        :class:`SpoolFull`)."""
        with self._lock:
            now_ms = self._now_ms(now)
            fresh: dict[bytes, int] = {}
            result = []
            for envelope_id, expires_at in items:
                if len(envelope_id) != 16:
                    raise ValueError(f"envelope id must be 16 bytes, got {len(envelope_id)}")
                if self._expiry.get(envelope_id, 0) > now_ms or envelope_id in fresh:
                    result.append(False)
                    continue
                fresh[envelope_id] = int(expires_at * 1000)
                result.append(True)
            if not fresh:
                return result
            if len(self._expiry) + len(fresh) > self.max_entries:
                self._purge(now_ms)
                if len(self._expiry) + len(fresh) > self.max_entries:
                    raise SpoolFull(f"{self.directory}: {self.max_entries} delivered ids held")
            frames = b"".join(
                records.encode(_DELIVERED, _BODY.pack(i, e)) for i, e in fresh.items()
            )
            self._file.append(frames, sync=True)
            self._expiry.update(fresh)
            self._records += len(fresh)
            if self._records > self._next_check:
                self._purge(now_ms)
                if self._records > 2 * len(self._expiry):
                    self._rewrite()
                self._next_check = self._records + len(self._expiry) + COMPACT_SLACK
            return result

    def contains(self, envelope_id: bytes, *, now: float | None = None) -> bool:
        """True when ``envelope_id`` was delivered and has not expired."""
        with self._lock:
            return self._expiry.get(envelope_id, 0) > self._now_ms(now)

    def __len__(self) -> int:
        return len(self._expiry)

    def _purge(self, now_ms: int) -> None:
        self._expiry = {i: e for i, e in self._expiry.items() if e > now_ms}

    def _rewrite(self) -> None:
        header = records.encode_file_header(_TAG, 1)
        body = (records.encode(_DELIVERED, _BODY.pack(i, e)) for i, e in self._expiry.items())
        new = RecordFile.create(self.directory / _FILE, [header, *body])
        self._file.close()
        self._file = new
        self._records = len(self._expiry)

    def close(self) -> None:
        """Close the file and release the lock; everything is already durable."""
        with self._lock:
            self._file.close()
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1

    def __enter__(self) -> DeliveredSet:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
