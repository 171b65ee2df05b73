"""stdlib ``ssl`` contexts for gateway-to-gateway mutual TLS with X.509-SVIDs, and the peer check.

Theory of operation. Two layers check every peer, and the second one is the one that counts:

1. OpenSSL, during the handshake (``verify_mode=CERT_REQUIRED``, TLS 1.3 only), validates the
   peer's chain against the context's CA store. A client context trusts ONLY the expected peer
   trust domain's bundle, so there OpenSSL already validates against that domain alone. A server
   (listener) context accepts several federated peer domains, so its store holds all their roots:
   OpenSSL alone would accept a leaf claiming ``spiffe://b/...`` signed by domain A's CA.
2. :func:`check_peer`, right after the handshake, takes the peer's chain, parses the leaf's SPIFFE
   ID strictly, checks it is the expected peer (ID or trust domain), and re-validates the chain
   with :func:`identity.x509svid.verify_chain`, which uses the bundle of the leaf ID's own trust
   domain only. That closes the cross-domain confusion above on the server side, and is a
   second, independent check on the client side.

Hostname checking is off: SPIFFE identities are URI SANs, checked by :func:`check_peer`.
Servers issue no session tickets (``num_tickets = 0``), so every connection is a full handshake
that presents a certificate chain to check; nothing is resumed on the strength of an old check.

Our own chain and key are loaded from memory: Python's ``load_cert_chain`` only takes paths, so
they are written to an anonymous ``memfd`` (never on a file system) and loaded through
``/proc/self/fd``; where memfd is unavailable, to 0600 files in a fresh 0700 directory that is
removed right after loading.

Getting the peer's full chain: ``get_unverified_chain()`` is public from Python 3.13; on 3.11 and
3.12 the same method exists on the private ``_sslobj``; ``trio.SSLStream`` does not forward it, so
its ``_ssl_object`` is unwrapped. When only the leaf is reachable, the check still runs on the leaf
alone, which fails closed for a peer whose chain needs intermediates.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import ssl
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

from cryptography import x509

from identity.bundle import BundleSet, TrustBundle
from identity.pem import certificates_pem
from identity.spiffe_id import SpiffeID, TrustDomain
from identity.x509svid import X509SVID, ChainVerificationError, InvalidSVID, verify_chain

MAX_PEER_CHAIN = 8
# The private _ssl.Certificate.public_bytes format code for DER (Python 3.11/3.12 fallback).
_ENCODING_DER = 2


class PeerIdentityError(ValueError):
    """The TLS peer is not the expected SPIFFE identity, or its chain does not validate."""


class PeerCertificateSource(Protocol):
    """What :func:`check_peer` needs: ``ssl.SSLObject``, ``ssl.SSLSocket``, ``trio.SSLStream``."""

    def getpeercert(self, binary_form: bool = ...) -> object: ...


def _base_context(
    purpose: int, svid: X509SVID, authorities: Sequence[x509.Certificate]
) -> ssl.SSLContext:
    if not authorities:
        raise ValueError("no X.509 authorities to validate peers with")
    context = ssl.SSLContext(purpose)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False  # SPIFFE IDs are URI SANs: check_peer checks them.
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=certificates_pem(list(authorities)).decode("ascii"))
    with _material_paths(svid.chain_pem(), svid.key_pem()) as (chain_path, key_path):
        context.load_cert_chain(chain_path, key_path)
    return context


def server_context(
    svid: X509SVID, peer_bundles: BundleSet | Iterable[TrustBundle]
) -> ssl.SSLContext:
    """A TLS 1.3 server context that requires a client certificate from any peer trust domain.

    Args:
        svid: our X.509-SVID (chain and key).
        peer_bundles: the bundles of every trust domain whose gateways may connect.

    Returns:
        The context. After each handshake, call :func:`check_peer` with the configured peer: the
        context's store holds several domains' roots, so it alone does not prove the identity.

    Raises:
        ValueError: no authorities; ssl.SSLError: OpenSSL refused our chain or key.
    """
    bundles = peer_bundles.values() if isinstance(peer_bundles, BundleSet) else peer_bundles
    authorities = [cert for bundle in bundles for cert in bundle.x509_authorities]
    context = _base_context(ssl.PROTOCOL_TLS_SERVER, svid, authorities)
    context.num_tickets = 0
    return context


def client_context(svid: X509SVID, peer_bundle: TrustBundle) -> ssl.SSLContext:
    """A TLS 1.3 client context that trusts only ``peer_bundle`` (the peer's trust domain).

    Args:
        svid: our X.509-SVID, presented as the client certificate.
        peer_bundle: the bundle of the trust domain of the gateway we connect to.

    Returns:
        The context (hostname checking off; call :func:`check_peer` after the handshake).

    Raises:
        ValueError: the bundle has no X.509 authorities; ssl.SSLError: OpenSSL refused our
            chain or key.
    """
    return _base_context(ssl.PROTOCOL_TLS_CLIENT, svid, peer_bundle.x509_authorities)


@contextlib.contextmanager
def _material_paths(chain_pem: bytes, key_pem: bytes) -> Iterator[tuple[str, str]]:
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is not None and Path("/proc/self/fd").is_dir():
        fds: list[int] = []
        try:
            for data in (chain_pem, key_pem):
                fd = memfd_create("sluice-svid", os.MFD_CLOEXEC)
                fds.append(fd)
                os.write(fd, data)
            yield f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}"
        finally:
            for fd in fds:
                os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="sluice-svid-") as directory:  # mkdtemp: mode 0700
        paths = []
        for name, data in (("chain.pem", chain_pem), ("key.pem", key_pem)):
            path = os.path.join(directory, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            paths.append(path)
        yield paths[0], paths[1]


def peer_chain_der(peer: PeerCertificateSource) -> tuple[bytes, ...]:
    """The peer's certificate chain as presented (leaf first, DER), as far as it is reachable.

    Raises:
        PeerIdentityError: the peer sent no certificate (or the handshake has not happened).
    """
    obj: object = getattr(peer, "_ssl_object", peer)  # trio.SSLStream wraps an SSLObject
    getter = getattr(obj, "get_unverified_chain", None)  # Python 3.13+
    if getter is None:
        getter = getattr(getattr(obj, "_sslobj", None), "get_unverified_chain", None)
    if getter is not None:
        chain = getter()
        if chain:
            return tuple(
                c if isinstance(c, bytes) else c.public_bytes(_ENCODING_DER)
                for c in chain[: MAX_PEER_CHAIN + 1]
            )
    leaf = peer.getpeercert(binary_form=True)
    if not isinstance(leaf, bytes) or not leaf:
        raise PeerIdentityError("the peer presented no certificate")
    return (leaf,)


def check_peer(
    peer: PeerCertificateSource | Sequence[bytes],
    expected: SpiffeID | TrustDomain,
    bundles: BundleSet,
    *,
    now: dt.datetime,
) -> SpiffeID:
    """Check, after the handshake, that the peer is ``expected`` and its chain validates.

    Args:
        peer: the connection (``ssl.SSLObject``, ``ssl.SSLSocket``, ``trio.SSLStream``) or its
            DER chain, leaf first.
        expected: the peer's exact SPIFFE ID, or the trust domain it must belong to.
        bundles: known bundles; only the bundle of the leaf ID's own trust domain is used.
        now: the validation time (timezone-aware).

    Returns:
        The peer's SPIFFE ID.

    Raises:
        PeerIdentityError: no certificate, unparsable certificates, not an SVID, the wrong
            identity, or a chain that does not validate against its own trust domain's bundle.
    """
    ders = tuple(peer) if isinstance(peer, Sequence) else peer_chain_der(peer)
    if not ders:
        raise PeerIdentityError("the peer presented no certificate")
    if len(ders) > MAX_PEER_CHAIN:
        raise PeerIdentityError(f"the peer chain has more than {MAX_PEER_CHAIN} certificates")
    try:
        chain = [x509.load_der_x509_certificate(der) for der in ders]
    except ValueError as exc:
        raise PeerIdentityError(f"the peer chain has an unreadable certificate ({exc})") from None
    try:
        peer_id = verify_chain(chain, bundles, now=now)
    except (InvalidSVID, ChainVerificationError) as exc:
        raise PeerIdentityError(f"peer rejected: {exc}") from None
    if isinstance(expected, SpiffeID):
        if peer_id != expected:
            raise PeerIdentityError(f"peer is {peer_id}, expected {expected}")
    elif not peer_id.member_of(expected):
        raise PeerIdentityError(f"peer {peer_id} is not in trust domain {expected.name!r}")
    return peer_id
