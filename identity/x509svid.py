"""X.509-SVIDs: loading (PEM chain + PKCS#8 key) and chain validation against a trust bundle.

Theory of operation. Loading enforces the X509-SVID spec's certificate rules (sections 4 and 5):
the leaf carries exactly one URI SAN, a SPIFFE ID with a non-empty path, parsed with our strict
parser; the leaf is not a CA, has keyUsage digitalSignature and neither keyCertSign nor cRLSign;
every following certificate (a signing certificate) is a CA with keyCertSign; and the private key
is the leaf's. Loading does not check signatures or time: a workload's own SVID is trusted by
construction, and :func:`verify_chain` is what establishes trust in someone else's.

Validation (:func:`verify_chain`) parses the leaf's SPIFFE ID first, then uses the bundle of THAT
ID's trust domain and no other: a CA of domain A must never vouch for an ID in domain B, even
when both bundles are known (the cross-domain confusion attack). The path is built and checked by
``cryptography.x509.verification`` (signatures, validity at ``now``, CA flags, key usage, path
length, name constraints, unknown critical extensions) with the Web PKI profile adjusted for
SPIFFE: the leaf needs no DNS name and no particular extended key usage (the spec makes EKUs a
SHOULD), because our own checks above already require the URI SAN and key usage. That verifier
forbids Ed25519 outright, so chains with an Ed25519 key or signature go through the stricter,
narrower path walk of :mod:`identity.chainwalk` instead.
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import SignatureAlgorithmOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from identity.bundle import BundleSet, UnknownTrustDomain
from identity.chainwalk import PathWalkError, walk_chain
from identity.pem import (
    MAX_PEM_BYTES,
    PemError,
    PrivateKey,
    certificates_pem,
    is_supported_public_key,
    private_key_pem,
    public_key_bytes,
    read_certificates,
    read_private_key,
)
from identity.spiffe_id import InvalidSpiffeID, SpiffeID, parse_spiffe_id

MAX_CHAIN_DEPTH = 8

_Ext = TypeVar("_Ext", bound=x509.ExtensionType)


class InvalidSVID(ValueError):
    """The certificates and key do not form a valid X.509-SVID; the message says which rule."""


class ChainVerificationError(ValueError):
    """The chain does not validate against the bundle of the leaf's own trust domain."""


@dataclass(frozen=True, slots=True)
class X509SVID:
    """An X.509-SVID: the leaf first, then intermediates (never needed: the root), and its key."""

    spiffe_id: SpiffeID
    chain: tuple[x509.Certificate, ...]
    private_key: PrivateKey

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]

    def chain_pem(self) -> bytes:
        """The chain as PEM, leaf first."""
        return certificates_pem(self.chain)

    def key_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM."""
        return private_key_pem(self.private_key)


def _extension(cert: x509.Certificate, kind: type[_Ext]) -> _Ext | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
    except ValueError as exc:  # malformed or duplicate extensions
        raise InvalidSVID(f"certificate extensions are malformed ({exc})") from None


def spiffe_id_from_certificate(cert: x509.Certificate) -> SpiffeID:
    """The SPIFFE ID of a leaf: its one URI SAN, parsed strictly, with a non-empty path.

    Raises:
        InvalidSVID: no SAN, no URI SAN, more than one, an invalid ID, or an ID without a path.
    """
    san = _extension(cert, x509.SubjectAlternativeName)
    uris = san.get_values_for_type(x509.UniformResourceIdentifier) if san is not None else []
    if not uris:
        raise InvalidSVID("leaf certificate has no URI SAN (no SPIFFE ID)")
    if len(uris) > 1:
        raise InvalidSVID(f"leaf certificate has {len(uris)} URI SANs; exactly one is allowed")
    try:
        spiffe_id = parse_spiffe_id(uris[0])
    except InvalidSpiffeID as exc:
        raise InvalidSVID(f"leaf URI SAN {uris[0]!r} is not a SPIFFE ID: {exc}") from None
    if not spiffe_id.path:
        raise InvalidSVID(f"leaf SPIFFE ID {uris[0]!r} has no path (a trust domain ID)")
    return spiffe_id


def check_svid_certificates(chain: Sequence[x509.Certificate]) -> SpiffeID:
    """Apply the X509-SVID spec's leaf and signing-certificate rules to ``chain``.

    Args:
        chain: the leaf first, then signing certificates.

    Returns:
        The leaf's SPIFFE ID.

    Raises:
        InvalidSVID: naming the certificate (by index) and the rule it breaks.
    """
    if not chain:
        raise InvalidSVID("the certificate chain is empty")
    leaf = chain[0]
    spiffe_id = spiffe_id_from_certificate(leaf)
    constraints = _extension(leaf, x509.BasicConstraints)
    if constraints is not None and constraints.ca:
        raise InvalidSVID("leaf certificate is a CA (basicConstraints CA:TRUE)")
    usage = _extension(leaf, x509.KeyUsage)
    if usage is None or not usage.digital_signature:
        raise InvalidSVID("leaf certificate lacks keyUsage digitalSignature")
    if usage.key_cert_sign:
        raise InvalidSVID("leaf certificate has keyUsage keyCertSign")
    if usage.crl_sign:
        raise InvalidSVID("leaf certificate has keyUsage cRLSign")
    for index, cert in enumerate(chain[1:], start=1):
        constraints = _extension(cert, x509.BasicConstraints)
        if constraints is None or not constraints.ca:
            raise InvalidSVID(f"signing certificate {index} is not a CA (no CA:TRUE)")
        usage = _extension(cert, x509.KeyUsage)
        if usage is None or not usage.key_cert_sign:
            raise InvalidSVID(f"signing certificate {index} lacks keyUsage keyCertSign")
    return spiffe_id


def load_x509svid(
    chain_pem: bytes, key_pem: bytes, *, source: str = "", key_source: str = ""
) -> X509SVID:
    """Load an X.509-SVID from a PEM chain and a PKCS#8 PEM key (both may be the same bytes).

    Args:
        chain_pem: ``CERTIFICATE`` blocks, leaf first; other blocks are skipped.
        key_pem: exactly one ``PRIVATE KEY`` block; certificate blocks are skipped.
        source: a name for the chain in error messages (usually its path).
        key_source: a name for the key in error messages; defaults to ``source``.

    Returns:
        The :class:`X509SVID`.

    Raises:
        InvalidSVID: bad PEM (message from :class:`identity.pem.PemError`), a broken SVID rule,
            or a key that is not the leaf's.
    """
    try:
        chain = read_certificates(chain_pem, source=source)
        key = read_private_key(key_pem, source=key_source or source)
    except PemError as exc:
        raise InvalidSVID(str(exc)) from exc
    where = f"{source}: " if source else ""
    try:
        spiffe_id = check_svid_certificates(chain)
    except InvalidSVID as exc:
        raise InvalidSVID(f"{where}{exc}") from None
    leaf_key = chain[0].public_key()
    if not is_supported_public_key(leaf_key):
        raise InvalidSVID(f"{where}leaf key type {type(leaf_key).__name__} is not supported")
    if not hmac.compare_digest(public_key_bytes(key.public_key()), public_key_bytes(leaf_key)):
        raise InvalidSVID(f"{where}the private key does not match the leaf certificate")
    return X509SVID(spiffe_id, chain, key)


def load_x509svid_files(chain_path: str | Path, key_path: str | Path) -> X509SVID:
    """Load an X.509-SVID from files (they may be the same file).

    Raises:
        InvalidSVID: a file is unreadable or too large, or see :func:`load_x509svid`.
    """
    return load_x509svid(
        _read_bounded(Path(chain_path)),
        _read_bounded(Path(key_path)),
        source=str(chain_path),
        key_source=str(key_path),
    )


def _read_bounded(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise InvalidSVID(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(data) > MAX_PEM_BYTES:
        raise InvalidSVID(f"{path}: larger than {MAX_PEM_BYTES} bytes")
    return data


def _spiffe_ee_policy() -> ExtensionPolicy:
    # Web PKI leaf rules minus the two that do not fit SPIFFE: the SAN carries a URI, not the DNS
    # name the Web PKI validator wants, and EKUs are optional (X509-SVID spec section 4.4).
    # keyUsage is checked by check_svid_certificates, which runs first.
    return (
        ExtensionPolicy.webpki_defaults_ee()
        .may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
        .may_be_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, None)
        .may_be_present(x509.KeyUsage, Criticality.AGNOSTIC, None)
    )


def _needs_path_walk(chain: Sequence[x509.Certificate]) -> bool:
    # cryptography's verifier forbids Ed25519 (see identity.chainwalk); everything else goes to it.
    return any(
        cert.signature_algorithm_oid == SignatureAlgorithmOID.ED25519
        or isinstance(cert.public_key(), ed25519.Ed25519PublicKey)
        for cert in chain
    )


def verify_chain(
    chain: Sequence[x509.Certificate], bundles: BundleSet, *, now: dt.datetime
) -> SpiffeID:
    """Validate an X.509-SVID chain against the bundle of the leaf's own trust domain.

    Args:
        chain: the leaf first, then any intermediates (a root at the end is tolerated).
        bundles: the known bundles; only the leaf ID's trust domain's bundle is consulted.
        now: the validation time (timezone-aware).

    Returns:
        The leaf's SPIFFE ID.

    Raises:
        InvalidSVID: the certificates break an X509-SVID rule.
        ChainVerificationError: no bundle for the ID's trust domain, an empty bundle, or the
            path does not validate (signature, time, CA, key usage, depth...).
        ValueError: ``now`` is naive.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    spiffe_id = check_svid_certificates(chain)
    try:
        bundle = bundles.for_trust_domain(spiffe_id.trust_domain)
    except UnknownTrustDomain:
        raise ChainVerificationError(
            f"no trust bundle for trust domain {spiffe_id.trust_domain.name!r} of {spiffe_id}"
        ) from None
    if not bundle.x509_authorities:
        raise ChainVerificationError(
            f"the bundle of trust domain {spiffe_id.trust_domain.name!r} has no X.509 authorities"
        )
    if _needs_path_walk(chain):
        try:
            walk_chain(chain, bundle.x509_authorities, now=now, max_depth=MAX_CHAIN_DEPTH)
        except PathWalkError as exc:
            raise ChainVerificationError(
                f"{spiffe_id}: chain does not validate against the bundle of trust domain "
                f"{spiffe_id.trust_domain.name!r}: {exc}"
            ) from None
        return spiffe_id
    verifier = (
        PolicyBuilder()
        .store(Store(list(bundle.x509_authorities)))
        .time(now)
        .max_chain_depth(MAX_CHAIN_DEPTH)
        .extension_policies(
            ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=_spiffe_ee_policy()
        )
        .build_client_verifier()
    )
    try:
        verifier.verify(chain[0], list(chain[1:]))
    except VerificationError as exc:
        raise ChainVerificationError(
            f"{spiffe_id}: chain does not validate against the bundle of trust domain "
            f"{spiffe_id.trust_domain.name!r}: {exc}"
        ) from None
    return spiffe_id
