from __future__ import annotations

import trio

from gateway.daemon.http import Page, serve_http, text_page
from gateway.metrics import GatewayMetrics


async def _request(port: int, raw: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(raw)
        chunks = []
        while data := await stream.receive_some(65536):
            chunks.append(data)
    return b"".join(chunks)


async def test_metrics_health_and_errors() -> None:
    metrics = GatewayMetrics()
    metrics.decisions.labels(decision="deny", reason="tier_too_low", network="weave").inc(3)
    ready = {"value": False}

    def readyz() -> Page:
        return text_page(200, "ready\n") if ready["value"] else text_page(503, "not ready\n")

    routes = {
        "/metrics": lambda: Page(200, "text/plain; version=0.0.4", metrics.render()),
        "/healthz": lambda: text_page(200, "ok\n"),
        "/readyz": readyz,
        "/boom": lambda: 1 / 0,  # type: ignore[return-value,arg-type]
    }
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_http, "127.0.0.1", 0, routes)
            body = await _request(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            assert body.startswith(b"HTTP/1.1 200")
            assert (
                b'sluice_decisions_total{decision="deny",network="weave",reason="tier_too_low"} 3.0'
                in body
            )
            assert (await _request(port, b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")).startswith(
                b"HTTP/1.1 503"
            )
            ready["value"] = True
            assert (await _request(port, b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")).startswith(
                b"HTTP/1.1 200"
            )
            assert (await _request(port, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")).startswith(
                b"HTTP/1.1 404"
            )
            assert (await _request(port, b"POST /healthz HTTP/1.1\r\nHost: x\r\n\r\n")).startswith(
                b"HTTP/1.1 405"
            )
            assert (await _request(port, b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")).startswith(
                b"HTTP/1.1 500"
            )
            assert (await _request(port, b"garbage\r\n\r\n")).startswith(b"HTTP/1.1 400")
            # The server survived all of the above.
            assert (await _request(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")).endswith(
                b"ok\n"
            )
            nursery.cancel_scope.cancel()
