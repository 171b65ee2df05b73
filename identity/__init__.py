"""SPIFFE identity: strict IDs, X.509-SVIDs, bundles, governance anchors and their registry."""

from identity.spiffe_id import (
    InvalidSpiffeID,
    SpiffeID,
    TrustDomain,
    parse_spiffe_id,
    parse_trust_domain,
)

__all__ = ["InvalidSpiffeID", "SpiffeID", "TrustDomain", "parse_spiffe_id", "parse_trust_domain"]
