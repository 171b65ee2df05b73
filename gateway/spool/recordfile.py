"""One append-only file of framed records (see :mod:`gateway.spool.records`), opened for writing.

Not thread-safe by itself: the owner (spool or delivered set) serialises calls with its own lock.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from gateway.spool import records
from gateway.spool._fs import atomic_create, write_all
from gateway.spool.records import RawRecord, TornTail


class RecordFile:
    """An open record file: append framed records, read back byte ranges, fsync."""

    def __init__(self, path: Path, fd: int, size: int) -> None:
        self.path = path
        self._fd = fd
        self.size = size

    @classmethod
    def create(cls, path: Path, chunks: Iterable[bytes]) -> RecordFile:
        """Atomically create ``path`` holding the framed records in ``chunks`` (temp file, fsync,
        rename, fsync of the directory) and open it for appending."""
        size = atomic_create(path, chunks)
        fd = os.open(path, os.O_RDWR)
        return cls(path, fd, size)

    @classmethod
    def open(
        cls, path: Path, known_kinds: frozenset[int]
    ) -> tuple[RecordFile, list[RawRecord], TornTail | None]:
        """Open an existing file, scan it and truncate (durably) a torn tail.

        Returns:
            The open file, its valid records, and what was cut off (``None`` if nothing).

        Raises:
            SpoolCorrupt: damage before the tail (nothing is modified in that case).
        """
        fd = os.open(path, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            data = os.pread(fd, size, 0) if size else b""
            found, valid_end = records.scan(path, data, known_kinds)
            torn = None
            if valid_end < size:
                os.ftruncate(fd, valid_end)
                os.fsync(fd)
                torn = TornTail(path, valid_end, size - valid_end)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, valid_end), found, torn

    def append(self, frames: bytes, *, sync: bool) -> int:
        """Write ``frames`` at the end; fsync when ``sync``. Returns the offset written at.

        A failed write leaves the size unchanged so the next append overwrites the partial
        bytes; recovery would treat them as a torn tail anyway.
        """
        offset = self.size
        write_all(self._fd, frames, offset)
        if sync:
            os.fsync(self._fd)
        self.size = offset + len(frames)
        return offset

    def sync(self) -> None:
        os.fsync(self._fd)

    def read(self, offset: int, length: int) -> bytes:
        data = os.pread(self._fd, length, offset)
        if len(data) != length:
            raise OSError(f"{self.path}: short read at byte {offset}")
        return data

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
