"""Plays the demo: every kind of decision through two real federated gateways, then proves it.

Everything runs in this process on 127.0.0.1: two SPIFFE Workload API servers (gRPC over unix
sockets, standing in for SPIRE agents), two gateways started exactly as ``sluice run`` starts them
(from the TOML files written by :mod:`gateway.demo.topology`), a receiver for the ledger workload
on the Cilium side, and the orders workload's sender on the Weave side.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import nacl.public
import trio

from gateway.audit.verify import read_entries, verify
from gateway.daemon.main import run_gateway
from gateway.demo.harness import (
    bundles,
    envelope,
    links_up,
    resolver,
    spools_empty,
    tampered,
    workload_apis,
)
from gateway.demo.topology import CILIUM, WEAVE, Topology, build_topology
from gateway.envelope.wire import decode_unverified
from gateway.shim import DirectorySink, Sender, serve_receiver
from identity.tls import client_context
from identity.x509svid import X509SVID

# The ledger scope's X25519 key: senders seal payloads to it; only the ledger can open them.
_LEDGER_SEAL_KEY = nacl.public.PrivateKey.generate().public_key


@dataclass(frozen=True, slots=True)
class Row:
    scenario: str
    expected: str
    result: str
    told_sender: str
    recorded: str

    @property
    def ok(self) -> bool:
        return self.expected == self.result


async def _unknown_peer(topo: Topology) -> str:
    """A workload SVID of a trusted domain, posing as a federation peer of gw-cilium."""
    svid = topo.orders.svid
    context = client_context(
        X509SVID(svid.spiffe_id, svid.chain, svid.private_key),
        bundles(topo).for_trust_domain(CILIUM),
    )
    stream = await trio.open_tcp_stream("127.0.0.1", topo.cilium_federation)
    tls = trio.SSLStream(stream, context, server_hostname=None)
    try:
        with trio.fail_after(5):
            await tls.do_handshake()
            await tls.send_all(b"SL")
            data = await tls.receive_some(100)
        return "refused" if not data else "accepted"
    except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
        return "refused"
    finally:
        await trio.aclose_forcefully(tls)


def _audit_reasons(topo: Topology) -> dict[bytes, list[str]]:
    out: dict[bytes, list[str]] = {}
    for name in ("gw-weave", "gw-cilium"):
        for entry in read_entries(topo.root / "state" / name / "audit.log"):
            rec = entry.record
            out.setdefault(rec.envelope_id, []).append(f"{name}:{rec.decision.value}/{rec.reason}")
    return out


async def play(topo: Topology) -> list[Row]:
    """Run both gateways and every scenario; return the table rows."""
    rows: list[Row] = []
    sender = Sender("127.0.0.1", topo.weave_listen, name=str(topo.orders.spiffe_id))
    sink = DirectorySink(topo.root / "delivered" / "ledger")
    async with trio.open_nursery() as nursery:
        gateways = [
            await nursery.start(run_gateway, topo.weave_config),
            await nursery.start(run_gateway, topo.cilium_config),
        ]
        await nursery.start(
            lambda task_status: serve_receiver(
                "127.0.0.1",
                topo.receiver_port,
                name=str(topo.ledger_id),
                resolver=resolver(topo),
                sink=sink,
                task_status=task_status,
            )
        )
        await nursery.start(sender.run)
        await links_up(gateways)
        allowed = envelope(topo)
        revoked_lineage = topo.lineage("orders/intake", number=1)
        cases: list[tuple[str, str, bytes]] = [
            ("allowed: orders -> ledger, tier internal", "delivered", allowed),
            ("replayed: the same envelope again", "refused", allowed),
            (
                "wrong scope: orders claims payments/api",
                "refused",
                envelope(topo, origin_scope="payments/api"),
            ),
            ("tier too low: public", "refused", envelope(topo, tier=0)),
            ("tampered payload", "refused", tampered(topo)),
            (
                "routing: may only transit weave.demo.example",
                "refused",
                envelope(topo, routing=topo.routing(WEAVE)),
            ),
            (
                "revoked lineage: orders/intake revision 1",
                "refused",
                envelope(topo, lineage=revoked_lineage),
            ),
            (
                "sealed payload (gateways cannot read it), allowed",
                "delivered",
                envelope(topo, payload=b"card ending 4242", seal_to=_LEDGER_SEAL_KEY.encode()),
            ),
        ]
        for label, expected, data in cases:
            result = await sender.send(data, deadline=10)
            told = (
                "ACK"
                if result.delivered
                else f"NACK {result.reason.value if result.reason else ''}"
            )
            envelope_id = decode_unverified(data).claims.envelope_id
            recorded = ", ".join(_audit_reasons(topo).get(envelope_id, []))
            outcome = "delivered" if result.delivered else "refused"
            rows.append(Row(label, expected, outcome, told, recorded))
        await spools_empty(gateways)
        peer = await _unknown_peer(topo)
        rows.append(
            Row(
                "unknown peer: a workload SVID dials gw-cilium's federation port",
                "refused",
                peer,
                "TLS closed",
                "connection cut (not a configured peer)",
            )
        )
        nursery.cancel_scope.cancel()
    return rows


def _print_table(rows: list[Row], out: TextIO) -> None:
    headers = ("scenario", "expected", "result", "sender was told", "audit log says")
    table = [
        headers,
        *((r.scenario, r.expected, r.result, r.told_sender, r.recorded) for r in rows),
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    for n, row in enumerate(table):
        out.write("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() + "\n")
        if n == 0:
            out.write("  ".join("-" * w for w in widths) + "\n")


def run_demo(root: Path, out: TextIO) -> bool:
    """Build, play and verify; True when every scenario ended as expected and both audit logs
    verify."""
    started = time.monotonic()
    topo = build_topology(root)
    with workload_apis(topo):
        rows = trio.run(play, topo)
    out.write(f"sluice demo: two trust domains, two federated gateways, files in {root}\n\n")
    _print_table(rows, out)
    ok = all(r.ok for r in rows)
    out.write("\n")
    for name in ("gw-weave", "gw-cilium"):
        report = verify(root / "state" / name / "audit.log")
        status = f"ok, {report.records} records" if report.ok else f"BROKEN: {report.broken}"
        out.write(f"sluice audit verify {name}: {status}\n")
        ok = ok and report.ok
    delivered = sorted(os.listdir(root / "delivered" / "ledger"))
    out.write(f"ledger received {len(delivered)} envelope(s), each once\n")
    out.write(f"finished in {time.monotonic() - started:.1f}s: {'PASS' if ok else 'FAIL'}\n")
    return ok
