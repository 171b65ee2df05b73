"""`sluice appliance plan` and configuration errors through click (no root needed)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from gateway.cli import main
from tests.conftest import REPO_ROOT

EXAMPLE = REPO_ROOT / "config" / "examples" / "appliance-weave-cilium.toml"


def test_plan_prints_the_example_operations() -> None:
    result = CliRunner().invoke(main, ["appliance", "plan", "--config", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert (
        "route 10.32.0.0/12 nexthop via 192.168.10.11 dev ens4 nexthop via 192.168.10.12 dev ens4"
    ) in lines
    assert any(
        line.startswith("link sluice-vtep type vxlan id 2 dstport 8472") and "mtu 1376" in line
        for line in lines
    )


def test_invalid_config_is_one_line_per_problem_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        EXAMPLE.read_text()
        .replace('"10.48.0.0/16"', '"10.0.0.0/8"')
        .replace("vni = 2 ", "vni = 0 ")
    )
    result = CliRunner().invoke(main, ["appliance", "plan", "--config", str(bad)])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert all(line.startswith(f"error: {bad}: appliance.") for line in lines), lines
    assert any(
        "appliance.cilium.vxlan.vni: expected an integer in 1..16777215, got 0" in x for x in lines
    )
    assert any("appliance.cilium.cluster_pool: 10.0.0.0/8" in x for x in lines)
    assert "Traceback" not in result.output


def test_unreadable_or_malformed_file_exits_3(tmp_path: Path) -> None:
    missing = CliRunner().invoke(main, ["appliance", "plan", "--config", str(tmp_path / "no.toml")])
    assert missing.exit_code == 3 and "cannot read" in missing.output
    broken = tmp_path / "broken.toml"
    broken.write_text("[appliance\n")
    result = CliRunner().invoke(main, ["appliance", "plan", "--config", str(broken)])
    assert result.exit_code == 3 and "not valid TOML" in result.output
