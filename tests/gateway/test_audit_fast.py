"""The audit log's fast paths agree with the reference definitions they shortcut.

* ``seal_with_line`` (one canonical text, hash spliced into its sorted place) produces the same
  bytes and hash as ``_seal_with_line_reference`` (``json.dumps`` of ``body_object``), for any
  valid record: non-ASCII and escaped text, empty fields, envelope bytes present or absent,
  ``capture`` set, any ``seq``/``ts_ms``/``prev``;
* ``AuditRecord``'s one-pass validation accepts exactly what the full checks accept and refuses
  with the same exception and message;
* ``GraphBuilder.add`` (histograms counted by runs) gives the same graph as counting every
  decision at once, including histograms that overflow into OTHER, samples, time buckets and
  filters.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.audit import AuditLog, AuditRecord, Decision, genesis, parse_line
from gateway.audit.graph import (
    MAX_HISTOGRAM_KEYS,
    OTHER,
    Flow,
    GovernanceGraph,
    GraphBuilder,
    GraphFilter,
    feed_lines,
)
from gateway.audit.record import (
    MAX_TEXT_BYTES,
    AuditEntry,
    AuditFormatError,
    _seal_with_line_reference,
    body_object,
    canonical,
    seal,
    seal_with_line,
)
from identity.spiffe_id import InvalidSpiffeID, parse_spiffe_id

GW = "spiffe://weave.example/gateway/a"

# -- strategies ------------------------------------------------------------------------------

# Everything JSON must escape (quotes, backslash, controls, DEL, U+2028, astral) and plain text.
_special = st.sampled_from(['"', "\\", "\n", "\x00", "\x1f", "\x7f", "\u2028", "é", "\U0001f600"])
_short_text = st.one_of(
    st.just(""),
    st.text(max_size=24),
    st.text(st.characters(max_codepoint=127), max_size=24),
    st.lists(st.one_of(_special, st.text(max_size=3)), max_size=8).map("".join),
)
# At and just under the byte bound: ASCII near 2048 characters, two-byte text near 1024.
_long_text = st.one_of(
    st.integers(MAX_TEXT_BYTES - 2, MAX_TEXT_BYTES).map(lambda n: "a" * n),
    st.integers(MAX_TEXT_BYTES // 2 - 2, MAX_TEXT_BYTES // 2).map(lambda n: "é" * n),
)
# Around the bound on both sides (for the validation tests).
_bound_text = st.one_of(
    st.integers(MAX_TEXT_BYTES - 1, MAX_TEXT_BYTES + 2).map(lambda n: "a" * n),
    st.integers(MAX_TEXT_BYTES // 2 - 1, MAX_TEXT_BYTES // 2 + 1).map(lambda n: "é" * n),
    st.integers(MAX_TEXT_BYTES - 2, MAX_TEXT_BYTES).map(lambda n: "a" * n + "é"),
)


def _sized(size: int) -> st.SearchStrategy[bytes]:
    return st.one_of(st.just(b""), st.binary(min_size=size, max_size=size))


@st.composite
def records(draw: st.DrawFn) -> AuditRecord:
    """A valid record; at most one text field long, so the record stays within its bounds."""
    names = ["gateway", "issuer", "origin_scope", "destination_scope", "from_", "to", "reason",
             "rule", "capture"]
    text = {name: draw(_short_text) for name in names}
    if draw(st.booleans()):
        text[draw(st.sampled_from(names))] = draw(_long_text)
    return AuditRecord(
        envelope_id=draw(_sized(16)),
        tier=draw(st.integers(0, 2**32 - 1)),
        lineage=draw(_sized(32)),
        decision=draw(st.sampled_from(Decision)),
        policy_revision=draw(_sized(32)),
        stamps=draw(st.integers(0, 2**32 - 1)),
        envelope_digest=draw(_sized(32)),
        envelope=draw(st.one_of(st.none(), st.binary(max_size=300))),
        **text,
    )


_FIELDS: dict[str, Any] = {
    "gateway": GW, "envelope_id": b"\x01" * 16, "issuer": "spiffe://w.example/a",
    "origin_scope": "pay", "destination_scope": "ledger", "tier": 2, "lineage": b"\x02" * 32,
    "from_": "net:weave", "to": "peer:cilium", "decision": Decision.ALLOW, "reason": "allowed",
    "rule": "r1", "policy_revision": b"\x03" * 32, "stamps": 1, "envelope_digest": b"\x04" * 32,
    "envelope": None, "capture": "",
}


class _Bytes(bytes):
    pass


class _Text(str):
    __slots__ = ()


# Values for one field that the checks may accept or refuse.
_ODD_VALUES: list[Any] = [
    "", "a" * 2048, "a" * 2049, "é" * 1024, "é" * 1025, "a" * 2047 + "é", "\ud800", "\udfff x",
    _Text("t"), _Text("é" * 1025), b"", b"\x00" * 15, b"\x00" * 16, b"\x00" * 17, b"\x00" * 31,
    b"\x00" * 32, b"\x00" * 33, _Bytes(b"\x00" * 16), _Bytes(b"\x00" * 32),
    bytearray(b"\x00" * 16), bytearray(b"\x00" * 32), memoryview(b"\x00" * 16), True, False,
    None, 1.5, -1, 0, 2**32 - 1, 2**32, Decision.DENY, "allow", "deny",
]
_odd_values = st.one_of(
    _short_text,
    _bound_text,
    st.sampled_from(_ODD_VALUES),
    st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3),  # lone surrogates
    st.binary(max_size=40),
    st.binary(max_size=40).map(_Bytes),
    st.builds(bytearray, st.binary(max_size=33)),
    st.text(max_size=5).map(_Text),
    st.integers(-2, 2**32 + 1),
)

# -- the line: byte-identical to the reference ---------------------------------------------


@settings(max_examples=400, deadline=None)
@given(
    record=records(),
    seq=st.integers(0, 2**63),
    ts_ms=st.integers(0, 2**53),
    prev=st.binary(min_size=32, max_size=32),
)
def test_fast_line_equals_reference(record: AuditRecord, seq: int, ts_ms: int,
                                    prev: bytes) -> None:
    entry, line = seal_with_line(seq, ts_ms, record, prev)
    ref_entry, ref_line = _seal_with_line_reference(seq, ts_ms, record, prev)
    assert line == ref_line
    assert entry == ref_entry
    # And the reference is what the format says, spelled out independently here.
    obj = body_object(seq, ts_ms, record, prev)
    body = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    assert entry.hash == hashlib.blake2b(body, digest_size=32).digest()
    assert line.isascii() and line.endswith(b"}\n") and line.count(b"\n") == 1
    assert entry.line() == line == canonical(entry.to_json()) + b"\n"
    parsed, computed = parse_line(line[:-1])
    assert parsed == entry and computed == entry.hash
    assert seal(seq, ts_ms, record, prev) == entry


@pytest.mark.parametrize(("seq", "ts_ms"), [(True, 5), (1, False), (2, 1.5), (3, float("inf"))])
def test_odd_seq_or_time_is_spelled_as_json_spells_it(seq: Any, ts_ms: Any) -> None:
    record = AuditRecord(**_FIELDS)
    entry, line = seal_with_line(seq, ts_ms, record, b"\x00" * 32)
    assert (entry, line) == _seal_with_line_reference(seq, ts_ms, record, b"\x00" * 32)
    assert entry.line() == line


def test_hash_is_spliced_between_gateway_and_issuer() -> None:
    _, line = seal_with_line(1, 2, AuditRecord(**_FIELDS), b"\x00" * 32)
    keys = list(json.loads(line))
    assert keys == sorted(keys)
    assert keys[keys.index("hash") - 1 : keys.index("hash") + 2] == ["gateway", "hash", "issuer"]


def test_writer_lines_chain_like_the_reference(tmp_path: Path) -> None:
    recs = [AuditRecord(**{**_FIELDS, "envelope_id": n.to_bytes(16, "big"),
                           "origin_scope": f"s\u00e9{n}", "envelope": bytes([n]) * n})
            for n in range(1, 70)]
    path = tmp_path / "audit.jsonl"
    with AuditLog.open(path, gateway_id=GW, fsync="never") as log:
        log.append_many(recs[:64], now=1_700_000_000.25)
        log.append_many(recs[64:], now=1_700_000_001.5)
    expected, prev = [], genesis(GW)
    for seq, rec in enumerate(recs, start=1):
        ts_ms = 1_700_000_000_250 if seq <= 64 else 1_700_000_001_500
        entry, line = _seal_with_line_reference(seq, ts_ms, rec, prev)
        expected.append(line)
        prev = entry.hash
    assert path.read_bytes() == b"".join(expected)


# -- record validation: same acceptance, same errors -----------------------------------------


def _reference_outcome(fields: dict[str, Any]) -> tuple[str, str]:
    """Run only the full (reference) checks on a record built without ``__post_init__``."""
    record = object.__new__(AuditRecord)
    for name, value in fields.items():
        object.__setattr__(record, name, value)
    try:
        record._check_fully()
    except Exception as exc:  # the outcome, whatever it is, is compared
        return type(exc).__name__, str(exc)
    return "ok", ""


def _outcome(fields: dict[str, Any]) -> tuple[str, str]:
    """Construct the record normally (the one-pass checks, then the full ones if needed)."""
    try:
        AuditRecord(**fields)
    except Exception as exc:  # the outcome, whatever it is, is compared
        return type(exc).__name__, str(exc)
    return "ok", ""


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    changes=st.dictionaries(st.sampled_from(sorted(_FIELDS)), _odd_values, max_size=3),
)
def test_validation_matches_the_full_checks(changes: dict[str, Any]) -> None:
    fields = {**_FIELDS, **changes}
    assert _outcome(fields) == _reference_outcome(fields)


@pytest.mark.parametrize("name", sorted(_FIELDS))
def test_validation_matches_the_full_checks_for_every_field(name: str) -> None:
    for value in _ODD_VALUES:
        fields = {**_FIELDS, name: value}
        assert _outcome(fields) == _reference_outcome(fields), (name, value)


def test_validation_refuses_with_the_field_name() -> None:
    with pytest.raises(AuditFormatError, match=r"^issuer: text of at most 2048 bytes$"):
        AuditRecord(**{**_FIELDS, "issuer": "é" * 1025})
    with pytest.raises(AuditFormatError, match=r"^lineage: 32 bytes"):
        AuditRecord(**{**_FIELDS, "lineage": b"\x00" * 31})
    with pytest.raises(AuditFormatError, match=r"^stamps: integer"):
        AuditRecord(**{**_FIELDS, "stamps": True})
    # Exactly at the bound is fine, ASCII or not.
    AuditRecord(**{**_FIELDS, "issuer": "a" * 2048, "rule": "é" * 1024})


# -- the governance graph: runs count like single decisions ------------------------------------

T0 = 1_700_000_000_000


@st.composite
def decision_streams(draw: st.DrawFn) -> list[AuditEntry]:
    """Few edges, many distinct values (so histograms overflow into OTHER), long runs of equal
    values, and timestamps spread enough to widen the time buckets."""
    n = draw(st.integers(1, 150))
    wide = draw(st.booleans())

    def alphabet() -> st.SearchStrategy[str]:  # per stream and field: few values or many
        size = draw(st.sampled_from([1, 2, 60]))
        return st.one_of(st.sampled_from(["x", OTHER]), st.integers(0, size).map(str))

    reasons, rules, tos = alphabet(), alphabet(), alphabet()
    lineages = st.integers(0, draw(st.sampled_from([0, 1, 40])))
    origins = st.sampled_from(["a", "b"][: draw(st.integers(1, 2))])
    entries: list[AuditEntry] = []
    for _ in range(n):
        seq = len(entries) + 1
        rec = AuditRecord(**{
            **_FIELDS,
            "envelope_id": seq.to_bytes(16, "big"),
            "issuer": draw(st.sampled_from([_FIELDS["issuer"], "spiffe://c.example/b", "bad"])),
            "gateway": draw(st.sampled_from([GW, "spiffe://c.example/gw"])),
            "origin_scope": draw(origins),
            "decision": draw(st.sampled_from(Decision)),
            "reason": draw(reasons), "rule": draw(rules), "to": draw(tos),
            "lineage": bytes([draw(lineages)]) * 32,
        })
        ts_ms = T0 + draw(st.integers(0, 10**9 if wide else 5000))
        entries.append(seal(seq, ts_ms, rec, b"\x00" * 32))
        while draw(st.integers(0, 3)) == 0 and len(entries) < 250:  # a run of the same values
            seq = len(entries) + 1
            entries.append(seal(seq, ts_ms + seq, rec, b"\x00" * 32))
    return entries


def test_graph_run_into_a_full_histogram_counts_as_other() -> None:
    entries = [
        seal(seq, T0 + seq, AuditRecord(**{**_FIELDS, "reason": reason}), b"\x00" * 32)
        for seq, reason in enumerate(
            [f"r{i}" for i in range(MAX_HISTOGRAM_KEYS)] + ["late"] * 3 + ["r0"] * 2, start=1
        )
    ]
    builder = GraphBuilder()
    builder.add_all(entries)
    (flow,) = builder.snapshot().flows
    reasons = dict(flow.reasons)
    assert reasons[OTHER] == 3 and reasons["r0"] == 3 and "late" not in reasons
    assert len(reasons) == MAX_HISTOGRAM_KEYS + 1 and flow.count == MAX_HISTOGRAM_KEYS + 5


def _one_at_a_time(entries: list[AuditEntry], **kwargs: Any) -> GovernanceGraph:
    """Take a snapshot after every decision: every run is then flushed at length one, which is
    counting each decision on its own (the reference behaviour)."""
    builder = GraphBuilder(**kwargs)
    snap = builder.snapshot()
    for entry in entries:
        builder.add(entry)
        snap = builder.snapshot()
    return snap


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries=decision_streams(), max_samples=st.integers(0, 3), max_flows=st.integers(1, 6))
def test_graph_by_runs_equals_one_at_a_time(entries: list[AuditEntry], max_samples: int,
                                            max_flows: int) -> None:
    kwargs: dict[str, Any] = {"max_samples": max_samples, "max_flows": max_flows}
    builder = GraphBuilder(**kwargs)
    builder.add_all(entries)
    assert builder.snapshot() == _one_at_a_time(entries, **kwargs)
    # Feeding more after a snapshot continues the same counts.
    builder.add_all(entries)
    assert builder.snapshot() == _one_at_a_time(entries + entries, **kwargs)


def _recount(entries: list[AuditEntry], flow: Flow) -> dict[str, dict[str, int]]:
    """An edge's histograms counted the plain way: one decision at a time, in order."""
    hists: dict[str, dict[str, int]] = {
        name: {} for name in ("reasons", "rules", "lineages", "policy_revisions", "gateways",
                              "hops", "trust_domains")
    }
    for e in entries:
        r = e.record
        if (r.origin_scope, r.destination_scope, r.decision) != (
            flow.origin, flow.destination, flow.decision
        ):
            continue
        try:
            td = parse_spiffe_id(r.issuer).trust_domain.name
        except InvalidSpiffeID:
            td = ""
        keys = {
            "reasons": r.reason, "rules": r.rule, "lineages": r.lineage.hex(),
            "policy_revisions": r.policy_revision.hex(), "gateways": r.gateway,
            "hops": f"{r.from_} -> {r.to or '-'}", "trust_domains": td,
        }
        for name, key in keys.items():
            hist = hists[name]
            if key in hist:
                hist[key] += 1
            elif len(hist) < MAX_HISTOGRAM_KEYS:
                hist[key] = 1
            else:
                hist[OTHER] = hist.get(OTHER, 0) + 1
    return hists


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries=decision_streams())
def test_graph_histograms_equal_a_plain_recount(entries: list[AuditEntry]) -> None:
    builder = GraphBuilder(max_flows=3)
    builder.add_all(entries)
    graph = builder.snapshot()
    for flow in graph.flows:
        got = {name: dict(getattr(flow, name)) for name in _recount(entries, flow)}
        assert got == _recount(entries, flow)
        assert sum(n for _, n in flow.hops) == flow.count == sum(n for _, n in flow.buckets)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    entries=decision_streams(),
    flt=st.builds(
        GraphFilter,
        scope=st.sampled_from([None, "a", "ledger", "zz"]),
        trust_domain=st.sampled_from([None, "w.example", "c.example", "weave.example"]),
        decision=st.sampled_from([None, *Decision]),
        since_ms=st.sampled_from([None, T0, T0 + 2500]),
        until_ms=st.sampled_from([None, T0 + 4000, T0 + 10**10]),
    ),
)
def test_graph_filter_equals_prefiltering(entries: list[AuditEntry], flt: GraphFilter) -> None:
    def admitted(e: AuditEntry) -> bool:
        r = e.record
        tds = {r.issuer.split("/")[2] if r.issuer.startswith("spiffe://") else "",
               r.gateway.split("/")[2]}
        return (
            (flt.scope is None or flt.scope in (r.origin_scope, r.destination_scope))
            and (flt.trust_domain is None or flt.trust_domain in tds)
            and (flt.decision is None or flt.decision is r.decision)
            and (flt.since_ms is None or e.ts_ms >= flt.since_ms)
            and (flt.until_ms is None or e.ts_ms < flt.until_ms)
        )

    filtered = GraphBuilder(flt)
    filtered.add_all(entries)
    plain = GraphBuilder()
    plain.add_all([e for e in entries if admitted(e)])
    kept = sum(admitted(e) for e in entries)
    assert filtered.filtered_out == len(entries) - kept
    got, want = filtered.snapshot(), plain.snapshot()
    assert got == GovernanceGraph(**{**vars_of(want), "filtered_out": len(entries) - kept})


def vars_of(graph: GovernanceGraph) -> dict[str, Any]:
    return {name: getattr(graph, name) for name in GovernanceGraph.__slots__}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries=decision_streams())
def test_graph_from_entries_equals_graph_from_lines(entries: list[AuditEntry]) -> None:
    from_entries = GraphBuilder()
    from_entries.add_all(entries)
    from_lines = GraphBuilder()
    feed_lines(from_lines, [e.line() for e in entries])
    assert from_entries.snapshot() == from_lines.snapshot()
