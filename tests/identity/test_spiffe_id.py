from __future__ import annotations

import json
from pathlib import Path

import pytest

from identity import InvalidSpiffeID, parse_spiffe_id, parse_trust_domain


def test_agrees_with_every_shared_vector(shared_vectors: Path) -> None:
    cases = json.loads((shared_vectors / "spiffe-id.json").read_text())["cases"]
    assert len(cases) >= 700
    disagreements = []
    for case in cases:
        try:
            parse_spiffe_id(case["input"])
            verdict = True
        except InvalidSpiffeID:
            verdict = False
        if verdict != case["valid"]:
            disagreements.append((case["input"], case["valid"], case["note"]))
    assert disagreements == []


def test_round_trip_and_parts() -> None:
    sid = parse_spiffe_id("spiffe://weave.prod.example/ns/payments/sa/ledger")
    assert str(sid) == "spiffe://weave.prod.example/ns/payments/sa/ledger"
    assert sid.trust_domain.name == "weave.prod.example"
    assert sid.path == "/ns/payments/sa/ledger"
    assert sid.member_of(parse_trust_domain("weave.prod.example"))
    assert not sid.member_of(parse_trust_domain("cilium.prod.example"))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("spiffe://example.org\n", "trust domain characters"),
        ("spiffe://ex\u0430mple.org", "ASCII"),  # a Cyrillic look-alike of "a"
        ("SPIFFE://example.org", "scheme"),
        ("spiffe://Example.org", "trust domain characters"),
        ("spiffe://example.org/a/../b", "dot segments"),
        ("spiffe://example.org/a%2Fb", "path segment characters"),
        ("spiffe://example.org/", "trailing slash"),
        ("spiffe://" + "a" * 256, "255 bytes"),
        ("spiffe://example.org/" + "a" * 2100, "2048 bytes"),
    ],
)
def test_rejections_say_why(text: str, reason: str) -> None:
    with pytest.raises(InvalidSpiffeID, match=reason):
        parse_spiffe_id(text)


def test_trust_domain_forms() -> None:
    assert parse_trust_domain("spiffe://example.org").name == "example.org"
    with pytest.raises(InvalidSpiffeID):
        parse_trust_domain("spiffe://example.org/path")
    with pytest.raises(InvalidSpiffeID):
        parse_trust_domain("")
