"""Offline audit replay and evidence bundles, on logs written by two real federated gateways.

The demo deployment (gateway.demo) runs for real: two SPIFFE Workload API servers over unix
sockets, two gateways started as ``sluice run`` starts them, mutual TLS between them, every kind
of decision. The gateways keep the raw envelopes in their audit records (``[audit]
keep_envelopes = true``). The evidence of each gateway is exported from its configuration while
it is running (gw-weave's own trust bundle from its Workload API, gw-cilium's from a file). Then
every tampering the auditor must catch is applied to a copy and must be found and named.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import nacl.signing
import pytest
import trio
from click.testing import CliRunner

from gateway.audit.capture import CaptureError, write_capture
from gateway.audit.evidence import EvidenceError, load_evidence, parse_evidence
from gateway.audit.evidence_export import export_evidence
from gateway.audit.record import Decision, parse_line, seal
from gateway.audit.replay import FindingKind, ReplayReport, replay
from gateway.audit.verify import verify
from gateway.cli import main as cli_main
from gateway.demo.run import play
from gateway.demo.topology import CILIUM, WEAVE, Topology, build_topology, gateway_id, socket_path
from gateway.policy.files import load_policy_store
from gateway.policy.signed import export_revision
from identity.anchors import load_private_key
from identity.endorsement import decode_unverified as decode_endorsement
from identity.endorsement import endorse
from identity.workload_api_server import WorkloadApiServer
from identity.x509svid import X509SVID

STARTED_AGO = dt.timedelta(minutes=10)


@dataclass(frozen=True)
class Run:
    topo: Topology
    weave_log: Path
    cilium_log: Path
    weave_evidence: Path
    cilium_evidence: Path

    @property
    def logs(self) -> list[Path]:
        return [self.weave_log, self.cilium_log]

    @property
    def evidence(self) -> list[Path]:
        return [self.weave_evidence, self.cilium_evidence]


async def _play_bounded(topo: Topology) -> None:
    with trio.fail_after(60):
        rows = await play(topo)
    assert all(r.ok for r in rows), [r for r in rows if not r.ok]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("demo")
    # CAs and workload SVIDs a little in the past, so an endorsement that expired before the
    # run can be made with an authentic chain (test_expired_endorsement_presented_as_valid).
    topo = build_topology(root, now=dt.datetime.now(dt.UTC) - STARTED_AGO)
    for config in (topo.weave_config, topo.cilium_config):
        # Replay needs the envelopes in the log (the demo topology keeps them already).
        assert "keep_envelopes = true" in config.read_text()
    authorities = (("gw-weave", topo.weave_ca, WEAVE), ("gw-cilium", topo.cilium_ca, CILIUM))
    servers = [
        WorkloadApiServer(
            str(socket_path(root, name)), ca, gateway_id(td, name),
            svid_lifetime=dt.timedelta(hours=24),
        )
        for name, ca, td in authorities
    ]  # fmt: skip
    for server in servers:
        server.start()
    try:
        trio.run(_play_bounded, topo)
        # Exported from the running configuration: gw-weave's own bundle from its Workload API.
        weave_evidence = root / "evidence-gw-weave.json"
        export_evidence(topo.weave_config, weave_evidence, identity_timeout=10)
    finally:
        for server in servers:
            server.stop()
    cilium_evidence = root / "evidence-gw-cilium.json"
    export_evidence(
        topo.cilium_config,
        cilium_evidence,
        extra_bundles={CILIUM: root / "bundles" / f"{CILIUM.name}.pem"},
        identity_timeout=1,
    )
    return Run(
        topo,
        root / "state" / "gw-weave" / "audit.log",
        root / "state" / "gw-cilium" / "audit.log",
        weave_evidence,
        cilium_evidence,
    )


def _replay(logs: list[Path], evidence: list[Path]) -> ReplayReport:
    return replay(logs, [load_evidence(p) for p in evidence])


def _kinds(report: ReplayReport) -> set[FindingKind]:
    return {f.kind for f in report.findings}


# -- log surgery --------------------------------------------------------------------------------


def _entries(path: Path) -> list:  # type: ignore[type-arg]
    return [parse_line(line)[0] for line in path.read_bytes().splitlines()]


def _rewrite(path: Path, out: Path, index: int, **changes: object) -> None:
    """Change record ``index`` and re-chain every line from there on, as a forger would: the
    result passes ``sluice audit verify``."""
    entries = _entries(path)
    entries[index] = dataclasses.replace(
        entries[index], record=dataclasses.replace(entries[index].record, **changes)
    )
    prev = entries[index - 1].hash if index else entries[0].prev
    lines = [e.line() for e in entries[:index]]
    for entry in entries[index:]:
        sealed = seal(entry.seq, entry.ts_ms, entry.record, prev)
        lines.append(sealed.line())
        prev = sealed.hash
    out.write_bytes(b"".join(lines))
    assert verify(out).ok


def _index(path: Path, **match: object) -> int:
    for i, entry in enumerate(_entries(path)):
        if all(getattr(entry.record, k) == v for k, v in match.items()):
            return i
    raise AssertionError(f"no record with {match}")


# -- tests --------------------------------------------------------------------------------------


def test_real_run_replays_clean(run: Run) -> None:
    report = _replay(run.logs, run.evidence)
    assert report.ok, report.render_text()
    weave, cilium = report.logs
    assert weave.records >= 7 and cilium.records >= 2
    # Every decision record was replayed (only delivery outcomes are not decisions).
    for summary, path in zip(report.logs, run.logs, strict=True):
        decisions = sum(1 for e in _entries(path) if e.record.rule != "delivery")
        assert summary.replayed == decisions
        assert summary.chain_ok
    # The decisions really were of every kind, not just allows.
    reasons = {e.record.reason for e in _entries(run.weave_log)}
    assert {"allowed", "replayed", "tier_too_low", "payload_mismatch"} <= reasons


def test_cli_replay_clean_and_json(run: Run) -> None:
    args = ["audit", "replay", *map(str, run.logs)]
    for e in run.evidence:
        args += ["--evidence", str(e)]
    result = CliRunner().invoke(cli_main, args)
    assert result.exit_code == 0, result.output
    assert "clean" in result.output
    result = CliRunner().invoke(cli_main, [*args, "--json"])
    assert result.exit_code == 0
    doc = json.loads(result.output)
    assert doc["ok"] is True and doc["findings"] == []


def test_changed_decision_with_rechained_log(run: Run, tmp_path: Path) -> None:
    forged = tmp_path / "audit.log"
    i = _index(run.weave_log, decision=Decision.ALLOW, reason="allowed")
    _rewrite(run.weave_log, forged, i, decision=Decision.DENY, reason="tier_too_low", to="")
    report = _replay([forged], [run.weave_evidence])
    [finding] = report.findings
    assert finding.kind is FindingKind.DECISION_MISMATCH
    assert finding.seq == i + 1
    assert finding.recorded.startswith("deny tier_too_low")
    assert finding.replayed.startswith("allow allowed")
    # The CLI says so and exits 1.
    result = CliRunner().invoke(
        cli_main, ["audit", "replay", str(forged), "--evidence", str(run.weave_evidence)]
    )
    assert result.exit_code == 1
    assert "decision_mismatch" in result.output and f"seq {i + 1}" in result.output


def test_deleted_record_is_a_broken_link(run: Run, tmp_path: Path) -> None:
    lines = run.weave_log.read_bytes().splitlines(keepends=True)
    forged = tmp_path / "audit.log"
    forged.write_bytes(b"".join(lines[:2] + lines[3:]))
    report = _replay([forged], [run.weave_evidence])
    broken = [f for f in report.findings if f.kind is FindingKind.BROKEN_LINK]
    assert len(broken) == 1
    assert broken[0].line == 3 and "sequence_gap" in broken[0].detail
    assert not report.logs[0].chain_ok


def test_resigned_record_found_by_re_deciding(run: Run, tmp_path: Path) -> None:
    forged = tmp_path / "audit.log"
    i = _index(run.weave_log, reason="tier_too_low")
    _rewrite(run.weave_log, forged, i, rule="some-other-rule")
    report = _replay([forged], [run.weave_evidence])
    [finding] = report.findings
    assert finding.kind is FindingKind.DECISION_MISMATCH and finding.seq == i + 1
    assert "rule some-other-rule" in finding.recorded
    assert "rule ledger-from-orders" in finding.replayed


def _swap_ledger_revision(run: Run, out: Path, key: nacl.signing.SigningKey) -> None:
    """Evidence whose payments/ledger revision 1 is another one (tier 'restricted' required)."""
    store = load_policy_store(run.topo.policies)
    original = store.chain("payments/ledger")[0]
    rule = dataclasses.replace(original.rules[0], min_tier=2)
    swapped = dataclasses.replace(original, rules=(rule,))
    assert swapped.digest != original.digest
    doc = json.loads(run.weave_evidence.read_text())
    doc["policy_revisions"]["payments/ledger"] = [
        base64.b64encode(export_revision(swapped, key)).decode()
    ]
    out.write_text(json.dumps(doc))


def test_policy_revision_swapped_signed_by_another_key(run: Run, tmp_path: Path) -> None:
    evidence = tmp_path / "evidence.json"
    _swap_ledger_revision(run, evidence, nacl.signing.SigningKey.generate())
    report = _replay([run.weave_log], [evidence])
    kinds = _kinds(report)
    assert FindingKind.SIGNATURE_INVALID in kinds
    bad = next(f for f in report.findings if f.kind is FindingKind.SIGNATURE_INVALID)
    assert "policy_revisions.payments/ledger[0]" in bad.detail
    missing = [f for f in report.findings if f.kind is FindingKind.MISSING_EVIDENCE]
    assert missing and all("policy revision" in f.detail for f in missing)


def test_policy_revision_swapped_properly_signed(run: Run, tmp_path: Path) -> None:
    # Someone holding the gateway's own anchor key signs a different revision: the signature
    # verifies, but the records name the revision really applied, and re-deciding differs.
    evidence = tmp_path / "evidence.json"
    key = load_private_key(run.topo.root / "keys" / "gw-weave-anchor.pem").signing_key
    _swap_ledger_revision(run, evidence, key)
    report = _replay([run.weave_log], [evidence])
    kinds = _kinds(report)
    assert FindingKind.SIGNATURE_INVALID not in kinds
    assert FindingKind.MISSING_EVIDENCE in kinds
    assert FindingKind.DECISION_MISMATCH in kinds
    mismatch = next(f for f in report.findings if f.kind is FindingKind.DECISION_MISMATCH)
    assert mismatch.recorded.startswith("allow") and mismatch.replayed.startswith("deny")


def test_expired_endorsement_presented_as_valid(run: Run, tmp_path: Path) -> None:
    # An authentic endorsement of the orders anchor (chain to the real weave CA), but one whose
    # window ended before the run, replaces the one that was valid.
    orders = run.topo.orders
    past = dt.datetime.now(dt.UTC) - STARTED_AGO + dt.timedelta(minutes=2)
    old = run.topo.weave_ca.issue(orders.spiffe_id, now=past, lifetime=dt.timedelta(minutes=3))
    start = int(past.timestamp())
    expired = endorse(
        orders.anchor.public_key,
        X509SVID(old.spiffe_id, old.chain, old.private_key),
        ("orders/intake",),
        2,
        start,
        start + 120,
    )
    doc = json.loads(run.weave_evidence.read_text())
    replaced = 0
    for i, text in enumerate(doc["endorsements"]):
        if decode_endorsement(base64.b64decode(text)).spiffe_id == orders.spiffe_id:
            doc["endorsements"][i] = base64.b64encode(expired).decode()
            replaced += 1
    assert replaced == 1
    evidence = tmp_path / "evidence.json"
    evidence.write_text(json.dumps(doc))
    report = _replay([run.weave_log], [evidence])
    assert FindingKind.SIGNATURE_INVALID not in _kinds(report)  # authentic, just not then
    named = [f for f in report.findings if f.kind is FindingKind.ENDORSEMENT_NOT_VALID]
    assert named
    assert all(orders.anchor.kid.hex() in f.detail for f in named)
    assert all("not at the recorded time" in f.detail for f in named)


def test_missing_envelope_bytes_and_unknown_gateway(run: Run, tmp_path: Path) -> None:
    forged = tmp_path / "audit.log"
    i = _index(run.weave_log, decision=Decision.ALLOW)
    _rewrite(run.weave_log, forged, i, envelope=None)
    report = _replay([forged], [run.weave_evidence])
    missing, follow_on = report.findings
    assert missing.kind is FindingKind.MISSING_EVIDENCE and "no envelope bytes" in missing.detail
    assert missing.seq == i + 1
    # Without that envelope the replay window never saw it, so the recorded refusal of its
    # replayed copy cannot be reproduced either: the report says so rather than hide it.
    assert follow_on.kind is FindingKind.DECISION_MISMATCH
    assert follow_on.recorded.startswith("deny replayed")
    assert follow_on.replayed.startswith("allow")
    report = _replay([run.cilium_log], [run.weave_evidence])
    [finding] = report.findings
    assert finding.kind is FindingKind.MISSING_EVIDENCE
    assert "no evidence bundle for gateway spiffe://cilium.demo.example" in finding.detail


def test_evidence_round_trips_and_is_self_describing(run: Run) -> None:
    doc = json.loads(run.weave_evidence.read_text())
    assert doc["format"] == "sluice-evidence" and doc["version"] == 1
    assert set(doc["trust_bundles"]) == {WEAVE.name, CILIUM.name}
    assert set(doc["policy_revisions"]) == {"orders/intake", "payments/ledger"}
    assert len(doc["policy_revisions"]["orders/intake"]) == 2
    evidence = load_evidence(run.weave_evidence)
    assert str(evidence.gateway) == "spiffe://weave.demo.example/sluice/gateway/gw-weave"
    assert len(evidence.endorsements) == 3  # orders and both gateways


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: "not json", "not a JSON document"),
        (lambda d: {**d, "format": "other"}, "format: 'sluice-evidence' expected"),
        (lambda d: {**d, "version": 2}, "version: version 1 expected, got 2"),
        (lambda d: {k: v for k, v in d.items() if k != "routes"}, "keys: missing routes"),
        (lambda d: {**d, "endorsements": ["@@"]}, "endorsements[0]: base64 text expected"),
        (lambda d: {**d, "gateway": "http://x"}, "gateway:"),
        (lambda d: {**d, "trust_bundles": {"weave.demo.example": {"keys": 3}}},
         "trust_bundles.weave.demo.example:"),
        (lambda d: {**d, "tiers": [["x", 300]]}, "tiers[0]: level: an integer 0..255 expected"),
        (lambda d: {**d, "routes": [{"scope": "a"}]}, "routes[0]: exactly one of"),
    ],
)
def test_malformed_evidence_is_one_clear_line(
    run: Run, tmp_path: Path, mutate: object, message: str
) -> None:
    doc = json.loads(run.weave_evidence.read_text())
    changed = mutate(doc)  # type: ignore[operator]
    bad = tmp_path / "bad.json"
    bad.write_text(changed if isinstance(changed, str) else json.dumps(changed))
    with pytest.raises(EvidenceError) as caught:
        parse_evidence(bad.read_bytes(), source=str(bad))
    assert str(caught.value).startswith(f"{bad}: ")
    assert message in str(caught.value)
    result = CliRunner().invoke(
        cli_main, ["audit", "replay", str(run.weave_log), "--evidence", str(bad)]
    )
    assert result.exit_code == 3
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_cli_export_and_bad_input(run: Run, tmp_path: Path) -> None:
    out = tmp_path / "e.json"
    bundle = run.topo.root / "bundles" / f"{CILIUM.name}.pem"
    result = CliRunner().invoke(
        cli_main,
        ["audit", "evidence", "export", "--config", str(run.topo.cilium_config), "--out",
         str(out), "--bundle", f"{CILIUM.name}={bundle}", "--identity-timeout", "1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "3 endorsements, 3 signed policy revisions" in result.output
    assert load_evidence(out).gateway == gateway_id(CILIUM, "gw-cilium")
    result = CliRunner().invoke(
        cli_main,
        ["audit", "evidence", "export", "--config", str(run.topo.cilium_config), "--out",
         str(out), "--bundle", "nope"],
    )  # fmt: skip
    assert result.exit_code == 3 and "TRUST_DOMAIN=FILE expected" in result.output
    result = CliRunner().invoke(
        cli_main, ["audit", "replay", str(tmp_path / "none.log"), "--evidence", str(out)]
    )
    assert result.exit_code == 3 and "no such file" in result.output


def test_copy_of_clean_log_in_other_dir_still_replays(run: Run, tmp_path: Path) -> None:
    # Replay needs nothing but the files: the logs moved elsewhere replay the same.
    copy = tmp_path / "weave.log"
    shutil.copy(run.weave_log, copy)
    assert _replay([copy], [run.weave_evidence]).ok


def test_envelopes_from_a_capture_file(run: Run, tmp_path: Path) -> None:
    # A log that keeps no envelope bytes replays from a capture of raw frames, by digest.
    entries = _entries(run.weave_log)
    capture = tmp_path / "frames.cap"
    write_capture(capture, [e.record.envelope for e in entries if e.record.envelope])
    stripped = tmp_path / "audit.log"
    prev = entries[0].prev
    lines = []
    for entry in entries:
        record = dataclasses.replace(entry.record, envelope=None)
        sealed = seal(entry.seq, entry.ts_ms, record, prev)
        lines.append(sealed.line())
        prev = sealed.hash
    stripped.write_bytes(b"".join(lines))
    assert not _replay([stripped], [run.weave_evidence]).ok
    report = replay([stripped], [load_evidence(run.weave_evidence)], captures=[capture])
    assert report.ok, report.render_text()
    capture.write_bytes(capture.read_bytes()[:-1])  # torn last frame
    with pytest.raises(CaptureError, match="torn frame"):
        replay([stripped], [load_evidence(run.weave_evidence)], captures=[capture])
