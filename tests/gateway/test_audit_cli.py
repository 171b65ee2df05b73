"""`sluice audit verify` and `sluice audit show`, through CliRunner and one real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from gateway.audit import AuditLog, Decision, verify
from gateway.cli import main
from tests.gateway.test_audit import GW, record

T0 = 1_717_000_000  # 2024-05-29T16:26:40Z


def make_log(path: Path) -> None:
    with AuditLog.open(path, gateway_id=GW, fsync="never") as log:
        log.append(record(1, scope="pay"), now=T0)
        log.append(record(2, decision=Decision.DENY, scope="web"), now=T0 + 60)
        log.append(record(3, scope="web"), now=T0 + 120)


def test_verify_ok(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    make_log(path)
    result = CliRunner().invoke(main, ["audit", "verify", str(path)])
    assert result.exit_code == 0, result.output
    last = verify(path).last_hash
    assert last is not None
    assert result.output == f"ok: 3 records, last hash {last.hex()}\n"


def test_verify_broken_prints_one_line_and_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    make_log(path)
    raw = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(raw[0] + raw[2])
    result = CliRunner().invoke(main, ["audit", "verify", str(path)])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1
    assert result.output.startswith(f"broken: {path}: line 2 (byte {len(raw[0])}, seq 3): ")
    assert "sequence_gap: expected seq 2" in result.output


def test_verify_missing_file_is_a_one_line_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["audit", "verify", str(tmp_path / "nope")])
    assert result.exit_code == 3
    assert "error:" in result.output and "no such file" in result.output
    assert "Traceback" not in result.output


def test_show_table_and_filters(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    make_log(path)
    runner = CliRunner()
    out = runner.invoke(main, ["audit", "show", str(path)]).output.splitlines()
    assert out[0].split() == ["seq", "time", "decision", "reason", "envelope", "scopes", "from",
                              "to", "rule"]
    assert out[1].split()[:4] == ["1", "2024-05-29T16:26:40.000Z", "allow", "allowed"]
    assert out[-1] == "(3 records)"

    def shown(*args: str) -> list[int]:
        result = runner.invoke(main, ["audit", "show", str(path), "--json", *args])
        assert result.exit_code == 0, result.output
        return [json.loads(line)["seq"] for line in result.output.splitlines()]

    assert shown() == [1, 2, 3]
    assert shown("--scope", "web") == [2, 3]
    assert shown("--decision", "deny") == [2]
    assert shown("--peer", "peer:cilium-gw") == [1, 3]
    assert shown("--envelope-id", (3).to_bytes(16, "big").hex()) == [3]
    assert shown("--since", str(T0 + 60), "--until", "2024-05-29T16:28:40") == [2]
    assert shown("--scope", "web", "--decision", "allow") == [3]


def test_show_bad_arguments_and_malformed_log(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    make_log(path)
    runner = CliRunner()
    result = runner.invoke(main, ["audit", "show", str(path), "--envelope-id", "abc"])
    assert result.exit_code == 3 and "--envelope-id" in result.output
    result = runner.invoke(main, ["audit", "show", str(path), "--since", "yesterday"])
    assert result.exit_code == 3 and "neither unix seconds nor an ISO 8601" in result.output
    size = path.stat().st_size
    with path.open("ab") as f:
        f.write(b"{oops}\n")
    result = runner.invoke(main, ["audit", "show", str(path)])
    assert result.exit_code == 3
    assert f"line 4 (byte {size}): not JSON" in result.output


def test_verify_as_a_real_subprocess(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    make_log(path)
    sluice = Path(sys.executable).with_name("sluice")
    ok = subprocess.run(
        [str(sluice), "audit", "verify", str(path)], capture_output=True, timeout=30, check=False
    )
    assert ok.returncode == 0 and ok.stdout.startswith(b"ok: 3 records, last hash ")
    path.write_bytes(path.read_bytes().replace(b'"tier":2', b'"tier":5', 1))
    bad = subprocess.run(
        [str(sluice), "audit", "verify", str(path)], capture_output=True, timeout=30, check=False
    )
    assert bad.returncode == 1
    assert b"line 1 (byte 0, seq 1): hash_mismatch" in bad.stdout
