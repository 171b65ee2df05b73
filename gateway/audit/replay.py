"""Offline audit replay: prove, with no network and no running gateway, why each envelope was
allowed or refused.

Theory of operation. For each log: its hash chain is verified (:func:`gateway.audit.verify`) and
the first broken link reported; then every record that parses is replayed, in order, whatever
the chain says (a broken link makes what follows unproven, not meaningless):

1. the envelope's bytes: from the record (``[audit] keep_envelopes``), its ``capture`` pointer, or
   the captures given, found by ``envelope_digest``. None: missing evidence. Bytes that do not hash
   to the recorded digest: an envelope mismatch;
2. the gateway's state at the recorded time ``ts_ms // 1000``, rebuilt from the evidence
   (:class:`gateway.audit.replay_state.EvidenceState`): anchors live then, revisions in force then;
3. the very pipeline the gateway runs, :func:`gateway.pipeline.process`, with a replay window fed
   in log order (so a recorded ``replayed`` refusal is reproduced), gives the replayed decision;
4. recorded and replayed (decision, reason, rule, policy revision, next hop) are compared. A
   difference is named by its cause: an anchor the evidence lacks (missing evidence), an anchor
   endorsed but not at that time (endorsement not valid), a signature that no longer verifies, or
   otherwise a decision mismatch naming both sides. A recorded policy revision the evidence does
   not hold is missing evidence even when the decision matches.

Records of delivery outcomes (rule ``delivery``: the next hop refused, or a spooled envelope was
dropped) are not decisions: each must follow an ``allow`` of the same envelope in the same log.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.audit.capture import CaptureError, iter_capture, read_at
from gateway.audit.evidence import Evidence, group_by_gateway
from gateway.audit.record import AuditEntry, AuditFormatError, AuditRecord, parse_line
from gateway.audit.replay_state import EvidenceState, ProblemKind
from gateway.audit.verify import iter_lines, verify
from gateway.envelope.recipe import digest
from gateway.envelope.wire import decode_unverified
from gateway.errors import RemoteProtocolError
from gateway.pipeline import Arrival, Forward, process
from gateway.policy.model import ZERO_HASH
from gateway.reasons import Reason
from gateway.replay import ReplayWindow
from identity.anchor_contract import AnchorLookupError

DELIVERY_RULE = "delivery"
REPLAY_WINDOW_CAPACITY = 1_000_000
_ANCHOR_TIME = frozenset({Reason.ANCHOR_EXPIRED, Reason.ANCHOR_NOT_YET_VALID})
_SIGNATURES = frozenset(
    {
        Reason.BAD_SIGNATURE,
        Reason.BAD_STAMP,
        Reason.STAMP_CHAIN_BROKEN,
        Reason.PAYLOAD_MISMATCH,
        Reason.ENDORSEMENT_INVALID,
    }
)


class FindingKind(enum.StrEnum):
    BROKEN_LINK = "broken_link"
    DECISION_MISMATCH = "decision_mismatch"
    SIGNATURE_INVALID = "signature_invalid"
    MISSING_EVIDENCE = "missing_evidence"
    ENDORSEMENT_NOT_VALID = "endorsement_not_valid"
    ENVELOPE_MISMATCH = "envelope_mismatch"
    EVIDENCE_INCONSISTENT = "evidence_inconsistent"


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing the auditor must look at. ``log`` is the log's path, or the evidence source."""

    kind: FindingKind
    log: str
    detail: str
    line: int | None = None
    seq: int | None = None
    envelope_id: bytes = b""
    recorded: str = ""
    replayed: str = ""

    def __str__(self) -> str:
        where = self.log
        if self.line is not None:
            where += f": line {self.line}" + (f" (seq {self.seq})" if self.seq is not None else "")
        env = f" envelope {self.envelope_id.hex()}" if self.envelope_id else ""
        text = f"{self.kind}: {where}{env}: {self.detail}"
        if self.recorded or self.replayed:
            text += f"; recorded {self.recorded}; replayed {self.replayed}"
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "log": self.log,
            "line": self.line,
            "seq": self.seq,
            "envelope_id": self.envelope_id.hex(),
            "detail": self.detail,
            "recorded": self.recorded,
            "replayed": self.replayed,
        }


@dataclass(slots=True)
class LogSummary:
    path: str
    records: int = 0
    replayed: int = 0  # records whose decision was re-run and compared
    chain_ok: bool = True


@dataclass(frozen=True, slots=True)
class ReplayReport:
    logs: tuple[LogSummary, ...]
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "sluice-replay-report",
            "version": 1,
            "ok": self.ok,
            "logs": [
                {
                    "path": s.path,
                    "records": s.records,
                    "replayed": s.replayed,
                    "chain_ok": s.chain_ok,
                }
                for s in self.logs
            ],
            "findings": [f.to_json() for f in self.findings],
        }

    def render_json(self) -> str:
        return json.dumps(self.to_json(), indent=1, sort_keys=True)

    def render_text(self) -> str:
        lines = []
        for s in self.logs:
            chain = "chain ok" if s.chain_ok else "chain BROKEN"
            lines.append(f"log {s.path}: {s.records} records, {chain}, {s.replayed} replayed")
        lines.extend(f"finding {f}" for f in self.findings)
        total = len(self.findings)
        lines.append("clean: every record replayed as recorded" if self.ok else f"{total} findings")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class _Outcome:
    decision: str
    reason: str
    rule: str
    revision: bytes
    to: str

    def __str__(self) -> str:
        revision = self.revision.hex()[:16] if self.revision else "-"
        return (
            f"{self.decision} {self.reason} rule {self.rule or '-'} revision {revision} "
            f"to {self.to or '-'}"
        )


def _recorded(r: AuditRecord) -> _Outcome:
    return _Outcome(r.decision.value, r.reason, r.rule, r.policy_revision, r.to)


@dataclass(slots=True)
class _Context:
    states: dict[str, EvidenceState]
    captures: Mapping[bytes, bytes]
    findings: list[Finding] = field(default_factory=list)


def replay(
    log_paths: Sequence[Path | str],
    evidence: Sequence[Evidence],
    *,
    captures: Sequence[Path | str] = (),
) -> ReplayReport:
    """Replay every record of ``log_paths`` against ``evidence``.

    Args:
        log_paths: audit logs (of one or several gateways).
        evidence: evidence bundles; several of one gateway are merged (an archive of a period).
        captures: capture files (:mod:`gateway.audit.capture`) holding envelope bytes.

    Returns:
        The report; ``report.ok`` when nothing was found.

    Raises:
        OSError: a log cannot be read.
        CaptureError: a capture file cannot be read or is torn.
        EvidenceError: evidence bundles of one gateway cannot be merged.
    """
    states = {str(gw): EvidenceState(e) for gw, e in group_by_gateway(evidence).items()}
    ctx = _Context(states, _index_captures(captures))
    summaries = tuple(_replay_log(Path(p), ctx) for p in log_paths)
    # After the logs: some evidence problems only show while building the state of a time.
    about_evidence = [
        Finding(
            FindingKind.SIGNATURE_INVALID
            if problem.kind is ProblemKind.SIGNATURE
            else FindingKind.EVIDENCE_INCONSISTENT,
            state.evidence.source or gw,
            f"{problem.item}: {problem.detail}",
        )
        for gw, state in states.items()
        for problem in state.problems
    ]
    return ReplayReport(summaries, (*about_evidence, *ctx.findings))


def _index_captures(paths: Sequence[Path | str]) -> dict[bytes, bytes]:
    index: dict[bytes, bytes] = {}
    for path in paths:
        for _offset, data in iter_capture(path):
            index.setdefault(digest(data), data)
    return index


def _replay_log(path: Path, ctx: _Context) -> LogSummary:
    summary = LogSummary(str(path))
    report = verify(path)
    if report.broken is not None:
        summary.chain_ok = False
        b = report.broken
        ctx.findings.append(
            Finding(FindingKind.BROKEN_LINK, str(path), f"{b.problem}: {b.detail}", b.line, b.seq)
        )
    windows: dict[str, ReplayWindow] = {}
    allowed: set[bytes] = set()
    unknown_gateways: set[str] = set()
    with path.open("rb") as f:
        for raw in iter_lines(f):
            if not raw.complete:
                break  # reported by verify as a torn tail (or an over-long line)
            try:
                entry, _computed = parse_line(raw.text)
            except AuditFormatError:
                continue  # unparsable: verify named the first such line
            summary.records += 1
            gateway = entry.record.gateway
            state = ctx.states.get(gateway)
            if state is None:
                if gateway not in unknown_gateways:
                    unknown_gateways.add(gateway)
                    ctx.findings.append(
                        Finding(
                            FindingKind.MISSING_EVIDENCE, str(path),
                            f"no evidence bundle for gateway {gateway or '(none)'}; its records "
                            "cannot be replayed", raw.number, entry.seq,
                        )
                    )  # fmt: skip
                continue
            window = windows.setdefault(gateway, ReplayWindow(capacity=REPLAY_WINDOW_CAPACITY))
            if _replay_entry(path, raw.number, entry, state, window, allowed, ctx):
                summary.replayed += 1
    return summary


def _envelope_bytes(path: Path, entry: AuditEntry, ctx: _Context) -> bytes | str:
    record = entry.record
    if record.envelope is not None:
        return record.envelope
    if record.capture:
        name, _, offset = record.capture.rpartition(":")
        if not name or not offset.isdigit():
            return f"capture pointer {record.capture!r} is not <file>:<offset>"
        try:
            return read_at(path.parent / name, int(offset))
        except CaptureError as exc:
            return f"capture pointer {record.capture!r}: {exc}"
    if record.envelope_digest and record.envelope_digest in ctx.captures:
        return ctx.captures[record.envelope_digest]
    return "no envelope bytes: the record keeps none and no capture holds its digest"


def _replay_entry(
    path: Path,
    line: int,
    entry: AuditEntry,
    state: EvidenceState,
    window: ReplayWindow,
    allowed: set[bytes],
    ctx: _Context,
) -> bool:
    record = entry.record
    t = entry.ts_ms // 1000

    def found(kind: FindingKind, detail: str, recorded: str = "", replayed: str = "") -> None:
        ctx.findings.append(
            Finding(kind, str(path), detail, line, entry.seq, record.envelope_id, recorded,
                    replayed)
        )  # fmt: skip

    if record.rule == DELIVERY_RULE:
        if record.reason == Reason.OVERLOADED.value:
            window.forget(record.envelope_id)  # as the gateway does, so a retry is not "replayed"
        if record.envelope_id not in allowed:
            found(FindingKind.DECISION_MISMATCH,
                  "a delivery outcome with no allow decision of this envelope before it",
                  str(_recorded(record)), "(no allow to deliver)")  # fmt: skip
        return False
    revision = record.policy_revision
    if revision and revision != ZERO_HASH and revision not in state.revisions:
        found(FindingKind.MISSING_EVIDENCE,
              f"the recorded policy revision {revision.hex()} is not in the evidence "
              "(or its signature did not verify)")  # fmt: skip
    data = _envelope_bytes(path, entry, ctx)
    if isinstance(data, str):
        found(FindingKind.MISSING_EVIDENCE, data)
        return False
    if record.envelope_digest and digest(data) != record.envelope_digest:
        found(FindingKind.ENVELOPE_MISMATCH,
              f"the envelope bytes hash to {digest(data).hex()}, the record says "
              f"{record.envelope_digest.hex()}")  # fmt: skip
        return False
    outcome = process(
        data, arrival=_arrival(record.from_), state=state.at(t), replay=window, now=t
    )
    if isinstance(outcome, Forward):
        allowed.add(outcome.envelope.claims.envelope_id)
        hop = "peer" if outcome.target.kind == "peer" else "net"
        replayed = _Outcome(
            "allow", Reason.ALLOWED.value, outcome.decision.rule, outcome.decision.revision,
            f"{hop}:{outcome.target.name}",
        )  # fmt: skip
    else:
        d = outcome.decision
        replayed = _Outcome(
            "deny", outcome.reason.value, d.rule if d else "", d.revision if d else b"", ""
        )
    recorded = _recorded(record)
    if replayed == recorded:
        return True
    kind, detail = _classify(outcome.reason if not isinstance(outcome, Forward) else None,
                             recorded, data, state, t)  # fmt: skip
    found(kind, detail, str(recorded), str(replayed))
    return True


def _arrival(from_: str) -> Arrival:
    kind, _, name = from_.partition(":")
    if kind == "peer" and name:
        return Arrival(name, peer=name)
    return Arrival(name or from_)


def _classify(
    reason: Reason | None, recorded: _Outcome, data: bytes, state: EvidenceState, t: int
) -> tuple[FindingKind, str]:
    if reason is None or reason.value == recorded.reason:
        return FindingKind.DECISION_MISMATCH, "the replayed decision differs from the recorded one"
    if reason is Reason.UNKNOWN_ANCHOR or reason in _ANCHOR_TIME:
        for kid, whose in _kids(data):
            try:
                state.at(t).resolver.resolve(kid, t)
                continue
            except AnchorLookupError:
                pass  # this is the anchor at fault
            held = state.endorsements_of(kid)
            if held:
                windows = ", ".join(
                    f"[{_utc(e.effective_not_before)}, {_utc(e.effective_not_after)})" for e in held
                )
                return (
                    FindingKind.ENDORSEMENT_NOT_VALID,
                    f"the {whose} anchor {kid.hex()} ({held[0].spiffe_id}) is endorsed in the "
                    f"evidence only for {windows}, not at the recorded time {_utc(t)}",
                )
            rejected = state.rejected_kids.get(kid)
            why = f" (its endorsement did not verify: {rejected})" if rejected else ""
            return (
                FindingKind.MISSING_EVIDENCE,
                f"the evidence has no endorsement of the {whose} anchor {kid.hex()}{why}",
            )
    if reason in _SIGNATURES:
        return (
            FindingKind.SIGNATURE_INVALID,
            f"a signature no longer verifies: {reason.value}",
        )
    return FindingKind.DECISION_MISMATCH, "the replayed decision differs from the recorded one"


def _utc(t: int) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _kids(data: bytes) -> list[tuple[bytes, str]]:
    try:
        env = decode_unverified(data)
    except RemoteProtocolError:
        return []
    kids = [(env.origin.kid, "origin")]
    kids += [(s.sign1.kid, f"stamp {i}") for i, s in enumerate(env.stamps, start=1)]
    return kids
