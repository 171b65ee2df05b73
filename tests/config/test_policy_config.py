"""The policy file schema: the shipped examples load, and bad files are refused with the file,
key path, line and what was expected."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from config.errors import ConfigError
from config.fields import root_fields
from config.policy import (
    DEFAULT_TIERS,
    LineageMode,
    LineageWindow,
    TierNames,
    load_policy_file,
    parse_id_pattern,
    tiers_from_fields,
)
from config.source import parse_toml_bytes
from gateway.policy import decide, load_policy_store, revisions_from_file
from gateway.reasons import Reason
from identity import parse_trust_domain
from tests.conftest import REPO_ROOT
from tests.gateway.test_policy_helpers import envelope

EXAMPLES = sorted((REPO_ROOT / "config" / "examples" / "policies").glob("*.toml"))

GOOD = """\
scope = "payments/ledger"

[[revision]]
number = 1
issued_at = 2026-01-10T09:00:00Z

[[revision.rule]]
id = "allow-ledger-from-payments"
from_scopes = ["payments/*"]
min_tier = "internal"

[[revision]]
number = 2
issued_at = 2026-01-11T09:00:00+01:00
revokes = [1]
workloads = ["spiffe://cilium.prod.example/ns/payments/*"]

[[revision.lineage]]
origins = ["*"]
grace_revisions = 2
grace_seconds = 3600

[[revision.rule]]
id = "r2"
from_ids = ["spiffe://weave.prod.example/ns/payments/sa/api"]
from_domains = ["weave.prod.example"]
min_tier = 2
transit_gateways = ["spiffe://weave.prod.example/gateway/a"]
transit_domains = ["cilium.prod.example"]
max_hops = 3
lineage = "any"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_examples_exist_and_load_into_one_store() -> None:
    assert len(EXAMPLES) >= 3
    store = load_policy_store(EXAMPLES)
    assert {"payments/ledger", "payments/api", "web/frontend"} <= set(store.scopes)
    ledger = store.chain("payments/ledger")
    assert [r.number for r in ledger] == [1, 2, 3]
    assert ledger[2].revokes == (ledger[0].digest,) and store.is_revoked(ledger[0].digest)


def test_good_file_maps_every_field(tmp_path: Path) -> None:
    policy = load_policy_file(_write(tmp_path, GOOD))
    assert policy.scope == "payments/ledger"
    first, second = policy.revisions
    assert first.issued_at == 1768035600 and second.issued_at == 1768035600 + 86400 - 3600
    assert first.rules[0].min_tier == 1 and first.rules[0].from_scopes == ("payments/*",)
    assert second.revokes == (1,)
    assert second.workloads == (parse_id_pattern("spiffe://cilium.prod.example/ns/payments/*"),)
    assert second.lineage == (LineageWindow(("*",), 2, 3600),)
    rule = second.rules[0]
    assert rule.from_domains == (parse_trust_domain("weave.prod.example"),)
    assert rule.min_tier == 2 and rule.max_hops == 3 and rule.lineage is LineageMode.ANY
    assert rule.transit_domains == (parse_trust_domain("cilium.prod.example"),)
    revisions = revisions_from_file(policy)
    assert revisions[1].previous == revisions[0].digest
    assert revisions[1].revokes == (revisions[0].digest,)


def test_custom_tier_names(tmp_path: Path) -> None:
    tiers = TierNames((("open", 0), ("secret", 7)))
    text = GOOD.replace('min_tier = "internal"', 'min_tier = "secret"')
    assert load_policy_file(_write(tmp_path, text), tiers=tiers).revisions[0].rules[0].min_tier == 7
    with pytest.raises(ConfigError, match="unknown trust tier 'internal'"):
        load_policy_file(_write(tmp_path, GOOD), tiers=tiers)


def test_tiers_table() -> None:
    doc = parse_toml_bytes(b"public = 0\nstaff = 1\nsecret = 9\n", Path("tiers.toml"))
    tiers = tiers_from_fields(root_fields(doc))
    assert tiers.value_of("secret") == 9 and tiers.label(1) == "1 (staff)" and tiers.label(4) == "4"
    bad = parse_toml_bytes(b"public = 0\nalso_public = 0\n", Path("tiers.toml"))
    fields = root_fields(bad)
    tiers_from_fields(fields)
    assert [str(p) for p in fields.context.problems] == [
        "tiers.toml:2: also_public: tier 0 is already named 'public'"
    ]


def test_decision_with_the_shipped_example() -> None:
    store = load_policy_store(EXAMPLES)
    api = store.current("payments/api")
    assert api is not None
    decision = decide(
        envelope(lineage=api.digest, issuer="spiffe://cilium.prod.example/ns/payments/sa/api"),
        store,
        1772355600,
    )
    assert (decision.allow, decision.rule) == (True, "allow-ledger-from-payments")
    assert DEFAULT_TIERS.value_of("restricted") == 2
    assert (
        decide(
            envelope(lineage=api.digest, issuer="spiffe://weave.prod.example/ns/payments/sa/api"),
            store,
            1772355600,
        ).reason
        is Reason.ORIGIN_NOT_ALLOWED
    )


# Each bad file, and the exact first problem line: "<file>:<line>: <key path>: <message>".
BAD = [
    (
        "missing-scope",
        """\
        [[revision]]
        number = 1
        issued_at = 0
        """,
        ": scope: missing required key (expected a string)",  # no line: the key is absent
    ),
    (
        "bad-scope",
        """\
        scope = "payments//ledger"
        [[revision]]
        number = 1
        issued_at = 0
        """,
        ":1: scope: a scope is '/'-separated segments",
    ),
    (
        "numbers-not-consecutive",
        """\
        scope = "a/b"
        [[revision]]
        number = 1
        issued_at = 0
        [[revision]]
        number = 3
        issued_at = 0
        """,
        ":6: revision[1].number: expected 2 (revisions are listed in order, by one)",
    ),
    (
        "naive-datetime",
        """\
        scope = "a/b"
        [[revision]]
        number = 1
        issued_at = 2026-01-10T09:00:00
        """,
        ":4: revision[0].issued_at: a date-time needs a UTC offset",
    ),
    (
        "unknown-tier",
        """\
        scope = "a/b"
        [[revision]]
        number = 1
        issued_at = 0
        [[revision.rule]]
        id = "r"
        from_scopes = ["*"]
        min_tier = "top-secret"
        """,
        ":8: revision[0].rule[0].min_tier: unknown trust tier 'top-secret'",
    ),
    (
        "tier-out-of-range",
        """\
        scope = "a/b"
        [[revision]]
        number = 1
        issued_at = 0
        [[revision.rule]]
        id = "r"
        from_scopes = ["*"]
        min_tier = 256
        """,
        ":8: revision[0].rule[0].min_tier: expected an integer from 0 to 255, found 256",
    ),
    (
        "rule-without-origin",
        """\
        scope = "a/b"
        [[revision]]
        number = 1
        issued_at = 0
        [[revision.rule]]
        id = "r"
        min_tier = 1
        """,
        ":5: revision[0].rule[0]: a rule needs from_scopes, from_ids or from_domains",
    ),
    (
        "bad-spiffe-id",
        """\
        scope = "a/b"
        [[revision]]
        number = 1
        issued_at = 0
        [[revision.rule]]
        id = "r"
        from_ids = ["spiffe://ok.example/x", "spiffe://Weave.example/x"]
        """,
        ":7: revision[0].rule[0].from_ids[1]: not a SPIFFE ID",
    ),
    (
        "duplicate-rule-id",
        """\
        scope = "a/b"
        [[revision]]
        number = 1
        issued_at = 0
        [[revision.rule]]
        id = "same"
        from_scopes = ["*"]
        [[revision.rule]]
        id = "same"
        from_scopes = ["*"]
        """,
        ":9: revision[0].rule[1].id: duplicate rule id 'same' in this revision",
    ),
    (
        "unknown-key",
        """\
        scope = "a/b"
        [[revision]]
        number = 1
        issued_at = 0
        [[revision.rule]]
        id = "r"
        from_scopes = ["*"]
        max_hop = 2
        """,
        ":8: revision[0].rule[0].max_hop: unknown key",
    ),
    (
        "revokes-later",
        """\
        scope = "a/b"
        [[revision]]
        number = 1
        issued_at = 0
        revokes = [1]
        """,
        ":5: revision[0].revokes: revision 1 is not earlier than this one (1)",
    ),
    (
        "bad-lineage-mode",
        """\
        scope = "a/b"
        [[revision]]
        number = 1
        issued_at = 0
        [[revision.rule]]
        id = "r"
        from_scopes = ["*"]
        lineage = "whatever"
        """,
        ":8: revision[0].rule[0].lineage: expected one of 'managed', 'any', found 'whatever'",
    ),
    (
        "window-without-origins",
        """\
        scope = "a/b"
        [[revision]]
        number = 1
        issued_at = 0
        [[revision.lineage]]
        grace_revisions = 1
        """,
        ":5: revision[0].lineage[0].origins: missing required key",
    ),
    (
        "time-runs-backwards",
        """\
        scope = "a/b"
        [[revision]]
        number = 1
        issued_at = 2026-01-10T09:00:00Z
        [[revision]]
        number = 2
        issued_at = 2026-01-09T09:00:00Z
        """,
        ":7: revision[1].issued_at: must not be earlier than the previous revision's issued_at",
    ),
    (
        "pruned-history-without-previous",
        """\
        scope = "a/b"
        [[revision]]
        number = 4
        issued_at = 0
        """,
        ":2: revision[0].previous: missing: the first listed revision has number above 1",
    ),
    (
        "bad-rule-id",
        """\
        scope = "a/b"
        [[revision]]
        number = 1
        issued_at = 0
        [[revision.rule]]
        id = "Allow Everyone"
        from_scopes = ["*"]
        """,
        ":6: revision[0].rule[0].id: a rule id is lowercase letters",
    ),
    (
        "bad-scope-pattern",
        """\
        scope = "a/b"
        [[revision]]
        number = 1
        issued_at = 0
        [[revision.rule]]
        id = "r"
        from_scopes = ["payments*"]
        """,
        ":7: revision[0].rule[0].from_scopes[0]: a scope is '/'-separated segments",
    ),
    (
        "not-toml",
        """\
        scope = "a/b"
        [[revision]
        """,
        ":2: invalid TOML",
    ),
]


@pytest.mark.parametrize(("name", "text", "expected"), BAD, ids=[b[0] for b in BAD])
def test_bad_policy_files(tmp_path: Path, name: str, text: str, expected: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_policy_file(path)
    first = str(caught.value).splitlines()[0]
    assert first.startswith(f"{path}{expected}"), first


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """\
        scope = "a/b"
        [[revision]]
        number = 1
        issued_at = "yesterday"
        [[revision.rule]]
        id = "r"
        from_scopes = ["*"]
        max_hops = -1
        """,
    )
    with pytest.raises(ConfigError) as caught:
        load_policy_file(path)
    assert [(p.key_path, p.line) for p in caught.value.problems] == [
        ("revision[0].issued_at", 4),
        ("revision[0].rule[0].max_hops", 8),
    ]


def test_two_files_for_one_scope_are_refused(tmp_path: Path) -> None:
    first = tmp_path / "one.toml"
    second = tmp_path / "two.toml"
    first.write_text(GOOD)
    second.write_text(GOOD)
    with pytest.raises(ConfigError, match="is already defined in"):
        load_policy_store([first, second])
