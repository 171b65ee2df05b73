"""The governed envelope: COSE_Sign1 codec, seal/open, transit stamps (pure, sans-I/O).

Recipes (safe to use): :func:`seal` (or a reusable :class:`Sealer`), :func:`open_envelope`,
:func:`stamp`, :func:`unseal_payload`.
Hazmat (structure only, nothing verified): :mod:`gateway.envelope.cose`,
:mod:`gateway.envelope.claims`, :func:`decode_unverified`, :func:`encode`.
"""

from gateway.envelope.recipe import (
    Sealer,
    check_times,
    digest,
    open_envelope,
    seal,
    seal_claims,
    stamp,
    unseal_payload,
)
from gateway.envelope.wire import UnverifiedEnvelope, UnverifiedStamp, decode_unverified, encode

__all__ = [
    "Sealer",
    "UnverifiedEnvelope",
    "UnverifiedStamp",
    "check_times",
    "decode_unverified",
    "digest",
    "encode",
    "open_envelope",
    "seal",
    "seal_claims",
    "stamp",
    "unseal_payload",
]
