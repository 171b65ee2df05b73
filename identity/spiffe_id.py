"""A strict SPIFFE ID parser.

Theory of operation: a SPIFFE ID is ``spiffe://<trust-domain>[/<segment>...]`` (SPIFFE-ID spec,
section 2). We accept exactly the canonical form and never normalise: the scheme and trust domain
must already be lowercase, there is no percent-encoding, no port, user info, query or fragment, no
empty, ``.`` or ``..`` segment and no trailing slash. ASCII is checked before anything else so that
non-ASCII look-alikes can never alias an ASCII trust domain (py-spiffe lower-cases first and
accepts a trailing newline; see ../shared/vectors/README.md). Lengths are bounded in bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_ID_BYTES = 2048
MAX_TRUST_DOMAIN_BYTES = 255
SCHEME_PREFIX = "spiffe://"

_TRUST_DOMAIN = re.compile(r"[a-z0-9._\-]+")
_SEGMENT = re.compile(r"[A-Za-z0-9._\-]+")


class InvalidSpiffeID(ValueError):
    """The text is not a strict SPIFFE ID; the message says why."""


@dataclass(frozen=True, slots=True, order=True)
class TrustDomain:
    """A SPIFFE trust domain name such as ``weave.prod.example``."""

    name: str

    def __str__(self) -> str:
        return self.name

    @property
    def id_string(self) -> str:
        """The trust domain's own SPIFFE ID, ``spiffe://<name>``."""
        return SCHEME_PREFIX + self.name


@dataclass(frozen=True, slots=True, order=True)
class SpiffeID:
    """A parsed SPIFFE ID. Build one with :func:`parse_spiffe_id`, never directly from input."""

    trust_domain: TrustDomain
    path: str  # "" or "/seg/seg"

    def __str__(self) -> str:
        return SCHEME_PREFIX + self.trust_domain.name + self.path

    def member_of(self, trust_domain: TrustDomain) -> bool:
        """True when this ID belongs to ``trust_domain``."""
        return self.trust_domain == trust_domain


def parse_trust_domain(text: str) -> TrustDomain:
    """Parse a bare trust domain name (``example.org``) or its ID form (``spiffe://example.org``).

    Raises:
        InvalidSpiffeID: the name is empty, too long, not ASCII or has a forbidden character.
    """
    if not isinstance(text, str):
        raise InvalidSpiffeID("trust domain must be a string")
    if not text.isascii():
        raise InvalidSpiffeID("trust domain must be ASCII")
    if text.startswith(SCHEME_PREFIX):
        parsed = parse_spiffe_id(text)
        if parsed.path:
            raise InvalidSpiffeID("a trust domain ID must not have a path")
        return parsed.trust_domain
    _check_trust_domain_name(text)
    return TrustDomain(text)


def parse_spiffe_id(text: str) -> SpiffeID:
    """Parse ``text`` as a strict SPIFFE ID.

    Args:
        text: the candidate ID, exactly as received (no stripping is done).

    Returns:
        The parsed :class:`SpiffeID`.

    Raises:
        InvalidSpiffeID: with a message naming the first rule the text breaks.
    """
    if not isinstance(text, str):
        raise InvalidSpiffeID("SPIFFE ID must be a string")
    if not text:
        raise InvalidSpiffeID("SPIFFE ID is empty")
    if not text.isascii():
        raise InvalidSpiffeID("SPIFFE ID must be ASCII")
    if len(text) > MAX_ID_BYTES:
        raise InvalidSpiffeID(f"SPIFFE ID is longer than {MAX_ID_BYTES} bytes")
    if not text.startswith(SCHEME_PREFIX):
        raise InvalidSpiffeID("scheme is missing or invalid (expected lowercase 'spiffe://')")
    rest = text[len(SCHEME_PREFIX) :]
    slash = rest.find("/")
    if slash < 0:
        domain, path = rest, ""
    else:
        domain, path = rest[:slash], rest[slash:]
    if not domain:
        raise InvalidSpiffeID("trust domain is missing")
    _check_trust_domain_name(domain)
    if path:
        _check_path(path)
    return SpiffeID(TrustDomain(domain), path)


def _check_trust_domain_name(domain: str) -> None:
    if not domain:
        raise InvalidSpiffeID("trust domain is missing")
    if len(domain) > MAX_TRUST_DOMAIN_BYTES:
        raise InvalidSpiffeID(f"trust domain is longer than {MAX_TRUST_DOMAIN_BYTES} bytes")
    if _TRUST_DOMAIN.fullmatch(domain) is None:
        raise InvalidSpiffeID(
            "trust domain characters are limited to lowercase letters, numbers, dots, dashes, "
            "and underscores"
        )


def _check_path(path: str) -> None:
    # path starts with "/"; split keeps empty segments so "//" and a trailing "/" are caught.
    for segment in path[1:].split("/"):
        if not segment:
            raise InvalidSpiffeID("path cannot contain empty segments or a trailing slash")
        if segment in (".", ".."):
            raise InvalidSpiffeID("path cannot contain dot segments")
        if _SEGMENT.fullmatch(segment) is None:
            raise InvalidSpiffeID(
                "path segment characters are limited to letters, numbers, dots, dashes, "
                "and underscores"
            )
