"""The origin workload's sender, run inside the Weave-side namespace.

Sends each envelope file, in the order given, through the gateway with
:class:`gateway.shim.Sender` (one framed connection, retries until a final receipt) and prints
one JSON document on stdout::

    {"source": "10.32.1.7", "results": [{"file": "...", "delivered": true, "reason": null,
     "detail": "", "attempts": 1}, ...]}

``source`` is the local address the kernel chose for a plain TCP connection to the gateway
(opened and closed before sending), i.e. the address the gateway sees the workload's traffic
come from.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import trio

from gateway.shim import Sender


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def _source_address(host: str, port: int, deadline: float) -> str:
    """The local address of a TCP connection to ``host:port``, retried until it is listening."""
    with trio.fail_after(deadline):
        while True:
            try:
                stream = await trio.open_tcp_stream(host, port)
            except OSError:
                await trio.sleep(0.1)
                continue
            address: str = stream.socket.getsockname()[0]
            await stream.aclose()
            return address


async def _main(args: argparse.Namespace) -> dict[str, object]:
    host, port = _host_port(args.gateway)
    results: list[dict[str, object]] = []
    with trio.fail_after(args.max_seconds):
        source = await _source_address(host, port, args.deadline)
        sender = Sender(host, port, name=args.name)
        async with trio.open_nursery() as nursery:
            await nursery.start(sender.run)
            for name in args.envelopes:
                result = await sender.send(Path(name).read_bytes(), deadline=args.deadline)
                results.append(
                    {
                        "file": name,
                        "delivered": result.delivered,
                        "reason": result.reason.value if result.reason else None,
                        "detail": result.detail,
                        "attempts": result.attempts,
                    }
                )
            nursery.cancel_scope.cancel()
    return {"source": source, "results": results}


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the arguments, send, print the JSON report."""
    parser = argparse.ArgumentParser(prog="sender")
    parser.add_argument("--gateway", required=True, help="the gateway's host:port")
    parser.add_argument("--name", required=True, help="the sending workload's SPIFFE ID")
    parser.add_argument("--deadline", type=float, default=20.0, help="per envelope, seconds")
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("envelopes", nargs="+", help="envelope files (COSE_Sign1 bytes)")
    print(json.dumps(trio.run(_main, parser.parse_args(argv))))


if __name__ == "__main__":
    main()
