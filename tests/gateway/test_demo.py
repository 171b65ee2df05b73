"""`sluice demo` as a user runs it: a real subprocess, no setup, exit 0, PASS, under 30 s."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

SLUICE = Path(sys.executable).parent / "sluice"


def test_sluice_demo_passes_in_under_30_seconds(tmp_path: Path) -> None:
    started = time.monotonic()
    done = subprocess.run(
        [str(SLUICE), "demo", "--dir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1].startswith("finished in") and lines[-1].endswith(": PASS"), done.stdout
    assert elapsed < 30, elapsed
    for name in ("gw-weave", "gw-cilium"):
        assert f"sluice audit verify {name}: ok" in done.stdout
    for reason in (
        "NACK replayed",
        "NACK scope_not_endorsed",
        "NACK tier_too_low",
        "NACK payload_mismatch",
        "NACK transit_not_allowed",
        "NACK lineage_revoked",
    ):
        assert reason in done.stdout, reason
    assert "ledger received 2 envelope(s), each once" in done.stdout
    assert len(list((tmp_path / "demo" / "delivered" / "ledger").iterdir())) == 2
