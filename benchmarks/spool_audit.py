"""Append throughput of the spool and the audit log: fsync per record vs batched group commit.

Baselines in the same run, on the same filesystem: raw ``os.write`` + ``os.fsync`` per record
(what per-record durability costs at minimum), and raw ``os.write`` of a batch + one ``os.fsync``.
Prints the median over ``--repeats`` runs of records/s and the ratio to the matching baseline.

Then the CPU the audit hot path spends per record (no fsync: ``fsync="never"``, on /tmp), in
µs per record, medians over ``--cpu-repeats`` runs of ``--cpu-records`` records, each variant
timed in turn within every repeat so that load on the machine hits them alike:

* baseline: ``json.dumps`` (sorted keys, compact, ASCII) of each line's finished JSON object,
  once: less than any canonical-JSON writer can do (no object to build, no hash, no second
  encoding);
* the reference line (``_seal_with_line_reference``: ``body_object`` + ``json.dumps`` twice +
  BLAKE2b) and the fast one (``seal_with_line``), and ``AuditLog.append_many`` in batches of
  ``--batch`` (fast line + chaining + one ``write`` per batch);
* ``AuditRecord(...)`` construction with its validation, and the reference (full) checks alone;
* ``GraphBuilder.add`` (the live graph), on a stream where each edge repeats its values and on
  one where every decision changes the edge's values (no runs to count at once); baseline: a
  ``dict`` count per (origin, destination, decision) edge.

    .venv/bin/python benchmarks/spool_audit.py [--records 2000] [--size 1024] [--batch 64]
    .venv/bin/python benchmarks/spool_audit.py --cpu-only
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# Run as a script, this directory comes first on sys.path, where benchmarks/gateway.py would shadow
# the gateway package: put the repository root first.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.audit import AuditEntry, AuditLog, AuditRecord, Decision, FsyncMode
from gateway.audit.graph import GraphBuilder
from gateway.audit.record import _seal_with_line_reference, seal_with_line
from gateway.spool import Spool

GW = "spiffe://bench.example/gateway"


def raw_baseline(directory: Path, n: int, size: int, batch: int) -> float:
    fd = os.open(directory / "raw.bin", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    blob = os.urandom(size)
    start = time.perf_counter()
    for i in range(0, n, batch):
        os.write(fd, blob * min(batch, n - i))
        os.fsync(fd)
    elapsed = time.perf_counter() - start
    os.close(fd)
    return n / elapsed


def spool_run(directory: Path, n: int, size: int, batch: int) -> float:
    blob = os.urandom(size)
    with Spool(directory / "spool", 1 << 30) as spool:
        start = time.perf_counter()
        for i in range(0, n, batch):
            items = [(j.to_bytes(16, "big"), "peer:b", blob) for j in range(i, min(i + batch, n))]
            if batch == 1:
                spool.put(*items[0])
            else:
                spool.put_many(items)
        return n / (time.perf_counter() - start)


def audit_record(i: int) -> AuditRecord:
    return AuditRecord(
        gateway=GW,
        envelope_id=i.to_bytes(16, "big"),
        issuer="spiffe://w.example/sa/web",
        origin_scope="pay",
        destination_scope="ledger",
        tier=2,
        lineage=b"\x01" * 32,
        from_="net:weave",
        to="peer:cilium",
        decision=Decision.ALLOW,
        reason="allowed",
        rule="r1",
        policy_revision=b"\x02" * 32,
        stamps=1,
        envelope_digest=b"\x03" * 32,
    )


def audit_run(directory: Path, n: int, size: int, batch: int) -> float:
    del size  # audit lines are ~900 bytes whatever the envelope size
    mode: FsyncMode = "always" if batch == 1 else "batch"
    with AuditLog.open(
        directory / "audit.jsonl", gateway_id=GW, fsync=mode, batch_records=batch
    ) as log:
        start = time.perf_counter()
        for i in range(0, n, batch):
            log.append_many([audit_record(j) for j in range(i, min(i + batch, n))])
        log.flush()
        return n / (time.perf_counter() - start)


def median_rate(
    fn: Callable[[Path, int, int, int], float], n: int, size: int, batch: int, repeats: int
) -> float:
    rates = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
            rates.append(fn(Path(d), n, size, batch))
    return statistics.median(rates)


def _per_record_us(variants: dict[str, Callable[[], int]], repeats: int) -> dict[str, float]:
    """Median µs per record of each variant (each call returns how many records it did)."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            count = fn()
            samples[name].append((time.perf_counter() - start) / count * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


def _stream(n: int, *, varying: bool) -> list[AuditEntry]:
    """Entries on 8 edges; ``varying``: every decision differs from the previous one on its edge
    in reason, lineage and hop."""
    entries, prev = [], b"\x00" * 32
    for i in range(n):
        k = (i // 8) % 2 if varying else 0
        record = AuditRecord(
            gateway=GW,
            envelope_id=i.to_bytes(16, "big"),
            issuer="spiffe://w.example/sa/web",
            origin_scope=f"scope-{i % 4}",
            destination_scope="ledger",
            tier=2,
            lineage=bytes([k]) * 32,
            from_="net:weave",
            to=f"peer:cilium-{k}",
            decision=Decision.ALLOW if i % 8 < 4 else Decision.DENY,
            reason=f"reason-{k}",
            rule="r1",
            policy_revision=b"\x02" * 32,
            stamps=1,
            envelope_digest=b"\x03" * 32,
        )
        entry, _ = seal_with_line(i + 1, 1_700_000_000_000 + i, record, prev)
        entries.append(entry)
        prev = entry.hash
    return entries


def cpu_figures(n: int, batch: int, repeats: int) -> None:
    records = [audit_record(i) for i in range(n)]
    kwargs = [{name: getattr(r, name) for name in AuditRecord.__slots__} for r in records]
    prev = b"\x00" * 32
    objects = [
        _seal_with_line_reference(i + 1, 1_700_000_000_000, r, prev)[0].to_json()
        for i, r in enumerate(records)
    ]
    same, varying = _stream(n, varying=False), _stream(n, varying=True)
    edges = [
        (e.record.origin_scope, e.record.destination_scope, e.record.decision.value) for e in same
    ]

    def dumps() -> int:
        for obj in objects:
            json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
        return n

    def lines(seal: Callable[..., object]) -> Callable[[], int]:
        def run() -> int:
            for i, record in enumerate(records):
                seal(i + 1, 1_700_000_000_000, record, prev)
            return n

        return run

    with (
        tempfile.TemporaryDirectory() as d,
        AuditLog.open(Path(d) / "audit.jsonl", gateway_id=GW, fsync="never") as log,
    ):

        def append() -> int:
            for i in range(0, n, batch):
                log.append_many(records[i : i + batch], now=1_700_000_000.0)
            return n

        def construct() -> int:
            for kw in kwargs:
                AuditRecord(**kw)
            return n

        def full_checks() -> int:
            for r in records:
                r._check_fully()
            return n

        def graph(entries: list[AuditEntry]) -> Callable[[], int]:
            def run() -> int:
                builder = GraphBuilder()
                for entry in entries:
                    builder.add(entry)
                return n

            return run

        def edge_count() -> int:
            counts: dict[tuple[str, str, str], int] = {}
            for key in edges:
                counts[key] = counts.get(key, 0) + 1
            return n

        us = _per_record_us(
            {
                "dumps": dumps,
                "reference": lines(_seal_with_line_reference),
                "fast": lines(seal_with_line),
                "append": append,
                "construct": construct,
                "checks": full_checks,
                "graph_same": graph(same),
                "graph_varying": graph(varying),
                "edges": edge_count,
            },
            repeats,
        )
    base = us["dumps"]
    print(f"\nCPU per audit record, µs, median of {repeats} runs of {n} records")
    print(f"{'baseline json.dumps of the finished object':46s} {base:7.2f} µs")
    for key, label in (
        ("reference", "line, reference (body_object + 2x dumps)"),
        ("fast", "line, seal_with_line"),
        ("append", f"AuditLog.append_many, batches of {batch}"),
    ):
        print(f"{label:46s} {us[key]:7.2f} µs  {us[key] / base:5.2f}x baseline")
    print(f"{'  fast line vs reference':46s} {us['reference'] / us['fast']:7.2f}x faster")
    print(f"{'AuditRecord(...) incl. validation':46s} {us['construct']:7.2f} µs")
    print(f"{'  reference full checks alone':46s} {us['checks']:7.2f} µs")
    print(f"{'baseline dict count per edge':46s} {us['edges']:7.2f} µs")
    for key, label in (
        ("graph_same", "GraphBuilder.add, edges repeat their values"),
        ("graph_varying", "GraphBuilder.add, values change every time"),
    ):
        print(f"{label:46s} {us[key]:7.2f} µs  {us[key] / us['edges']:5.1f}x baseline")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--size", type=int, default=1024, help="envelope bytes per spool record")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cpu-records", type=int, default=6400)
    parser.add_argument("--cpu-repeats", type=int, default=15)
    parser.add_argument("--cpu-only", action="store_true", help="only the CPU figures")
    args = parser.parse_args()
    if args.cpu_only:
        cpu_figures(args.cpu_records, args.batch, args.cpu_repeats)
        return
    n, size, batch, reps = args.records, args.size, args.batch, args.repeats
    print(f"{n} records of {size} bytes, batch {batch}, median of {reps} runs")
    base1 = median_rate(raw_baseline, n, size, 1, reps)
    baseb = median_rate(raw_baseline, n, size, batch, reps)
    print(f"{'baseline os.write+os.fsync per record':46s} {base1:10.0f} rec/s")
    print(f"{'baseline os.write batch + one os.fsync':46s} {baseb:10.0f} rec/s")
    for name, fn in (("spool put", spool_run), ("audit append", audit_run)):
        per = median_rate(fn, n, size, 1, reps)
        grp = median_rate(fn, n, size, batch, reps)
        print(f"{name + ', fsync per record':46s} {per:10.0f} rec/s  {per / base1:5.2f}x baseline")
        print(
            f"{name + ', group commit':46s} {grp:10.0f} rec/s  {grp / baseb:5.2f}x batched "
            f"baseline, {grp / per:6.1f}x per-record"
        )
    cpu_figures(args.cpu_records, args.batch, args.cpu_repeats)


if __name__ == "__main__":
    main()
