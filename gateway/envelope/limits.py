"""Every size, count and time limit of the envelope codec, in one place (documented in
``docs/envelope.md``). Changing one changes the wire contract: bump the version if it narrows."""

from __future__ import annotations

# Versions: one fixed format, no negotiation.
ENVELOPE_VERSION = 1
CLAIMS_VERSION = 1
STAMP_VERSION = 1

# Sizes in bytes.
MAX_PAYLOAD_BYTES = 1024 * 1024  # 1 MiB, the application payload as carried (ciphertext if sealed)
MAX_HEADER_BYTES = 8 * 1024  # the origin COSE_Sign1 (protected header + claims + signature)
MAX_STAMP_BYTES = 2 * 1024  # one transit stamp COSE_Sign1
MAX_STAMPS = 16  # stamps per envelope, whatever the envelope's own hop limit says
MAX_ENVELOPE_BYTES = MAX_PAYLOAD_BYTES + MAX_HEADER_BYTES + MAX_STAMPS * MAX_STAMP_BYTES + 64
MAX_SIGN1_BYTES = 64 * 1024  # default bound for a standalone COSE_Sign1 (policy documents, ...)
MAX_PROTECTED_BYTES = 512
MAX_KID_BYTES = 64

# Claim sizes.
MAX_SCOPE_BYTES = 255
MAX_NETWORK_NAME_BYTES = 64  # stamp from/to network names
MAX_RULE_BYTES = 128  # stamp rule id
MAX_ROUTING_ENTRIES = 16  # per routing list (trust domains, gateways)
MAX_TIER = 255
MAX_TIMESTAMP = 2**40  # unix seconds; far beyond any real date, small enough to stay exact
HASH_BYTES = 32  # BLAKE2b-256 digests: lineage, payload, policy revision, stamp chaining
ENVELOPE_ID_BYTES = 16
SIGNATURE_BYTES = 64
PUBLIC_KEY_BYTES = 32

# Time, in seconds.
CLOCK_SKEW = 60  # tolerated difference between the issuer's, gateways' and verifier's clocks
MAX_LIFETIME = 3600  # expires_at - issued_at

# Replay window.
REPLAY_CAPACITY = 1_000_000  # live envelope ids remembered; beyond this, refuse (never evict)
