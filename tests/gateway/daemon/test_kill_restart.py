"""SIGKILL a gateway mid-stream and restart it: no acknowledged envelope is lost, none is
delivered twice to the application.

gw-weave runs as a real ``sluice run`` subprocess (so it can really be killed: no drain, no
``finally``), with its audit log and spool on disk; gw-cilium and the ledger's receiver run in
this process. The orders sender streams envelopes with several in flight and keeps retrying each
one (same bytes, same envelope id) through the crash.
"""

from __future__ import annotations

from pathlib import Path

import trio

from gateway.audit.verify import verify
from gateway.demo.harness import envelope, spools_empty
from gateway.demo.topology import Topology
from gateway.envelope.wire import decode_unverified
from gateway.shim import Sender, SendResult
from identity.workload_api_server import WorkloadApiServer
from tests.gateway.daemon.conftest import (
    CountingSink,
    GatewayProcess,
    fixed_metrics_port,
    metric,
    start_gateway,
    start_receiver,
)

TOTAL = 200
CONCURRENCY = 8
KILL_AFTER = 60


async def test_sigkill_mid_stream_loses_nothing_duplicates_nothing(
    topo: Topology,
    apis: dict[str, WorkloadApiServer],
    tmp_path: Path,
    processes: list[GatewayProcess],
) -> None:
    sink = CountingSink(tmp_path / "ledger")
    http = fixed_metrics_port(topo.weave_config)
    weave = GatewayProcess(topo.weave_config, http, tmp_path / "gw-weave.log")
    processes.append(weave)
    weave.start()
    sender = Sender("127.0.0.1", topo.weave_listen, name=str(topo.orders.spiffe_id))
    batch = [envelope(topo, payload=f"order {n}".encode()) for n in range(TOTAL)]
    results: dict[int, SendResult] = {}
    acked = trio.Event()
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            await weave.wait_ready()
            cilium = await start_gateway(nursery, topo.cilium_config)
            await start_receiver(nursery, topo, sink)
            await nursery.start(sender.run)
            queue = iter(range(TOTAL))

            async def stream() -> None:
                for n in queue:
                    results[n] = await sender.send(batch[n], deadline=60)
                    if len(results) >= KILL_AFTER:
                        acked.set()

            async with trio.open_nursery() as senders:
                for _ in range(CONCURRENCY):
                    senders.start_soon(stream)
                await acked.wait()
                weave.kill()  # SIGKILL: mid-stream, envelopes in flight
                killed_at = len(results)
                await trio.sleep(0.5)
                weave.start()  # same config, same audit log and spool
                await weave.wait_ready()
            assert killed_at < TOTAL  # the kill really was mid-stream
            with trio.fail_after(30):  # whatever was spooled drains to the ledger
                while await metric(http, "sluice_spool_entries") > 0:
                    await trio.sleep(0.05)
            await spools_empty([cilium.gateway], timeout=30)
            nursery.cancel_scope.cancel()

    told_delivered = {n for n, r in results.items() if r.delivered}
    refused = {n: r for n, r in results.items() if not r.delivered}
    assert not refused, refused  # every envelope was valid: each one must get through
    assert len(told_delivered) == TOTAL
    ids = [decode_unverified(data).claims.envelope_id for data in batch]
    # Every envelope the sender was told was delivered is at the application...
    missing = {n: results[n] for n, i in enumerate(ids) if i not in sink.files()}
    assert not missing, (missing, weave.log_text()[-3000:])
    for n, envelope_id in enumerate(ids):
        assert (sink.inner.directory / envelope_id.hex()).read_bytes() == f"order {n}".encode()
    # ...and was delivered exactly once (duplicates offered by retries were refused).
    assert sink.delivered == dict.fromkeys(ids, 1)
    assert any(r.attempts > 1 for r in results.values())  # the crash forced retries
    # The killed gateway's audit log is still a valid chain (a torn tail is repaired on open).
    assert verify(topo.root / "state" / "gw-weave" / "audit.log").ok
