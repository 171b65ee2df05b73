"""SPIFFE bundle endpoint (https_web) against a real HTTPS server on 127.0.0.1."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trustme

from identity.bundle import TrustBundle, serialize_spiffe_bundle
from identity.bundle_endpoint import (
    MAX_REFRESH,
    MIN_REFRESH,
    BundleFetchError,
    fetch_bundle,
    refresh_interval,
    web_context,
)
from identity.ca import SvidAuthority
from identity.spiffe_id import parse_trust_domain

PEER = parse_trust_domain("cilium.demo.example")


def _bundle(refresh_hint: int | None = 120) -> TrustBundle:
    ca = SvidAuthority.create_root(PEER)
    return TrustBundle(PEER, ca.bundle, {}, sequence=3, refresh_hint=refresh_hint)


async def _serve(nursery: trio.Nursery, respond: Callable[[bytes], bytes], ca: trustme.CA) -> int:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)

    async def handler(stream: trio.SSLStream[trio.SocketStream]) -> None:
        try:
            request = b""
            while b"\r\n\r\n" not in request:
                data = await stream.receive_some(4096)
                if not data:
                    return
                request += data
            await stream.send_all(respond(request))
        except trio.BrokenResourceError:
            pass
        finally:
            await trio.aclose_forcefully(stream)

    listeners = await nursery.start(trio.serve_ssl_over_tcp, handler, 0, context)
    return int(listeners[0].transport_listener.socket.getsockname()[1])


def _http(status: str, body: bytes) -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


@pytest.fixture
def ca(tmp_path: Path) -> tuple[trustme.CA, Path]:
    authority = trustme.CA()
    path = tmp_path / "endpoint-ca.pem"
    authority.cert_pem.write_to_path(str(path))
    return authority, path


async def test_fetches_and_parses_the_peer_bundle(ca: tuple[trustme.CA, Path]) -> None:
    authority, ca_file = ca
    bundle = _bundle()
    seen: list[bytes] = []

    def respond(request: bytes) -> bytes:
        seen.append(request)
        return _http("200 OK", serialize_spiffe_bundle(bundle))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await _serve(nursery, respond, authority)
            got = await fetch_bundle(
                f"https://127.0.0.1:{port}/bundle", PEER, context=web_context(ca_file)
            )
            nursery.cancel_scope.cancel()
    assert got.trust_domain == PEER
    assert got.x509_authorities == bundle.x509_authorities
    assert got.refresh_hint == 120
    assert seen[0].startswith(b"GET /bundle HTTP/1.1\r\n")


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (_http("404 Not Found", b"{}"), "HTTP status 404"),
        (_http("200 OK", b"not json"), "cilium.demo.example"),
        (_http("200 OK", b"{" + b" " * (1024 * 1024 + 10) + b"}"), "larger than"),
        (b"garbage\r\n\r\n", "bad HTTP response"),
    ],
)
async def test_bad_answers_are_errors(
    ca: tuple[trustme.CA, Path], response: bytes, message: str
) -> None:
    authority, ca_file = ca
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await _serve(nursery, lambda _: response, authority)
            with pytest.raises(BundleFetchError, match=message):
                await fetch_bundle(f"https://127.0.0.1:{port}/", PEER, context=web_context(ca_file))
            nursery.cancel_scope.cancel()


async def test_endpoint_not_trusted_by_web_pki_is_refused(ca: tuple[trustme.CA, Path]) -> None:
    authority, _ = ca
    other = trustme.CA()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await _serve(
                nursery, lambda _: _http("200 OK", serialize_spiffe_bundle(_bundle())), authority
            )
            context = ssl.create_default_context()
            other.configure_trust(context)
            with pytest.raises(BundleFetchError, match=r"CERTIFICATE_VERIFY_FAILED"):
                await fetch_bundle(f"https://127.0.0.1:{port}/", PEER, context=context)
            nursery.cancel_scope.cancel()


async def test_plain_http_and_unreachable() -> None:
    with pytest.raises(BundleFetchError, match="not an https URL"):
        await fetch_bundle("http://127.0.0.1/", PEER, context=web_context())
    with trio.fail_after(10), pytest.raises(BundleFetchError):
        await fetch_bundle("https://127.0.0.1:1/", PEER, context=web_context())


def test_refresh_hint_is_clamped() -> None:
    assert refresh_interval(_bundle(5)) == MIN_REFRESH
    assert refresh_interval(_bundle(10**6)) == MAX_REFRESH
    assert refresh_interval(_bundle(120)) == 120
