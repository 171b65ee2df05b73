"""The demo's moving parts, public for the end-to-end tests and the gateway benchmark.

Everything here is what :mod:`gateway.demo.run` uses itself: sealed envelopes for the topology's
``orders`` workload, the receiver's anchor resolver, the SPIFFE Workload API servers (gRPC over
unix sockets, standing in for SPIRE agents) and the waits on links and spools.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import secrets
import time
from collections.abc import Callable, Iterator

import trio

from gateway.daemon.core import Gateway
from gateway.demo.topology import CILIUM, WEAVE, Topology, gateway_id, socket_path
from gateway.envelope.recipe import seal
from gateway.envelope.wire import decode_unverified, encode
from identity.anchor_contract import AnchorResolver
from identity.bundle import BundleSet, load_bundle_file
from identity.registry import load_registry
from identity.workload_api_server import WorkloadApiServer

LIFETIME = 300  # seconds an envelope of the demo is valid


def bundles(topo: Topology) -> BundleSet:
    return BundleSet(
        (
            load_bundle_file(topo.root / "bundles" / f"{WEAVE.name}.pem", WEAVE),
            load_bundle_file(topo.root / "bundles" / f"{CILIUM.name}.pem", CILIUM),
        )
    )


def resolver(topo: Topology) -> Callable[[], AnchorResolver]:
    """The ledger receiver's anchor resolver (every endorsement under ``topo.anchors_dir``)."""
    trusted = bundles(topo)

    def current() -> AnchorResolver:
        return load_registry(topo.anchors_dir, trusted, now=int(time.time())).registry

    return current


def envelope(topo: Topology, **overrides: object) -> bytes:
    """A fresh envelope from ``orders`` to the ledger; ``overrides`` replace seal() arguments."""
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


def tampered(topo: Topology) -> bytes:
    """A validly signed envelope whose payload was changed in transit."""
    original = decode_unverified(envelope(topo))
    return encode(original.origin_bytes, original.payload[:-1] + b"!", ())


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


@contextlib.contextmanager
def workload_apis(topo: Topology) -> Iterator[dict[str, WorkloadApiServer]]:
    """Serve both gateways' SVIDs on their Workload API sockets while the block runs.

    Yields:
        The servers by gateway name (``gw-weave``, ``gw-cilium``), e.g. to ``rotate()`` one.
    """
    servers = {
        name: WorkloadApiServer(
            str(socket_path(topo.root, name)),
            ca,
            gateway_id(td, name),
            svid_lifetime=dt.timedelta(hours=24),
        )
        for name, ca, td in (
            ("gw-weave", topo.weave_ca, WEAVE),
            ("gw-cilium", topo.cilium_ca, CILIUM),
        )
    }
    started: list[WorkloadApiServer] = []
    try:
        for server in servers.values():
            server.start()
            started.append(server)
        yield servers
    finally:
        for server in started:
            server.stop()


__all__ = [
    "LIFETIME",
    "bundles",
    "envelope",
    "links_up",
    "resolver",
    "spools_empty",
    "tampered",
    "workload_apis",
]
