"""The demo's moving parts, public for the end-to-end tests and the gateway benchmark.

Everything here is what :mod:`gateway.demo.run` uses itself: sealed envelopes for the topology's
``orders`` workload, the receiver's anchor resolver, the SPIFFE Workload API servers (gRPC over
unix sockets, standing in for SPIRE agents) and the waits on links and spools.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Iterator

from gateway.demo.run import _envelope, _resolver, _tampered, links_up, spools_empty
from gateway.demo.topology import CILIUM, WEAVE, Topology, gateway_id, socket_path
from identity.anchor_contract import AnchorResolver
from identity.workload_api_server import WorkloadApiServer


def envelope(topo: Topology, **overrides: object) -> bytes:
    """A fresh envelope from ``orders`` to the ledger; ``overrides`` replace seal() arguments."""
    return _envelope(topo, **overrides)


def tampered(topo: Topology) -> bytes:
    """A validly signed envelope whose payload was changed in transit."""
    return _tampered(topo)


def resolver(topo: Topology) -> Callable[[], AnchorResolver]:
    """The ledger receiver's anchor resolver (every endorsement under ``topo.anchors_dir``)."""
    return _resolver(topo)


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


__all__ = ["envelope", "links_up", "resolver", "spools_empty", "tampered", "workload_apis"]
