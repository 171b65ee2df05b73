"""The router follows the migration journal: the ``[migration]`` config table, the pure placement
-> overrides mapping, and the overrides computed from a real journal written by the runner over
the simulated cluster (a mock of kubectl/helm, as in test_runner.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from config.errors import ConfigError
from config.gateway import HostPort, Migration, MigrationWorkload
from config.migration_plan import load_plan, render_plan
from gateway.migration.journal import Direction, Journal, Placement
from gateway.migration.placement import NodeState, Side, load_overrides, overrides
from gateway.migration.plan import build_plan
from gateway.migration.simulated import SimulatedCluster
from gateway.migration.stages import Runner, Stage
from gateway.router import HOLD, RouteTarget
from identity.spiffe_id import parse_spiffe_id
from tests.config.test_gateway_config import BASE, _load
from tests.gateway.migration.test_inventory import load_inventory

W1 = parse_spiffe_id("spiffe://cluster.example/ns/shop/sa/frontend")
W2 = parse_spiffe_id("spiffe://cluster.example/ns/shop/sa/api")
WORKLOADS = (
    MigrationWorkload(W1, "worker-1", HostPort("10.32.1.1", 9000), HostPort("10.48.0.10", 9000)),
    MigrationWorkload(W2, "worker-2", HostPort("10.32.2.1", 9000), HostPort("10.48.1.10", 9000)),
)
NETS = {"weave_network": "weave", "cilium_network": "cilium"}


def test_each_placement_maps_to_its_side_and_cutover_holds() -> None:
    assert overrides({}, WORKLOADS, **NETS) == {
        W1: RouteTarget("weave", "network", "10.32.1.1", 9000),
        W2: RouteTarget("weave", "network", "10.32.2.1", 9000),
    }
    nodes = {
        "worker-1": NodeState(Placement.CILIUM),
        "worker-2": NodeState(Placement.CUTOVER, Side.CILIUM),
    }
    got = overrides(nodes, WORKLOADS, **NETS)
    assert got[W1] == RouteTarget("cilium", "network", "10.48.0.10", 9000)
    assert got[W2] == RouteTarget("cilium", HOLD, "10.48.1.10", 9000)
    back = overrides({"worker-2": NodeState(Placement.CUTOVER, Side.WEAVE)}, WORKLOADS, **NETS)
    assert back[W2] == RouteTarget("weave", HOLD, "10.32.2.1", 9000)
    assert back[W2].key != got[W2].key  # held envelopes are keyed apart from live ones


def test_overrides_follow_a_journal_written_by_the_runner(tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.toml"
    plan_file.write_text(render_plan(build_plan(load_inventory(), hooks={})))
    plan = load_plan(plan_file)
    digest = hashlib.sha256(plan_file.read_bytes()).hexdigest()
    migration = Migration(tmp_path / "j.jsonl", "weave", "cilium", WORKLOADS)
    assert load_overrides(migration)[W1].name == "weave"  # no journal yet: all on Weave
    journal = Journal.open(migration.journal, plan_digest=digest)
    runner = Runner(plan, journal, SimulatedCluster(tmp_path / "c.json", plan))
    for stage in (Stage.S0, Stage.S1, Stage.S2, Stage.S3):
        runner.run(stage)
    runner.run(Stage.S4, "worker-1")
    journal.append("attempt", unit="S4:worker-2", direction=Direction.ROLLBACK.value)
    journal.append("done", unit="S4:worker-2", step="drain:worker-2", how="ran",
                   node="worker-2", placement=Placement.CUTOVER.value)
    got = load_overrides(migration)
    assert (got[W1].name, got[W1].kind, got[W1].host) == ("cilium", "network", "10.48.0.10")
    assert (got[W2].name, got[W2].kind) == ("weave", HOLD)  # rolling back: held for Weave
    journal.close()
    damaged = migration.journal.read_bytes().replace(b'"how":"ran"', b'"how":"run"', 1)
    migration.journal.write_bytes(damaged)
    with pytest.raises(ValueError, match=r"migration journal .*j\.jsonl: line \d+: hash mismatch"):
        load_overrides(migration)


MIGRATION = """
[[networks]]
name = "cilium"
kind = "cilium"
listen = "10.47.255.1:7443"

[migration]
journal = "state/migration.journal"

[[migration.workloads]]
spiffe_id = "spiffe://weave.prod.example/ns/shop/sa/frontend"
node = "worker-1"
weave = "10.32.1.1:9000"
cilium = "10.48.0.10:9000"
"""


def test_migration_table_is_read_with_paths_relative_to_the_file() -> None:
    cfg = _load(BASE + MIGRATION, Path("/etc/sluice/gw.toml"))
    assert cfg.migration is not None
    assert cfg.migration.journal == Path("/etc/sluice/state/migration.journal")
    assert (cfg.migration.weave_network, cfg.migration.cilium_network) == ("weave", "cilium")
    (w,) = cfg.migration.workloads
    assert (w.node, w.weave, w.cilium) == ("worker-1", HostPort("10.32.1.1", 9000),
                                           HostPort("10.48.0.10", 9000))
    assert _load(BASE).migration is None


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('journal = "state/migration.journal"\n',
         'journal = "state/migration.journal"\ncilium_network = "cilum"\n',
         "migration.cilium_network: unknown network 'cilum'"),
        ('node = "worker-1"', 'node = "Worker_1"',
         "migration.workloads[0].node: expected a Kubernetes node name"),
        ('weave = "10.32.1.1:9000"', 'weave = "10.32.1.1"',
         "migration.workloads[0].weave: expected host:port"),
        ('journal = "state/migration.journal"\n', "",
         "migration.journal: missing required key"),
    ],
)
def test_migration_mistakes_get_one_line_each(old: str, new: str, message: str) -> None:
    text = BASE + MIGRATION.replace(old, new)
    with pytest.raises(ConfigError) as info:
        _load(text)
    assert message in str(info.value)


def test_duplicate_workload_is_refused() -> None:
    second = MIGRATION[MIGRATION.index("[[migration.workloads]]"):]
    with pytest.raises(ConfigError, match=r"migration\.workloads\[1\]\.spiffe_id: duplicate"):
        _load(BASE + MIGRATION + second.replace("worker-1", "worker-2"))
