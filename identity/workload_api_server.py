"""A real SPIFFE Workload API server (gRPC over a unix socket) that stands in for a SPIRE agent.

Theory of operation: the server holds one *served identity* (an X.509-SVID issued by an
:class:`~identity.ca.SvidAuthority`, the bundle of its own trust domain and the federated bundles)
behind a condition variable, with a version number. Every open ``FetchX509SVID`` /
``FetchX509Bundles`` stream sends the identity it finds, then sleeps on the condition until the
version moves on, the client goes away or the server stops. A stream therefore always sends the
*latest* identity: rotations that happen faster than a client reads are coalesced, and no per-stream
queue can grow without bound. :meth:`WorkloadApiServer.rotate` issues a fresh SVID (new key, new
serial) and wakes every stream.

Like SPIRE, every call must carry the metadata header ``workload.spiffe.io: true`` (the SPIFFE
Workload API specification's guard against server-side request forgery); a call without it gets
``INVALID_ARGUMENT``. JWT-SVIDs are not served: those methods answer ``UNIMPLEMENTED``.

Used by the tests and by ``sluice demo``; production gateways talk to a real SPIRE agent.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import stat
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from spiffe._proto import workload_pb2, workload_pb2_grpc

from identity.ca import DEFAULT_SVID_LIFETIME, IssuedSVID, SvidAuthority
from identity.spiffe_id import SpiffeID, TrustDomain

SECURITY_HEADER_KEY = "workload.spiffe.io"
SECURITY_HEADER_VALUE = "true"
# SPIRE's own wording, so that clients see the same message from us as from an agent.
MISSING_HEADER_MESSAGE = "security header missing from request"

# sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107
DEFAULT_MAX_STREAMS = 16
# How often a waiting stream re-checks that its client is still there, in seconds. Cancellation
# callbacks wake it at once; this is only a backstop.
STREAM_RECHECK_SECONDS = 1.0
DEFAULT_STOP_GRACE_SECONDS = 2.0

Certificates = tuple[x509.Certificate, ...]


@dataclass(frozen=True, slots=True)
class ServedIdentity:
    """What the server hands out: one SVID, its own trust domain's roots, federated roots."""

    svid: IssuedSVID
    bundle: Certificates
    federated: Mapping[TrustDomain, Certificates] = field(
        default_factory=lambda: MappingProxyType({})
    )
    version: int = 0

    def x509_svid_response(self) -> workload_pb2.X509SVIDResponse:
        """The ``FetchX509SVID`` message for this identity (DER chain, PKCS#8 DER key)."""
        return workload_pb2.X509SVIDResponse(
            svids=[
                workload_pb2.X509SVID(
                    spiffe_id=str(self.svid.spiffe_id),
                    x509_svid=_der_concat(self.svid.chain),
                    x509_svid_key=self.svid.private_key.private_bytes(
                        serialization.Encoding.DER,
                        serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption(),
                    ),
                    bundle=_der_concat(self.bundle),
                )
            ],
            federated_bundles={td.id_string: _der_concat(c) for td, c in self.federated.items()},
        )

    def x509_bundles_response(self) -> workload_pb2.X509BundlesResponse:
        """The ``FetchX509Bundles`` message: own and federated bundles, keyed by trust-domain ID."""
        bundles = {td.id_string: _der_concat(c) for td, c in self.federated.items()}
        bundles[self.svid.spiffe_id.trust_domain.id_string] = _der_concat(self.bundle)
        return workload_pb2.X509BundlesResponse(bundles=bundles)


def _der_concat(certs: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.DER) for c in certs)


def _freeze(
    federated: Mapping[TrustDomain, Sequence[x509.Certificate]],
) -> Mapping[TrustDomain, Certificates]:
    return MappingProxyType({td: tuple(certs) for td, certs in federated.items()})


class _Servicer(workload_pb2_grpc.SpiffeWorkloadAPIServicer):
    """The gRPC method handlers; all state lives in the owning :class:`WorkloadApiServer`."""

    def __init__(self, owner: WorkloadApiServer) -> None:
        self._owner = owner

    def FetchX509SVID(  # noqa: N802 (the name is fixed by the generated servicer)
        self, request: workload_pb2.X509SVIDRequest, context: grpc.ServicerContext
    ) -> Iterator[workload_pb2.X509SVIDResponse]:
        _require_security_header(context)
        for identity in self._owner._updates(context):
            yield identity.x509_svid_response()

    def FetchX509Bundles(  # noqa: N802
        self, request: workload_pb2.X509BundlesRequest, context: grpc.ServicerContext
    ) -> Iterator[workload_pb2.X509BundlesResponse]:
        _require_security_header(context)
        for identity in self._owner._updates(context):
            yield identity.x509_bundles_response()

    def FetchJWTSVID(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        _require_security_header(context)
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "JWT-SVIDs are not served")

    def FetchJWTBundles(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        _require_security_header(context)
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "JWT bundles are not served")

    def ValidateJWTSVID(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        _require_security_header(context)
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "JWT-SVIDs are not served")


def _require_security_header(context: grpc.ServicerContext) -> None:
    metadata = context.invocation_metadata() or ()
    values = [m.value for m in metadata if m.key == SECURITY_HEADER_KEY]
    if values != [SECURITY_HEADER_VALUE]:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, MISSING_HEADER_MESSAGE)


class WorkloadApiServer:
    """A SPIFFE Workload API on a unix socket, serving one identity that can be rotated.

    Args:
        socket_path: filesystem path of the unix socket to create (at most 107 bytes).
        authority: the CA that issues the served SVIDs; its ``bundle`` is the served bundle
            unless ``bundle`` is given.
        spiffe_id: the ID every issued SVID carries; must belong to the authority's domain.
        federated: roots of foreign trust domains to hand out as federated bundles.
        bundle: the roots of the own trust domain, when they differ from ``authority.bundle``
            (for example both old and new roots during a CA rotation).
        svid_lifetime: validity of each issued SVID.
        max_streams: the most concurrent calls; each open stream holds one worker thread.

    Raises:
        ValueError: ``spiffe_id`` is not in the authority's trust domain, or the socket path is
            too long.

    Resource handling: :meth:`start` binds the socket (replacing a stale socket file, never any
    other kind of file); :meth:`stop` ends every open stream with status OK, stops the gRPC server
    and removes the socket file. The server is a context manager that does both.
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        authority: SvidAuthority,
        spiffe_id: SpiffeID,
        *,
        federated: Mapping[TrustDomain, Sequence[x509.Certificate]] | None = None,
        bundle: Sequence[x509.Certificate] | None = None,
        svid_lifetime: dt.timedelta = DEFAULT_SVID_LIFETIME,
        max_streams: int = DEFAULT_MAX_STREAMS,
    ) -> None:
        self.socket_path = Path(socket_path)
        if len(os.fsencode(self.socket_path)) > MAX_SOCKET_PATH_BYTES:
            raise ValueError(
                f"unix socket path is longer than {MAX_SOCKET_PATH_BYTES} bytes: {self.socket_path}"
            )
        if not spiffe_id.member_of(authority.trust_domain):
            raise ValueError(
                f"{spiffe_id} is not in the authority's trust domain {authority.trust_domain}"
            )
        self._authority = authority
        self._spiffe_id = spiffe_id
        self._svid_lifetime = svid_lifetime
        self._max_streams = max_streams
        self._cond = threading.Condition()
        # Serialises rotate() calls: issuing a certificate is slow, so it happens outside _cond.
        self._rotate_lock = threading.Lock()
        self._closing = False
        self._open_streams = 0
        self._server: grpc.Server | None = None
        self._identity = ServedIdentity(
            svid=authority.issue(spiffe_id, lifetime=svid_lifetime),
            bundle=tuple(bundle) if bundle is not None else authority.bundle,
            federated=_freeze(federated or {}),
            version=1,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def target(self) -> str:
        """The gRPC target / ``SPIFFE_ENDPOINT_SOCKET`` value, ``unix:///abs/path``."""
        return "unix://" + str(self.socket_path.absolute())

    def start(self) -> None:
        """Bind the socket and start serving.

        Raises:
            RuntimeError: already started, or gRPC could not bind the socket.
            FileExistsError: something other than a socket exists at the path.
        """
        if self._server is not None:
            raise RuntimeError("the Workload API server is already started")
        _remove_stale_socket(self.socket_path)
        server = grpc.server(
            futures.ThreadPoolExecutor(
                max_workers=self._max_streams, thread_name_prefix="workload-api"
            ),
            maximum_concurrent_rpcs=self._max_streams,
        )
        # The generated registration function carries no annotations.
        workload_pb2_grpc.add_SpiffeWorkloadAPIServicer_to_server(  # type: ignore[no-untyped-call]
            _Servicer(self), server
        )
        try:
            bound = server.add_insecure_port("unix:" + str(self.socket_path.absolute()))
        except RuntimeError as exc:
            raise RuntimeError(
                f"cannot bind Workload API socket {self.socket_path}: {exc}"
            ) from exc
        if bound == 0:
            raise RuntimeError(f"cannot bind Workload API socket {self.socket_path}")
        with self._cond:
            self._closing = False
        server.start()
        self._server = server

    def stop(self, grace: float = DEFAULT_STOP_GRACE_SECONDS) -> None:
        """End every stream (status OK), stop the server and remove the socket. Idempotent."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        server, self._server = self._server, None
        if server is not None:
            server.stop(grace).wait(grace + 1.0)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(self.socket_path.lstat().st_mode):
                self.socket_path.unlink()

    def __enter__(self) -> WorkloadApiServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the served identity -----------------------------------------------------------------

    @property
    def identity(self) -> ServedIdentity:
        """The identity currently served."""
        with self._cond:
            return self._identity

    @property
    def open_streams(self) -> int:
        """How many X.509 streams are open right now."""
        with self._cond:
            return self._open_streams

    def rotate(
        self,
        *,
        svid: IssuedSVID | None = None,
        authority: SvidAuthority | None = None,
        bundle: Sequence[x509.Certificate] | None = None,
        federated: Mapping[TrustDomain, Sequence[x509.Certificate]] | None = None,
    ) -> ServedIdentity:
        """Serve a new identity and push it to every open stream.

        Args:
            svid: the SVID to serve; by default a fresh one (new key and serial) is issued by
                the authority (the new one when ``authority`` is given).
            authority: switch to another issuing CA (CA rotation); its bundle becomes the served
                bundle unless ``bundle`` is given.
            bundle: new roots of the own trust domain.
            federated: new federated bundles (replacing the old ones).

        Returns:
            The identity now served, with a higher ``version``.

        Raises:
            ValueError: ``svid`` is for another SPIFFE ID than the one this server serves.
        """
        with self._rotate_lock:
            return self._rotate(svid, authority, bundle, federated)

    def _rotate(
        self,
        svid: IssuedSVID | None,
        authority: SvidAuthority | None,
        bundle: Sequence[x509.Certificate] | None,
        federated: Mapping[TrustDomain, Sequence[x509.Certificate]] | None,
    ) -> ServedIdentity:
        if svid is not None and svid.spiffe_id != self._spiffe_id:
            raise ValueError(f"this server serves {self._spiffe_id}, not {svid.spiffe_id}")
        if authority is not None:
            self._authority = authority
        if svid is None:
            svid = self._authority.issue(self._spiffe_id, lifetime=self._svid_lifetime)
        with self._cond:
            old = self._identity
            if bundle is not None:
                new_bundle = tuple(bundle)
            elif authority is not None:
                new_bundle = authority.bundle
            else:
                new_bundle = old.bundle
            self._identity = ServedIdentity(
                svid=svid,
                bundle=new_bundle,
                federated=_freeze(federated) if federated is not None else old.federated,
                version=old.version + 1,
            )
            self._cond.notify_all()
            return self._identity

    # -- used by the servicer ------------------------------------------------------------------

    def _updates(self, context: grpc.ServicerContext) -> Iterator[ServedIdentity]:
        """The identity now, then each newer one, until the client leaves or the server stops."""

        def wake() -> None:
            with self._cond:
                self._cond.notify_all()

        context.add_callback(wake)
        with self._cond:
            self._open_streams += 1
        try:
            sent_version = 0
            while True:
                with self._cond:
                    while (
                        not self._closing
                        and self._identity.version == sent_version
                        and context.is_active()
                    ):
                        self._cond.wait(STREAM_RECHECK_SECONDS)
                    if self._closing or not context.is_active():
                        return
                    identity = self._identity
                sent_version = identity.version
                yield identity
        finally:
            with self._cond:
                self._open_streams -= 1
                self._cond.notify_all()


def _remove_stale_socket(path: Path) -> None:
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(f"{path} exists and is not a unix socket; refusing to replace it")
    path.unlink()
