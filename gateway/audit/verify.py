"""Read an audit log and find the first broken link of its hash chain.

Checks per line, in this order, stopping at the first failure (everything after a break is
unproven, so reporting more would only be noise):

1. ``torn_tail``: the last line has no newline (a crash mid-write, or truncation);
2. ``malformed``: not canonical JSON of an audit record (byte offset of the line given);
3. ``hash_mismatch``: the recorded ``hash`` is not the hash of the line's content (a field
   was edited);
4. ``sequence_gap``: ``seq`` is not one more than the previous line's (a line was deleted,
   inserted or moved);
5. ``prev_mismatch``: ``prev`` is not the previous line's hash (a line was replaced by one with a
   recomputed hash, or the log does not start at its genesis).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from gateway.audit.record import MAX_LINE_BYTES, AuditEntry, AuditFormatError, genesis, parse_line


class LinkProblem(enum.StrEnum):
    TORN_TAIL = "torn_tail"
    MALFORMED = "malformed"
    HASH_MISMATCH = "hash_mismatch"
    SEQUENCE_GAP = "sequence_gap"
    PREV_MISMATCH = "prev_mismatch"


@dataclass(frozen=True, slots=True)
class BrokenLink:
    """Where the chain first breaks. ``seq`` is the line's recorded sequence number, if readable."""

    problem: LinkProblem
    line: int  # 1-based
    offset: int  # byte offset of the start of the line
    seq: int | None
    detail: str

    def __str__(self) -> str:
        seq = f", seq {self.seq}" if self.seq is not None else ""
        return f"line {self.line} (byte {self.offset}{seq}): {self.problem}: {self.detail}"


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The outcome of :func:`verify`: ``records`` lines verified before ``broken`` (if any)."""

    records: int
    last_seq: int | None
    last_hash: bytes | None  # of the last verified line
    broken: BrokenLink | None

    @property
    def ok(self) -> bool:
        return self.broken is None


@dataclass(frozen=True, slots=True)
class RawLine:
    number: int  # 1-based
    offset: int
    text: bytes  # without the newline
    complete: bool  # ended with a newline


def iter_lines(f: BinaryIO) -> Iterator[RawLine]:
    """The lines of an open log, each bounded by ``MAX_LINE_BYTES`` (a longer one is returned
    cut, ``complete=False``, and the reader stops after it)."""
    offset = 0
    number = 0
    while True:
        chunk = f.readline(MAX_LINE_BYTES + 1)
        if not chunk:
            return
        number += 1
        complete = chunk.endswith(b"\n")
        yield RawLine(number, offset, chunk[:-1] if complete else chunk, complete)
        if not complete:
            return
        offset += len(chunk)


def check_line(raw: RawLine, expected_seq: int, expected_prev: bytes | None) -> AuditEntry:
    """Check one line against its expected place in the chain.

    ``expected_prev`` is ``None`` for the first line (its genesis depends on its gateway).

    Raises:
        _Broken: carrying the :class:`BrokenLink`.
    """
    if not raw.complete:
        if len(raw.text) > MAX_LINE_BYTES:
            raise _Broken(raw, LinkProblem.MALFORMED, None, f"longer than {MAX_LINE_BYTES} bytes")
        raise _Broken(raw, LinkProblem.TORN_TAIL, None, f"{len(raw.text)} bytes without newline")
    try:
        entry, computed = parse_line(raw.text)
    except AuditFormatError as exc:
        raise _Broken(raw, LinkProblem.MALFORMED, None, str(exc)) from None
    if computed != entry.hash:
        raise _Broken(
            raw, LinkProblem.HASH_MISMATCH, entry.seq,
            f"recorded {entry.hash.hex()}, content hashes to {computed.hex()}",
        )
    if entry.seq != expected_seq:
        raise _Broken(
            raw, LinkProblem.SEQUENCE_GAP, entry.seq, f"expected seq {expected_seq}"
        )
    want = genesis(entry.record.gateway) if expected_prev is None else expected_prev
    if entry.prev != want:
        what = "genesis" if expected_prev is None else "previous line's hash"
        raise _Broken(
            raw, LinkProblem.PREV_MISMATCH, entry.seq,
            f"prev {entry.prev.hex()} is not the {what} {want.hex()}",
        )
    return entry


class _Broken(Exception):
    def __init__(self, raw: RawLine, problem: LinkProblem, seq: int | None, detail: str) -> None:
        super().__init__(detail)
        self.link = BrokenLink(problem, raw.number, raw.offset, seq, detail)


def verify(path: Path | str) -> VerifyReport:
    """Verify the whole chain of the log at ``path``, stopping at the first broken link.

    Returns:
        A report; ``report.ok`` when every line verified (an empty file is a valid empty log).

    Raises:
        OSError: the file cannot be read.
    """
    last: AuditEntry | None = None
    count = 0
    with Path(path).open("rb") as f:
        for raw in iter_lines(f):
            try:
                last = check_line(raw, count + 1, None if last is None else last.hash)
            except _Broken as broken:
                return _report(count, last, broken.link)
            count += 1
    return _report(count, last, None)


def _report(count: int, last: AuditEntry | None, broken: BrokenLink | None) -> VerifyReport:
    return VerifyReport(
        count, last.seq if last else None, last.hash if last else None, broken
    )


def read_entries(path: Path | str) -> Iterator[AuditEntry]:
    """The entries of a log, parsed strictly but without checking the chain (for ``show``).

    Raises:
        AuditFormatError: a line is malformed or torn; the message names line and byte offset.
    """
    with Path(path).open("rb") as f:
        for raw in iter_lines(f):
            where = f"{path}: line {raw.number} (byte {raw.offset})"
            if not raw.complete:
                raise AuditFormatError(f"{where}: incomplete last line")
            try:
                entry, _computed = parse_line(raw.text)
            except AuditFormatError as exc:
                raise AuditFormatError(f"{where}: {exc}") from None
            yield entry
