"""Append throughput of the spool and the audit log: fsync per record vs batched group commit.

Baselines in the same run, on the same filesystem: raw ``os.write`` + ``os.fsync`` per record
(what per-record durability costs at minimum), and raw ``os.write`` of a batch + one ``os.fsync``.
Prints the median over ``--repeats`` runs of records/s and the ratio to the matching baseline.

    .venv/bin/python benchmarks/spool_audit.py [--records 2000] [--size 1024] [--batch 64]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from gateway.audit import AuditLog, AuditRecord, Decision, FsyncMode
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
        gateway=GW, envelope_id=i.to_bytes(16, "big"), issuer="spiffe://w.example/sa/web",
        origin_scope="pay", destination_scope="ledger", tier=2, lineage=b"\x01" * 32,
        from_="net:weave", to="peer:cilium", decision=Decision.ALLOW, reason="allowed",
        rule="r1", policy_revision=b"\x02" * 32, stamps=1, envelope_digest=b"\x03" * 32,
    )


def audit_run(directory: Path, n: int, size: int, batch: int) -> float:
    del size  # audit lines are ~900 bytes whatever the envelope size
    mode: FsyncMode = "always" if batch == 1 else "batch"
    with AuditLog.open(directory / "audit.jsonl", gateway_id=GW, fsync=mode,
                       batch_records=batch) as log:
        start = time.perf_counter()
        for i in range(0, n, batch):
            log.append_many([audit_record(j) for j in range(i, min(i + batch, n))])
        log.flush()
        return n / (time.perf_counter() - start)


def median_rate(fn: Callable[[Path, int, int, int], float], n: int, size: int, batch: int,
                repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
            rates.append(fn(Path(d), n, size, batch))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--size", type=int, default=1024, help="envelope bytes per spool record")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
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
        print(f"{name + ', group commit':46s} {grp:10.0f} rec/s  {grp / baseb:5.2f}x batched "
              f"baseline, {grp / per:6.1f}x per-record")


if __name__ == "__main__":
    main()
