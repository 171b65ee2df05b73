"""The gateway's local HTTP port: ``/metrics``, ``/healthz``, ``/readyz`` and extra pages.

HTTP parsing is h11's (sans-I/O); this module only drives it over trio streams. It serves one
request per connection with ``Connection: close``, which is all a Prometheus scraper or a
kubelet-style probe needs, and keeps the surface small: bounded request size, a read timeout,
GET and HEAD only.

Resource handling: every connection is closed in a ``finally``; a slow or broken client only
costs its own task.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import h11
import trio

MAX_REQUEST_BYTES = 16 * 1024
REQUEST_TIMEOUT = 5.0
MAX_HTTP_CONNECTIONS = 64


@dataclass(frozen=True, slots=True)
class Page:
    status: int
    content_type: str
    body: bytes


Handler = Callable[[], Page | Awaitable[Page]]


def text_page(status: int, text: str) -> Page:
    return Page(status, "text/plain; charset=utf-8", text.encode())


async def serve_http(
    host: str,
    port: int,
    routes: Mapping[str, Handler],
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``routes`` (path -> handler) until cancelled; ``task_status.started`` gets the port.

    Error handling: malformed requests get 400, unknown paths 404, other methods 405; a handler
    that raises gets 500 and the server keeps going.
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound_port = listeners[0].socket.getsockname()[1]
    limiter = trio.CapacityLimiter(MAX_HTTP_CONNECTIONS)

    async def handle(stream: trio.SocketStream) -> None:
        async with limiter:
            try:
                with trio.move_on_after(REQUEST_TIMEOUT):
                    await _serve_one(stream, routes)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            finally:
                await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        task_status.started(bound_port)
        await trio.serve_listeners(handle, listeners, handler_nursery=nursery)


async def _serve_one(stream: trio.SocketStream, routes: Mapping[str, Handler]) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_BYTES)
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            await _send(stream, conn, text_page(400, "bad request\n"), head=False, fresh=True)
            return
        if event is h11.NEED_DATA:
            data = await stream.receive_some(4096)
            if not data:
                return
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Request):
            break
        return
    method = event.method.decode("ascii", "replace")
    path = event.target.decode("ascii", "replace").split("?", 1)[0]
    if method not in ("GET", "HEAD"):
        page = text_page(405, "method not allowed\n")
    elif path not in routes:
        page = text_page(404, "not found\n")
    else:
        try:
            result = routes[path]()
            page = await result if not isinstance(result, Page) else result
        except Exception as exc:  # a broken page must not stop the port
            page = text_page(500, f"internal error: {type(exc).__name__}\n")
    await _send(stream, conn, page, head=method == "HEAD", fresh=False)


async def _send(
    stream: trio.SocketStream, conn: h11.Connection, page: Page, *, head: bool, fresh: bool
) -> None:
    if fresh:
        # After a parse error h11 refuses to send; answer with a fresh connection state.
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        conn.next_event()
    headers = [
        ("Content-Type", page.content_type),
        ("Content-Length", str(len(page.body))),
        ("Connection", "close"),
        ("Cache-Control", "no-store"),
    ]
    data = conn.send(h11.Response(status_code=page.status, headers=headers))
    if not head:
        data += conn.send(h11.Data(data=page.body))
    data += conn.send(h11.EndOfMessage())
    await stream.send_all(data)
