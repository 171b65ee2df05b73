"""Theory of operation: the governance-flow graph, aggregated while streaming over an audit log.

A :class:`GraphBuilder` is fed one decision at a time (:meth:`GraphBuilder.add` for an
:class:`AuditEntry`, or :func:`graph_from_log` for a file) and keeps only aggregates: one
accumulator per flow edge ``(origin scope, destination scope, decision)``, one per scope, gateway
and policy revision. Memory is O(edges), never O(records): every per-edge collection is bounded
(histograms by :data:`MAX_HISTOGRAM_KEYS`, samples by ``max_samples``, the time histogram by
:data:`MAX_TIME_BUCKETS`) and so is the number of edges (``max_flows``; decisions on further new
edges are counted in ``overflow_records``, never silently lost from the totals).

The time histogram lets a viewer re-count an edge inside a time window without the records: its
buckets are ``ts_ms // bucket_ms`` for one graph-wide ``bucket_ms`` that starts at one second and
doubles (merging neighbouring buckets) whenever the log's span would need more than
:data:`MAX_TIME_BUCKETS` buckets. Results are deterministic for a given input order.

This is a view, not a verifier: :func:`graph_from_log` reads the JSON lines without checking
hashes or the chain (``sluice audit verify`` does that). It still refuses malformed lines with
the line number and byte offset.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.audit.record import MAX_LINE_BYTES, AuditEntry, AuditFormatError, Decision
from identity.spiffe_id import InvalidSpiffeID, parse_spiffe_id

DEFAULT_MAX_SAMPLES = 5  # sample envelopes kept per edge: the most recent ones
DEFAULT_MAX_FLOWS = 200_000  # distinct (origin, destination, decision) edges kept
MAX_HISTOGRAM_KEYS = 32  # distinct reasons/rules/revisions/hops per edge; the rest is OTHER
MAX_TIME_BUCKETS = 128
FIRST_BUCKET_MS = 1000
OTHER = "(other)"
_TD_CACHE_LIMIT = 65_536


@dataclass(frozen=True, slots=True)
class GraphFilter:
    """Which decisions go into the graph; ``None`` means "any". All given criteria must hold.

    ``scope`` matches the origin or the destination scope (exactly); ``trust_domain`` the
    issuer's or the gateway's trust domain; ``since_ms`` is inclusive and ``until_ms`` exclusive.
    """

    scope: str | None = None
    trust_domain: str | None = None
    decision: Decision | None = None
    since_ms: int | None = None
    until_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Sample:
    """One envelope seen on an edge (kept as an example, bounded per edge)."""

    envelope_id: str  # hex, "" when the envelope was unreadable
    ts_ms: int
    reason: str
    rule: str
    gateway: str
    from_: str
    to: str


@dataclass(frozen=True, slots=True)
class Flow:
    """An edge: every decision from ``origin`` to ``destination`` with one ``decision``.

    Histograms are sorted by count (descending), then key.
    """

    origin: str
    destination: str
    decision: Decision
    count: int
    first_ms: int
    last_ms: int
    reasons: tuple[tuple[str, int], ...]
    rules: tuple[tuple[str, int], ...]
    lineages: tuple[tuple[str, int], ...]  # policy-lineage hashes (hex) carried by envelopes
    policy_revisions: tuple[tuple[str, int], ...]  # destination revisions applied (hex)
    gateways: tuple[tuple[str, int], ...]
    hops: tuple[tuple[str, int], ...]  # "from -> to"
    trust_domains: tuple[tuple[str, int], ...]  # of the issuers
    samples: tuple[Sample, ...]  # most recent first
    buckets: tuple[tuple[int, int], ...]  # (ts_ms // bucket_ms, count), ascending


@dataclass(frozen=True, slots=True)
class ScopeNode:
    name: str
    trust_domain: str  # the issuers' trust domain seen most often, "" when never an origin
    trust_domains: tuple[tuple[str, int], ...]
    sent: int  # decisions with this scope as origin
    received: int  # ... as destination


@dataclass(frozen=True, slots=True)
class GatewayNode:
    id: str
    trust_domain: str  # "" when the ID is not a valid SPIFFE ID
    allowed: int
    denied: int


@dataclass(frozen=True, slots=True)
class RevisionNode:
    revision: str  # hex, "" when the gateway recorded none
    allowed: int
    denied: int


@dataclass(frozen=True, slots=True)
class Applied:
    """Membership edge: ``gateway`` decided ``allowed + denied`` times under ``revision``."""

    gateway: str
    revision: str
    allowed: int
    denied: int


@dataclass(frozen=True, slots=True)
class GovernanceGraph:
    """A snapshot of the aggregates: nodes, flow edges and membership edges."""

    records: int  # decisions aggregated
    filtered_out: int  # decisions the filter excluded
    overflow_records: int  # decisions on edges beyond ``max_flows`` (in no flow)
    first_ms: int | None
    last_ms: int | None
    bucket_ms: int
    scopes: tuple[ScopeNode, ...]
    trust_domains: tuple[str, ...]
    gateways: tuple[GatewayNode, ...]
    revisions: tuple[RevisionNode, ...]
    applied: tuple[Applied, ...]
    flows: tuple[Flow, ...]  # by count descending, then origin, destination, decision


# Sample's fields in order: what the hot path keeps per sample until a snapshot needs a Sample.
_SampleTuple = tuple[str, int, str, str, str, str, str]
_DECISION_TEXT = {d: d.value for d in Decision}


def _bump(hist: dict[str, int], key: str, n: int = 1) -> None:
    """Count ``key`` ``n`` times, exactly as ``n`` single counts would (a key that finds the
    histogram full goes to OTHER, and so do its repeats)."""
    if key in hist:
        hist[key] += n
    elif len(hist) < MAX_HISTOGRAM_KEYS:
        hist[key] = n
    else:
        hist[OTHER] = hist.get(OTHER, 0) + n


def _sorted(hist: Mapping[str, int]) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0])))


# What an edge's histograms count per decision: (reason, rule, lineage, policy revision, gateway,
# from, to, issuer trust domain).
_RunKey = tuple[str, str, str, str, str, str, str, str]


class _FlowAcc:
    """One edge's aggregates.

    Consecutive decisions on an edge usually agree on everything its histograms count, so the
    histograms are fed by runs: ``run`` is the last decision's histogram keys and ``run_length``
    how many decisions since the last :meth:`flush_run` had exactly those keys. Counting a run
    of ``n`` at once gives the same histograms as ``n`` single counts (see :func:`_bump`), and
    an edge's histograms see only that edge's decisions, in order.
    """

    __slots__ = (
        "buckets", "count", "first_ms", "gateways", "hops", "last_ms", "lineages", "reasons",
        "revisions", "rules", "run", "run_length", "samples", "tds",
    )

    def __init__(self, ts_ms: int, max_samples: int) -> None:
        self.count = 0
        self.first_ms = ts_ms
        self.last_ms = ts_ms
        self.reasons: dict[str, int] = {}
        self.rules: dict[str, int] = {}
        self.lineages: dict[str, int] = {}
        self.revisions: dict[str, int] = {}
        self.gateways: dict[str, int] = {}
        self.hops: dict[str, int] = {}
        self.tds: dict[str, int] = {}
        self.samples: deque[_SampleTuple] = deque(maxlen=max_samples)
        self.buckets: dict[int, int] = {}
        self.run: _RunKey | None = None
        self.run_length = 0

    def flush_run(self) -> None:
        """Add the pending run to the histograms."""
        n = self.run_length
        if not n or self.run is None:
            return
        reason, rule, lineage, revision, gateway, from_, to, issuer_td = self.run
        _bump(self.reasons, reason, n)
        _bump(self.rules, rule, n)
        _bump(self.lineages, lineage, n)
        _bump(self.revisions, revision, n)
        _bump(self.gateways, gateway, n)
        _bump(self.hops, f"{from_} -> {to or '-'}", n)
        _bump(self.tds, issuer_td, n)
        self.run_length = 0


class GraphBuilder:
    """Streaming aggregator; feed it decisions, then take a :meth:`snapshot`.

    Args:
        flt: decisions not matching it are only counted in ``filtered_out``.
        max_samples: sample envelopes kept per edge (the most recent ones).
        max_flows: distinct edges kept; decisions on newer edges go to ``overflow_records``.

    Not thread-safe: the daemon feeds it from one task (or under its own lock).
    """

    def __init__(
        self,
        flt: GraphFilter | None = None,
        *,
        max_samples: int = DEFAULT_MAX_SAMPLES,
        max_flows: int = DEFAULT_MAX_FLOWS,
    ) -> None:
        if max_samples < 0 or max_flows < 0:
            raise ValueError("max_samples and max_flows must be non-negative")
        self._flt = flt or GraphFilter()
        self._filtering = self._flt != GraphFilter()
        self._max_samples = max_samples
        self._max_flows = max_flows
        self.records = 0
        self.filtered_out = 0
        self.overflow_records = 0
        self._first_ms: int | None = None
        self._last_ms: int | None = None
        self._bucket_ms = FIRST_BUCKET_MS
        self._min_bucket: int | None = None
        self._max_bucket: int | None = None
        self._flows: dict[tuple[str, str, str], _FlowAcc] = {}
        self._scope_tds: dict[str, dict[str, int]] = {}
        self._sent: dict[str, int] = {}
        self._received: dict[str, int] = {}
        self._gateways: dict[str, list[int]] = {}  # [allowed, denied]
        self._applied: dict[tuple[str, str], list[int]] = {}
        self._td_cache: dict[str, str] = {}

    def add(self, entry: AuditEntry) -> None:
        """Aggregate one decision of the log (the daemon's hot path: one call per envelope)."""
        r = entry.record
        self._add(
            entry.ts_ms, r.gateway, r.issuer, r.origin_scope, r.destination_scope,
            _DECISION_TEXT[r.decision], r.reason, r.rule, r.lineage.hex(),
            r.policy_revision.hex(), r.from_, r.to, r.envelope_id.hex(),
        )

    def add_all(self, entries: Iterable[AuditEntry]) -> None:
        for entry in entries:
            self.add(entry)

    def trust_domain_of(self, spiffe_id: str) -> str:
        """The trust domain of a SPIFFE ID by the strict parser, ``""`` when it is not one."""
        td = self._td_cache.get(spiffe_id)
        if td is None:
            try:
                td = parse_spiffe_id(spiffe_id).trust_domain.name
            except InvalidSpiffeID:
                td = ""
            if len(self._td_cache) >= _TD_CACHE_LIMIT:
                self._td_cache.clear()
            self._td_cache[spiffe_id] = td
        return td

    def add_decision(
        self, *, ts_ms: int, gateway: str, issuer: str, origin: str, destination: str,
        decision: str, reason: str, rule: str, lineage: str, policy_revision: str, from_: str,
        to: str, envelope_id: str,
    ) -> None:
        """Aggregate one decision given as its fields (binary values as hex).

        ``decision`` is ``"allow"`` or ``"deny"``; the caller has checked it.
        """
        self._add(ts_ms, gateway, issuer, origin, destination, decision, reason, rule, lineage,
                  policy_revision, from_, to, envelope_id)

    def _add(
        self, ts_ms: int, gateway: str, issuer: str, origin: str, destination: str,
        decision: str, reason: str, rule: str, lineage: str, policy_revision: str, from_: str,
        to: str, envelope_id: str,
    ) -> None:
        # One flat function with positional arguments: the live graph sees every envelope.
        issuer_td = self._td_cache.get(issuer)
        if issuer_td is None:
            issuer_td = self.trust_domain_of(issuer)
        if self._filtering and not self._admits(ts_ms, gateway, issuer_td, origin, destination,
                                                decision):
            self.filtered_out += 1
            return
        key = (origin, destination, decision)
        acc = self._flows.get(key)
        if acc is None:
            if len(self._flows) >= self._max_flows:
                # Nodes are not counted either, so they stay bounded by the edges.
                self.overflow_records += 1
                return
            acc = self._flows[key] = _FlowAcc(ts_ms, self._max_samples)
        # The nodes.
        self.records += 1
        if self._first_ms is None or ts_ms < self._first_ms:
            self._first_ms = ts_ms
        if self._last_ms is None or ts_ms > self._last_ms:
            self._last_ms = ts_ms
        side = 0 if decision == "allow" else 1
        gw = self._gateways.get(gateway)
        if gw is None:
            gw = self._gateways[gateway] = [0, 0]
        gw[side] += 1
        applied = self._applied.get((gateway, policy_revision))
        if applied is None:
            applied = self._applied[(gateway, policy_revision)] = [0, 0]
        applied[side] += 1
        self._sent[origin] = self._sent.get(origin, 0) + 1
        self._received[destination] = self._received.get(destination, 0) + 1
        if issuer_td:
            tds = self._scope_tds.get(origin)
            if tds is None:
                tds = self._scope_tds[origin] = {}
            _bump(tds, issuer_td)
        # The edge.
        acc.count += 1
        acc.first_ms = min(acc.first_ms, ts_ms)
        acc.last_ms = max(acc.last_ms, ts_ms)
        run = (reason, rule, lineage, policy_revision, gateway, from_, to, issuer_td)
        if run == acc.run:
            acc.run_length += 1
        else:
            acc.flush_run()
            acc.run, acc.run_length = run, 1
        if self._max_samples:
            # A plain tuple; snapshot() makes the Sample.
            acc.samples.append((envelope_id, ts_ms, reason, rule, gateway, from_, to))
        bucket = ts_ms // self._bucket_ms
        lo, hi = self._min_bucket, self._max_bucket
        if lo is None or hi is None or not lo <= bucket <= hi:
            bucket = self._extend_buckets(ts_ms, bucket)
        acc.buckets[bucket] = acc.buckets.get(bucket, 0) + 1

    def _extend_buckets(self, ts_ms: int, bucket: int) -> int:
        """Take in ``bucket`` (of ``ts_ms``), outside the span so far; returns its index, which
        changes when the span had to be widened."""
        if self._min_bucket is None or self._max_bucket is None:
            self._min_bucket = self._max_bucket = bucket
            return bucket
        self._min_bucket = min(self._min_bucket, bucket)
        self._max_bucket = max(self._max_bucket, bucket)
        if self._max_bucket - self._min_bucket >= MAX_TIME_BUCKETS:
            self._widen_buckets()
            return ts_ms // self._bucket_ms
        return bucket

    def _admits(
        self, ts_ms: int, gateway: str, issuer_td: str, origin: str, destination: str,
        decision: str,
    ) -> bool:
        flt = self._flt
        return (
            (flt.scope is None or flt.scope in (origin, destination))
            and (flt.trust_domain is None
                 or flt.trust_domain in (issuer_td, self.trust_domain_of(gateway)))
            and (flt.decision is None or flt.decision.value == decision)
            and (flt.since_ms is None or ts_ms >= flt.since_ms)
            and (flt.until_ms is None or ts_ms < flt.until_ms)
        )

    def _widen_buckets(self) -> None:
        """Double ``bucket_ms`` (merging pairs of buckets) until the span fits."""
        assert self._min_bucket is not None and self._max_bucket is not None
        factor = 1
        while (self._max_bucket // factor) - (self._min_bucket // factor) >= MAX_TIME_BUCKETS:
            factor *= 2
        self._bucket_ms *= factor
        self._min_bucket //= factor
        self._max_bucket //= factor
        for acc in self._flows.values():
            merged: dict[int, int] = {}
            for b, n in acc.buckets.items():
                merged[b // factor] = merged.get(b // factor, 0) + n
            acc.buckets = merged

    def snapshot(self) -> GovernanceGraph:
        """The graph as it stands (the builder can go on being fed)."""
        for acc in self._flows.values():
            acc.flush_run()
        flows = [
            Flow(
                origin=o, destination=d, decision=Decision(dec), count=a.count,
                first_ms=a.first_ms, last_ms=a.last_ms, reasons=_sorted(a.reasons),
                rules=_sorted(a.rules), lineages=_sorted(a.lineages),
                policy_revisions=_sorted(a.revisions), gateways=_sorted(a.gateways),
                hops=_sorted(a.hops), trust_domains=_sorted(a.tds),
                samples=tuple(Sample(*t) for t in reversed(a.samples)),
                buckets=tuple(sorted(a.buckets.items())),
            )
            for (o, d, dec), a in self._flows.items()
        ]
        flows.sort(key=lambda f: (-f.count, f.origin, f.destination, f.decision.value))
        names = sorted(set(self._sent) | set(self._received))
        scopes = []
        for name in names:
            tds = _sorted(self._scope_tds.get(name, {}))
            scopes.append(ScopeNode(name, tds[0][0] if tds else "", tds,
                                    self._sent.get(name, 0), self._received.get(name, 0)))
        gateways = tuple(
            GatewayNode(g, self.trust_domain_of(g), n[0], n[1])
            for g, n in sorted(self._gateways.items())
        )
        revisions: dict[str, list[int]] = {}
        for (_g, rev), n in self._applied.items():
            tot = revisions.setdefault(rev, [0, 0])
            tot[0] += n[0]
            tot[1] += n[1]
        tds_all = {s.trust_domain for s in scopes} | {g.trust_domain for g in gateways}
        tds_all.discard("")
        return GovernanceGraph(
            records=self.records, filtered_out=self.filtered_out,
            overflow_records=self.overflow_records, first_ms=self._first_ms,
            last_ms=self._last_ms, bucket_ms=self._bucket_ms, scopes=tuple(scopes),
            trust_domains=tuple(sorted(tds_all)), gateways=gateways,
            revisions=tuple(RevisionNode(r, n[0], n[1]) for r, n in sorted(revisions.items())),
            applied=tuple(Applied(g, r, n[0], n[1]) for (g, r), n in sorted(self._applied.items())),
            flows=tuple(flows),
        )


_TEXT_KEYS = ("gateway", "issuer", "origin_scope", "destination_scope", "reason", "rule",
              "lineage", "policy_revision", "from", "to", "envelope_id")


def _fields(line: bytes) -> dict[str, Any]:  # the keys used are type-checked here
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise AuditFormatError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise AuditFormatError("not a JSON object")
    ts = obj.get("ts_ms")
    if type(ts) is not int or ts < 0:
        raise AuditFormatError("ts_ms: non-negative integer expected")
    for key in _TEXT_KEYS:
        if not isinstance(obj.get(key), str):
            raise AuditFormatError(f"{key}: text expected")
    if obj.get("decision") not in ("allow", "deny"):
        raise AuditFormatError(f"decision: allow or deny expected, got {obj.get('decision')!r}")
    return obj


def feed_lines(builder: GraphBuilder, lines: Iterable[bytes], *, source: str = "log") -> None:
    """Aggregate the audit lines ``lines`` (each with its newline) into ``builder``.

    The fast read path for the graph: each line is parsed as JSON and the fields the graph uses
    are type-checked; hashes and the chain are *not* checked (``sluice audit verify`` does).

    Raises:
        AuditFormatError: a line is too long, torn, not JSON or lacks a field; the message names
            ``source``, the line number and its byte offset.
    """
    offset = 0
    add = builder.add_decision
    for number, line in enumerate(lines, start=1):
        where = f"{source}: line {number} (byte {offset})"
        if len(line) > MAX_LINE_BYTES + 1:
            raise AuditFormatError(f"{where}: longer than {MAX_LINE_BYTES} bytes")
        if not line.endswith(b"\n"):
            raise AuditFormatError(f"{where}: incomplete last line")
        try:
            o = _fields(line)
        except AuditFormatError as exc:
            raise AuditFormatError(f"{where}: {exc}") from None
        add(
            ts_ms=o["ts_ms"], gateway=o["gateway"], issuer=o["issuer"],
            origin=o["origin_scope"], destination=o["destination_scope"],
            decision=o["decision"], reason=o["reason"], rule=o["rule"],
            lineage=o["lineage"], policy_revision=o["policy_revision"],
            from_=o["from"], to=o["to"], envelope_id=o["envelope_id"],
        )
        offset += len(line)


def _bounded_lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.readline(MAX_LINE_BYTES + 2):
            yield chunk


def graph_from_log(
    path: Path | str,
    flt: GraphFilter | None = None,
    *,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    max_flows: int = DEFAULT_MAX_FLOWS,
) -> GovernanceGraph:
    """Build the governance-flow graph of the audit log at ``path`` in one streaming pass.

    Returns:
        The aggregated graph.

    Raises:
        AuditFormatError: a malformed line (see :func:`feed_lines`).
        OSError: the file cannot be read.
    """
    builder = GraphBuilder(flt, max_samples=max_samples, max_flows=max_flows)
    feed_lines(builder, _bounded_lines(Path(path)), source=str(path))
    return builder.snapshot()
