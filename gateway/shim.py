"""The workload side of sluice: send governed envelopes through a gateway, and receive them.

:class:`Sender` keeps one framed connection to the gateway (a :class:`~gateway.daemon.links.Link`,
with its reconnect and in-flight window) and retries an envelope until it gets a final receipt or
its deadline passes. Retries resend the same bytes (same envelope id), so a gateway that already
handled it answers ``replayed``: on a retry that means "delivered earlier" and counts as success.

:func:`serve_receiver` is the destination: it verifies every envelope completely (origin
signature, anchors, stamps, routing constraint) with its own anchor resolver, deduplicates by
envelope id, hands the envelope to a :class:`Sink`, and only then acknowledges. The sink is where
"delivered exactly once" is made true: :class:`DirectorySink` writes each payload to a file named
by its envelope id with an atomic rename, so the dedup record and the delivery are one operation
and a crash at any point either delivered it (a retry is refused as ``replayed``) or did not.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import trio

from gateway.daemon.channel import FramedChannel, HandshakeError
from gateway.daemon.links import Link, LinkUnavailable
from gateway.envelope.model import VerifiedEnvelope
from gateway.envelope.recipe import open_envelope
from gateway.errors import LocalProtocolError, RemoteProtocolError
from gateway.framing import (
    ConnectionClosed,
    EnvelopeFrame,
    FramingError,
    Hello,
    Ping,
    Pong,
    Receipt,
    ReceiptStatus,
    Role,
)
from gateway.pipeline import PRE_AUTHENTICATION
from gateway.reasons import Reason
from gateway.router import RouteTarget
from identity.anchor_contract import AnchorResolver

log = logging.getLogger("sluice.shim")

RETRY_PAUSE = 0.2
HANDSHAKE_TIMEOUT = 10.0
IDLE_TIMEOUT = 300.0


@dataclass(frozen=True, slots=True)
class SendResult:
    """``delivered``: an ACK (or ``replayed`` after a retry). Otherwise ``reason`` says why."""

    delivered: bool
    reason: Reason | None
    detail: str
    attempts: int


async def _tcp(target: RouteTarget) -> trio.abc.Stream:
    return await trio.open_tcp_stream(target.host, target.port)


class Sender:
    """A workload's connection to its gateway."""

    def __init__(self, host: str, port: int, *, name: str, receipt_timeout: float = 5.0) -> None:
        self._link = Link(
            RouteTarget("gateway", "network", host, port), _tcp, Hello(Role.SHIM, name)
        )
        self._receipt_timeout = receipt_timeout

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the connection up until cancelled (start this in a nursery)."""
        await self._link.run(task_status=task_status)

    async def send(self, envelope: bytes, *, deadline: float = 30.0) -> SendResult:
        """Send ``envelope`` until a final receipt or ``deadline`` seconds pass."""
        attempts = 0
        give_up = trio.current_time() + deadline
        while True:
            attempts += 1
            remaining = give_up - trio.current_time()
            if remaining <= 0:
                return SendResult(False, Reason.UNAVAILABLE, "deadline passed", attempts - 1)
            try:
                receipt = await self._link.submit(
                    envelope, timeout=min(self._receipt_timeout, remaining)
                )
            except LinkUnavailable:
                await trio.sleep(min(RETRY_PAUSE, max(0.0, give_up - trio.current_time())))
                continue
            if receipt.status is ReceiptStatus.ACK:
                return SendResult(True, None, "", attempts)
            if receipt.reason is Reason.REPLAYED and attempts > 1:
                return SendResult(True, None, "delivered by an earlier attempt", attempts)
            if receipt.reason in (Reason.OVERLOADED, Reason.UNAVAILABLE):
                await trio.sleep(RETRY_PAUSE)
                continue
            return SendResult(False, receipt.reason, receipt.detail, attempts)


class SinkRefusal(Exception):
    """Raised by :meth:`Sink.accept` to refuse an envelope with a NACK of ``reason``; nothing was
    delivered. ``Reason.OVERLOADED`` asks the sender to retry (gateways then forget the id);
    other reasons are final."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail


class Sink(Protocol):
    """Where a receiver hands verified envelopes."""

    async def accept(self, envelope: VerifiedEnvelope) -> bool:
        """Deliver it; return False when this envelope id was already delivered.

        Raises:
            SinkRefusal: not delivered; the receipt is a NACK with its reason.
        """
        ...


class DirectorySink:
    """Writes each payload to ``<dir>/<envelope-id-hex>`` (tmp + fsync + rename + dir fsync)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    async def accept(self, envelope: VerifiedEnvelope) -> bool:
        return await trio.to_thread.run_sync(self._write, envelope)

    def _write(self, envelope: VerifiedEnvelope) -> bool:
        final = self.directory / envelope.claims.envelope_id.hex()
        if final.exists():
            return False
        tmp = final.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, envelope.payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, final)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return True


async def serve_receiver(
    host: str,
    port: int,
    *,
    name: str,
    resolver: Callable[[], AnchorResolver],
    sink: Sink,
    clock: Callable[[], float] = time.time,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept envelopes from gateways on ``host:port`` until cancelled; started() gets the port.

    ``resolver`` is called per envelope so anchors can be reloaded while running.
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]

    async def handler(stream: trio.SocketStream) -> None:
        channel = FramedChannel(stream)
        try:
            await _receive_loop(channel, name, resolver, sink, clock)
        except (trio.BrokenResourceError, trio.ClosedResourceError, HandshakeError) as exc:
            log.debug("receiver connection ended: %s", exc)
        except (FramingError, LocalProtocolError) as exc:
            log.info("receiver cut a connection: %s", exc)
        finally:
            await channel.aclose()

    task_status.started(bound)
    await trio.serve_listeners(handler, listeners)


async def _receive_loop(
    channel: FramedChannel,
    name: str,
    resolver: Callable[[], AnchorResolver],
    sink: Sink,
    clock: Callable[[], float],
) -> None:
    await channel.handshake(Hello(Role.SHIM, name), timeout=HANDSHAKE_TIMEOUT)
    while True:
        with trio.move_on_after(IDLE_TIMEOUT):
            event = await channel.receive()
        match event:
            case EnvelopeFrame(correlation_id=cid, envelope=data):
                await channel.send(await _settle(cid, data, resolver(), sink, int(clock())))
            case Ping(nonce=nonce):
                await channel.send(Pong(nonce))
            case ConnectionClosed():
                return
            case _:
                pass


async def _settle(cid: int, data: bytes, resolver: AnchorResolver, sink: Sink, now: int) -> Receipt:
    try:
        envelope = open_envelope(data, resolver=resolver, now=now)
    except RemoteProtocolError as exc:
        reason = Reason.UNAUTHENTICATED if exc.reason in PRE_AUTHENTICATION else exc.reason
        log.info("receiver refused an envelope: %s", exc)
        return Receipt.nack(cid, reason)
    try:
        accepted = await sink.accept(envelope)
    except SinkRefusal as exc:
        return Receipt.nack(cid, exc.reason, exc.detail)
    if not accepted:
        return Receipt.nack(cid, Reason.REPLAYED, "already delivered")
    return Receipt.ack(cid)
