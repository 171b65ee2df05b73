"""The Workload API server, spoken to over a real unix socket with real gRPC.

py-spiffe's own ``WorkloadApiClient`` is the client in most tests: that proves our server speaks
the wire protocol a SPIFFE library expects. Every blocking call has a timeout.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from spiffe import TrustDomain as PyTrustDomain
from spiffe import WorkloadApiClient
from spiffe._proto import workload_pb2, workload_pb2_grpc

from identity.ca import SvidAuthority
from identity.spiffe_id import parse_spiffe_id, parse_trust_domain
from identity.workload_api_server import (
    MISSING_HEADER_MESSAGE,
    SECURITY_HEADER_KEY,
    WorkloadApiServer,
)

TIMEOUT = 10.0
WEAVE = parse_trust_domain("weave.example")
CILIUM = parse_trust_domain("cilium.example")
GATEWAY_ID = parse_spiffe_id("spiffe://weave.example/sluice/gateway")


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # pytest's tmp_path can exceed the 107-byte limit of a unix socket path; /tmp is short.
    d = Path(tempfile.mkdtemp(prefix="sluice-wl-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def weave_ca() -> SvidAuthority:
    return SvidAuthority.create_root(WEAVE).intermediate()


@pytest.fixture(scope="module")
def cilium_ca() -> SvidAuthority:
    return SvidAuthority.create_root(CILIUM)


@pytest.fixture
def server(
    sock_dir: Path, weave_ca: SvidAuthority, cilium_ca: SvidAuthority
) -> Iterator[WorkloadApiServer]:
    with WorkloadApiServer(
        sock_dir / "api.sock", weave_ca, GATEWAY_ID, federated={CILIUM: cilium_ca.bundle}
    ) as srv:
        yield srv


def _der(cert: object) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)  # type: ignore[attr-defined,no-any-return]


def test_py_spiffe_client_fetches_svid_and_bundles(
    server: WorkloadApiServer, weave_ca: SvidAuthority, cilium_ca: SvidAuthority
) -> None:
    served = server.identity.svid
    with WorkloadApiClient(server.target, default_timeout=TIMEOUT) as client:
        ctx = client.fetch_x509_context()
        svid = ctx.default_svid
        assert str(svid.spiffe_id) == str(GATEWAY_ID)
        # The whole chain (leaf + intermediate) arrives, in order, byte for byte.
        assert [_der(c) for c in svid.cert_chain] == [_der(c) for c in served.chain]
        assert len(svid.cert_chain) == 2
        assert svid.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) == served.leaf.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        own = ctx.x509_bundle_set.get_bundle_for_trust_domain(PyTrustDomain("weave.example"))
        fed = ctx.x509_bundle_set.get_bundle_for_trust_domain(PyTrustDomain("cilium.example"))
        assert own is not None and fed is not None
        assert {_der(c) for c in own.x509_authorities} == {_der(weave_ca.bundle[0])}
        assert {_der(c) for c in fed.x509_authorities} == {_der(cilium_ca.bundle[0])}

        bundles = client.fetch_x509_bundles()
        names = {b.trust_domain.name for b in bundles.bundles}
        assert names == {"weave.example", "cilium.example"}


def test_rotation_reaches_an_open_py_spiffe_stream(server: WorkloadApiServer) -> None:
    serials: list[int] = []
    errors: list[Exception] = []
    arrived = threading.Semaphore(0)

    def on_success(ctx: object) -> None:
        serials.append(ctx.default_svid.leaf.serial_number)  # type: ignore[attr-defined]
        arrived.release()

    def on_error(err: Exception) -> None:
        errors.append(err)
        arrived.release()

    with WorkloadApiClient(server.target) as client:
        handle = client.stream_x509_contexts(on_success, on_error, retry_connect=False)
        try:
            assert arrived.acquire(timeout=TIMEOUT)
            assert serials == [server.identity.svid.leaf.serial_number]
            old_key = server.identity.svid.leaf.public_key()
            rotated = server.rotate()
            assert rotated.version == 2
            assert arrived.acquire(timeout=TIMEOUT)
            assert errors == []
            assert serials[-1] == rotated.svid.leaf.serial_number != serials[0]
            assert rotated.svid.leaf.public_key() != old_key
        finally:
            handle.cancel()


def test_ca_rotation_changes_the_served_bundle(
    server: WorkloadApiServer, cilium_ca: SvidAuthority
) -> None:
    new_root = SvidAuthority.create_root(WEAVE)
    server.rotate(authority=new_root)
    with WorkloadApiClient(server.target, default_timeout=TIMEOUT) as client:
        ctx = client.fetch_x509_context()
        own = ctx.x509_bundle_set.get_bundle_for_trust_domain(PyTrustDomain("weave.example"))
        assert own is not None
        assert {_der(c) for c in own.x509_authorities} == {_der(new_root.certificate)}
        assert _der(ctx.default_svid.cert_chain[0]) == _der(server.identity.svid.leaf)
        # The leaf now chains directly to the new root: no intermediate.
        assert len(ctx.default_svid.cert_chain) == 1


def _raw_stub(server: WorkloadApiServer) -> tuple[grpc.Channel, object]:
    channel = grpc.insecure_channel("unix:" + str(server.socket_path))
    return channel, workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)  # type: ignore[no-untyped-call]


@pytest.mark.parametrize(
    "metadata",
    [None, [(SECURITY_HEADER_KEY, "false")], [("other-header", "true")]],
    ids=["no-header", "header-false", "wrong-header"],
)
def test_requests_without_security_header_are_rejected(
    server: WorkloadApiServer, metadata: list[tuple[str, str]] | None
) -> None:
    channel, stub = _raw_stub(server)
    with channel:
        for call, request in [
            (stub.FetchX509SVID, workload_pb2.X509SVIDRequest()),  # type: ignore[attr-defined]
            (stub.FetchX509Bundles, workload_pb2.X509BundlesRequest()),  # type: ignore[attr-defined]
        ]:
            with pytest.raises(grpc.RpcError) as info:
                next(call(request, metadata=metadata, timeout=TIMEOUT))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert info.value.details() == MISSING_HEADER_MESSAGE
    assert server.open_streams == 0


def test_raw_request_with_header_is_served_and_jwt_is_unimplemented(
    server: WorkloadApiServer,
) -> None:
    channel, stub = _raw_stub(server)
    header = [(SECURITY_HEADER_KEY, "true")]
    with channel:
        stream = stub.FetchX509SVID(  # type: ignore[attr-defined]
            workload_pb2.X509SVIDRequest(), metadata=header, timeout=TIMEOUT
        )
        first = next(stream)
        assert first.svids[0].spiffe_id == str(GATEWAY_ID)
        assert set(first.federated_bundles) == {"spiffe://cilium.example"}
        stream.cancel()
        with pytest.raises(grpc.RpcError) as info:
            stub.FetchJWTSVID(  # type: ignore[attr-defined]
                workload_pb2.JWTSVIDRequest(audience=["x"]), metadata=header, timeout=TIMEOUT
            )
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_stop_ends_open_streams_and_removes_the_socket(server: WorkloadApiServer) -> None:
    ended = threading.Event()
    errors: list[Exception] = []
    first = threading.Event()

    def on_error(err: Exception) -> None:
        errors.append(err)
        ended.set()

    with WorkloadApiClient(server.target) as client:
        handle = client.stream_x509_contexts(
            lambda _ctx: first.set(), on_error, retry_connect=False
        )
        try:
            assert first.wait(TIMEOUT)
            assert server.open_streams == 1
            server.stop()
            assert ended.wait(TIMEOUT)
            # A clean end of stream, not a transport failure: py-spiffe reports it as such.
            assert "stream ended" in str(errors[0])
        finally:
            handle.cancel()
    assert not server.socket_path.exists()
    assert server.open_streams == 0


def test_client_cancel_releases_the_stream_thread(server: WorkloadApiServer) -> None:
    first = threading.Event()
    with WorkloadApiClient(server.target) as client:
        handle = client.stream_x509_contexts(lambda _ctx: first.set(), lambda _e: None)
        assert first.wait(TIMEOUT)
        assert server.open_streams == 1
        handle.cancel()
    released = threading.Event()
    for _ in range(int(TIMEOUT / 0.05)):
        if server.open_streams == 0:
            released.set()
            break
        released.wait(0.05)
    assert released.is_set(), "the server kept a worker thread for a cancelled stream"


def test_start_replaces_a_stale_socket_but_refuses_a_regular_file(
    sock_dir: Path, weave_ca: SvidAuthority
) -> None:
    stale = sock_dir / "stale.sock"
    leftover = socket.socket(socket.AF_UNIX)
    leftover.bind(str(stale))
    leftover.close()  # the file stays behind, as after a crash
    with (
        WorkloadApiServer(stale, weave_ca, GATEWAY_ID) as srv,
        WorkloadApiClient(srv.target, default_timeout=TIMEOUT) as client,
    ):
        assert str(client.fetch_x509_svid().spiffe_id) == str(GATEWAY_ID)

    regular = sock_dir / "regular"
    regular.write_text("not a socket")
    with pytest.raises(FileExistsError, match="not a unix socket"):
        WorkloadApiServer(regular, weave_ca, GATEWAY_ID).start()
    assert regular.read_text() == "not a socket"


def test_constructor_rejects_foreign_id_and_long_path(
    sock_dir: Path, weave_ca: SvidAuthority
) -> None:
    with pytest.raises(ValueError, match="not in the authority's trust domain"):
        WorkloadApiServer(
            sock_dir / "a.sock", weave_ca, parse_spiffe_id("spiffe://cilium.example/x")
        )
    with pytest.raises(ValueError, match="longer than 107 bytes"):
        WorkloadApiServer(sock_dir / ("x" * 120), weave_ca, GATEWAY_ID)
    with pytest.raises(ValueError, match="serves"):
        srv = WorkloadApiServer(sock_dir / "b.sock", weave_ca, GATEWAY_ID)
        srv.rotate(svid=weave_ca.issue(parse_spiffe_id("spiffe://weave.example/other")))
