"""Scope policies, lineage and decisions (pure).

The public surface: the model (:class:`PolicyRevision` and the rule value types from
``config.policy``), the immutable :class:`PolicyStore`, :func:`decide` and :func:`explain`,
signed revision documents (:func:`export_revision`, :func:`import_revision`) and loading from
policy files (:func:`load_policy_store`). See docs/policy.md.
"""

from config.policy import (
    DEFAULT_TIERS,
    IdPattern,
    LineageMode,
    LineageWindow,
    Rule,
    TierNames,
    parse_id_pattern,
)
from gateway.policy.decide import DEFAULT_DENY, DESTINATION_RULE, Decision, decide
from gateway.policy.explain import explain, rule_reports
from gateway.policy.files import load_policy_store, revisions_from_file
from gateway.policy.model import ZERO_HASH, InvalidPolicy, PolicyRevision, policy_hash
from gateway.policy.signed import export_revision, import_revision
from gateway.policy.store import LineageError, PolicyStore, verify_chain

__all__ = [
    "DEFAULT_DENY",
    "DEFAULT_TIERS",
    "DESTINATION_RULE",
    "ZERO_HASH",
    "Decision",
    "IdPattern",
    "InvalidPolicy",
    "LineageError",
    "LineageMode",
    "LineageWindow",
    "PolicyRevision",
    "PolicyStore",
    "Rule",
    "TierNames",
    "decide",
    "explain",
    "export_revision",
    "import_revision",
    "load_policy_store",
    "parse_id_pattern",
    "policy_hash",
    "revisions_from_file",
    "rule_reports",
    "verify_chain",
]
