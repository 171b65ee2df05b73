"""Batched settling: envelopes that arrive together are decided, audited, delivered and answered
together, and each still gets its own correct receipt (real TCP on 127.0.0.1).

The batch APIs underneath are tested against a real framed peer over TCP: ``FramedChannel``'s
``send_many``, ``Link.submit_many`` (windows smaller than the batch, concurrent batches, a peer that
closes mid-batch, a frame the peer's limits refuse) and ``AuditSink.record_many``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio

from gateway.audit.record import Decision
from gateway.audit.verify import read_entries
from gateway.audit.writer import AuditLog
from gateway.daemon.audit_sink import AuditSink, AuditUnavailable
from gateway.daemon.channel import FramedChannel
from gateway.daemon.links import Link
from gateway.demo.harness import envelope, tampered
from gateway.demo.topology import Topology
from gateway.envelope.wire import decode_unverified
from gateway.framing import (
    ConnectionClosed,
    EnvelopeFrame,
    Event,
    Hello,
    Ping,
    Pong,
    Receipt,
    ReceiptStatus,
    Role,
)
from gateway.framing import limits as frame_limits
from gateway.reasons import Reason
from gateway.router import RouteTarget
from identity.workload_api_server import WorkloadApiServer
from tests.gateway.daemon.conftest import start_gateway
from tests.gateway.daemon.test_audit_sink import GW, _record

SHIM = Hello(Role.SHIM, "spiffe://weave.demo.example/ns/orders/sa/orders")

# -- the gateway settles a burst -------------------------------------------------------------------


async def test_a_burst_in_one_write_gets_one_correct_receipt_per_envelope(
    topo: Topology, apis: dict[str, WorkloadApiServer]
) -> None:
    """Twelve envelopes (and a PING) in a single TCP write: the gateway reads them in one go, so
    they are decided and settled as one batch. gw-cilium is down, so allowed ones are spooled and
    ACKed; each refusal keeps its own reason; the audit log has every decision in arrival order."""
    fresh = [envelope(topo) for _ in range(8)]
    burst: list[tuple[bytes, Reason | None]] = [
        (fresh[0], None),
        (fresh[1], None),
        (fresh[0], Reason.REPLAYED),  # the same envelope again, in the same batch
        (tampered(topo), Reason.PAYLOAD_MISMATCH),
        (fresh[2], None),
        (envelope(topo, origin_scope="payments/api"), Reason.SCOPE_NOT_ENDORSED),
        (fresh[3], None),
        (envelope(topo, tier=0), Reason.TIER_TOO_LOW),
        (fresh[4], None),
        (fresh[5], None),
        (fresh[6], None),
        (fresh[7], None),
    ]
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            weave = await start_gateway(nursery, topo.weave_config)
            channel = FramedChannel(await trio.open_tcp_stream("127.0.0.1", topo.weave_listen))
            await channel.handshake(SHIM, timeout=5)
            frames: list[Event] = [EnvelopeFrame(cid, data) for cid, (data, _) in enumerate(burst)]
            frames.insert(6, Ping(77))
            assert await channel.send_many(frames) == [None] * len(frames)

            receipts: dict[int, Receipt] = {}
            pong = False
            while len(receipts) < len(burst) or not pong:
                event = await channel.receive()
                if isinstance(event, Receipt):
                    assert event.correlation_id not in receipts
                    receipts[event.correlation_id] = event
                else:
                    assert event == Pong(77)
                    pong = True
            for cid, (_, expected) in enumerate(burst):
                receipt = receipts[cid]
                if expected is None:
                    assert receipt.status is ReceiptStatus.ACK, (cid, receipt)
                else:
                    assert receipt.status is ReceiptStatus.NACK, (cid, receipt)
                    assert receipt.reason is expected, (cid, receipt)
            await channel.aclose()
            assert len(weave.gateway.delivery.spool) == 8
            nursery.cancel_scope.cancel()

    entries = list(read_entries(topo.root / "state" / "gw-weave" / "audit.log"))
    decisions = [e.record for e in entries if e.record.rule != "delivery"][-len(burst) :]
    for record, (data, expected) in zip(decisions, burst, strict=True):
        assert record.decision is (Decision.ALLOW if expected is None else Decision.DENY)
        if expected is None:
            assert record.envelope_id == _envelope_id(data)


def _envelope_id(data: bytes) -> bytes:
    return decode_unverified(data).claims.envelope_id


# -- a framed peer for the link tests ------------------------------------------------------------

Answer = Callable[[EnvelopeFrame], Receipt | None]  # None: close the connection instead


async def _peer(
    answer: Answer,
    hello: Hello,
    *,
    task_status: trio.TaskStatus[int],
) -> None:
    """A next hop on 127.0.0.1: HELLO, then answers each envelope frame as ``answer`` says."""

    async def serve(stream: trio.SocketStream) -> None:
        channel = FramedChannel(stream)
        try:
            await channel.handshake(hello, timeout=5)
            while True:
                event = await channel.receive()
                if isinstance(event, ConnectionClosed):
                    return
                if isinstance(event, EnvelopeFrame):
                    receipt = answer(event)
                    if receipt is None:
                        return
                    await channel.send(receipt)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await channel.aclose()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(serve, listeners)


def _by_payload(frame: EnvelopeFrame) -> Receipt:
    """ACK envelopes whose last byte is even, NACK the others (so each receipt is checkable)."""
    if frame.envelope[-1] % 2 == 0:
        return Receipt.ack(frame.correlation_id)
    return Receipt.nack(
        frame.correlation_id, Reason.ORIGIN_NOT_ALLOWED, f"odd {frame.envelope[-1]}"
    )


async def _link(
    nursery: trio.Nursery, answer: Answer, hello: Hello
) -> tuple[Link, Callable[[], Awaitable[None]]]:
    port = await nursery.start(_peer, answer, hello)
    target = RouteTarget("test", "network", "127.0.0.1", port)

    async def connect(t: RouteTarget) -> trio.abc.Stream:
        return await trio.open_tcp_stream(t.host, t.port)

    link = Link(target, connect, Hello(Role.GATEWAY, GW))
    await nursery.start(link.run)
    return link, link.wait_up


def _check(receipts: list[Receipt | None], payloads: list[bytes]) -> None:
    assert len(receipts) == len(payloads)
    for receipt, payload in zip(receipts, payloads, strict=True):
        assert receipt is not None
        if payload[-1] % 2 == 0:
            assert receipt.status is ReceiptStatus.ACK
        else:
            assert (
                receipt.reason is Reason.ORIGIN_NOT_ALLOWED
                and receipt.detail == f"odd {payload[-1]}"
            )


async def test_submit_many_larger_than_the_window_and_concurrent_batches() -> None:
    """A window of 3: a batch of 10 is sent in slices as receipts free slots, and two batches
    that each hold part of the window never wait on each other's unsent slots."""
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            link, up = await _link(
                nursery, _by_payload, Hello(Role.GATEWAY, "peer", max_in_flight=3)
            )
            await up()
            payloads = [bytes([n]) for n in range(10)]
            submitted = await link.submit_many(payloads, timeout=5)
            _check(submitted.receipts, payloads)

            results: dict[int, list[Receipt | None]] = {}

            async def batch(k: int) -> None:
                mine = [bytes([k * 10 + n]) for n in range(5)]
                results[k] = (await link.submit_many(mine, timeout=5)).receipts

            async with trio.open_nursery() as batches:
                for k in range(4):
                    batches.start_soon(batch, k)
            for k in range(4):
                _check(results[k], [bytes([k * 10 + n]) for n in range(5)])
            assert (await link.submit_many([], timeout=1)).receipts == []
            nursery.cancel_scope.cancel()


async def test_submit_many_when_the_peer_closes_mid_batch() -> None:
    """Receipts that came are kept; the rest are None (the caller spools them), with a reason."""

    def first_then_close(frame: EnvelopeFrame) -> Receipt | None:
        return Receipt.ack(frame.correlation_id) if frame.envelope == b"\x00" else None

    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            link, up = await _link(nursery, first_then_close, Hello(Role.GATEWAY, "peer"))
            await up()
            submitted = await link.submit_many([b"\x00", b"\x01", b"\x02"], timeout=5)
            first, *rest = submitted.receipts
            assert first is not None and first.status is ReceiptStatus.ACK
            assert rest == [None, None]
            assert "closed" in submitted.problem
            nursery.cancel_scope.cancel()


async def test_a_frame_the_peer_would_refuse_is_not_sent_and_gives_its_slot_back() -> None:
    """An envelope larger than the peer's frame limit gets no receipt (None) while the others in
    the batch are delivered; with a window of 1, later batches prove the slot was released."""
    small = Hello(Role.GATEWAY, "peer", max_frame_size=frame_limits.MIN_FRAME_BODY, max_in_flight=1)
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            link, up = await _link(nursery, _by_payload, small)
            await up()
            too_big = bytes(frame_limits.MIN_FRAME_BODY + 1)
            submitted = await link.submit_many([b"\x02", too_big, b"\x04"], timeout=5)
            ok_first, refused, ok_last = submitted.receipts
            assert refused is None
            assert ok_first is not None and ok_first.status is ReceiptStatus.ACK
            assert ok_last is not None and ok_last.status is ReceiptStatus.ACK
            _check(
                (await link.submit_many([b"\x06", b"\x07"], timeout=5)).receipts, [b"\x06", b"\x07"]
            )
            nursery.cancel_scope.cancel()


# -- audit ----------------------------------------------------------------------------------------


async def test_record_many_appends_in_order_with_the_other_batches(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    with AuditLog.open(path, gateway_id=GW, fsync="always") as log:
        sink = AuditSink(log)
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                await nursery.start(sink.run)
                async with trio.open_nursery() as senders:
                    for k in range(6):
                        senders.start_soon(
                            sink.record_many, [_record(k * 100 + n) for n in range(7)]
                        )
                nursery.cancel_scope.cancel()
    ids = [int.from_bytes(e.record.envelope_id, "big") for e in read_entries(path)]
    assert sorted(ids) == sorted(k * 100 + n for k in range(6) for n in range(7))
    # Each batch is contiguous and in its own order.
    for k in range(6):
        start = ids.index(k * 100)
        assert ids[start : start + 7] == [k * 100 + n for n in range(7)]


async def test_record_many_fails_the_whole_batch_when_the_log_cannot_be_written(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.log"
    with AuditLog.open(path, gateway_id=GW, fsync="always") as log:
        sink = AuditSink(log)
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                await nursery.start(sink.run)
                log.close()  # every later write fails with OSError (bad file descriptor)
                with pytest.raises(AuditUnavailable, match="audit log write failed"):
                    await sink.record_many([_record(1), _record(2)])
                nursery.cancel_scope.cancel()
