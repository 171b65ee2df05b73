"""End to end over loopback: the demo's two federated gateways, every decision kind, the audit
logs, the HTTP port, identity rotation, SIGHUP reload and a peer that is down for a while.

All real: TCP and mutual TLS on 127.0.0.1, X.509-SVIDs from a gRPC Workload API over unix
sockets, the gateways' TOML files, audit logs and spools on disk.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import nacl.public
import trio

from gateway.audit.record import Decision
from gateway.audit.verify import read_entries, verify
from gateway.demo.harness import envelope, links_up, spools_empty, tampered
from gateway.demo.topology import WEAVE, Topology
from gateway.envelope.wire import decode_unverified
from gateway.reasons import Reason
from gateway.shim import Sender
from identity.workload_api_server import WorkloadApiServer
from tests.gateway.daemon.conftest import (
    CountingSink,
    GatewayProcess,
    edit,
    fixed_metrics_port,
    http_get,
    metric,
    start_gateway,
    start_receiver,
)


def _id(data: bytes) -> bytes:
    return decode_unverified(data).claims.envelope_id


def _audit(topo: Topology, gateway: str) -> list[tuple[bytes, str, str, str]]:
    path = topo.root / "state" / gateway / "audit.log"
    return [
        (e.record.envelope_id, e.record.decision.value, e.record.reason, e.record.from_)
        for e in read_entries(path)
    ]


async def test_every_decision_federation_audit_and_http(
    topo: Topology, apis: dict[str, WorkloadApiServer], tmp_path: Path
) -> None:
    sink = CountingSink(tmp_path / "ledger")
    sender = Sender("127.0.0.1", topo.weave_listen, name=str(topo.orders.spiffe_id))
    ledger_key = nacl.public.PrivateKey.generate()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            weave = await start_gateway(nursery, topo.weave_config)
            cilium = await start_gateway(nursery, topo.cilium_config)
            await start_receiver(nursery, topo, sink)
            await nursery.start(sender.run)
            await links_up([weave.gateway, cilium.gateway])

            allowed = envelope(topo, payload=b"order 1042")
            first = await sender.send(allowed, deadline=10)
            assert first.delivered and first.attempts == 1
            assert sink.delivered == {_id(allowed): 1}
            assert (sink.inner.directory / _id(allowed).hex()).read_bytes() == b"order 1042"

            refusals = [
                (allowed, Reason.REPLAYED),
                (envelope(topo, origin_scope="payments/api"), Reason.SCOPE_NOT_ENDORSED),
                (envelope(topo, tier=0), Reason.TIER_TOO_LOW),
                (tampered(topo), Reason.PAYLOAD_MISMATCH),
                (envelope(topo, routing=topo.routing(WEAVE)), Reason.TRANSIT_NOT_ALLOWED),
                (
                    envelope(topo, lineage=topo.lineage("orders/intake", number=1)),
                    Reason.LINEAGE_REVOKED,
                ),
            ]
            for data, reason in refusals:
                result = await sender.send(data, deadline=10)
                assert not result.delivered, reason
                assert result.reason is reason, (reason, result)
            # None of the refused envelopes reached the application.
            assert set(sink.delivered) == {_id(allowed)}

            secret = b"card ending 4242"
            sealed = envelope(topo, payload=secret, seal_to=bytes(ledger_key.public_key))
            assert (await sender.send(sealed, deadline=10)).delivered
            carried = (sink.inner.directory / _id(sealed).hex()).read_bytes()
            assert secret not in carried  # the gateways and the sink only ever saw ciphertext
            assert nacl.public.SealedBox(ledger_key).decrypt(carried) == secret
            assert sink.delivered == {_id(allowed): 1, _id(sealed): 1}
            await spools_empty([weave.gateway, cilium.gateway])

            # HTTP port: decisions counted per reason, readiness.
            weave_http = weave.gateway.bound["http"]
            labels = {"network": "weave"}
            assert (
                await metric(
                    weave_http,
                    "sluice_decisions_total",
                    decision="allow",
                    reason="allowed",
                    **labels,
                )
                == 3
            )  # allowed, sealed, and the transit case (refused by gw-cilium)
            for denied in ("replayed", "scope_not_endorsed", "tier_too_low", "payload_mismatch"):
                assert (
                    await metric(
                        weave_http,
                        "sluice_decisions_total",
                        decision="deny",
                        reason=denied,
                        **labels,
                    )
                    == 1
                ), denied
            cilium_http = cilium.gateway.bound["http"]
            assert (
                await metric(
                    cilium_http,
                    "sluice_decisions_total",
                    decision="deny",
                    reason="transit_not_allowed",
                    network="federation",
                )
                == 1
            )
            assert await http_get(weave_http, "/readyz") == (200, "ready\n")
            assert (await http_get(cilium_http, "/healthz"))[0] == 200
            # The live governance-flow view, fed from the committed audit entries.
            status, graph_json = await http_get(weave_http, "/graph.json")
            assert status == 200
            flows = {
                (f["origin"], f["destination"], f["decision"]): f["count"]
                for f in json.loads(graph_json)["edges"]
                if f["kind"] == "flow"
            }
            assert flows[("orders/intake", "payments/ledger", "allow")] == 3
            assert flows[("orders/intake", "payments/ledger", "deny")] >= 3
            status, page = await http_get(weave_http, "/graph")
            assert status == 200 and "<svg" in page and "default-src 'none'" in page
            nursery.cancel_scope.cancel()

    # Federation over mTLS: gw-cilium recorded the allowed envelope as coming from its peer.
    cilium_log = _audit(topo, "gw-cilium")
    assert (_id(allowed), "allow", "allowed", "peer:gw-weave") in cilium_log
    assert (_id(sealed), "allow", "allowed", "peer:gw-weave") in cilium_log
    weave_log = _audit(topo, "gw-weave")
    assert (_id(allowed), "deny", "replayed", "net:weave") in weave_log
    for name in ("gw-weave", "gw-cilium"):
        report = verify(topo.root / "state" / name / "audit.log")
        assert report.ok, report.broken
    assert verify(topo.root / "state" / "gw-weave" / "audit.log").records == len(weave_log)
    assert sum(1 for e in weave_log if e[1] == Decision.DENY.value) >= 6


async def test_identity_rotation_mid_stream(
    topo: Topology, apis: dict[str, WorkloadApiServer], tmp_path: Path
) -> None:
    sink = CountingSink(tmp_path / "ledger")
    sender = Sender("127.0.0.1", topo.weave_listen, name=str(topo.orders.spiffe_id))
    sent: list[bytes] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            weave = await start_gateway(nursery, topo.weave_config)
            cilium = await start_gateway(nursery, topo.cilium_config)
            await start_receiver(nursery, topo, sink)
            await nursery.start(sender.run)
            await links_up([weave.gateway, cilium.gateway])
            rotations = cilium.gateway.metrics.registry

            def rotated() -> float:
                return rotations.get_sample_value("sluice_identity_rotations_total") or 0.0

            stop = trio.Event()

            async def stream() -> None:
                while not stop.is_set():
                    data = envelope(topo)
                    result = await sender.send(data, deadline=15)
                    assert result.delivered, result
                    sent.append(data)
                    await trio.sleep(0.01)

            nursery.start_soon(stream)
            with trio.fail_after(10):
                while len(sent) < 10:
                    await trio.sleep(0.01)
            old_serial = apis["gw-cilium"].identity.svid.chain[0].serial_number
            await trio.to_thread.run_sync(apis["gw-cilium"].rotate)
            assert apis["gw-cilium"].identity.svid.chain[0].serial_number != old_serial
            with trio.fail_after(10):
                while rotated() < 1:
                    await trio.sleep(0.02)
            before = len(sent)
            # Force a fresh mTLS handshake with the rotated SVID: gw-weave reconnects.
            await trio.to_thread.run_sync(apis["gw-weave"].rotate)
            with trio.fail_after(10):
                while (
                    weave.gateway.metrics.registry.get_sample_value(
                        "sluice_identity_rotations_total"
                    )
                    != 1.0
                    or len(sent) < before + 20
                ):
                    await trio.sleep(0.02)
            stop.set()
            nursery.cancel_scope.cancel()
    assert len(sent) >= before + 20
    assert set(sink.delivered) >= {_id(d) for d in sent}
    assert max(sink.delivered.values()) == 1


async def test_peer_down_then_back_gets_everything_once(
    topo: Topology, apis: dict[str, WorkloadApiServer], tmp_path: Path
) -> None:
    sink = CountingSink(tmp_path / "ledger")
    sender = Sender("127.0.0.1", topo.weave_listen, name=str(topo.orders.spiffe_id))
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            weave = await start_gateway(nursery, topo.weave_config)
            cilium = await start_gateway(nursery, topo.cilium_config)
            await start_receiver(nursery, topo, sink)
            await nursery.start(sender.run)
            await links_up([weave.gateway, cilium.gateway])
            await cilium.stop()
            link = next(iter(weave.gateway.delivery.links.values()))
            with trio.fail_after(10):
                while link.up:
                    await trio.sleep(0.02)
            batch = [envelope(topo, payload=f"while down {n}".encode()) for n in range(30)]
            for data in batch:
                result = await sender.send(data, deadline=10)
                assert result.delivered and result.attempts == 1  # ACKed: durably spooled
            http = weave.gateway.bound["http"]
            target = f"peer:gw-cilium@127.0.0.1:{topo.cilium_federation}"
            assert await metric(http, "sluice_spooled_total", target=target) == 30
            assert await metric(http, "sluice_spool_entries") == 30
            assert not sink.delivered
            await trio.sleep(1.0)  # down "for a while": the link keeps retrying meanwhile
            cilium = await start_gateway(nursery, topo.cilium_config)
            await spools_empty([weave.gateway], timeout=30)
            with trio.fail_after(10):
                while len(sink.delivered) < len(batch):
                    await trio.sleep(0.02)
            nursery.cancel_scope.cancel()
    assert sink.delivered == {_id(d): 1 for d in batch}
    for data in batch:
        payload = (sink.inner.directory / _id(data).hex()).read_bytes()
        assert payload.startswith(b"while down ")


async def test_sighup_reload_and_refused_reload(
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
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            # gw-weave writes its own endorsement at start-up; gw-cilium reads the anchors
            # directory when it starts (or reloads), so it starts second.
            await weave.wait_ready()
            await start_gateway(nursery, topo.cilium_config)
            await start_receiver(nursery, topo, sink)
            await nursery.start(sender.run)
            assert (await sender.send(envelope(topo, tier=1), deadline=15)).delivered

            # The ledger's policy now wants "restricted" (2); reload with SIGHUP.
            policy = topo.root / "policies" / "payments-ledger.toml"
            edit(policy, 'min_tier = "internal"', 'min_tier = "restricted"')
            weave.signal(signal.SIGHUP)
            with trio.fail_after(10):
                while await metric(http, "sluice_config_reloads_total", result="ok") < 1:
                    await trio.sleep(0.05)
            refused = await sender.send(envelope(topo, tier=1), deadline=10)
            assert refused.reason is Reason.TIER_TOO_LOW
            assert (await sender.send(envelope(topo, tier=2), deadline=10)).delivered

            # A broken config is refused; the daemon keeps running on the previous one.
            edit(topo.weave_config, "[limits]\n", "[limits]\nmax_connections = -5\n")
            weave.signal(signal.SIGHUP)
            with trio.fail_after(10):
                while await metric(http, "sluice_config_reloads_total", result="error") < 1:
                    await trio.sleep(0.05)
            assert weave.alive()
            assert (await sender.send(envelope(topo, tier=1), deadline=10)).reason is (
                Reason.TIER_TOO_LOW
            )
            assert (await sender.send(envelope(topo, tier=2), deadline=10)).delivered
            assert (await http_get(http, "/readyz"))[0] == 200
            with trio.fail_after(15):  # an ACK may mean "spooled": wait for the hand-off
                while len(sink.delivered) < 3:
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    log = weave.log_text()
    assert "reload refused, keeping the running config" in log
    assert "max_connections" in log
    assert sink.delivered.most_common(1)[0][1] == 1
