"""Theory of operation: the gateway's append-only audit log writer.

:meth:`AuditLog.open` resumes the chain of an existing file: it reads only the tail (bounded by
three maximal lines), truncates a torn last line (the append that wrote it never returned, so
nothing acknowledged is lost) and reports it in ``torn_tail``, then checks the last line's own
hash and its link to the line before. It refuses to extend a chain whose tail is broken: a full
``verify`` of a large log is the operator's job (``sluice audit verify``), not the hot path's.

Durability modes (``fsync=``):

* ``"always"``: every :meth:`AuditLog.append` returns after ``fsync``: a decision the gateway acted
  on is on disk before the envelope moves on;
* ``"batch"``: ``fsync`` after every ``batch_records`` appends and on :meth:`flush` / :meth:`close`
  (group commit; the daemon calls ``flush`` on a timer and before ACKing a batch). A crash can
  lose the unflushed tail, never corrupt the chain;
* ``"never"``: left to the OS (tests, benchmarks).

Thread safety: one writer per file (an ``flock`` refuses a second process); appends are serialised
by an internal lock, so the daemon may call from several worker threads. Blocking: run it in
``trio.to_thread.run_sync``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

from gateway.audit.record import (
    MAX_LINE_BYTES,
    AuditEntry,
    AuditFormatError,
    AuditRecord,
    genesis,
    parse_line,
    seal_with_line,
)
from gateway.spool._fs import open_exclusive, write_all

FsyncMode = Literal["always", "batch", "never"]
DEFAULT_BATCH_RECORDS = 256


class AuditLogError(Exception):
    """The log cannot be opened for appending: its tail is broken, or another process has it."""


@dataclass(frozen=True, slots=True)
class TruncatedTail:
    """A torn last line cut off when the log was opened: ``dropped`` bytes at ``offset``."""

    offset: int
    dropped: int


class AuditLog:
    """An open audit log; build it with :meth:`open`."""

    def __init__(
        self,
        path: Path,
        fd: int,
        size: int,
        *,
        gateway_id: str,
        fsync: FsyncMode,
        batch_records: int,
        last: AuditEntry | None,
        torn_tail: TruncatedTail | None,
        clock: Callable[[], float],
    ) -> None:
        self.path = path
        self.gateway_id = gateway_id
        self.torn_tail = torn_tail
        self._fd = fd
        self._size = size
        self._mode = fsync
        self._batch = batch_records
        self._unsynced = 0
        self._clock = clock
        self._lock = threading.Lock()
        self._seq = last.seq if last else 0
        self._prev = last.hash if last else genesis(gateway_id)

    @classmethod
    def open(
        cls,
        path: Path | str,
        *,
        gateway_id: str,
        fsync: FsyncMode = "always",
        batch_records: int = DEFAULT_BATCH_RECORDS,
        clock: Callable[[], float] = time.time,
    ) -> AuditLog:
        """Open (creating if needed) the log at ``path`` and resume its chain.

        Args:
            gateway_id: this gateway's SPIFFE ID; names the genesis of a new log.
            fsync: durability mode (see the module docstring).
            batch_records: in ``"batch"`` mode, fsync after this many appends.
            clock: unix seconds for the records' ``ts_ms``.

        Raises:
            AuditLogError: the last line is not a valid record or does not chain to the one
                before it (message names the line's byte offset), or the log is open elsewhere.
            OSError: the file cannot be created or read.
        """
        if fsync not in ("always", "batch", "never"):
            raise ValueError(f"fsync must be always, batch or never, not {fsync!r}")
        path = Path(path)
        fd = open_exclusive(
            path, lambda: AuditLogError(f"{path}: audit log is open in another process")
        )
        try:
            size, last, torn = _resume(path, fd)
        except BaseException:
            os.close(fd)
            raise
        return cls(
            path, fd, size, gateway_id=gateway_id, fsync=fsync, batch_records=batch_records,
            last=last, torn_tail=torn, clock=clock,
        )

    @property
    def last_seq(self) -> int:
        return self._seq

    @property
    def last_hash(self) -> bytes:
        """The hash of the last line (the genesis value for an empty log)."""
        return self._prev

    def append(self, record: AuditRecord, *, now: float | None = None) -> AuditEntry:
        """Append one decision; durable on return in ``"always"`` mode.

        Raises:
            AuditFormatError: the record's line would exceed ``MAX_LINE_BYTES``.
            OSError: the write or fsync failed; the chain is not advanced.
        """
        return self.append_many([record], now=now)[0]

    def append_many(
        self, records: Iterable[AuditRecord], *, now: float | None = None
    ) -> list[AuditEntry]:
        """Append several decisions with one write (and, unless ``"never"``, one fsync)."""
        with self._lock:
            ts_ms = int((self._clock() if now is None else now) * 1000)
            seq, prev = self._seq, self._prev
            entries = []
            lines = []
            for record in records:
                seq += 1
                entry, line = seal_with_line(seq, ts_ms, record, prev)
                if len(line) > MAX_LINE_BYTES:
                    raise AuditFormatError(f"record line of {len(line)} bytes exceeds the bound")
                entries.append(entry)
                lines.append(line)
                prev = entry.hash
            if not entries:
                return entries
            data = b"".join(lines)
            write_all(self._fd, data, self._size)
            self._unsynced += len(entries)
            if self._mode == "always" or (
                self._mode == "batch" and self._unsynced >= self._batch
            ):
                os.fsync(self._fd)
                self._unsynced = 0
            self._size += len(data)
            self._seq, self._prev = seq, prev
            return entries

    def sync(self) -> int:
        """fsync what was appended so far *without* holding the append lock, so appends from
        another thread (the event loop) go on during the fsync; for interval group commit.

        Returns:
            How many records this call made durable.
        """
        with self._lock:
            pending, self._unsynced = self._unsynced, 0
            fd = self._fd
        if pending and fd >= 0:
            os.fsync(fd)
        return pending

    def flush(self) -> None:
        """Make every appended record durable now (fsync), whatever the mode."""
        with self._lock:
            if self._unsynced:
                os.fsync(self._fd)
                self._unsynced = 0

    def close(self) -> None:
        """Flush and close; releases the lock."""
        with self._lock:
            if self._fd < 0:
                return
            if self._unsynced and self._mode != "never":
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _resume(path: Path, fd: int) -> tuple[int, AuditEntry | None, TruncatedTail | None]:
    """Find and check the last line; truncate a torn one. Returns (size, last entry, torn)."""
    size = os.fstat(fd).st_size
    # Three maximal lines: after dropping a partial first line, the last two are whole.
    window = min(size, 3 * (MAX_LINE_BYTES + 1))
    start = size - window
    tail = os.pread(fd, window, start)
    torn = None
    if tail and not tail.endswith(b"\n"):
        cut = tail.rfind(b"\n") + 1
        if cut == 0 and start > 0:
            raise AuditLogError(f"{path}: no line break in the last {window} bytes")
        os.ftruncate(fd, start + cut)
        os.fsync(fd)
        torn = TruncatedTail(start + cut, size - start - cut)
        size = start + cut
        tail = tail[:cut]
    if not tail:
        return size, None, torn
    lines = tail[:-1].split(b"\n")
    if start > 0:
        lines = lines[1:]  # may begin mid-line
    if not lines:
        raise AuditLogError(f"{path}: no complete line in the last {window} bytes")
    last_offset = size - len(lines[-1]) - 1
    try:
        last, computed = parse_line(lines[-1])
    except AuditFormatError as exc:
        raise AuditLogError(f"{path}: last line (byte {last_offset}): {exc}") from None
    if computed != last.hash:
        raise AuditLogError(f"{path}: last line (byte {last_offset}): hash mismatch")
    if len(lines) >= 2:
        try:
            before, _ = parse_line(lines[-2])
        except AuditFormatError as exc:
            raise AuditLogError(f"{path}: line before byte {last_offset}: {exc}") from None
        if before.hash != last.prev or before.seq + 1 != last.seq:
            raise AuditLogError(f"{path}: last line (byte {last_offset}) does not chain")
    elif start == 0 and last.prev != genesis(last.record.gateway):
        raise AuditLogError(f"{path}: only line does not start at the genesis value")
    return size, last, torn
