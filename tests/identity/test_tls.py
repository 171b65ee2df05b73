"""Gateway-to-gateway mutual TLS over real TCP on 127.0.0.1 (trio.SSLStream + stdlib ssl)."""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import trio
from cryptography.hazmat.primitives.serialization import Encoding

from identity.bundle import BundleSet, TrustBundle
from identity.ca import IssuedSVID, SvidAuthority
from identity.spiffe_id import SpiffeID, TrustDomain, parse_spiffe_id
from identity.tls import PeerIdentityError, check_peer, client_context, server_context
from identity.x509svid import X509SVID, load_x509svid

A, B, C = TrustDomain("a.test"), TrustDomain("b.test"), TrustDomain("c.test")
SERVER_ID = parse_spiffe_id("spiffe://a.test/gateway")
CLIENT_ID = parse_spiffe_id("spiffe://b.test/gateway")
TIME_LIMIT = 10


def _svid(issued: IssuedSVID) -> X509SVID:
    return load_x509svid(issued.chain_pem(), issued.key_pem())


@dataclass
class World:
    roots: dict[TrustDomain, SvidAuthority]
    bundles: BundleSet

    def issue(self, td: TrustDomain, spiffe_id: SpiffeID, **kwargs: object) -> X509SVID:
        return _svid(self.roots[td].issue(spiffe_id, **kwargs))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def world() -> World:
    roots = {td: SvidAuthority.create_root(td) for td in (A, B, C)}
    return World(roots, BundleSet(TrustBundle(td, r.bundle) for td, r in roots.items()))


@dataclass
class Side:
    stream: trio.SSLStream[trio.SocketStream] | None = None
    error: BaseException | None = None


async def _connect(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> tuple[Side, Side]:
    """Handshake both ends over a real loopback TCP connection; report each side's outcome."""
    server, client = Side(), Side()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def serve() -> None:
        tcp = await listeners[0].accept()
        stream = trio.SSLStream(tcp, server_ctx, server_side=True)
        try:
            await stream.do_handshake()
            # TLS 1.3: the server sees a bad client certificate only now; a byte exchange makes
            # the client observe the server's alert too.
            await stream.send_all(b"s")
            server.stream = stream
        except (trio.BrokenResourceError, ssl.SSLError) as exc:
            server.error = exc
            await trio.aclose_forcefully(stream)  # so that the client sees the failure

    async def dial() -> None:
        tcp = await trio.open_tcp_stream("127.0.0.1", port)
        stream = trio.SSLStream(tcp, client_ctx, server_hostname=None)
        try:
            await stream.do_handshake()
            assert await stream.receive_some(1) == b"s"
            client.stream = stream
        except (trio.BrokenResourceError, ssl.SSLError, AssertionError) as exc:
            client.error = exc
            await trio.aclose_forcefully(stream)

    with trio.fail_after(TIME_LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            nursery.start_soon(dial)
    await listeners[0].aclose()
    return server, client


async def _close(*sides: Side) -> None:
    with trio.move_on_after(2):
        for side in sides:
            if side.stream is not None:
                await side.stream.aclose()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def test_mutual_tls_success_both_ways(world: World) -> None:
    server_svid = world.issue(A, SERVER_ID)
    inter = world.roots[B].intermediate()
    client_svid = _svid(inter.issue(CLIENT_ID))  # with an intermediate: the full chain is used
    server, client = await _connect(
        server_context(server_svid, [world.bundles[B], world.bundles[C]]),
        client_context(client_svid, world.bundles[A]),
    )
    assert server.error is None and client.error is None
    assert server.stream is not None and client.stream is not None
    assert check_peer(server.stream, CLIENT_ID, world.bundles, now=_now()) == CLIENT_ID
    assert check_peer(server.stream, B, world.bundles, now=_now()) == CLIENT_ID
    assert check_peer(client.stream, SERVER_ID, world.bundles, now=_now()) == SERVER_ID
    assert server.stream.version() == "TLSv1.3"
    await _close(server, client)


async def test_wrong_spiffe_id_rejected(world: World) -> None:
    server, client = await _connect(
        server_context(world.issue(A, SERVER_ID), [world.bundles[B]]),
        client_context(
            world.issue(B, parse_spiffe_id("spiffe://b.test/intruder")), world.bundles[A]
        ),
    )
    assert server.stream is not None
    with pytest.raises(PeerIdentityError, match=r"expected spiffe://b.test/gateway"):
        check_peer(server.stream, CLIENT_ID, world.bundles, now=_now())
    with pytest.raises(PeerIdentityError, match=r"not in trust domain 'c.test'"):
        check_peer(server.stream, C, world.bundles, now=_now())
    await _close(server, client)


async def test_cross_domain_confusion_rejected(world: World) -> None:
    """C's CA issues a certificate claiming B's gateway ID. The listener trusts B and C, so OpenSSL
    accepts the handshake; check_peer must still refuse it (validated by the wrong domain)."""
    forged = world.issue(C, CLIENT_ID)
    server, client = await _connect(
        server_context(world.issue(A, SERVER_ID), [world.bundles[B], world.bundles[C]]),
        client_context(forged, world.bundles[A]),
    )
    assert server.error is None and server.stream is not None  # OpenSSL alone was fooled
    with pytest.raises(PeerIdentityError, match=r"trust domain 'b.test'"):
        check_peer(server.stream, CLIENT_ID, world.bundles, now=_now())
    await _close(server, client)


async def test_client_trusts_only_the_expected_peer_domain(world: World) -> None:
    """A server presenting C's certificate to a client that expects A fails in the handshake,
    although C's bundle is known to the process: the client context holds A's bundle only."""
    server, client = await _connect(
        server_context(
            world.issue(C, parse_spiffe_id("spiffe://c.test/gateway")), [world.bundles[B]]
        ),
        client_context(world.issue(B, CLIENT_ID), world.bundles[A]),
    )
    assert isinstance(client.error, trio.BrokenResourceError | ssl.SSLError)
    assert "certificate verify failed" in repr(client.error.__cause__ or client.error)
    await _close(server, client)


@pytest.mark.parametrize("problem", ["expired", "untrusted"])
async def test_bad_client_certificates_fail_the_handshake(world: World, problem: str) -> None:
    make: Callable[[], X509SVID]
    if problem == "expired":
        past = _now() - dt.timedelta(days=2)

        def make() -> X509SVID:
            return world.issue(B, CLIENT_ID, now=past)
    else:
        stranger = SvidAuthority.create_root(B)  # right name, key nobody trusts

        def make() -> X509SVID:
            return _svid(stranger.issue(CLIENT_ID))

    client_svid = make()
    server, client = await _connect(
        server_context(world.issue(A, SERVER_ID), [world.bundles[B]]),
        client_context(client_svid, world.bundles[A]),
    )
    assert server.stream is None
    assert isinstance(server.error, trio.BrokenResourceError | ssl.SSLError)
    assert client.stream is None
    # Our own check agrees, independently of OpenSSL.
    with pytest.raises(PeerIdentityError):
        check_peer(
            [c.public_bytes(_der()) for c in client_svid.chain],
            CLIENT_ID,
            world.bundles,
            now=_now(),
        )
    await _close(server, client)


def _der() -> Encoding:
    return Encoding.DER


def test_check_peer_on_der_chains(world: World) -> None:
    svid = world.issue(B, CLIENT_ID)
    chain = [c.public_bytes(_der()) for c in svid.chain]
    assert check_peer(chain, CLIENT_ID, world.bundles, now=_now()) == CLIENT_ID
    with pytest.raises(PeerIdentityError, match="no certificate"):
        check_peer([], CLIENT_ID, world.bundles, now=_now())
    with pytest.raises(PeerIdentityError, match="unreadable"):
        check_peer([b"\x30\x00"], CLIENT_ID, world.bundles, now=_now())
    with pytest.raises(PeerIdentityError, match="no trust bundle"):
        check_peer(chain, CLIENT_ID, BundleSet([world.bundles[A]]), now=_now())


def test_contexts_are_tls13_only_with_hostname_checks_off(world: World) -> None:
    svid = world.issue(A, SERVER_ID)
    for ctx in (server_context(svid, world.bundles), client_context(svid, world.bundles[B])):
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3
        assert ctx.maximum_version == ssl.TLSVersion.TLSv1_3
        assert ctx.verify_mode == ssl.CERT_REQUIRED
        assert ctx.check_hostname is False
    with pytest.raises(ValueError, match=r"no X.509 authorities"):
        client_context(svid, TrustBundle(B, ()))


@pytest.mark.parametrize("key_type", ["rsa", "ed25519"])
async def test_other_key_types_work_end_to_end(world: World, key_type: str) -> None:
    roots = {td: SvidAuthority.create_root(td, key_type=key_type) for td in (A, B)}  # type: ignore[arg-type]
    bundles = BundleSet(TrustBundle(td, r.bundle) for td, r in roots.items())
    server, client = await _connect(
        server_context(_svid(roots[A].issue(SERVER_ID, key_type=key_type)), [bundles[B]]),  # type: ignore[arg-type]
        client_context(_svid(roots[B].issue(CLIENT_ID, key_type=key_type)), bundles[A]),  # type: ignore[arg-type]
    )
    assert server.stream is not None and client.stream is not None, (server.error, client.error)
    assert check_peer(server.stream, CLIENT_ID, bundles, now=_now()) == CLIENT_ID
    assert check_peer(client.stream, SERVER_ID, bundles, now=_now()) == SERVER_ID
    await _close(server, client)
