"""Strict, bounded PEM reading for certificates and PKCS#8 private keys.

Theory of operation: we scan the text for RFC 7468 blocks ourselves instead of handing the whole
input to OpenSSL, so that every error can say *where* it happened (the source name, the line of
the ``-----BEGIN`` marker, the label) and so that sizes are bounded before anything is decoded.
Text outside blocks is ignored (RFC 7468 section 2 allows explanatory text), and blocks with a
label we are not looking for are skipped: that is what lets a single file carry both the
certificate chain and its key, in either order. Base64 inside a block is decoded strictly.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeGuard

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey

MAX_PEM_BYTES = 256 * 1024
MAX_PEM_BLOCKS = 64
MAX_CERTIFICATES = 32
MAX_BLOCK_DER_BYTES = 64 * 1024

CERTIFICATE_LABEL = "CERTIFICATE"
PKCS8_LABEL = "PRIVATE KEY"
_LEGACY_KEY_LABELS = {
    "RSA PRIVATE KEY": "PKCS#1",
    "EC PRIVATE KEY": "SEC 1",
    "ENCRYPTED PRIVATE KEY": "encrypted PKCS#8",
    "OPENSSH PRIVATE KEY": "OpenSSH",
}

_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9 ]{1,64})-----")
_B64_BODY = re.compile(rb"[A-Za-z0-9+/=\s]*")


class PemError(ValueError):
    """The data is not the PEM we expected; the message names the source, line and label."""


@dataclass(frozen=True, slots=True)
class PemBlock:
    """One decoded PEM block: its label, the DER bytes, and the line of its BEGIN marker."""

    label: str
    der: bytes
    line: int


def _where(source: str, line: int | None = None) -> str:
    name = source or "<PEM data>"
    return f"{name}: line {line}" if line is not None else name


def iter_pem_blocks(data: bytes, *, source: str = "") -> Iterator[PemBlock]:
    """Yield every PEM block of ``data`` in order.

    Args:
        data: the PEM text (bytes); at most :data:`MAX_PEM_BYTES`.
        source: a name for error messages (usually the file path).

    Yields:
        :class:`PemBlock` values, decoded but not interpreted.

    Raises:
        PemError: too large, too many blocks, an unterminated block, a mismatched END label or
            invalid base64 (the message gives the line of the block's BEGIN marker).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise PemError(f"{_where(source)}: PEM data must be bytes")
    data = bytes(data)
    if len(data) > MAX_PEM_BYTES:
        raise PemError(f"{_where(source)}: PEM data is {len(data)} bytes, limit {MAX_PEM_BYTES}")
    pos = 0
    count = 0
    while True:
        begin = _BEGIN.search(data, pos)
        if begin is None:
            return
        count += 1
        line = data.count(b"\n", 0, begin.start()) + 1
        if count > MAX_PEM_BLOCKS:
            raise PemError(f"{_where(source, line)}: more than {MAX_PEM_BLOCKS} PEM blocks")
        label = begin.group(1).decode("ascii")
        end_marker = b"-----END " + begin.group(1) + b"-----"
        end = data.find(end_marker, begin.end())
        if end < 0:
            raise PemError(
                f"{_where(source, line)}: '{label}' block has no matching '-----END {label}-----'"
            )
        body = data[begin.end() : end]
        if b"-----" in body:
            raise PemError(
                f"{_where(source, line)}: '{label}' block contains another PEM marker before "
                f"its END line"
            )
        yield PemBlock(label, _decode_body(body, label, source, line), line)
        pos = end + len(end_marker)


def _decode_body(body: bytes, label: str, source: str, line: int) -> bytes:
    if _B64_BODY.fullmatch(body) is None:
        raise PemError(f"{_where(source, line)}: '{label}' block has non-base64 characters")
    compact = b"".join(body.split())
    if len(compact) > (MAX_BLOCK_DER_BYTES * 4) // 3 + 4:
        raise PemError(f"{_where(source, line)}: '{label}' block is larger than allowed")
    try:
        der = binascii.a2b_base64(compact, strict_mode=True)
    except binascii.Error as exc:
        raise PemError(f"{_where(source, line)}: '{label}' block: invalid base64 ({exc})") from None
    if not der:
        raise PemError(f"{_where(source, line)}: '{label}' block is empty")
    return der


def read_certificates(data: bytes, *, source: str = "") -> tuple[x509.Certificate, ...]:
    """Read every ``CERTIFICATE`` block of ``data``, in order; other blocks are skipped.

    Args:
        data: PEM text, possibly also holding a private key block.
        source: a name for error messages (usually the file path).

    Returns:
        At least one certificate, at most :data:`MAX_CERTIFICATES`.

    Raises:
        PemError: no certificate block, too many, or a block that is not a DER certificate.
    """
    certs: list[x509.Certificate] = []
    for block in iter_pem_blocks(data, source=source):
        if block.label != CERTIFICATE_LABEL:
            continue
        if len(certs) == MAX_CERTIFICATES:
            raise PemError(
                f"{_where(source, block.line)}: more than {MAX_CERTIFICATES} certificates"
            )
        try:
            certs.append(x509.load_der_x509_certificate(block.der))
        except ValueError as exc:
            raise PemError(
                f"{_where(source, block.line)}: 'CERTIFICATE' block is not a valid X.509 "
                f"certificate ({exc})"
            ) from None
    if not certs:
        raise PemError(f"{_where(source)}: no '-----BEGIN CERTIFICATE-----' block found")
    return tuple(certs)


def read_private_key(data: bytes, *, source: str = "") -> PrivateKey:
    """Read the single unencrypted PKCS#8 ``PRIVATE KEY`` block of ``data``.

    Certificate blocks in the same data are skipped, so a combined chain-and-key file works.

    Args:
        data: PEM text.
        source: a name for error messages (usually the file path).

    Returns:
        An EC, RSA or Ed25519 private key.

    Raises:
        PemError: no key block, more than one, a legacy or encrypted key format, a block that is
            not PKCS#8 DER, or an unsupported key type.
    """
    found: PemBlock | None = None
    legacy: PemBlock | None = None
    for block in iter_pem_blocks(data, source=source):
        if block.label == PKCS8_LABEL:
            if found is not None:
                raise PemError(
                    f"{_where(source, block.line)}: a second 'PRIVATE KEY' block (the first is "
                    f"at line {found.line}); exactly one key is expected"
                )
            found = block
        elif block.label in _LEGACY_KEY_LABELS and legacy is None:
            legacy = block
    if found is None:
        if legacy is not None:
            kind = _LEGACY_KEY_LABELS[legacy.label]
            raise PemError(
                f"{_where(source, legacy.line)}: '{legacy.label}' is a {kind} key; an "
                f"unencrypted PKCS#8 'PRIVATE KEY' is required (convert with "
                f"'openssl pkcs8 -topk8 -nocrypt')"
            )
        raise PemError(f"{_where(source)}: no '-----BEGIN PRIVATE KEY-----' block found")
    try:
        key = serialization.load_der_private_key(found.der, password=None)
    except (ValueError, TypeError) as exc:
        raise PemError(
            f"{_where(source, found.line)}: 'PRIVATE KEY' block is not a valid PKCS#8 key ({exc})"
        ) from None
    except UnsupportedAlgorithm as exc:
        raise PemError(
            f"{_where(source, found.line)}: 'PRIVATE KEY' block has an unsupported key ({exc})"
        ) from None
    if not isinstance(key, PrivateKey):
        raise PemError(
            f"{_where(source, found.line)}: unsupported key type {type(key).__name__} "
            f"(expected EC, RSA or Ed25519)"
        )
    return key


def certificates_pem(certs: tuple[x509.Certificate, ...] | list[x509.Certificate]) -> bytes:
    """The PEM encoding of ``certs``, in order."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def private_key_pem(key: PrivateKey) -> bytes:
    """The unencrypted PKCS#8 PEM encoding of ``key``."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_key_bytes(key: PublicKey) -> bytes:
    """The DER SubjectPublicKeyInfo of ``key``: a canonical form for comparing keys."""
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def is_supported_public_key(key: object) -> TypeGuard[PublicKey]:
    """True for the public key types SVIDs and bundles may use here (EC, RSA, Ed25519)."""
    return isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey)
