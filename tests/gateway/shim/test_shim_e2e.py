"""The sidecar over real sockets on 127.0.0.1.

1. A plain TCP client -> ``shim send`` -> gw-weave -> (mTLS) gw-cilium -> ``shim receive`` -> a
   plain TCP server app: 1 MiB of random bytes arrives exactly, in order; a stream whose
   envelopes the gateway refuses has its client connection closed and never reaches the app.
2. ``StreamSink`` behind a real receiver, fed hand-made chunk envelopes out of order, twice, and
   beyond its window, over a real framed connection.
The deployment is the demo's (real CAs, Workload API servers over gRPC, TOML configs).
"""

from __future__ import annotations

import functools
import os
import random
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from gateway.daemon.links import Link
from gateway.demo.harness import links_up, resolver, workload_apis
from gateway.demo.topology import Topology, build_topology
from gateway.envelope import Sealer
from gateway.framing import Hello, ReceiptStatus, Role
from gateway.reasons import Reason
from gateway.router import RouteTarget
from gateway.shim import Sender, serve_receiver
from gateway.shim_sidecar import StreamReport, StreamSink, serve_stream_sender
from gateway.shim_stream import Chunk, encode_chunk
from identity.workload_api_server import WorkloadApiServer
from tests.gateway.daemon.conftest import start_gateway


@pytest.fixture
def topo(tmp_path: Path) -> Topology:
    return build_topology(tmp_path)


@pytest.fixture
def apis(topo: Topology) -> Iterator[dict[str, WorkloadApiServer]]:
    with workload_apis(topo) as servers:
        yield servers


def sealer(topo: Topology, **overrides: object) -> Sealer:
    claims: dict[str, object] = {
        "issuer": topo.orders.spiffe_id,
        "origin_scope": "orders/intake",
        "destination_scope": "payments/ledger",
        "destination_id": topo.ledger_id,
        "tier": 1,
        "lineage": topo.lineage("orders/intake"),
        "routing": topo.routing(),
        "signing_key": topo.orders.signing_key,
    }
    claims.update(overrides)
    return Sealer(**claims)  # type: ignore[arg-type]


class App:
    """The unmodified server application: records each connection's bytes until EOF."""

    def __init__(self) -> None:
        self.connections: list[bytearray] = []
        self.closed = 0
        self.changed = trio.Event()
        self.port = 0

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        got = bytearray()
        self.connections.append(got)
        async with stream:
            while data := await stream.receive_some(65536):
                got += data
        self.closed += 1
        self.changed.set()
        self.changed = trio.Event()

    async def connect(self) -> trio.abc.Stream:
        return await trio.open_tcp_stream("127.0.0.1", self.port)


async def _client(port: int, payload: bytes) -> bool:
    """Send ``payload``, half-close, and wait for the shim to close: True on a clean close."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        try:
            await stream.send_all(payload)
            await stream.send_eof()
            return await stream.receive_some(1) == b""
        except trio.BrokenResourceError:
            return False


async def test_a_tcp_stream_through_two_gateways(
    topo: Topology, apis: dict[str, WorkloadApiServer]
) -> None:
    app = App()
    sink = StreamSink(app.connect)
    reports: list[StreamReport] = []
    payload = os.urandom(1024 * 1024)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(app.serve)
            weave = await start_gateway(nursery, topo.weave_config)
            cilium = await start_gateway(nursery, topo.cilium_config)
            await nursery.start(sink.run)
            await nursery.start(
                functools.partial(
                    serve_receiver, "127.0.0.1", topo.receiver_port,
                    name=str(topo.ledger_id), resolver=resolver(topo), sink=sink,
                )
            )  # fmt: skip
            sender = Sender("127.0.0.1", topo.weave_listen, name=str(topo.orders.spiffe_id))
            await nursery.start(sender.run)
            await links_up([weave.gateway, cilium.gateway])
            shim_port = await nursery.start(
                functools.partial(
                    serve_stream_sender, "127.0.0.1", 0, sender=sender,
                    sealer=sealer(topo), on_stream=reports.append,
                )
            )  # fmt: skip
            assert await _client(shim_port, payload)
            while app.closed < 1:
                await app.changed.wait()
            assert len(app.connections) == 1
            assert bytes(app.connections[0]) == payload
            while not reports:  # the report follows the close of the client connection
                await trio.sleep(0.01)
            assert reports[0].ok and reports[0].bytes == len(payload)
            assert reports[0].chunks >= 16 + 1  # at most 64 KiB per chunk, then fin
            assert sink.completed == 1 and sink.open_streams == 0

            # The same workload, but claiming a scope its anchor is not endorsed for.
            refused_port = await nursery.start(
                functools.partial(
                    serve_stream_sender, "127.0.0.1", 0, sender=sender,
                    sealer=sealer(topo, origin_scope="payments/api"),
                    on_stream=reports.append,
                )
            )  # fmt: skip
            stream = await trio.open_tcp_stream("127.0.0.1", refused_port)
            async with stream:
                await stream.send_all(b"x" * 1000)
                try:
                    closed = await stream.receive_some(1) == b""
                except trio.BrokenResourceError:
                    closed = True  # reset: closed as well
            assert closed
            while len(reports) < 2:
                await trio.sleep(0.01)
            assert not reports[1].ok and reports[1].reason is Reason.SCOPE_NOT_ENDORSED
            assert len(app.connections) == 1  # the refused stream never reached the app
            nursery.cancel_scope.cancel()


async def _direct_link(nursery: trio.Nursery, port: int) -> Link:
    """A framed connection straight to a receiver, to see each receipt as it is (no retries)."""

    async def tcp(target: RouteTarget) -> trio.abc.Stream:
        return await trio.open_tcp_stream(target.host, target.port)

    link = Link(RouteTarget("r", "network", "127.0.0.1", port), tcp, Hello(Role.SHIM, "test"))
    nursery.start_soon(link.run)
    await link.wait_up()
    return link


async def test_stream_sink_reorders_dedups_and_bounds_its_window(topo: Topology) -> None:
    app = App()
    sink = StreamSink(app.connect, window=4)
    seal = sealer(topo)
    stream_id = secrets.token_bytes(16)
    pieces = [f"piece {n};".encode() for n in range(10)]
    now = int(time.time())
    envelopes = [
        seal.seal(
            encode_chunk(Chunk(stream_id, n, data, fin=n == 9)),
            issued_at=now,
            expires_at=now + 300,
        )
        for n, data in enumerate(pieces)
    ]
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(app.serve)
            await nursery.start(sink.run)
            port = await nursery.start(
                functools.partial(
                    serve_receiver, "127.0.0.1", 0,
                    name=str(topo.ledger_id), resolver=resolver(topo), sink=sink,
                )
            )  # fmt: skip
            link = await _direct_link(nursery, port)

            async def send(n: int) -> tuple[bool, Reason | None]:
                receipt = await link.submit(envelopes[n], timeout=5)
                return receipt.status is ReceiptStatus.ACK, receipt.reason

            assert await send(4) == (False, Reason.OVERLOADED)  # beyond 0..3: retry later
            for n in (3, 1, 2):
                assert await send(n) == (True, None)
            assert await send(2) == (False, Reason.REPLAYED)  # the same envelope again
            assert app.connections == []  # chunk 0 has not come: nothing reaches the app
            assert await send(0) == (True, None)
            order = list(range(4, 10))
            random.Random(7).shuffle(order)
            pending = order
            while pending:  # what bounces off the window is retried, as Sender would
                pending = [n for n in pending if not (await send(n))[0]]
            while app.closed < 1:
                await app.changed.wait()
            assert bytes(app.connections[0]) == b"".join(pieces)
            assert await send(9) == (False, Reason.REPLAYED)  # after the stream finished
            assert sink.completed == 1 and sink.open_streams == 0
            nursery.cancel_scope.cancel()


async def test_unreachable_app_refuses_the_stream(topo: Topology) -> None:
    async def nowhere() -> trio.abc.Stream:
        raise ConnectionRefusedError(111, "Connection refused")

    sink = StreamSink(nowhere)
    seal = sealer(topo)
    now = int(time.time())
    stream_id = secrets.token_bytes(16)
    first, second = (
        seal.seal(
            encode_chunk(Chunk(stream_id, n, b"data", False)), issued_at=now, expires_at=now + 60
        )
        for n in (0, 1)
    )
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(sink.run)
            port = await nursery.start(
                functools.partial(
                    serve_receiver, "127.0.0.1", 0,
                    name=str(topo.ledger_id), resolver=resolver(topo), sink=sink,
                )
            )  # fmt: skip
            link = await _direct_link(nursery, port)
            for envelope in (first, second):
                receipt = await link.submit(envelope, timeout=5)
                assert receipt.status is ReceiptStatus.NACK and receipt.reason is Reason.NO_ROUTE
            assert sink.open_streams == 0
            nursery.cancel_scope.cancel()
