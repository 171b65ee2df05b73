"""The journaled stage runner over a simulated cluster (a mock of kubectl/helm: no Kubernetes
cluster can run here; the state file stands for the cluster and keeps its own action log)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from config.migration_plan import MigrationPlan, load_plan, render_plan
from gateway.cli import main
from gateway.migration.journal import Direction, Journal, JournalError, Placement, read_state
from gateway.migration.plan import build_plan
from gateway.migration.simulated import KILL_ENV, SimulatedCluster
from gateway.migration.stages import Runner, Stage, StageBlocked, StageFailed, steps
from tests.conftest import REPO_ROOT
from tests.gateway.migration.test_inventory import load_inventory

NODES = ("worker-1", "worker-2", "cp-1")


@pytest.fixture
def plan_file(tmp_path: Path) -> Path:
    path = tmp_path / "plan.toml"
    path.write_text(render_plan(build_plan(load_inventory(), hooks={})))
    return path


def open_runner(tmp_path: Path, plan_file: Path) -> tuple[Runner, SimulatedCluster, Journal]:
    plan = load_plan(plan_file)
    sim = SimulatedCluster(tmp_path / "cluster.json", plan)
    digest = hashlib.sha256(plan_file.read_bytes()).hexdigest()
    journal = Journal.open(tmp_path / "journal.jsonl", plan_digest=digest)
    return Runner(plan, journal, sim), sim, journal


def expected_log(plan: MigrationPlan, upto: Stage = Stage.S5) -> list[str]:
    keys: list[str] = []
    for stage in (Stage.S0, Stage.S1, Stage.S2, Stage.S3):
        keys += [a.key for a in steps(plan, stage, None, Direction.ADVANCE)]
    for node in plan.nodes:
        keys += [a.key for a in steps(plan, Stage.S4, node.name, Direction.ADVANCE)]
    if upto is Stage.S5:
        keys += [a.key for a in steps(plan, Stage.S5, None, Direction.ADVANCE)]
    return keys


def advance_all(runner: Runner, until: Stage = Stage.S5) -> None:
    while (nxt := runner.next_unit()) is not None and nxt[0] is not Stage.S6:
        runner.run(*nxt)
        if nxt[0] is until:
            return


def test_full_migration_node_by_node_with_placement_and_probes(
    tmp_path: Path, plan_file: Path
) -> None:
    runner, sim, journal = open_runner(tmp_path, plan_file)
    seen: list[dict[str, Placement]] = []
    while (nxt := runner.next_unit()) is not None and nxt[0] is not Stage.S6:
        runner.run(*nxt)
        seen.append(dict(journal.placement()))
    assert sim.log == expected_log(runner.plan)
    assert {n: p.value for n, p in journal.placement().items()} == {n: "cilium" for n in NODES}
    # Workers moved first, the control plane last; each S4 moved exactly one node.
    moved = [set(p) for p in seen if p]
    assert moved[0] == {"worker-1"} and moved[1] == {"worker-1", "worker-2"}
    for node in NODES:
        assert all(ip.startswith("10.48.") for ip in sim.pod_ips(node))
    # Idempotence: every finished unit is a no-op, and the executor does nothing.
    for stage in (Stage.S1, Stage.S2, Stage.S3, Stage.S5):
        assert runner.run(stage).noop
    assert runner.run(Stage.S4, "worker-1").noop
    assert sim.log == expected_log(runner.plan)
    # S6 needs an explicit confirmation.
    with pytest.raises(StageBlocked, match="pass --irreversible"):
        runner.run(Stage.S6)
    runner.run(Stage.S6, confirm_irreversible=True)
    assert sim.state["weave_installed"] is False
    with pytest.raises(StageBlocked, match="irreversible"):
        runner.run(Stage.S6, direction=Direction.ROLLBACK)
    journal.close()


def test_pdb_blocks_the_drain_before_anything_is_done(tmp_path: Path, plan_file: Path) -> None:
    runner, sim, journal = open_runner(tmp_path, plan_file)
    advance_all(runner, until=Stage.S3)
    sim.state["pdb_blocks"] = {"worker-1": ["kafka/kafka-pdb"]}
    before = sim.log
    with pytest.raises(StageBlocked, match=r"S4:worker-1 advance: drain of worker-1 would be "
                       r"refused by PodDisruptionBudget\(s\) kafka/kafka-pdb"):
        runner.run(Stage.S4, "worker-1")
    assert sim.log == before  # not even cordoned
    assert sim.state["nodes"]["worker-1"]["cordoned"] is False
    last = journal.state.unit("S4:worker-1")
    assert last.status.value == "pending" and "kafka/kafka-pdb" in last.last_detail
    sim.state["pdb_blocks"] = {}
    runner.run(Stage.S4, "worker-1")
    assert journal.placement()["worker-1"] is Placement.CILIUM
    journal.close()


def test_gateway_unhealthy_blocks_s4(tmp_path: Path, plan_file: Path) -> None:
    runner, sim, journal = open_runner(tmp_path, plan_file)
    advance_all(runner, until=Stage.S3)
    sim.state["gateway_healthy"] = False
    with pytest.raises(StageBlocked, match="gateway not healthy"):
        runner.run(Stage.S4, "worker-1")
    journal.close()


def test_probe_difference_fails_verification_and_blocks(tmp_path: Path, plan_file: Path) -> None:
    runner, sim, journal = open_runner(tmp_path, plan_file)
    advance_all(runner, until=Stage.S3)
    sim.state["probe_overrides"] = {"app@worker-1->app@cp-1": "deny:no_matching_rule"}
    with pytest.raises(StageFailed, match=r"probe app@worker-1->app@cp-1: was allow, now "
                       r"deny:no_matching_rule"):
        runner.run(Stage.S4, "worker-1")
    assert journal.state.unit("S4:worker-1").status.value == "in_progress"
    assert runner.next_unit() == (Stage.S4, "worker-1")
    sim.state["probe_overrides"] = {}
    log_before = sim.log
    runner.run(Stage.S4, "worker-1")  # resumes: verification only
    assert sim.log == log_before
    journal.close()


def test_bridge_cannot_go_down_while_a_node_is_on_cilium(tmp_path: Path, plan_file: Path) -> None:
    runner, _sim, journal = open_runner(tmp_path, plan_file)
    advance_all(runner, until=Stage.S3)
    runner.run(Stage.S4, "worker-1")
    with pytest.raises(StageBlocked, match="roll back worker-1 first"):
        runner.run(Stage.S3, direction=Direction.ROLLBACK)
    journal.close()


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from gateway.cli import main; main()", "migrate", *args],
        capture_output=True, text=True, env=env, timeout=60, cwd=REPO_ROOT, check=False,
    )


@pytest.mark.parametrize("when", ["after", "before"])
@pytest.mark.parametrize("k", [2, 9, 25])
def test_sigkill_mid_stage_resumes_without_repeating_or_skipping(
    tmp_path: Path, plan_file: Path, when: str, k: int
) -> None:
    state = tmp_path / "cluster.json"
    common = ["--plan", str(plan_file), "--journal", str(tmp_path / "j.jsonl"),
              "--simulate", str(state)]
    env = {**os.environ, KILL_ENV: f"{when}:{k}"}
    killed = 0
    for _ in range(40):
        done = _cli(["advance", *common], env)
        if done.returncode == -9:
            killed += 1
            continue
        assert done.returncode == 0, done.stderr
        if "nothing to do" in done.stdout or done.stdout.startswith("S5:"):
            break
    assert killed == 1
    log = json.loads(state.read_text())["log"]
    plan = load_plan(plan_file)
    assert log == expected_log(plan)  # every step exactly once, in order
    journal = read_state(tmp_path / "j.jsonl")
    assert journal.unit("S5").status.value == "done"
    if when == "after":  # the crash fell between the action and its "done" record
        verified = [u for u in journal.units.values() if u.steps_done]
        assert verified


def test_rollback_one_node_then_advance_again(tmp_path: Path, plan_file: Path) -> None:
    runner, sim, journal = open_runner(tmp_path, plan_file)
    advance_all(runner, until=Stage.S3)
    runner.run(Stage.S4, "worker-1")
    runner.run(Stage.S4, "worker-2")
    runner.run(Stage.S4, "worker-2", Direction.ROLLBACK)
    assert journal.placement()["worker-2"] is Placement.WEAVE
    assert all(ip.startswith("10.32.") for ip in sim.pod_ips("worker-2"))
    assert sim.state["nodes"]["worker-2"]["labels"] == {}
    assert runner.next_unit() == (Stage.S4, "worker-2")
    with pytest.raises(StageBlocked, match="every node on Cilium"):
        runner.run(Stage.S5)
    runner.run(Stage.S4, "worker-2")
    assert journal.placement()["worker-2"] is Placement.CILIUM
    assert all(ip.startswith("10.48.") for ip in sim.pod_ips("worker-2"))
    back = [a.key for a in steps(runner.plan, Stage.S4, "worker-2", Direction.ROLLBACK)]
    fwd = [a.key for a in steps(runner.plan, Stage.S4, "worker-2", Direction.ADVANCE)]
    assert sim.log[-len(back) - len(fwd):] == back + fwd
    journal.close()


def test_journal_detects_tampering_and_drops_a_torn_tail(tmp_path: Path, plan_file: Path) -> None:
    runner, _sim, journal = open_runner(tmp_path, plan_file)
    advance_all(runner, until=Stage.S1)
    journal.close()
    path = tmp_path / "journal.jsonl"
    good = path.read_bytes()
    path.write_bytes(good + b'{"event":"done","unit":"S2"')  # a crash during write
    _, _, journal2 = open_runner(tmp_path, plan_file)
    assert path.read_bytes() == good and journal2.state.unit("S1").status.value == "done"
    journal2.close()
    lines = good.splitlines(keepends=True)
    assert b'"ts_ms":1' in lines[2]
    lines[2] = lines[2].replace(b'"ts_ms":1', b'"ts_ms":2')
    path.write_bytes(b"".join(lines))
    with pytest.raises(JournalError, match="line 3: hash mismatch"):
        open_runner(tmp_path, plan_file)
    path.write_bytes(b"".join(lines[:2] + lines[3:]))
    with pytest.raises(JournalError, match="line 3: does not chain to line 2"):
        open_runner(tmp_path, plan_file)


def test_journal_refuses_a_changed_plan(tmp_path: Path, plan_file: Path) -> None:
    _, _, journal = open_runner(tmp_path, plan_file)
    journal.close()
    plan_file.write_text(plan_file.read_text().replace("pod_mtu = 1376", "pod_mtu = 1300"))
    with pytest.raises(JournalError, match="the plan changed since this journal started"):
        open_runner(tmp_path, plan_file)


def test_cli_status_dry_run_and_one_line_errors(tmp_path: Path, plan_file: Path) -> None:
    cli = CliRunner()
    common = ["--plan", str(plan_file), "--journal", str(tmp_path / "j.jsonl")]
    sim = ["--simulate", str(tmp_path / "c.json")]
    for _ in range(4):
        assert cli.invoke(main, ["migrate", "advance", *common, *sim]).exit_code == 0
    out = cli.invoke(main, ["migrate", "advance", *common, "--dry-run"]).output
    assert out.splitlines()[0] == "# S4:worker-1 advance (dry run)"
    assert "kubectl drain worker-1 --ignore-daemonsets --delete-emptydir-data --timeout=10m" in out
    assert "# no hook for reboot_node" in out
    result = cli.invoke(main, ["migrate", "advance", *common, *sim, "--node", "worker-2"])
    assert result.exit_code == 0, result.output
    status = cli.invoke(main, ["migrate", "status", *common]).output.splitlines()
    rows = {line.split()[0]: line.split()[1:3] for line in status[1:]}
    assert rows["S3"][0] == "done" and rows["S4:worker-2"] == ["done", "cilium"]
    assert rows["S4:worker-1"] == ["pending", "weave"] and rows["S5"][0] == "pending"
    bad = cli.invoke(main, ["migrate", "advance", *common, *sim, "--node", "nope"])
    assert bad.exit_code == 3 and bad.output == "error: --node nope: not a node of the plan\n"
    blocked = cli.invoke(main, ["migrate", "advance", *common, *sim, "--stage", "S5"])
    assert blocked.exit_code == 1
    assert blocked.output.startswith("error: S5 advance: S5 needs every node on Cilium")
    verify = cli.invoke(main, ["migrate", "verify", *common, *sim, "--node", "worker-2"])
    assert verify.exit_code == 0 and "verification passed" in verify.output

