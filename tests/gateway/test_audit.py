"""Audit log: writer, resume after restart, and the exact first broken link for each tampering."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from pathlib import Path

import pytest

from gateway.audit import (
    AuditFilter,
    AuditFormatError,
    AuditLog,
    AuditLogError,
    AuditRecord,
    Decision,
    LinkProblem,
    genesis,
    parse_line,
    read_entries,
    verify,
)
from gateway.audit.record import canonical

GW = "spiffe://weave.example/gateway/a"


def record(n: int, *, decision: Decision = Decision.ALLOW, scope: str = "pay") -> AuditRecord:
    return AuditRecord(
        gateway=GW,
        envelope_id=n.to_bytes(16, "big"),
        issuer="spiffe://weave.example/ns/shop/sa/web",
        origin_scope=scope,
        destination_scope="ledger",
        tier=2,
        lineage=bytes([n % 256]) * 32,
        from_="net:weave",
        to="peer:cilium-gw" if decision is Decision.ALLOW else "",
        decision=decision,
        reason="allowed" if decision is Decision.ALLOW else "tier_too_low",
        rule="r1",
        policy_revision=b"\x07" * 32,
        stamps=n % 3,
        envelope_digest=hashlib.blake2b(str(n).encode(), digest_size=32).digest(),
    )


def write_log(path: Path, count: int) -> None:
    with AuditLog.open(path, gateway_id=GW, fsync="never") as log:
        for n in range(1, count + 1):
            log.append(record(n, decision=Decision.DENY if n % 4 == 0 else Decision.ALLOW),
                       now=1_700_000_000 + n)


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def offset_of(path: Path, line_no: int) -> int:
    return sum(len(x) for x in lines(path)[: line_no - 1])


def test_chain_and_canonical_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 5)
    raw = lines(path)
    first = json.loads(raw[0])
    assert first["prev"] == genesis(GW).hex()
    assert first["seq"] == 1 and first["ts_ms"] == 1_700_000_001_000
    assert first["from"] == "net:weave" and first["decision"] == "allow"
    for line in raw:
        obj = json.loads(line)
        assert canonical(obj) + b"\n" == line
        del obj["hash"]
        recomputed = hashlib.blake2b(canonical(obj), digest_size=32).hexdigest()
        assert recomputed == json.loads(line)["hash"]
    for a, b in itertools.pairwise(raw):
        assert json.loads(b)["prev"] == json.loads(a)["hash"]
    report = verify(path)
    assert report.ok and report.records == 5 and report.last_seq == 5
    assert report.last_hash is not None and report.last_hash.hex() == json.loads(raw[-1])["hash"]


def test_resume_after_restart_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 3)
    with AuditLog.open(path, gateway_id=GW) as log:
        assert log.last_seq == 3
        entry = log.append(record(4), now=1_700_000_100)
        assert entry.seq == 4
        assert log.torn_tail is None
    assert verify(path).records == 4


def test_torn_last_line_is_truncated_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 3)
    good = path.stat().st_size
    with path.open("ab") as f:
        f.write(b'{"decision":"allow","envel')
    with AuditLog.open(path, gateway_id=GW) as log:
        assert log.torn_tail is not None
        assert (log.torn_tail.offset, log.torn_tail.dropped) == (good, 26)
        assert log.last_seq == 3
        log.append(record(4))
    assert verify(path).ok


def test_refuses_to_extend_a_broken_tail(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 3)
    raw = lines(path)
    path.write_bytes(b"".join(raw[:-1]) + raw[-1].replace(b'"tier":2', b'"tier":3'))
    with pytest.raises(AuditLogError, match=f"byte {offset_of(path, 3)}.*hash mismatch"):
        AuditLog.open(path, gateway_id=GW)


def test_second_writer_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog.open(path, gateway_id=GW), pytest.raises(AuditLogError, match="another"):
        AuditLog.open(path, gateway_id=GW)


def test_batch_mode_and_flush(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog.open(path, gateway_id=GW, fsync="batch", batch_records=10) as log:
        entries = log.append_many([record(n) for n in range(1, 26)])
        assert [e.seq for e in entries] == list(range(1, 26))
        log.flush()
    assert verify(path).records == 25


def test_record_validation() -> None:
    with pytest.raises(ValueError, match="envelope_id: 16 bytes"):
        dataclasses.replace(record(1), envelope_id=b"\x01")
    with pytest.raises(ValueError, match="tier"):
        dataclasses.replace(record(1), tier=-1)


def test_raw_envelope_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    blob = bytes(range(256)) * 4
    with AuditLog.open(path, gateway_id=GW) as log:
        log.append(dataclasses.replace(record(1), envelope=blob))
    (entry,) = read_entries(path)
    assert entry.record.envelope == blob
    assert verify(path).ok


# Tampering: each edit and the exact first broken link it must produce.


def _edit_field(raw: list[bytes]) -> list[bytes]:
    raw[3] = raw[3].replace(b'"decision":"deny"', b'"decision":"allow"')
    return raw


def _edit_and_rehash(raw: list[bytes]) -> list[bytes]:
    obj = json.loads(raw[3])
    assert obj["reason"] == "tier_too_low"
    obj["reason"] = "allowed"
    del obj["hash"]
    obj["hash"] = hashlib.blake2b(canonical(obj), digest_size=32).hexdigest()
    raw[3] = canonical(obj) + b"\n"
    return raw


def _forge_insert(raw: list[bytes]) -> list[bytes]:
    prev = json.loads(raw[4])
    forged = dict(prev, seq=6, prev=prev["hash"], reason="forged")
    del forged["hash"]
    forged["hash"] = hashlib.blake2b(canonical(forged), digest_size=32).hexdigest()
    return [*raw[:5], canonical(forged) + b"\n", *raw[5:]]


TAMPERING = [
    # (name, edit, line, problem, recorded seq)
    ("edit a field", _edit_field, 4, LinkProblem.HASH_MISMATCH, 4),
    ("edit and recompute hash", _edit_and_rehash, 5, LinkProblem.PREV_MISMATCH, 5),
    ("delete a line", lambda r: r[:3] + r[4:], 4, LinkProblem.SEQUENCE_GAP, 5),
    ("delete the first line", lambda r: r[1:], 1, LinkProblem.SEQUENCE_GAP, 2),
    ("insert a copy", lambda r: [*r[:5], r[1], *r[5:]], 6, LinkProblem.SEQUENCE_GAP, 2),
    ("insert a forged line", _forge_insert, 7, LinkProblem.SEQUENCE_GAP, 6),
    ("reorder two lines", lambda r: [*r[:2], r[3], r[2], *r[4:]], 3, LinkProblem.SEQUENCE_GAP, 4),
    ("truncate mid-line", lambda r: [*r[:7], r[7][:40]], 8, LinkProblem.TORN_TAIL, None),
    ("change the last record", lambda r: [*r[:7], r[7].replace(b'"tier":2', b'"tier":9')],
     8, LinkProblem.HASH_MISMATCH, 8),
    ("garbage line", lambda r: [*r[:5], b"not json\n", *r[5:]], 6, LinkProblem.MALFORMED, None),
    ("spaces added", lambda r: [*r[:1], r[1].replace(b",", b", ", 1), *r[2:]], 2,
     LinkProblem.MALFORMED, None),
]


@pytest.mark.parametrize(
    ("edit", "line", "problem", "seq"),
    [t[1:] for t in TAMPERING],
    ids=[t[0] for t in TAMPERING],
)
def test_tampering_reports_the_exact_first_broken_link(
    tmp_path: Path, edit: object, line: int, problem: LinkProblem, seq: int | None
) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 8)
    path.write_bytes(b"".join(edit(lines(path))))  # type: ignore[operator]
    report = verify(path)
    assert report.broken is not None
    assert (report.broken.line, report.broken.problem, report.broken.seq) == (line, problem, seq)
    assert report.broken.offset == offset_of(path, line)
    assert report.records == line - 1


def test_spliced_onto_another_gateway_log_breaks_at_genesis(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 2)
    obj = json.loads(lines(path)[0])
    obj["gateway"] = "spiffe://other.example/gw"
    del obj["hash"]
    obj["hash"] = hashlib.blake2b(canonical(obj), digest_size=32).hexdigest()
    path.write_bytes(canonical(obj) + b"\n" + lines(path)[1])
    broken = verify(path).broken
    assert broken is not None
    assert (broken.line, broken.problem) == (1, LinkProblem.PREV_MISMATCH)
    assert "genesis" in broken.detail


def test_empty_log_verifies(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"")
    report = verify(path)
    assert report.ok and report.records == 0 and report.last_hash is None


def test_filters(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog.open(path, gateway_id=GW, fsync="never") as log:
        log.append(record(1, scope="pay"), now=100)
        log.append(record(2, decision=Decision.DENY, scope="web"), now=200)
        log.append(record(3, scope="web"), now=300)
    entries = list(read_entries(path))

    def seqs(flt: AuditFilter) -> list[int]:
        return [e.seq for e in entries if flt.matches(e)]

    assert seqs(AuditFilter(scope="web")) == [2, 3]
    assert seqs(AuditFilter(scope="ledger")) == [1, 2, 3]
    assert seqs(AuditFilter(decision=Decision.DENY)) == [2]
    assert seqs(AuditFilter(peer="peer:cilium-gw")) == [1, 3]
    assert seqs(AuditFilter(envelope_id=(3).to_bytes(16, "big"))) == [3]
    assert seqs(AuditFilter(since_ms=200_000, until_ms=300_000)) == [2]


def test_parse_line_rejects_unknown_keys() -> None:
    with pytest.raises(AuditFormatError, match="unexpected \\['extra'\\]"):
        obj = json.loads(b'{"extra":1}')
        parse_line(canonical(obj))
