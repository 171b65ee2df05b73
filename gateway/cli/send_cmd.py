"""`sluice send` and `sluice receive`: governed envelopes through a gateway, for scripts.

``send`` seals the payload (a file or stdin) into ``--count`` envelopes and sends them through a
gateway with :class:`gateway.shim.Sender` (retries included), printing one line per envelope;
it exits 0 only if every one was delivered. ``receive`` is the destination: it verifies every
envelope against the anchors and bundles and writes each payload exactly once into ``--out``
(:class:`gateway.shim.DirectorySink`) until SIGINT or SIGTERM.
"""

from __future__ import annotations

import functools
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import trio

from gateway.cli.common import EXIT_REFUSED, UserFacingError
from gateway.cli.trust_args import (
    ReloadingRegistry,
    hex_bytes,
    parse_address,
    parse_bundles,
    parse_tier,
)
from gateway.envelope import Sealer, decode_unverified
from gateway.envelope.limits import MAX_LIFETIME, MAX_PAYLOAD_BYTES
from gateway.envelope.model import RoutingConstraint
from gateway.errors import LocalProtocolError
from gateway.shim import DirectorySink, Sender, serve_receiver
from identity.anchors import AnchorKeyError, load_private_key
from identity.spiffe_id import InvalidSpiffeID, parse_spiffe_id, parse_trust_domain

F = TypeVar("F", bound=Callable[..., Any])


def sealing_options(fn: F) -> F:
    """The options that make a workload's fixed claims (shared by `send` and `shim send`)."""
    options = [
        click.option("--gateway", required=True, help="The gateway's workload listener HOST:PORT."),
        click.option("--key", "key_file", required=True, help="Anchor private key (PKCS#8 PEM)."),
        click.option("--issuer", required=True, help="Issuer SPIFFE ID (the anchor's)."),
        click.option("--scope", required=True, help="Origin scope."),
        click.option("--to-scope", required=True, help="Destination scope."),
        click.option("--to-id", default=None, help="Destination SPIFFE ID."),
        click.option("--tier", required=True, help="Trust tier: 0..255 or a name."),
        click.option("--lineage", required=True, help="Policy lineage hash, 64 hex digits."),
        click.option("--transit", multiple=True, help="Trust domain that may carry it."),
        click.option("--max-hops", type=click.IntRange(0, 16), default=4, show_default=True),
        click.option("--ttl", type=click.IntRange(1, MAX_LIFETIME), default=300, show_default=True),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def build_sealer(
    key_file: str,
    issuer: str,
    scope: str,
    to_scope: str,
    to_id: str | None,
    tier: str,
    lineage: str,
    transit: tuple[str, ...],
    max_hops: int,
) -> Sealer:
    """The :class:`Sealer` for the sealing options.

    Raises:
        UserFacingError: a key, ID, tier, lineage or claim problem (one line).
    """
    try:
        key = load_private_key(key_file)
        return Sealer(
            issuer=parse_spiffe_id(issuer),
            origin_scope=scope,
            destination_scope=to_scope,
            destination_id=None if to_id is None else parse_spiffe_id(to_id),
            tier=parse_tier(tier),
            lineage=hex_bytes(lineage, 32, "--lineage"),
            routing=RoutingConstraint(tuple(parse_trust_domain(d) for d in transit), (), max_hops),
            signing_key=key.signing_key,
        )
    except (AnchorKeyError, InvalidSpiffeID, LocalProtocolError) as exc:
        raise UserFacingError(str(exc).splitlines()[0]) from None


def run_trio(fn: Callable[[], Awaitable[None]], what: str) -> None:
    """``trio.run(fn)``, turning socket errors (port in use, ...) into one-line errors."""
    try:
        trio.run(fn)
    except OSError as exc:
        raise UserFacingError(f"{what}: {exc.strerror or exc}") from None
    except BaseExceptionGroup as group:
        matched, _ = group.split(OSError)
        if matched is None:
            raise
        first: BaseException = matched
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        assert isinstance(first, OSError)
        raise UserFacingError(f"{what}: {first.strerror or first}") from None


async def until_signal(nursery: trio.Nursery) -> None:
    """Cancel ``nursery`` at the first SIGINT or SIGTERM."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            click.echo(f"stopping on {signal.Signals(signum).name}", err=True)
            nursery.cancel_scope.cancel()
            return


def _read_payload(source: str) -> bytes:
    try:
        if source == "-":
            data = sys.stdin.buffer.read(MAX_PAYLOAD_BYTES + 1)
        else:
            with Path(source).open("rb") as f:
                data = f.read(MAX_PAYLOAD_BYTES + 1)
    except OSError as exc:
        raise UserFacingError(f"{source}: cannot read: {exc.strerror}") from None
    if len(data) > MAX_PAYLOAD_BYTES:
        raise UserFacingError(f"{source}: payload larger than {MAX_PAYLOAD_BYTES} bytes")
    return data


@click.command(name="send")
@sealing_options
@click.option("--count", type=click.IntRange(1, 1_000_000), default=1, show_default=True)
@click.option("--deadline", type=click.FloatRange(0.1, 3600), default=30.0, show_default=True)
@click.argument("payload", default="-")
def send(
    gateway: str,
    key_file: str,
    issuer: str,
    scope: str,
    to_scope: str,
    to_id: str | None,
    tier: str,
    lineage: str,
    transit: tuple[str, ...],
    max_hops: int,
    ttl: int,
    count: int,
    deadline: float,
    payload: str,
) -> None:
    """Seal PAYLOAD (a file, or '-' for stdin) and send it COUNT times through a gateway.

    Prints one line per envelope: its id, then ACK or NACK and the reason. Exit status 0 only if
    every envelope was delivered; 1 otherwise; 3 for bad input.
    """
    host, port = parse_address(gateway, "--gateway")
    sealer = build_sealer(
        key_file, issuer, scope, to_scope, to_id, tier, lineage, transit, max_hops
    )
    data = _read_payload(payload)
    failures = 0

    async def main() -> None:
        nonlocal failures
        sender = Sender(host, port, name=issuer)
        async with trio.open_nursery() as nursery:
            await nursery.start(sender.run)
            for _ in range(count):
                now = int(time.time())
                envelope = sealer.seal(data, issued_at=now, expires_at=now + ttl)
                envelope_id = decode_unverified(envelope).claims.envelope_id.hex()
                result = await sender.send(envelope, deadline=deadline)
                if result.delivered:
                    click.echo(f"{envelope_id} ACK")
                else:
                    failures += 1
                    reason = result.reason.value if result.reason else "unknown"
                    detail = f" ({result.detail})" if result.detail else ""
                    click.echo(f"{envelope_id} NACK {reason}{detail}")
            nursery.cancel_scope.cancel()

    run_trio(main, f"--gateway {gateway}")
    if failures:
        raise SystemExit(EXIT_REFUSED)


def receiver_options(fn: F) -> F:
    """The verification options shared by `receive` and `shim receive`."""
    options = [
        click.option("--listen", required=True, help="HOST:PORT where gateways deliver."),
        click.option("--name", required=True, help="This receiver's SPIFFE ID (HELLO name)."),
        click.option("--bundle", "bundle_specs", multiple=True, required=True, help="TD=PATH."),
        click.option("--anchors", "anchors_dir", required=True, help="Endorsements directory."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@click.command(name="receive")
@receiver_options
@click.option("--out", "out_dir", required=True, help="Directory: one file per envelope id.")
def receive(
    listen: str, name: str, bundle_specs: tuple[str, ...], anchors_dir: str, out_dir: str
) -> None:
    """Verify envelopes delivered by gateways and write each payload once into --out, until
    SIGINT/SIGTERM."""
    host, port = parse_address(listen, "--listen")
    resolver = ReloadingRegistry(anchors_dir, parse_bundles(bundle_specs), time.time)
    try:
        sink = DirectorySink(Path(out_dir))
    except OSError as exc:
        raise UserFacingError(f"--out {out_dir}: {exc.strerror or exc}") from None

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(until_signal, nursery)
            serve = functools.partial(
                serve_receiver, host, port, name=name, resolver=resolver, sink=sink
            )
            bound = await nursery.start(serve)
            click.echo(f"receiving on {host}:{bound}, writing to {out_dir}", err=True)

    run_trio(main, f"--listen {listen}")
