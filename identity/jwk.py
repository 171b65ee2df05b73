"""JSON Web Key (RFC 7517/7518/8037) public keys <-> ``cryptography`` public keys.

Only what SPIFFE bundles carry: EC P-256/P-384/P-521, RSA (2048 to 8192 bits) and OKP Ed25519.
Base64url members are decoded strictly (RFC 7515 section 2: no padding, no other characters, and
the canonical encoding only), so one key has exactly one JWK spelling.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from identity.pem import PublicKey

MIN_RSA_BITS = 2048
MAX_RSA_BITS = 8192

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_CURVES: dict[str, tuple[type[ec.EllipticCurve], int]] = {
    "P-256": (ec.SECP256R1, 32),
    "P-384": (ec.SECP384R1, 48),
    "P-521": (ec.SECP521R1, 66),
}
_CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}


class InvalidJWK(ValueError):
    """A JWK member is missing, malformed or names an unsupported key; the message says which."""


def b64url_decode(text: object, member: str) -> bytes:
    """Strictly decode the base64url (no padding) value of JWK member ``member``."""
    if not isinstance(text, str) or not text:
        raise InvalidJWK(f"'{member}' must be a non-empty base64url string")
    if _B64URL.fullmatch(text) is None or len(text) % 4 == 1:
        raise InvalidJWK(f"'{member}' is not unpadded base64url")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64url_encode(raw) != text:
        raise InvalidJWK(f"'{member}' is not canonical base64url (non-zero trailing bits)")
    return raw


def b64url_encode(raw: bytes) -> str:
    """Unpadded base64url of ``raw``."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _member(jwk: Mapping[str, Any], name: str) -> str:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise InvalidJWK(f"'{name}' is missing or not a string")
    return value


def public_key_from_jwk(jwk: Mapping[str, Any]) -> PublicKey:
    """Build the public key a JWK describes.

    Args:
        jwk: the decoded JSON object of one key.

    Returns:
        An EC, RSA or Ed25519 public key.

    Raises:
        InvalidJWK: unsupported ``kty``/``crv``, a missing or malformed member, a point not on
            the curve or an RSA modulus outside the allowed sizes.
    """
    kty = _member(jwk, "kty")
    if kty == "EC":
        crv = _member(jwk, "crv")
        if crv not in _CURVES:
            raise InvalidJWK(f"unsupported EC curve {crv!r} (expected P-256, P-384 or P-521)")
        curve_type, size = _CURVES[crv]
        x, y = b64url_decode(jwk.get("x"), "x"), b64url_decode(jwk.get("y"), "y")
        if len(x) != size or len(y) != size:
            raise InvalidJWK(f"'x' and 'y' of a {crv} key must be {size} bytes each")
        numbers = ec.EllipticCurvePublicNumbers(
            int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve_type()
        )
        try:
            return numbers.public_key()
        except ValueError:
            raise InvalidJWK(f"the point ('x', 'y') is not on curve {crv}") from None
    if kty == "RSA":
        n_raw, e_raw = b64url_decode(jwk.get("n"), "n"), b64url_decode(jwk.get("e"), "e")
        if n_raw[0] == 0 or e_raw[0] == 0:
            raise InvalidJWK("'n' and 'e' must be minimal big-endian integers (no leading zero)")
        n, e = int.from_bytes(n_raw, "big"), int.from_bytes(e_raw, "big")
        if not MIN_RSA_BITS <= n.bit_length() <= MAX_RSA_BITS:
            raise InvalidJWK(
                f"RSA modulus is {n.bit_length()} bits (allowed {MIN_RSA_BITS}..{MAX_RSA_BITS})"
            )
        try:
            return rsa.RSAPublicNumbers(e, n).public_key()
        except ValueError as exc:
            raise InvalidJWK(f"invalid RSA public key ({exc})") from None
    if kty == "OKP":
        crv = _member(jwk, "crv")
        if crv != "Ed25519":
            raise InvalidJWK(f"unsupported OKP curve {crv!r} (expected Ed25519)")
        x = b64url_decode(jwk.get("x"), "x")
        if len(x) != 32:
            raise InvalidJWK("'x' of an Ed25519 key must be 32 bytes")
        return ed25519.Ed25519PublicKey.from_public_bytes(x)
    raise InvalidJWK(f"unsupported key type 'kty' {kty!r} (expected EC, RSA or OKP)")


def jwk_from_public_key(key: PublicKey) -> dict[str, str]:
    """The JWK members (``kty`` and key parameters) of ``key``.

    Raises:
        InvalidJWK: an EC key on a curve JWK (as used here) does not name.
    """
    if isinstance(key, ec.EllipticCurvePublicKey):
        crv = _CURVE_NAMES.get(key.curve.name)
        if crv is None:
            raise InvalidJWK(f"EC curve {key.curve.name} has no supported JWK name")
        size = _CURVES[crv][1]
        numbers = key.public_numbers()
        return {
            "kty": "EC",
            "crv": crv,
            "x": b64url_encode(numbers.x.to_bytes(size, "big")),
            "y": b64url_encode(numbers.y.to_bytes(size, "big")),
        }
    if isinstance(key, rsa.RSAPublicKey):
        rsa_numbers = key.public_numbers()
        return {
            "kty": "RSA",
            "n": b64url_encode(_int_bytes(rsa_numbers.n)),
            "e": b64url_encode(_int_bytes(rsa_numbers.e)),
        }
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(key.public_bytes_raw())}


def _int_bytes(value: int) -> bytes:
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")
