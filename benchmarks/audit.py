"""Governance-flow graph over a large audit log: 1,000,000 decisions over 500 scopes by default.

The log is a real audit log written by :class:`gateway.audit.AuditLog` (hash-chained canonical
JSON lines) under /var/tmp, generated once and reused while its parameters match. Each run then
measures, as medians over ``--repeats``:

* baseline: read the lines and ``json.loads`` each (the least any JSON-lines reader does);
* graph: :func:`graph_from_log` (the fast read path: parse + type-check + aggregate);
* strict: ``read_entries`` (canonical form, hash recomputed, records validated) feeding
  ``GraphBuilder.add``, on the first ``--strict-records`` lines only (it is the slow path);
* rendering the graph as DOT, JSON and HTML;

and, in one separate pass under ``tracemalloc``, the peak Python memory of building the graph
(tracing slows the pass, so its time is not used). Also printed: the process's max RSS.

    .venv/bin/python benchmarks/audit.py [--records 1000000] [--scopes 500] [--repeats 3]
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import resource
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

# Run as a script, this directory comes first on sys.path, where benchmarks/gateway.py would shadow
# the gateway package: put the repository root first.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.audit import AuditLog, AuditRecord, Decision, read_entries
from gateway.audit.graph import GovernanceGraph, GraphBuilder, graph_from_log
from gateway.audit.html import render_html
from gateway.audit.render import render_dot, render_json

FORMAT = 1  # bump when the generator changes, so an old file is not reused
T0 = 1_700_000_000.0
RATE = 100.0  # decisions per second of simulated time: 1M decisions span ~2.8 hours
TRUST_DOMAINS = 5
GATEWAYS = 3
FANOUT = 8  # destinations per origin scope
DENY_REASONS = (
    "tier_too_low",
    "no_matching_rule",
    "origin_not_allowed",
    "lineage_revoked",
    "expired",
)


def log_path(records: int, scopes: int, seed: int) -> Path:
    return Path(f"/var/tmp/sluice-bench-audit-v{FORMAT}-{records}-{scopes}-{seed}.jsonl")


def generate(path: Path, records: int, scopes: int, seed: int) -> None:
    """Write the log: each origin talks to FANOUT destinations; origins are Zipf-weighted;
    15 % of decisions are refusals. Deterministic for a seed."""
    rng = random.Random(seed)
    names = [f"svc-{i:03d}" for i in range(scopes)]
    tds = [f"td{t}.bench.example" for t in range(TRUST_DOMAINS)]
    gws = [f"spiffe://{tds[g % TRUST_DOMAINS]}/gateway/{g}" for g in range(GATEWAYS)]
    revisions = [bytes([r + 1]) * 32 for r in range(4)]
    lineages = [bytes([0xA0 + r]) * 32 for r in range(6)]
    dests = [rng.sample(range(scopes), FANOUT) for _ in range(scopes)]
    weights = list(itertools.accumulate(1 / (i + 1) for i in range(scopes)))
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    batch = 1000  # one timestamp per batch: 10 s of simulated time
    with AuditLog.open(tmp, gateway_id=gws[0], fsync="never") as log:
        for start in range(0, records, batch):
            chunk = []
            for n in range(start, min(start + batch, records)):
                o = rng.choices(range(scopes), cum_weights=weights)[0]
                d = dests[o][rng.randrange(FANOUT)]
                deny = rng.random() < 0.15
                gw = gws[(o + d) % GATEWAYS]
                chunk.append(
                    AuditRecord(
                        gateway=gw,
                        envelope_id=n.to_bytes(16, "big"),
                        issuer=f"spiffe://{tds[o % TRUST_DOMAINS]}/ns/{names[o]}/sa/app",
                        origin_scope=names[o],
                        destination_scope=names[d],
                        tier=rng.randrange(4),
                        lineage=lineages[rng.randrange(6)],
                        from_=f"net:{tds[o % TRUST_DOMAINS]}",
                        to="" if deny else f"peer:{gw.rsplit('/', 1)[1]}",
                        decision=Decision.DENY if deny else Decision.ALLOW,
                        reason=rng.choice(DENY_REASONS) if deny else "allowed",
                        rule=f"rule-{d % 40}" if not deny or rng.random() < 0.5 else "",
                        policy_revision=revisions[(n * 4) // records],
                        stamps=rng.randrange(3),
                        envelope_digest=rng.randbytes(32),
                    )
                )
            log.append_many(chunk, now=T0 + start / RATE)
    tmp.rename(path)


def baseline(path: Path) -> int:
    n = 0
    with path.open("rb") as f:
        for line in f:
            json.loads(line)
            n += 1
    return n


def strict(path: Path, limit: int) -> GovernanceGraph:
    builder = GraphBuilder()
    builder.add_all(itertools.islice(read_entries(path), limit))
    return builder.snapshot()


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--scopes", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--strict-records", type=int, default=100_000)
    args = ap.parse_args()

    path = log_path(args.records, args.scopes, args.seed)
    if not path.exists():
        print(f"generating {path} ...", flush=True)
        start = time.perf_counter()
        generate(path, args.records, args.scopes, args.seed)
        print(f"  generated in {time.perf_counter() - start:.1f} s")
    size = path.stat().st_size
    print(
        f"log: {path} ({size / 2**20:.0f} MiB, {args.records:,} decisions, "
        f"{args.scopes} scopes); medians of {args.repeats}"
    )

    t_base, n = timed(lambda: baseline(path), args.repeats)
    assert n == args.records, n
    t_graph, g = timed(lambda: graph_from_log(path), args.repeats)
    assert isinstance(g, GovernanceGraph) and g.records == args.records
    limit = min(args.strict_records, args.records)
    t_strict, _ = timed(lambda: strict(path, limit), args.repeats)
    t_dot, dot = timed(lambda: render_dot(g), args.repeats)
    t_json, doc = timed(lambda: render_json(g), args.repeats)
    t_html, page = timed(lambda: render_html(g), args.repeats)
    assert isinstance(dot, str) and isinstance(doc, str) and isinstance(page, bytes)

    tracemalloc.start()
    graph_from_log(path)
    _cur, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def rate(t: float, count: int) -> str:
        return f"{t:8.2f} s  {count / t:>11,.0f} records/s"

    print(
        f"graph: {len(g.flows):,} flows, {len(g.scopes)} scopes, {len(g.trust_domains)} trust "
        f"domains, {len(g.gateways)} gateways, {len(g.revisions)} revisions, "
        f"bucket {g.bucket_ms // 1000} s"
    )
    print(f"baseline read + json.loads    {rate(t_base, args.records)}")
    print(
        f"graph (fast path)             {rate(t_graph, args.records)}  "
        f"x{t_graph / t_base:.2f} of baseline"
    )
    print(
        f"graph (strict, {limit:,} lines) {rate(t_strict, limit)}  "
        f"x{(t_strict / limit) / (t_base / args.records):.2f} of baseline per record"
    )
    print(f"render DOT                    {t_dot * 1000:8.0f} ms  {len(dot) / 2**20:.1f} MiB")
    print(f"render JSON                   {t_json * 1000:8.0f} ms  {len(doc) / 2**20:.1f} MiB")
    print(
        f"render HTML                   {t_html * 1000:8.0f} ms  {len(page) / 2**20:.1f} MiB "
        f"(largest 5,000 flows embedded)"
    )
    print(
        f"peak traced memory building the graph: {peak / 2**20:.1f} MiB "
        f"(log is {size / 2**20:.0f} MiB); process max RSS {rss / 2**20:.0f} MiB"
    )


if __name__ == "__main__":
    main()
