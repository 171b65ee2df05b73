"""A gateway picks up a peer's endorsement that appears after it started, without a reload.

gw-cilium starts first, before gw-weave has written its self-endorsement into the shared anchors
directory, so at start-up it cannot verify gw-weave's transit stamps. The gateway watches the
anchors directory and rebuilds its registry when a file changes; this test fails if it does not
(the envelope would be refused as `unauthenticated` until a SIGHUP).
"""

from __future__ import annotations

from pathlib import Path

import trio

from gateway.demo.harness import envelope, links_up
from gateway.demo.topology import Topology
from gateway.shim import Sender
from identity.workload_api_server import WorkloadApiServer
from tests.gateway.daemon.conftest import CountingSink, start_gateway, start_receiver


async def test_peer_endorsement_written_later_is_picked_up(
    topo: Topology, apis: dict[str, WorkloadApiServer], tmp_path: Path
) -> None:
    weave_endorsement = topo.anchors_dir / "gw-weave.endorsement"
    assert not weave_endorsement.exists()
    sink = CountingSink(tmp_path / "ledger")
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            cilium = await start_gateway(nursery, topo.cilium_config)
            await start_receiver(nursery, topo, sink)
            weave = await start_gateway(nursery, topo.weave_config)
            assert weave_endorsement.exists()  # written by gw-weave at start-up
            await links_up([weave.gateway, cilium.gateway])
            sender = Sender("127.0.0.1", topo.weave_listen, name=str(topo.orders.spiffe_id))
            await nursery.start(sender.run)
            data = envelope(topo)
            # Within a few watcher periods gw-cilium trusts gw-weave's stamp; until then the
            # envelope may be refused and is simply sent again (a fresh copy each time).
            result = await sender.send(data, deadline=5)
            while not result.delivered:
                assert result.reason is not None
                assert result.reason.value == "unauthenticated", result
                await trio.sleep(0.5)
                data = envelope(topo)
                result = await sender.send(data, deadline=5)
            assert len(sink.delivered) == 1
            nursery.cancel_scope.cancel()
