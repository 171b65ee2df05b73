"""`sluice envelope seal | inspect` through click's CliRunner, with real key and payload files."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from gateway.cli import main
from gateway.envelope import open_envelope
from identity.anchors import AnchorKeyPair
from tests.gateway.envelope_fixtures import LINEAGE, ORIGIN_ID, ORIGIN_KEY, T0, standard_resolver


def test_seal_then_inspect(tmp_path: Path) -> None:
    key = tmp_path / "anchor.pem"
    key.write_bytes(AnchorKeyPair(ORIGIN_KEY).private_pem())
    out = tmp_path / "env.cbor"
    runner = CliRunner()
    args = [
        "envelope", "seal", "--key", str(key), "--issuer", ORIGIN_ID,
        "--scope", "payments/checkout", "--to-scope", "payments/ledger", "--tier", "2",
        "--lineage", LINEAGE.hex(), "--transit-domain", "cilium.prod.example",
        "--now", str(T0), "-o", str(out),
    ]  # fmt: skip
    result = runner.invoke(main, args, input=b"hello")
    assert result.exit_code == 0, result.output
    env = open_envelope(out.read_bytes(), resolver=standard_resolver(), now=T0)
    assert env.payload == b"hello"
    result = runner.invoke(main, ["envelope", "inspect", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["verified"] is False and "UNVERIFIED" in doc["warning"]
    assert doc["claims"]["issuer"] == ORIGIN_ID
    assert doc["claims"]["routing"]["transit_domains"] == ["cilium.prod.example"]


def test_errors_are_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    bad = tmp_path / "bad.cbor"
    bad.write_bytes(b"\x84\x01garbage")
    result = runner.invoke(main, ["envelope", "inspect", str(bad)])
    assert result.exit_code == 3
    assert "Traceback" not in result.output
    assert "not a well-formed envelope" in result.output
    key = tmp_path / "anchor.pem"
    key.write_bytes(AnchorKeyPair(ORIGIN_KEY).private_pem())
    args = [
        "envelope", "seal", "--key", str(key), "--issuer", "spiffe://Bad/x",
        "--scope", "a", "--to-scope", "b", "--tier", "1", "--lineage", LINEAGE.hex(),
        "-o", str(tmp_path / "o"),
    ]  # fmt: skip
    result = runner.invoke(main, args, input=b"x")
    assert result.exit_code == 3
    assert result.output.count("\n") == 1 and result.output.startswith("error:")
    missing = runner.invoke(main, ["envelope", "inspect", str(tmp_path / "nope")])
    assert missing.exit_code == 3 and "cannot read" in missing.output
