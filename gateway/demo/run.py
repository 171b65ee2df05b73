"""Plays the demo: every kind of decision through two real federated gateways, then proves it.

Everything runs in this process on 127.0.0.1: two SPIFFE Workload API servers (gRPC over unix
sockets, standing in for SPIRE agents), two gateways started exactly as ``sluice run`` starts them
(from the TOML files written by :mod:`gateway.demo.topology`), a receiver for the ledger workload
on the Cilium side, and the orders workload's sender on the Weave side.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import nacl.public
import trio

from gateway.audit.verify import read_entries, verify
from gateway.daemon.core import Gateway
from gateway.daemon.main import run_gateway
from gateway.demo.topology import (
    CILIUM,
    WEAVE,
    Topology,
    build_topology,
    gateway_id,
    socket_path,
)
from gateway.envelope.recipe import seal
from gateway.envelope.wire import decode_unverified, encode
from gateway.shim import DirectorySink, Sender, serve_receiver
from identity.anchor_contract import AnchorResolver
from identity.bundle import BundleSet, load_bundle_file
from identity.registry import load_registry
from identity.tls import client_context
from identity.workload_api_server import WorkloadApiServer
from identity.x509svid import X509SVID

LIFETIME = 300
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


def _bundles(topo: Topology) -> BundleSet:
    return BundleSet(
        (
            load_bundle_file(topo.root / "bundles" / f"{WEAVE.name}.pem", WEAVE),
            load_bundle_file(topo.root / "bundles" / f"{CILIUM.name}.pem", CILIUM),
        )
    )


def _resolver(topo: Topology) -> Callable[[], AnchorResolver]:
    bundles = _bundles(topo)

    def current() -> AnchorResolver:
        return load_registry(topo.anchors_dir, bundles, now=int(time.time())).registry

    return current


def _envelope(topo: Topology, **overrides: object) -> bytes:
    now = int(time.time())
    orders = topo.orders
    claims: dict[str, object] = {
        "issuer": orders.spiffe_id,
        "origin_scope": "orders/intake",
        "destination_scope": "payments/ledger",
        "destination_id": topo.ledger_id,
        "tier": 1,
        "lineage": topo.lineage("orders/intake"),
        "routing": topo.routing(),
        "issued_at": now,
        "expires_at": now + LIFETIME,
        "payload": b"order 1042: 3 units of SKU-77 " + secrets.token_hex(4).encode(),
        "signing_key": orders.signing_key,
    }
    claims.update(overrides)
    return seal(**claims)  # type: ignore[arg-type]


def _tampered(topo: Topology) -> bytes:
    original = decode_unverified(_envelope(topo))
    return encode(original.origin_bytes, original.payload[:-1] + b"!", ())


async def _unknown_peer(topo: Topology) -> str:
    """A workload SVID of a trusted domain, posing as a federation peer of gw-cilium."""
    svid = topo.orders.svid
    context = client_context(
        X509SVID(svid.spiffe_id, svid.chain, svid.private_key),
        _bundles(topo).for_trust_domain(CILIUM),
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
                resolver=_resolver(topo),
                sink=sink,
                task_status=task_status,
            )
        )
        await nursery.start(sender.run)
        await links_up(gateways)
        allowed = _envelope(topo)
        revoked_lineage = topo.lineage("orders/intake", number=1)
        cases: list[tuple[str, str, bytes]] = [
            ("allowed: orders -> ledger, tier internal", "delivered", allowed),
            ("replayed: the same envelope again", "refused", allowed),
            (
                "wrong scope: orders claims payments/api",
                "refused",
                _envelope(topo, origin_scope="payments/api"),
            ),
            ("tier too low: public", "refused", _envelope(topo, tier=0)),
            ("tampered payload", "refused", _tampered(topo)),
            (
                "routing: may only transit weave.demo.example",
                "refused",
                _envelope(topo, routing=topo.routing(WEAVE)),
            ),
            (
                "revoked lineage: orders/intake revision 1",
                "refused",
                _envelope(topo, lineage=revoked_lineage),
            ),
            (
                "sealed payload (gateways cannot read it), allowed",
                "delivered",
                _envelope(topo, payload=b"card ending 4242", seal_to=_LEDGER_SEAL_KEY.encode()),
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


async def links_up(gateways: list[Gateway], timeout: float = 15.0) -> None:
    """Wait until every gateway's links to its route targets are connected."""
    with trio.fail_after(timeout):
        for gateway in gateways:
            for link in gateway.delivery.links.values():
                await link.wait_up()


async def spools_empty(gateways: list[Gateway], timeout: float = 15.0) -> None:
    """Wait until no envelope waits in any gateway's spool."""
    with trio.fail_after(timeout):
        while any(len(g.delivery.spool) for g in gateways):
            await trio.sleep(0.02)


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
    servers = [
        WorkloadApiServer(
            str(socket_path(root, "gw-weave")),
            topo.weave_ca,
            gateway_id(WEAVE, "gw-weave"),
            svid_lifetime=dt.timedelta(hours=24),
        ),
        WorkloadApiServer(
            str(socket_path(root, "gw-cilium")),
            topo.cilium_ca,
            gateway_id(CILIUM, "gw-cilium"),
            svid_lifetime=dt.timedelta(hours=24),
        ),
    ]
    for server in servers:
        server.start()
    try:
        rows = trio.run(play, topo)
    finally:
        for server in servers:
            server.stop()
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
