"""The destination workload's receiver, run inside the Cilium-side namespace.

It is :func:`gateway.shim.serve_receiver` with a :class:`gateway.shim.DirectorySink`: every
envelope is verified completely (origin signature, anchors from ``--anchors``, the gateway's
transit stamp, routing constraint), deduplicated, written to ``--sink`` and only then
acknowledged. When listening it creates ``--ready-file``; it stops on SIGTERM/SIGINT or after
``--max-seconds``.

Usage::

    python -m tests.appliance.drivers.receiver --listen 10.48.1.15:9000 \
        --name spiffe://cilium.demo.example/ns/ledger/sa/ledger --anchors DIR \
        --bundle weave.demo.example=weave.pem --bundle cilium.demo.example=cilium.pem \
        --sink DIR --ready-file FILE
"""

from __future__ import annotations

import argparse
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import trio

from gateway.shim import DirectorySink, serve_receiver
from identity.anchor_contract import AnchorResolver
from identity.bundle import BundleSet, load_bundle_file
from identity.registry import load_registry
from identity.spiffe_id import parse_trust_domain


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def _resolver(anchors: Path, bundle_args: Sequence[str]) -> Callable[[], AnchorResolver]:
    bundles = []
    for arg in bundle_args:
        domain, _, path = arg.partition("=")
        td = parse_trust_domain(domain)
        bundles.append(load_bundle_file(path, td))
    bundle_set = BundleSet(tuple(bundles))

    def current() -> AnchorResolver:
        # Reloaded per envelope: the gateway writes its own endorsement after it starts.
        return load_registry(anchors, bundle_set, now=int(time.time())).registry

    return current


async def _main(args: argparse.Namespace) -> None:
    host, port = _host_port(args.listen)
    resolver = _resolver(Path(args.anchors), args.bundle)
    sink = DirectorySink(Path(args.sink))
    with trio.move_on_after(args.max_seconds):
        async with trio.open_nursery() as nursery:

            async def serve(*, task_status: trio.TaskStatus[int]) -> None:
                await serve_receiver(
                    host,
                    port,
                    name=args.name,
                    resolver=resolver,
                    sink=sink,
                    task_status=task_status,
                )

            await nursery.start(serve)
            Path(args.ready_file).write_text("ready\n")
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    break
            nursery.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the arguments and serve until stopped."""
    parser = argparse.ArgumentParser(prog="receiver")
    parser.add_argument("--listen", required=True, help="host:port to listen on")
    parser.add_argument("--name", required=True, help="the receiving workload's SPIFFE ID")
    parser.add_argument("--anchors", required=True, help="directory of *.endorsement files")
    parser.add_argument("--bundle", action="append", default=[], help="TRUST_DOMAIN=PEM_FILE")
    parser.add_argument("--sink", required=True, help="directory payloads are delivered to")
    parser.add_argument("--ready-file", required=True, help="created once listening")
    parser.add_argument("--max-seconds", type=float, default=120.0)
    trio.run(_main, parser.parse_args(argv))


if __name__ == "__main__":
    main()
