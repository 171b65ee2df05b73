"""The gateway's audit group commit: both durability modes, and failure surfacing."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from gateway.audit.record import AuditRecord, Decision
from gateway.audit.verify import verify
from gateway.audit.writer import AuditLog
from gateway.daemon.audit_sink import AuditSink, AuditUnavailable

GW = "spiffe://weave.demo.example/sluice/gateway/gw"


def _record(n: int) -> AuditRecord:
    return AuditRecord(
        gateway=GW,
        envelope_id=n.to_bytes(16, "big"),
        issuer="spiffe://weave.demo.example/ns/orders/sa/orders",
        origin_scope="orders/intake",
        destination_scope="payments/ledger",
        tier=1,
        lineage=bytes(32),
        from_="net:weave",
        to="peer:gw-cilium",
        decision=Decision.ALLOW,
        reason="allowed",
        rule="r",
        policy_revision=bytes(32),
        stamps=0,
    )


async def test_always_mode_commits_each_batch_before_answering(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    seen: list[int] = []
    with AuditLog.open(path, gateway_id=GW, fsync="always") as log:
        sink = AuditSink(log, observer=lambda entry: seen.append(entry.seq))
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                await nursery.start(sink.run)
                async with trio.open_nursery() as senders:
                    for n in range(50):
                        senders.start_soon(sink.record, _record(n))
                # Every record() returned: all 50 are in the file and nothing awaits an fsync.
                assert verify(path).records == 50
                assert log.sync() == 0
                nursery.cancel_scope.cancel()
    assert seen == list(range(1, 51))


async def test_interval_mode_writes_inline_and_fsyncs_on_the_timer(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    with AuditLog.open(path, gateway_id=GW, fsync="never") as log:
        sink = AuditSink(log, interval=0.05)
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                await nursery.start(sink.run)
                await sink.record(_record(1))
                assert verify(path).records == 1  # written before record() returned
                await trio.sleep(0.3)  # several timer periods
                assert log.sync() == 0  # the timer already made it durable
                await sink.record(_record(2))
                nursery.cancel_scope.cancel()
            # Cancelling the sink flushed the last interval.
            assert log.sync() == 0
    assert verify(path).records == 2


async def test_a_failed_write_is_reported_to_every_waiter(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog.open(path, gateway_id=GW, fsync="never")
    log.close()  # every later append fails
    sink = AuditSink(log, interval=10.0)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(sink.run)
            with pytest.raises(AuditUnavailable, match="audit log write failed"):
                await sink.record(_record(1))
            nursery.cancel_scope.cancel()
