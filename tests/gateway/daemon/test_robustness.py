"""Hostile or broken peers are cut off without affecting the others (real TCP on 127.0.0.1).

gw-weave runs in this process from the demo's TOML with small limits (handshake 1 s, idle 2 s,
4 connections per listener). gw-cilium is not started, so envelopes that gw-weave accepts are
durably spooled and ACKed: an ACK proves the gateway still serves that connection end to end
(verify, policy, stamp, audit, spool).
"""

from __future__ import annotations

import struct
from pathlib import Path

import trio

from gateway.daemon.channel import FramedChannel
from gateway.demo.harness import envelope
from gateway.demo.topology import Topology
from gateway.framing import ConnectionClosed, Event, GoAway, Hello, Ping, Pong, Role
from gateway.framing import limits as frame_limits
from gateway.reasons import Reason
from gateway.shim import Sender
from identity.workload_api_server import WorkloadApiServer
from tests.gateway.daemon.conftest import InProcess, metric, short_limits, start_gateway

MAX_CONNECTIONS = 4
SHIM = Hello(Role.SHIM, "spiffe://weave.demo.example/ns/orders/sa/orders")


async def _connect(topo: Topology, *, hello: bool = True) -> FramedChannel:
    channel = FramedChannel(await trio.open_tcp_stream("127.0.0.1", topo.weave_listen))
    if hello:
        theirs = await channel.handshake(SHIM, timeout=5)
        assert theirs.role is Role.GATEWAY
    return channel


async def _rest(channel: FramedChannel) -> list[Event]:
    """Every event until the gateway closes the connection (a reset counts as closed)."""
    events: list[Event] = []
    try:
        while True:
            event = await channel.receive()
            events.append(event)
            if isinstance(event, ConnectionClosed):
                return events
    except trio.BrokenResourceError:
        events.append(ConnectionClosed(graceful=False))
        return events


async def _alive(channel: FramedChannel, nonce: int) -> None:
    await channel.send(Ping(nonce))
    assert await channel.receive() == Pong(nonce)


async def _start(topo: Topology, nursery: trio.Nursery) -> tuple[InProcess, Sender]:
    short_limits(
        topo.weave_config,
        handshake_timeout_seconds=1,
        idle_timeout_seconds=2,
        max_connections=MAX_CONNECTIONS,
    )
    weave = await start_gateway(nursery, topo.weave_config)
    sender = Sender("127.0.0.1", topo.weave_listen, name=str(topo.orders.spiffe_id))
    await nursery.start(sender.run)
    return weave, sender


async def _works(topo: Topology, sender: Sender, *, first_try: bool = True) -> None:
    result = await sender.send(envelope(topo), deadline=5)
    assert result.delivered, result
    # A sender idle for longer than the 2 s idle timeout was itself (rightly) cut: it retries.
    assert result.attempts == 1 or not first_try, result


async def test_garbage_and_oversized_frames_are_cut_others_keep_working(
    topo: Topology, apis: dict[str, WorkloadApiServer], tmp_path: Path
) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            weave, sender = await _start(topo, nursery)
            bystander = await _connect(topo)

            garbage = await _connect(topo)
            await garbage.stream.send_all(b"GET / HTTP/1.1\r\nHost: sluice\r\n\r\n")
            events = await _rest(garbage)
            assert isinstance(events[0], GoAway) and events[0].reason is Reason.MALFORMED
            assert isinstance(events[-1], ConnectionClosed)
            await _alive(bystander, 1)
            await _works(topo, sender)

            # A header announcing more than the limit: refused on the 8 header bytes alone,
            # before any body is sent or buffered.
            oversized = await _connect(topo)
            too_big = frame_limits.MAX_FRAME_BODY_CAP + 1
            await oversized.stream.send_all(struct.pack(">2sBBI", b"SL", 1, 2, too_big))
            with trio.fail_after(2):
                events = await _rest(oversized)
            assert isinstance(events[0], GoAway) and events[0].reason is Reason.TOO_LARGE
            assert isinstance(events[-1], ConnectionClosed)
            await _alive(bystander, 2)
            await _works(topo, sender)

            http = weave.gateway.bound["http"]
            for reason in ("malformed", "too_large"):
                assert (
                    await metric(
                        http, "sluice_frames_rejected_total", reason=reason, network="weave"
                    )
                    == 1
                )
            await bystander.aclose()
            nursery.cancel_scope.cancel()


async def test_slowloris_cut_at_handshake_and_idle_timeouts(
    topo: Topology, apis: dict[str, WorkloadApiServer], tmp_path: Path
) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            _, sender = await _start(topo, nursery)

            # HELLO trickled one byte per second: cut once the 1 s handshake timeout passes.
            slow = await _connect(topo, hello=False)
            hello_bytes = slow.protocol.send(SHIM)
            started = trio.current_time()
            sent = 0
            try:
                for byte in hello_bytes:
                    await slow.stream.send_all(bytes([byte]))
                    sent += 1
                    await trio.sleep(1.0)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            cut_after = trio.current_time() - started
            assert sent < len(hello_bytes)  # never completed its HELLO
            assert 0.9 <= cut_after <= 4.0, cut_after
            await _works(topo, sender, first_try=False)  # others were served meanwhile

            # After the handshake, a frame trickled byte by byte: cut at the 2 s idle timeout.
            trickle = await _connect(topo)
            # A valid ENVELOPE header announcing 1000 body bytes, the body never completed.
            frame = struct.pack(">2sBBI", b"SL", 1, 2, 1000) + bytes(1000)
            started = trio.current_time()
            async with trio.open_nursery() as dribble:

                async def drip() -> None:
                    for byte in frame[:-1]:
                        await trickle.stream.send_all(bytes([byte]))
                        await trio.sleep(0.25)

                dribble.start_soon(drip)
                events = await _rest(trickle)
                dribble.cancel_scope.cancel()
            # About the 2 s idle timeout (its clock starts at the gateway's end of the handshake),
            # long before the trickle would have completed the frame.
            assert 1.5 <= trio.current_time() - started <= 5.0
            assert len(frame) * 0.25 > 10
            assert events[0] == GoAway(Reason.UNAVAILABLE, "idle timeout")
            await _works(topo, sender, first_try=False)
            nursery.cancel_scope.cancel()


async def test_connection_flood_is_bounded(
    topo: Topology, apis: dict[str, WorkloadApiServer], tmp_path: Path
) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            weave, sender = await _start(topo, nursery)
            await _works(topo, sender)  # the sender's connection is number 1
            held = [await _connect(topo) for _ in range(MAX_CONNECTIONS - 1)]
            for _ in range(10):
                extra = await _connect(topo, hello=False)
                with trio.fail_after(2):  # closed at once, without a HELLO
                    assert await _rest(extra) in (
                        [ConnectionClosed()],
                        [ConnectionClosed(graceful=False)],
                    )
            http = weave.gateway.bound["http"]
            assert await metric(http, "sluice_connections_refused_total", network="weave") == 10
            assert await metric(http, "sluice_connections", network="weave") == MAX_CONNECTIONS
            for n, channel in enumerate(held):
                await _alive(channel, n + 1)
            await _works(topo, sender)
            await held.pop().aclose()  # a slot frees up: a new connection is served again
            with trio.fail_after(5):
                while await metric(http, "sluice_connections", network="weave") == MAX_CONNECTIONS:
                    await trio.sleep(0.02)
            again = await _connect(topo)
            await _alive(again, 99)
            nursery.cancel_scope.cancel()
