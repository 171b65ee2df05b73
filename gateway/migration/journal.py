"""Theory of operation: the migration journal, append-only, hash-chained, fsynced JSON lines.

Every stage transition is a record, written and fsynced *before* the next thing happens:

* ``journal``: the first record; binds the journal to the plan's SHA-256 (a plan edited in the
  middle of a migration is refused rather than half-applied);
* ``attempt``: a unit (``S1`` or ``S4:worker-1``) starts moving in a direction
  (``advance`` / ``rollback``); ``blocked``: a precondition refused an attempt (nothing was done);
* ``begin`` / ``done`` of each step (``done`` says ``how``: ``ran``, ``rerun`` or ``verified``);
  ``failed``: the step's command failed, the step stays undone;
* ``probe``: a probe baseline; ``verified``: the unit's verification result;
* ``complete``: the unit reached the end of its direction.

The state of every unit is the fold of the records (:func:`fold`). A crash between ``begin`` and
``done`` leaves an *open* step: the runner asks the executor whether its effect is present and
records ``done how=verified``, or runs it again; it never repeats a ``done`` step and never skips an
open one. Each line carries ``prev`` (the hash of the line before; a per-journal genesis for the
first) and ``hash`` = BLAKE2b-256 of its canonical JSON without ``hash``, like the audit log, so an
edited, dropped or reordered line is found on open. A torn last line (a crash during ``write``)
was never acknowledged and is truncated; damage anywhere else is refused with the line number.
One writer at a time (``flock``).
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from gateway.spool._fs import open_exclusive, write_all

FORMAT = 1
MAX_LINE_BYTES = 64 * 1024
MAX_JOURNAL_BYTES = 256 * 1024 * 1024
_GENESIS = hashlib.blake2b(b"sluice migration journal v1\x00", digest_size=32).hexdigest()

EVENTS = (
    "journal", "attempt", "blocked", "begin", "done", "failed", "probe", "verified", "complete",
)


class JournalError(Exception):
    """The journal cannot be used: damaged (message names the line), or open elsewhere."""


class Direction(enum.StrEnum):
    ADVANCE = "advance"
    ROLLBACK = "rollback"


class UnitStatus(enum.StrEnum):
    PENDING = "pending"  # never advanced, or rolled back completely
    IN_PROGRESS = "in_progress"  # an attempt started and has not completed
    DONE = "done"  # advanced and verified


class Placement(enum.StrEnum):
    """Where a node's workloads are, for the gateway's router."""

    WEAVE = "weave"
    CUTOVER = "cutover"  # drained, moving: the router spools envelopes for this node
    CILIUM = "cilium"


@dataclass(slots=True)
class UnitState:
    """The fold of one unit's records."""

    status: UnitStatus = UnitStatus.PENDING
    direction: Direction | None = None
    steps_done: list[str] = field(default_factory=list)  # of the current attempt, in order
    open_step: str | None = None
    open_since_ms: int = 0
    verified: bool | None = None
    last_detail: str = ""
    attempts: int = 0


@dataclass(slots=True)
class JournalState:
    plan_digest: str = ""
    units: dict[str, UnitState] = field(default_factory=dict)
    placement: dict[str, Placement] = field(default_factory=dict)
    baseline: dict[str, str] | None = None
    records: int = 0

    def unit(self, unit: str) -> UnitState:
        return self.units.get(unit) or UnitState()


def canonical(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _hash(body: Mapping[str, Any]) -> str:
    return hashlib.blake2b(canonical(body), digest_size=32).hexdigest()


def apply(state: JournalState, rec: Mapping[str, Any]) -> None:
    """Fold one record into ``state`` (the records were checked by :func:`parse_line`)."""
    state.records += 1
    event = rec["event"]
    if event == "journal":
        state.plan_digest = rec["plan"]
        return
    if event == "probe":
        state.baseline = dict(rec["decisions"])
        return
    unit_id = rec["unit"]
    unit = state.units.setdefault(unit_id, UnitState())
    match event:
        case "attempt":
            unit.status = UnitStatus.IN_PROGRESS
            unit.direction = Direction(rec["direction"])
            unit.steps_done = []
            unit.open_step = None
            unit.verified = None
            unit.attempts += 1
        case "blocked":
            unit.last_detail = rec.get("detail", "")
        case "begin":
            unit.open_step = rec["step"]
            unit.open_since_ms = rec["ts_ms"]
        case "done":
            unit.steps_done.append(rec["step"])
            unit.open_step = None
            if "placement" in rec and "node" in rec:
                state.placement[rec["node"]] = Placement(rec["placement"])
        case "failed":
            unit.last_detail = rec.get("detail", "")
        case "verified":
            unit.verified = bool(rec["ok"])
            unit.last_detail = rec.get("detail", "")
        case "complete":
            advanced = rec["direction"] == Direction.ADVANCE
            unit.status = UnitStatus.DONE if advanced else UnitStatus.PENDING
            unit.open_step = None


def parse_line(raw: bytes, number: int, prev: str) -> dict[str, Any]:
    """Decode and check one line (``number`` is 1-based, for messages).

    Raises:
        JournalError: not JSON, an unknown event, a missing field, or a broken chain link.
    """
    try:
        rec = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise JournalError(f"line {number}: not a JSON record") from None
    if not isinstance(rec, dict) or rec.get("event") not in EVENTS:
        raise JournalError(f"line {number}: not a journal record")
    claimed = rec.pop("hash", None)
    if rec.get("prev") != prev:
        raise JournalError(f"line {number}: does not chain to line {number - 1} (edited?)")
    if claimed != _hash(rec):
        raise JournalError(f"line {number}: hash mismatch (the line was altered)")
    needed = {"journal": ("plan",), "probe": ("decisions",), "attempt": ("unit", "direction")}
    for key in ("seq", "ts_ms", *needed.get(rec["event"], ("unit",))):
        if key not in rec:
            raise JournalError(f"line {number}: missing field {key!r}")
    if rec["event"] in ("begin", "done") and not isinstance(rec.get("step"), str):
        raise JournalError(f"line {number}: missing field 'step'")
    rec["hash"] = claimed
    return rec


class Journal:
    """An open journal; use :meth:`open`. Not thread-safe: one CLI process drives it."""

    def __init__(
        self, path: Path, fd: int, size: int, state: JournalState, prev: str,
        clock: Callable[[], float],
    ) -> None:
        self.path = path
        self.state = state
        self._fd = fd
        self._size = size
        self._prev = prev
        self._clock = clock

    @classmethod
    def open(
        cls, path: Path | str, *, plan_digest: str, clock: Callable[[], float] = time.time
    ) -> Journal:
        """Open (creating if needed) and fold the journal at ``path``.

        Args:
            plan_digest: SHA-256 hex of the plan file; recorded in a new journal, compared in an
                existing one.

        Raises:
            JournalError: damaged, open in another process, or started with another plan.
            OSError: cannot be created or read.
        """
        path = Path(path)
        fd = open_exclusive(
            path, lambda: JournalError(f"{path}: journal is in use by another sluice")
        )
        try:
            state, size, prev = _read(path, fd)
        except BaseException:
            os.close(fd)
            raise
        journal = cls(path, fd, size, state, prev, clock)
        if state.records == 0:
            journal.append("journal", plan=plan_digest, format=FORMAT)
        elif state.plan_digest != plan_digest:
            journal.close()
            raise JournalError(
                f"{path}: the plan changed since this journal started (plan sha256 "
                f"{state.plan_digest[:12]}..., now {plan_digest[:12]}...): restore the plan "
                "file or start a new journal"
            )
        return journal

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one record and fsync it; the state is folded only once it is durable.

        Raises:
            OSError: the write or fsync failed (the record and state are not advanced).
        """
        if event not in EVENTS:
            raise ValueError(f"unknown journal event {event!r}")
        body = {
            **fields,
            "event": event,
            "seq": self.state.records + 1,
            "ts_ms": int(self._clock() * 1000),
            "prev": self._prev,
        }
        rec = {**body, "hash": _hash(body)}
        line = canonical(rec) + b"\n"
        if len(line) > MAX_LINE_BYTES:
            raise ValueError(f"journal record of {len(line)} bytes exceeds the bound")
        write_all(self._fd, line, self._size)
        os.fsync(self._fd)
        self._size += len(line)
        self._prev = rec["hash"]
        apply(self.state, rec)
        return rec

    def placement(self) -> Mapping[str, Placement]:
        """Hook for the gateway's router: each node the journal has moved, and where its
        workloads are. A node absent from the mapping is on Weave."""
        return dict(self.state.placement)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Journal:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _read(path: Path, fd: int) -> tuple[JournalState, int, str]:
    size = os.fstat(fd).st_size
    if size > MAX_JOURNAL_BYTES:
        raise JournalError(f"{path}: larger than {MAX_JOURNAL_BYTES} bytes")
    data = os.pread(fd, size, 0)
    state = JournalState()
    prev = _GENESIS
    offset = 0
    lines = data.split(b"\n")
    for number, raw in enumerate(lines, start=1):
        last = number == len(lines)
        if last and raw == b"":
            break
        if last:
            # No newline: the write that produced it never returned. Drop it.
            os.ftruncate(fd, offset)
            os.fsync(fd)
            break
        rec = parse_line(raw, number, prev)
        apply(state, rec)
        prev = rec["hash"]
        offset += len(raw) + 1
    return state, offset, prev


def read_state(path: Path | str) -> JournalState:
    """Fold a journal without locking or repairing it (for ``status`` while another runs).

    Raises:
        JournalError: a damaged line (a torn last line is ignored).
        OSError: unreadable.
    """
    data = Path(path).read_bytes()[:MAX_JOURNAL_BYTES]
    state = JournalState()
    prev = _GENESIS
    lines = data.split(b"\n")
    for number, raw in enumerate(lines[:-1], start=1):
        rec = parse_line(raw, number, prev)
        apply(state, rec)
        prev = rec["hash"]
    return state
