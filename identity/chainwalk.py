"""A strict path walk for SVID chains that ``cryptography``'s Web PKI verifier refuses to handle.

Why this exists: ``cryptography.x509.verification`` (checked with cryptography 50) only permits the
Web PKI signature and key algorithms, so a chain with an Ed25519 key or signature fails with
"Forbidden public key algorithm" whatever the extension policy says; there is no knob for it. The
X509-SVID spec allows Ed25519, and sluice's endorsements accept Ed25519 SVID keys, so for those
chains (and only those) :func:`identity.x509svid.verify_chain` uses this walk instead.

The walk is deliberately narrower than RFC 5280 path building, and fails closed:
- the chain must be in order (each certificate issued by the next), as the Workload API and TLS
  deliver it; the walk stops at the first certificate issued by (or equal to) a bundle authority;
- every signature is checked with ``verify_directly_issued_by`` (issuer name and signature);
- every certificate on the path, anchor included, must be valid at ``now``;
- issuers (intermediates and the anchor) must be CAs with keyCertSign when those extensions are
  present on the anchor, and always for intermediates (see ``check_svid_certificates``);
- ``pathLenConstraint`` is honoured; the depth is bounded;
- any critical extension other than basicConstraints, keyUsage, extendedKeyUsage and
  subjectAltName is rejected, and so are name constraints (not evaluated here, so refused).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.x509.oid import ExtensionOID

_UNDERSTOOD_CRITICAL = {
    ExtensionOID.BASIC_CONSTRAINTS,
    ExtensionOID.KEY_USAGE,
    ExtensionOID.EXTENDED_KEY_USAGE,
    ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
}


class PathWalkError(ValueError):
    """The chain does not lead to a bundle authority under the rules above."""


def _check_time(cert: x509.Certificate, now: dt.datetime, what: str) -> None:
    if now < cert.not_valid_before_utc:
        raise PathWalkError(f"{what} is not yet valid (notBefore {cert.not_valid_before_utc})")
    if now > cert.not_valid_after_utc:
        raise PathWalkError(f"{what} has expired (notAfter {cert.not_valid_after_utc})")


def _check_extensions(cert: x509.Certificate, what: str) -> None:
    try:
        extensions = list(cert.extensions)
    except ValueError as exc:
        raise PathWalkError(f"{what} has malformed extensions ({exc})") from None
    for ext in extensions:
        if ext.oid == ExtensionOID.NAME_CONSTRAINTS:
            raise PathWalkError(f"{what} has name constraints, which this path walk refuses")
        if ext.critical and ext.oid not in _UNDERSTOOD_CRITICAL:
            raise PathWalkError(f"{what} has an unknown critical extension {ext.oid.dotted_string}")


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _check_issuer(issuer: x509.Certificate, below: int, what: str) -> None:
    """``below`` is the number of intermediate CA certificates between ``issuer`` and the leaf."""
    try:
        constraints = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise PathWalkError(f"{what} has no basicConstraints CA:TRUE") from None
    if not constraints.ca:
        raise PathWalkError(f"{what} is not a CA")
    if constraints.path_length is not None and below > constraints.path_length:
        raise PathWalkError(f"{what} allows path length {constraints.path_length}, found {below}")
    try:
        usage = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return  # RFC 5280 4.2.1.3: no keyUsage extension means no restriction.
    if not usage.key_cert_sign:
        raise PathWalkError(f"{what} lacks keyUsage keyCertSign")


def walk_chain(
    chain: Sequence[x509.Certificate],
    authorities: Sequence[x509.Certificate],
    *,
    now: dt.datetime,
    max_depth: int,
) -> None:
    """Check that ``chain`` (leaf first) leads, in order, to one of ``authorities`` at ``now``.

    Raises:
        PathWalkError: the first rule broken, naming the certificate by its chain index.
    """
    if not chain:
        raise PathWalkError("the certificate chain is empty")
    if len(chain) > max_depth:
        raise PathWalkError(f"chain has {len(chain)} certificates, limit {max_depth}")
    for index, cert in enumerate(chain):
        what = "leaf" if index == 0 else f"certificate {index}"
        if index > 0 and cert in authorities:
            return  # The chain includes its root; the certificates below it already checked out.
        _check_time(cert, now, what)
        _check_extensions(cert, what)
        for anchor in authorities:
            if cert.issuer == anchor.subject and _issued_by(cert, anchor):
                _check_time(anchor, now, "the bundle authority")
                _check_extensions(anchor, "the bundle authority")
                _check_issuer(anchor, index, "the bundle authority")
                return
        if index + 1 == len(chain):
            raise PathWalkError(f"{what} is not issued by any authority of the bundle")
        issuer = chain[index + 1]
        if not _issued_by(cert, issuer):
            raise PathWalkError(f"{what} is not signed by certificate {index + 1}")
        _check_issuer(issuer, index, f"certificate {index + 1}")
