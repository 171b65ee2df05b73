"""Errors raised by the spool and the delivered set."""

from __future__ import annotations

from pathlib import Path


class SpoolError(Exception):
    """Base class for spool and delivered-set errors."""


class SpoolFull(SpoolError):
    """Accepting the record would exceed the configured bound; nothing was written.

    The daemon answers the sender with ``Reason.OVERLOADED``: the envelope is refused, never
    dropped silently.
    """


class SpoolLocked(SpoolError):
    """Another process holds the directory's lock: there is a single writer per spool."""


class SpoolCorrupt(SpoolError):
    """A record *before* the end of a file failed its checks.

    A torn final record is the normal result of a crash and is repaired silently (and reported in
    the recovery report); damage anywhere else means acknowledged data may be lost, so we refuse
    to open rather than skip it. ``path`` and ``offset`` say where; the operator moves the file
    aside (see docs/audit.md, "Spool recovery") after saving it for inspection.
    """

    def __init__(self, path: Path, offset: int, detail: str) -> None:
        super().__init__(f"{path}: corrupt record at byte {offset}: {detail}")
        self.path = path
        self.offset = offset
        self.detail = detail
