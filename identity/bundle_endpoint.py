"""Fetching a federated trust domain's bundle from its SPIFFE bundle endpoint (``https_web``).

SPIFFE Federation: a trust domain publishes its bundle (a SPIFFE bundle document, JWKS) at an
HTTPS URL; peers fetch it and refresh it at the ``spiffe_refresh_hint`` interval. This module
implements the ``https_web`` profile: the endpoint is authenticated with Web PKI (the system trust
store, or a CA file given for a private PKI). HTTP is h11's (sans-I/O), TLS is the stdlib's under
trio. Responses are bounded in size and time; anything but a 200 with a valid bundle for the
expected trust domain is an error, and the caller keeps its last good bundle.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from urllib.parse import urlsplit

import h11
import trio

from identity.bundle import InvalidBundle, TrustBundle, parse_spiffe_bundle
from identity.spiffe_id import TrustDomain

MAX_BUNDLE_RESPONSE = 1024 * 1024
FETCH_TIMEOUT = 10.0
DEFAULT_REFRESH = 300
MIN_REFRESH = 30
MAX_REFRESH = 3600


class BundleFetchError(Exception):
    """The endpoint could not be reached, or did not answer with a valid bundle."""


def web_context(ca_file: Path | None = None) -> ssl.SSLContext:
    """TLS client context for ``https_web``: the system trust store, or only ``ca_file``."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def refresh_interval(bundle: TrustBundle) -> int:
    """The bundle's refresh hint, clamped to [MIN_REFRESH, MAX_REFRESH] seconds."""
    hint = bundle.refresh_hint or DEFAULT_REFRESH
    return max(MIN_REFRESH, min(MAX_REFRESH, hint))


async def fetch_bundle(
    url: str, trust_domain: TrustDomain, *, context: ssl.SSLContext, timeout: float = FETCH_TIMEOUT
) -> TrustBundle:
    """GET ``url`` and parse the body as ``trust_domain``'s SPIFFE bundle.

    Raises:
        BundleFetchError: connection, TLS, HTTP status, size or parse failure (message says which).
    """
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise BundleFetchError(f"{url}: not an https URL")
    host, port = parts.hostname, parts.port or 443
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        with trio.fail_after(timeout):
            stream = await trio.open_ssl_over_tcp_stream(
                host, port, ssl_context=context, https_compatible=True
            )
            async with stream:
                body = await _get(stream, host, target)
    except trio.TooSlowError:
        raise BundleFetchError(f"{url}: no answer within {timeout}s") from None
    except (OSError, trio.BrokenResourceError, ssl.SSLError) as exc:
        # trio wraps TLS failures in BrokenResourceError; the SSLError says what went wrong.
        cause = exc.__cause__ or exc.__context__
        detail = str(exc) or (str(cause) if cause else type(exc).__name__)
        raise BundleFetchError(f"{url}: {detail}") from exc
    try:
        return parse_spiffe_bundle(body, trust_domain, source=url)
    except InvalidBundle as exc:
        raise BundleFetchError(str(exc)) from exc


async def _get(stream: trio.abc.Stream, host: str, target: str) -> bytes:
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=64 * 1024)
    request = h11.Request(
        method="GET",
        target=target,
        headers=[("Host", host), ("Accept", "application/json"), ("Connection", "close")],
    )
    await stream.send_all(conn.send(request) + conn.send(h11.EndOfMessage()))
    body = bytearray()
    status = 0
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise BundleFetchError(f"bad HTTP response: {exc}") from exc
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(65536)))
            continue
        if isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BUNDLE_RESPONSE:
                raise BundleFetchError(f"response larger than {MAX_BUNDLE_RESPONSE} bytes")
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            break
    if status != 200:
        raise BundleFetchError(f"HTTP status {status}")
    return bytes(body)
