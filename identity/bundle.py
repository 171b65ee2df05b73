"""SPIFFE trust bundles: the SPIFFE bundle format (a JWKS) and plain PEM bundles.

Theory of operation: a bundle holds the trust anchors of ONE trust domain. The caller always says
which trust domain the document belongs to (the document itself does not name it), and
:class:`BundleSet` keys bundles by trust domain so that a chain is only ever checked against the
bundle of its own SPIFFE ID's trust domain (see :func:`identity.x509svid.verify_chain`).

The SPIFFE bundle format (SPIFFE Trust Domain and Bundle spec, section 4) is a JWKS whose keys
carry ``use``:

- ``x509-svid``: an X.509 authority. ``x5c`` must hold exactly one certificate. The spec says a
  reader should use the first and ignore the rest, go-spiffe rejects the document; we reject it
  too (``spiffebundle_multiple_x509.json``), because a bundle whose meaning depends on which
  reader parsed it is a trust-anchor confusion waiting to happen. The JWK key members must
  describe the same key as the certificate.
- ``jwt-svid``: a JWT authority; ``kid`` is required and unique.
- no ``use`` at all: treated as ``jwt-svid``, so that a plain JWKS of JWT keys (go-spiffe's
  ``jwtbundle`` documents) parses.
- any other ``use``: ignored (forward compatibility, e.g. WIT keys); it is not kept, so it does
  not survive :func:`serialize_spiffe_bundle`.

Parsing is strict and bounded: UTF-8 only, no duplicate JSON members, no NaN, sizes and counts
limited, and every failure is an :class:`InvalidBundle` naming the source and the key index.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from identity.jwk import InvalidJWK, jwk_from_public_key, public_key_from_jwk
from identity.pem import (
    PemError,
    PublicKey,
    is_supported_public_key,
    public_key_bytes,
    read_certificates,
)
from identity.spiffe_id import TrustDomain

MAX_BUNDLE_BYTES = 1024 * 1024
MAX_BUNDLE_KEYS = 1024
MAX_KID_LENGTH = 256

X509_SVID_USE = "x509-svid"
JWT_SVID_USE = "jwt-svid"

_STD_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


class InvalidBundle(ValueError):
    """The document is not a valid trust bundle; the message names the source and position."""


class UnknownTrustDomain(KeyError):
    """No bundle is known for the trust domain."""

    def __init__(self, trust_domain: TrustDomain) -> None:
        super().__init__(trust_domain)
        self.trust_domain = trust_domain

    def __str__(self) -> str:
        return f"no trust bundle for trust domain {self.trust_domain.name!r}"


@dataclass(frozen=True, slots=True)
class TrustBundle:
    """The trust anchors of one trust domain.

    ``jwt_authorities`` maps key ids to public keys. ``sequence`` and ``refresh_hint`` (seconds)
    are the ``spiffe_sequence`` and ``spiffe_refresh_hint`` members, ``None`` when absent.
    """

    trust_domain: TrustDomain
    x509_authorities: tuple[x509.Certificate, ...]
    jwt_authorities: Mapping[str, PublicKey] = field(default_factory=lambda: MappingProxyType({}))
    sequence: int | None = None
    refresh_hint: int | None = None

    def __post_init__(self) -> None:
        # Freeze the mapping so that a bundle really is immutable once built.
        if not isinstance(self.jwt_authorities, MappingProxyType):
            object.__setattr__(
                self, "jwt_authorities", MappingProxyType(dict(self.jwt_authorities))
            )


def _where(source: str, trust_domain: TrustDomain) -> str:
    return f"{source or '<bundle>'} (trust domain {trust_domain.name})"


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise InvalidBundle(f"duplicate JSON member {name!r}")
        result[name] = value
    return result


def _reject_constant(name: str) -> Any:
    raise InvalidBundle(f"JSON constant {name} is not allowed")


def _optional_uint(document: Mapping[str, Any], name: str) -> int | None:
    value = document.get(name)
    if value is None and name not in document:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise InvalidBundle(f"{name!r} must be an integer in 0..2^63-1")
    return value


def parse_spiffe_bundle(data: bytes, trust_domain: TrustDomain, *, source: str = "") -> TrustBundle:
    """Parse a SPIFFE bundle document (JWKS) for ``trust_domain``.

    Args:
        data: the JSON document, UTF-8, at most :data:`MAX_BUNDLE_BYTES`.
        trust_domain: the trust domain the document belongs to (it does not say itself).
        source: a name for error messages (file path or URL).

    Returns:
        The parsed :class:`TrustBundle`.

    Raises:
        InvalidBundle: with the source, the key index and the member at fault.
    """
    where = _where(source, trust_domain)
    try:
        return _parse_document(data, trust_domain)
    except InvalidBundle as exc:
        raise InvalidBundle(f"{where}: {exc}") from None


def _load_json(data: bytes) -> Any:
    if not isinstance(data, bytes | bytearray):
        raise InvalidBundle("bundle data must be bytes")
    if len(data) > MAX_BUNDLE_BYTES:
        raise InvalidBundle(f"document is {len(data)} bytes, limit {MAX_BUNDLE_BYTES}")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidBundle(f"not UTF-8 at byte offset {exc.start}") from None
    try:
        return json.loads(
            text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant
        )
    except json.JSONDecodeError as exc:
        raise InvalidBundle(
            f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise InvalidBundle("JSON nesting is too deep") from None
    except ValueError as exc:  # e.g. an integer with too many digits
        raise InvalidBundle(f"not valid JSON: {exc}") from None


def _parse_document(data: bytes, trust_domain: TrustDomain) -> TrustBundle:
    document = _load_json(data)
    if not isinstance(document, dict):
        raise InvalidBundle("the document must be a JSON object")
    keys = document.get("keys")
    if not isinstance(keys, list):
        raise InvalidBundle("'keys' is missing or not an array")
    if len(keys) > MAX_BUNDLE_KEYS:
        raise InvalidBundle(f"{len(keys)} keys, limit {MAX_BUNDLE_KEYS}")
    sequence = _optional_uint(document, "spiffe_sequence")
    refresh_hint = _optional_uint(document, "spiffe_refresh_hint")
    authorities: list[x509.Certificate] = []
    jwt_keys: dict[str, PublicKey] = {}
    for index, entry in enumerate(keys):
        try:
            _parse_entry(entry, authorities, jwt_keys)
        except (InvalidBundle, InvalidJWK) as exc:
            raise InvalidBundle(f"keys[{index}]: {exc}") from None
    return TrustBundle(trust_domain, tuple(authorities), jwt_keys, sequence, refresh_hint)


def _parse_entry(
    entry: object, authorities: list[x509.Certificate], jwt_keys: dict[str, PublicKey]
) -> None:
    if not isinstance(entry, dict):
        raise InvalidBundle("a key entry must be a JSON object")
    use = entry.get("use", JWT_SVID_USE)
    if not isinstance(use, str):
        raise InvalidBundle("'use' must be a string")
    if use == X509_SVID_USE:
        authorities.append(_parse_x509_entry(entry))
    elif use == JWT_SVID_USE:
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidBundle("a jwt-svid key requires a non-empty 'kid'")
        if len(kid) > MAX_KID_LENGTH:
            raise InvalidBundle(f"'kid' is longer than {MAX_KID_LENGTH} characters")
        if kid in jwt_keys:
            raise InvalidBundle(f"duplicate jwt-svid 'kid' {kid!r}")
        jwt_keys[kid] = public_key_from_jwk(entry)
    # Any other use is a key type this version does not know: ignored, see the module docstring.


def _parse_x509_entry(entry: Mapping[str, Any]) -> x509.Certificate:
    x5c = entry.get("x5c")
    if not isinstance(x5c, list) or not x5c:
        raise InvalidBundle("an x509-svid key requires a non-empty 'x5c' array")
    if len(x5c) != 1:
        raise InvalidBundle(
            f"an x509-svid key must hold exactly one certificate in 'x5c', found {len(x5c)}"
        )
    encoded = x5c[0]
    if not isinstance(encoded, str) or _STD_B64.fullmatch(encoded) is None:
        raise InvalidBundle("'x5c'[0] is not standard base64")
    try:
        der = base64.b64decode(encoded, validate=True)
        cert = x509.load_der_x509_certificate(der)
    except (binascii.Error, ValueError) as exc:
        raise InvalidBundle(f"'x5c'[0] is not a DER certificate ({exc})") from None
    declared = public_key_from_jwk(entry)
    try:
        cert_key = cert.public_key()
    except ValueError as exc:
        raise InvalidBundle(f"'x5c'[0] has an unreadable public key ({exc})") from None
    if not is_supported_public_key(cert_key) or public_key_bytes(declared) != public_key_bytes(
        cert_key
    ):
        raise InvalidBundle("the JWK key members do not match the 'x5c' certificate's key")
    return cert


def serialize_spiffe_bundle(bundle: TrustBundle) -> bytes:
    """Encode ``bundle`` in the SPIFFE bundle format (UTF-8 JSON).

    X.509 authorities come first, in order, then JWT authorities in ``kid`` order;
    ``parse_spiffe_bundle(serialize_spiffe_bundle(b), b.trust_domain) == b``.

    Raises:
        InvalidBundle: an authority whose key type has no JWK form here.
    """
    keys: list[dict[str, Any]] = []
    try:
        for cert in bundle.x509_authorities:
            cert_key = cert.public_key()
            if not is_supported_public_key(cert_key):
                raise InvalidBundle(f"unsupported X.509 authority key {type(cert_key).__name__}")
            der = cert.public_bytes(serialization.Encoding.DER)
            keys.append(
                {
                    "use": X509_SVID_USE,
                    **jwk_from_public_key(cert_key),
                    "x5c": [base64.b64encode(der).decode("ascii")],
                }
            )
        for kid in sorted(bundle.jwt_authorities):
            keys.append(
                {
                    "use": JWT_SVID_USE,
                    "kid": kid,
                    **jwk_from_public_key(bundle.jwt_authorities[kid]),
                }
            )
    except InvalidJWK as exc:
        raise InvalidBundle(f"{_where('', bundle.trust_domain)}: {exc}") from None
    document: dict[str, Any] = {"keys": keys}
    if bundle.sequence is not None:
        document["spiffe_sequence"] = bundle.sequence
    if bundle.refresh_hint is not None:
        document["spiffe_refresh_hint"] = bundle.refresh_hint
    return json.dumps(document, indent=2).encode("utf-8") + b"\n"


def parse_pem_bundle(data: bytes, trust_domain: TrustDomain, *, source: str = "") -> TrustBundle:
    """Parse a plain PEM bundle: one or more ``CERTIFICATE`` blocks, the X.509 authorities.

    Raises:
        InvalidBundle: no certificate, a malformed block, or an unsupported key type.
    """
    try:
        certs = read_certificates(data, source=source or "<bundle>")
    except PemError as exc:
        raise InvalidBundle(f"{exc} (trust domain {trust_domain.name})") from None
    for index, cert in enumerate(certs):
        try:
            key = cert.public_key()
        except ValueError:
            key = None
        if not is_supported_public_key(key):
            raise InvalidBundle(
                f"{_where(source, trust_domain)}: certificate {index} has an unsupported key type"
            )
    return TrustBundle(trust_domain, certs)


def load_bundle_file(path: str | Path, trust_domain: TrustDomain) -> TrustBundle:
    """Read a bundle file: a SPIFFE bundle (JSON, first non-blank byte ``{``) or PEM.

    Raises:
        InvalidBundle: the file is unreadable, too large, or its content is invalid.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_BUNDLE_BYTES + 1)
    except OSError as exc:
        raise InvalidBundle(f"{path}: cannot read bundle file ({exc.strerror or exc})") from None
    if len(data) > MAX_BUNDLE_BYTES:
        raise InvalidBundle(f"{path}: bundle file is larger than {MAX_BUNDLE_BYTES} bytes")
    if data.lstrip()[:1] == b"{":
        return parse_spiffe_bundle(data, trust_domain, source=str(path))
    return parse_pem_bundle(data, trust_domain, source=str(path))


class BundleSet(Mapping[TrustDomain, TrustBundle]):
    """An immutable mapping from trust domain to its bundle."""

    __slots__ = ("_bundles",)

    def __init__(self, bundles: Iterable[TrustBundle] = ()) -> None:
        """Args: bundles: at most one per trust domain.

        Raises:
            ValueError: two bundles for the same trust domain.
        """
        table: dict[TrustDomain, TrustBundle] = {}
        for bundle in bundles:
            if bundle.trust_domain in table:
                raise ValueError(f"two bundles for trust domain {bundle.trust_domain.name!r}")
            table[bundle.trust_domain] = bundle
        self._bundles: Mapping[TrustDomain, TrustBundle] = MappingProxyType(table)

    def __getitem__(self, trust_domain: TrustDomain) -> TrustBundle:
        return self.for_trust_domain(trust_domain)

    def __iter__(self) -> Iterator[TrustDomain]:
        return iter(self._bundles)

    def __len__(self) -> int:
        return len(self._bundles)

    def __repr__(self) -> str:
        return f"BundleSet({sorted(td.name for td in self._bundles)!r})"

    def for_trust_domain(self, trust_domain: TrustDomain) -> TrustBundle:
        """The bundle of ``trust_domain``.

        Raises:
            UnknownTrustDomain: no bundle is known for it.
        """
        try:
            return self._bundles[trust_domain]
        except KeyError:
            raise UnknownTrustDomain(trust_domain) from None

    def with_bundle(self, bundle: TrustBundle) -> BundleSet:
        """A new set where ``bundle`` replaces (or adds) its trust domain's bundle."""
        table = dict(self._bundles)
        table[bundle.trust_domain] = bundle
        return BundleSet(table.values())

    def all_x509_authorities(self) -> tuple[x509.Certificate, ...]:
        """Every X.509 authority of every trust domain (for a TLS listener's CA store)."""
        return tuple(c for b in self._bundles.values() for c in b.x509_authorities)
