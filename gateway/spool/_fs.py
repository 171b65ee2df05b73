"""Small durable-file helpers shared by the spool, the delivered set and the audit log.

Why each step is here: ``fsync`` on a file makes its *contents* durable; the *name* of a newly
created or renamed file lives in the directory, so the directory must be fsynced too, or a crash
can leave a durable file that no name points to (POSIX says nothing; ext4 and XFS need it).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterable
from pathlib import Path

TMP_SUFFIX = ".tmp"


def fsync_dir(directory: Path) -> None:
    """Make the directory entries (creations, renames, unlinks) in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_exclusive(path: Path, busy: Callable[[], Exception]) -> int:
    """Open ``path`` read-write (creating it durably) under an exclusive, non-blocking ``flock``.

    One writer per file is what keeps an append-only hash chain linear; a second process gets
    ``busy()`` raised instead of interleaving its appends.

    Returns:
        The file descriptor; the caller closes it (which releases the lock).
    """
    created = not path.exists()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy() from None
        if created:
            os.fsync(fd)
            fsync_dir(path.parent.resolve())
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_all(fd: int, data: bytes, offset: int) -> None:
    """Write every byte of ``data`` at ``offset`` (``pwrite`` may write less than asked)."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def atomic_create(path: Path, chunks: Iterable[bytes]) -> int:
    """Create (or replace) ``path`` holding the concatenated ``chunks``, durably and atomically.

    The bytes go to ``<path>.tmp``, which is fsynced, renamed over ``path``, and the directory is
    fsynced, so after a crash ``path`` holds either its old content or all of the new one (a
    leftover ``.tmp`` file is deleted by the owner on its next open).

    Returns:
        The number of bytes written.
    """
    tmp = path.with_name(path.name + TMP_SUFFIX)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    size = 0
    try:
        for chunk in chunks:
            write_all(fd, chunk, size)
            size += len(chunk)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return size
