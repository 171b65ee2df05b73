"""`sluice shim send | receive`: the sidecar that carries an unmodified TCP application's byte
stream as governed envelopes (docs/shim.md; the logic is in :mod:`gateway.shim_sidecar`)."""

from __future__ import annotations

import functools
import time

import click
import trio

from gateway.cli.send_cmd import (
    build_sealer,
    receiver_options,
    run_trio,
    sealing_options,
    until_signal,
)
from gateway.cli.trust_args import ReloadingRegistry, parse_address, parse_bundles
from gateway.shim import Sender, serve_receiver
from gateway.shim_sidecar import StreamReport, StreamSink, serve_stream_sender


@click.group(name="shim")
def shim() -> None:
    """Sidecar: carry a plain TCP connection through sluice, one direction per pair."""


@shim.command(name="send")
@click.option("--listen", required=True, help="Local HOST:PORT the application connects to.")
@sealing_options
@click.option("--window", type=click.IntRange(1, 32), default=4, show_default=True)
@click.option("--deadline", type=click.FloatRange(0.1, 3600), default=30.0, show_default=True)
def send_cmd(
    listen: str,
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
    window: int,
    deadline: float,
) -> None:
    """Accept local TCP connections and send each one's bytes as ordered envelopes.

    A refused envelope (a NACK, or no ACK before --deadline) closes the local connection.
    Runs until SIGINT/SIGTERM.
    """
    listen_host, listen_port = parse_address(listen, "--listen")
    host, port = parse_address(gateway, "--gateway")
    sealer = build_sealer(
        key_file, issuer, scope, to_scope, to_id, tier, lineage, transit, max_hops
    )

    def report(stream: StreamReport) -> None:
        if stream.ok:
            click.echo(f"stream {stream.stream_id.hex()}: {stream.bytes} bytes delivered", err=True)
        else:
            reason = stream.reason.value if stream.reason else "unknown"
            click.echo(
                f"stream {stream.stream_id.hex()}: aborted after {stream.bytes} bytes: {reason}",
                err=True,
            )

    async def main() -> None:
        sender = Sender(host, port, name=issuer)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(until_signal, nursery)
            await nursery.start(sender.run)
            serve = functools.partial(
                serve_stream_sender,
                listen_host,
                listen_port,
                sender=sender,
                sealer=sealer,
                lifetime=ttl,
                window=window,
                deadline=deadline,
                on_stream=report,
            )
            bound = await nursery.start(serve)
            click.echo(f"shim send: listening on {listen_host}:{bound} -> {gateway}", err=True)

    run_trio(main, f"--listen {listen}")


@shim.command(name="receive")
@receiver_options
@click.option("--deliver-to", required=True, help="The application's HOST:PORT.")
@click.option("--window", type=click.IntRange(1, 1024), default=32, show_default=True)
@click.option("--max-streams", type=click.IntRange(1, 65536), default=128, show_default=True)
def receive_cmd(
    listen: str,
    name: str,
    bundle_specs: tuple[str, ...],
    anchors_dir: str,
    deliver_to: str,
    window: int,
    max_streams: int,
) -> None:
    """Verify stream envelopes from gateways and replay each stream as a TCP connection to
    --deliver-to, in order and once. Runs until SIGINT/SIGTERM."""
    host, port = parse_address(listen, "--listen")
    app_host, app_port = parse_address(deliver_to, "--deliver-to")
    resolver = ReloadingRegistry(anchors_dir, parse_bundles(bundle_specs), time.time)

    async def connect() -> trio.abc.Stream:
        return await trio.open_tcp_stream(app_host, app_port)

    sink = StreamSink(connect, window=window, max_streams=max_streams)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(until_signal, nursery)
            await nursery.start(sink.run)
            serve = functools.partial(
                serve_receiver, host, port, name=name, resolver=resolver, sink=sink
            )
            bound = await nursery.start(serve)
            click.echo(f"shim receive: on {host}:{bound} -> {deliver_to}", err=True)

    run_trio(main, f"--listen {listen}")
