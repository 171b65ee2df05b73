"""Theory of operation: the S0-S6 stage model of MIGRATION.md and the runner that drives it.

A *unit* is a cluster-wide stage (``S0``..``S3``, ``S5``, ``S6``) or one node's S4
(``S4:worker-1``). Each unit has, per direction, a precondition, an ordered list of
:class:`~gateway.migration.actions.Action` steps, and a verification. The :class:`Runner` moves
one unit per call:

1. the journal's fold says where the unit is; a finished unit is a no-op (idempotence);
2. a new attempt checks the precondition first: a refusal is journaled as ``blocked`` and
   nothing is done (a PodDisruptionBudget that blocks the drain is found before the cordon);
3. each step is journaled ``begin`` -> executor -> ``done``; a ``done`` step is never run again,
   and an *open* step (a crash between begin and done) is resolved by asking the executor whether
   its effect is present (``done how=verified``) or, when absent, running it again -- for an
   action that is not idempotent and whose effect cannot be observed, the operator decides
   (``--step-done`` / ``--step-rerun``);
4. the verification runs (probes compare the gateway's decisions with the baseline taken before
   S2) and is journaled; a failed verification leaves the unit in progress and blocks ``advance``.

S6 is irreversible and needs ``confirm_irreversible``.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from config.migration_plan import MigrationPlan
from gateway.migration.actions import Action, ActionKind
from gateway.migration.executor import (
    IDEMPOTENT,
    ActionFailed,
    Executor,
    ProbeKind,
    ProbeRequest,
    ProbeUnavailable,
)
from gateway.migration.journal import Direction, Journal, JournalState, Placement, UnitStatus


class Stage(enum.StrEnum):
    S0 = "S0"
    S1 = "S1"
    S2 = "S2"
    S3 = "S3"
    S4 = "S4"
    S5 = "S5"
    S6 = "S6"


@dataclass(frozen=True, slots=True)
class StageSpec:
    stage: Stage
    title: str
    precondition: str
    verification: str
    rollback: str


STAGES: Mapping[Stage, StageSpec] = {
    s.stage: s
    for s in (
        StageSpec(Stage.S0, "inventory", "all nodes Ready", "nodes Ready (offline checks: "
                  "`sluice migrate inventory`)", "none needed"),
        StageSpec(Stage.S1, "Cilium secondary", "S0 done", "no node on Cilium yet; Weave "
                  "nodes Ready", "helm uninstall, delete CiliumNodeConfig, clean cilium_* links"),
        StageSpec(Stage.S2, "policy freeze", "S1 done", "probes decide as before",
                  "restore the stashed NetworkPolicies"),
        StageSpec(Stage.S3, "gateway bridge", "S2 done", "gateway healthy; probes decide as "
                  "before", "take the bridge down (no node may be on Cilium)"),
        StageSpec(Stage.S4, "node cutover", "S3 done; gateway healthy; PDBs allow the drain",
                  "pod IPs in the Cilium pool; probes decide as before",
                  "drain, unlabel, remove 05-cilium.conflist, restart Weave, reboot, uncordon"),
        StageSpec(Stage.S5, "finalize", "every node's S4 done", "probes decide as before",
                  "secondary values again (enforcement never), re-freeze policies"),
        StageSpec(Stage.S6, "decommission (irreversible)", "S5 done; confirmed",
                  "Weave removed from every node", "reinstall Weave by hand"),
    )
}
CLUSTER_ORDER = (Stage.S0, Stage.S1, Stage.S2, Stage.S3)


class StageBlocked(Exception):
    """A precondition refused the attempt; nothing was done. One-line message."""


class StageFailed(Exception):
    """A step or the verification failed; the unit stays in progress. One-line message."""


def unit_id(stage: Stage, node: str | None = None) -> str:
    return f"{stage.value}:{node}" if node else stage.value


def steps(plan: MigrationPlan, stage: Stage, node: str | None, direction: Direction) -> tuple[
    Action, ...
]:
    """The ordered steps of one unit in one direction."""
    a = ActionKind
    if direction is Direction.ADVANCE:
        match stage:
            case Stage.S0:
                return ()
            case Stage.S1:
                return (Action(a.HELM_INSTALL_SECONDARY), Action(a.APPLY_NODE_CONFIG))
            case Stage.S2:
                return (Action(a.POLICY_FREEZE),)
            case Stage.S3:
                return (Action(a.GATEWAY_BRIDGE_UP),)
            case Stage.S4:
                kinds = (a.CORDON, a.DRAIN, a.LABEL_NODE, a.RESTART_CILIUM_AGENT,
                         a.REBOOT_NODE, a.UNCORDON)
                return tuple(Action(k, node) for k in kinds)
            case Stage.S5:
                return (
                    Action(a.HELM_UPGRADE_FINAL), Action(a.DELETE_NODE_CONFIG),
                    Action(a.POLICY_RESTORE),
                )
            case Stage.S6:
                return (
                    Action(a.DELETE_WEAVE),
                    *(Action(a.CLEAN_WEAVE_NODE, n.name) for n in plan.nodes),
                    Action(a.GATEWAY_BRIDGE_DOWN),
                )
    match stage:
        case Stage.S0 | Stage.S6:
            return ()
        case Stage.S1:
            return (Action(a.DELETE_NODE_CONFIG), Action(a.HELM_UNINSTALL),
                    Action(a.CLEAN_CILIUM_LINKS))
        case Stage.S2:
            return (Action(a.POLICY_RESTORE),)
        case Stage.S3:
            return (Action(a.GATEWAY_BRIDGE_DOWN),)
        case Stage.S4:
            back = (a.CORDON, a.DRAIN, a.UNLABEL_NODE, a.REMOVE_CILIUM_CNI_CONF,
                    a.RESTART_WEAVE_AGENT, a.RESTART_CILIUM_AGENT, a.REBOOT_NODE, a.UNCORDON)
            return tuple(Action(k, node) for k in back)
        case Stage.S5:
            return (Action(a.HELM_INSTALL_SECONDARY), Action(a.APPLY_NODE_CONFIG),
                    Action(a.POLICY_FREEZE))
    return ()


def _placement_after(action: Action, direction: Direction) -> Placement | None:
    """Where the node's workloads are once ``action`` is done (hook for the router)."""
    if action.kind is ActionKind.DRAIN:
        return Placement.CUTOVER
    if action.kind is ActionKind.UNCORDON:
        return Placement.CILIUM if direction is Direction.ADVANCE else Placement.WEAVE
    return None


@dataclass(frozen=True, slots=True)
class Outcome:
    unit: str
    direction: Direction
    ran: tuple[str, ...]  # step keys run (or re-run) now
    verified_after_crash: tuple[str, ...]  # open steps found done
    noop: bool = False


class Runner:
    """Drives units through an executor, recording everything in the journal.

    Args:
        resolve: operator answers for interrupted steps that cannot be checked: step key ->
            True ("it took effect") or False ("run it again").
        echo: progress lines for the CLI.
    """

    def __init__(
        self,
        plan: MigrationPlan,
        journal: Journal,
        executor: Executor,
        *,
        resolve: Mapping[str, bool] | None = None,
        echo: Callable[[str], None] = lambda _line: None,
    ) -> None:
        self.plan = plan
        self.journal = journal
        self.executor = executor
        self._resolve = dict(resolve or {})
        self._echo = echo

    @property
    def state(self) -> JournalState:
        return self.journal.state

    def _done(self, stage: Stage, node: str | None = None) -> bool:
        return self.state.unit(unit_id(stage, node)).status is UnitStatus.DONE

    def _touched(self, stage: Stage, node: str | None = None) -> bool:
        return self.state.unit(unit_id(stage, node)).status is not UnitStatus.PENDING

    # -- choosing the next unit -------------------------------------------------------------

    def next_unit(self) -> tuple[Stage, str | None] | None:
        """The unit ``advance`` without ``--node`` works on (see :func:`next_unit`)."""
        return next_unit(self.plan, self.state)

    def last_cluster_stage(self) -> Stage | None:
        """The latest cluster-wide stage that is not pending (what ``rollback`` undoes)."""
        for stage in (Stage.S6, Stage.S5, Stage.S3, Stage.S2, Stage.S1, Stage.S0):
            if self._touched(stage):
                return stage
        return None

    # -- preconditions ------------------------------------------------------------------

    def _check_precondition(
        self, stage: Stage, node: str | None, direction: Direction, *, confirm: bool
    ) -> str | None:
        """Why the unit may not start moving now, or None."""
        if direction is Direction.ROLLBACK:
            return self._rollback_precondition(stage, node)
        if stage is Stage.S4 and node is None:
            return "S4 is per node: name the node"
        order = [*CLUSTER_ORDER]
        if stage in order and order.index(stage) > 0:
            previous = order[order.index(stage) - 1]
            if not self._done(previous):
                return f"{stage.value} needs {previous.value} done first"
        if stage is Stage.S0:
            not_ready = sorted(n for n, ok in self.executor.nodes_ready().items() if not ok)
            if not_ready:
                return f"node(s) not Ready: {', '.join(not_ready)}"
        if stage is Stage.S4 and node is not None:
            if not self._done(Stage.S3):
                return "S4 needs S3 (gateway bridge) done first"
            health = self.executor.probe(ProbeRequest(ProbeKind.GATEWAY_HEALTH, "S4", node))
            if not health.ok:
                return f"gateway not healthy: {health.detail}"
            blockers = self.executor.drain_blockers(node)
            if blockers:
                return (
                    f"drain of {node} would be refused by PodDisruptionBudget(s) "
                    f"{', '.join(blockers)}: scale or relax them, then advance again"
                )
        if stage is Stage.S5:
            pending = [n.name for n in self.plan.nodes if not self._done(Stage.S4, n.name)]
            if pending:
                return f"S5 needs every node on Cilium; not yet: {', '.join(pending)}"
        if stage is Stage.S6:
            if not self._done(Stage.S5):
                return "S6 needs S5 done first"
            if not confirm:
                return "S6 removes Weave for good: pass --irreversible to confirm"
        return None

    def _rollback_precondition(self, stage: Stage, node: str | None) -> str | None:
        if stage is Stage.S6:
            return "S6 is irreversible: reinstall Weave by hand (see docs/migration.md)"
        if stage is Stage.S4:
            if node is None:
                return "S4 is per node: name the node"
            if self._touched(Stage.S5):
                return "roll back S5 before rolling a node back to Weave"
            return None
        later = {
            Stage.S5: [Stage.S6],
            Stage.S3: [Stage.S5],
            Stage.S2: [Stage.S3],
            Stage.S1: [Stage.S2],
            Stage.S0: [Stage.S1],
        }[stage]
        for other in later:
            if self._touched(other):
                return f"roll back {other.value} before {stage.value}"
        if stage is Stage.S3:
            on_cilium = [n.name for n in self.plan.nodes if self._touched(Stage.S4, n.name)]
            if on_cilium:
                return (
                    "the bridge carries traffic for node(s) on Cilium: roll back "
                    f"{', '.join(on_cilium)} first"
                )
        return None

    # -- running ----------------------------------------------------------------------------

    def run(
        self,
        stage: Stage,
        node: str | None = None,
        direction: Direction = Direction.ADVANCE,
        *,
        confirm_irreversible: bool = False,
    ) -> Outcome:
        """Move one unit to the end of ``direction``.

        Raises:
            StageBlocked: a precondition refused (journaled as ``blocked``; nothing done).
            StageFailed: a step or the verification failed (journaled; advance again resumes).
            ProbeUnavailable: probes are needed and not wired.
        """
        if node is not None:
            self.plan.node(node)  # KeyError for a node outside the plan
        uid = unit_id(stage, node)
        unit = self.state.unit(uid)
        target = UnitStatus.DONE if direction is Direction.ADVANCE else UnitStatus.PENDING
        if unit.status is target and unit.direction in (direction, None):
            return Outcome(uid, direction, (), (), noop=True)
        resuming = unit.status is UnitStatus.IN_PROGRESS and unit.direction is direction
        if not resuming:
            why = self._check_precondition(stage, node, direction, confirm=confirm_irreversible)
            if why is not None:
                self.journal.append("blocked", unit=uid, direction=direction.value, detail=why)
                raise StageBlocked(f"{uid} {direction.value}: {why}")
            if stage is Stage.S2 and direction is Direction.ADVANCE:
                self._record_baseline()
            self.journal.append("attempt", unit=uid, direction=direction.value)
        ran: list[str] = []
        checked: list[str] = []
        for action in steps(self.plan, stage, node, direction):
            unit = self.state.unit(uid)
            if action.key in unit.steps_done:
                continue
            if unit.open_step == action.key:
                if self._found_done(action, unit.open_since_ms):
                    self._record_done(uid, action, direction, "verified")
                    checked.append(action.key)
                    continue
                how = "rerun"
            else:
                self.journal.append("begin", unit=uid, step=action.key)
                how = "ran"
            self._echo(f"{uid}: {action.key}")
            try:
                self.executor.perform(action)
            except ActionFailed as exc:
                self.journal.append("failed", unit=uid, step=action.key, detail=str(exc))
                raise StageFailed(f"{uid} step {action.key} failed: {exc}") from exc
            self._record_done(uid, action, direction, how)
            ran.append(action.key)
        self._verify(stage, node, direction)
        self.journal.append("complete", unit=uid, direction=direction.value)
        return Outcome(uid, direction, tuple(ran), tuple(checked))

    def _found_done(self, action: Action, since_ms: int) -> bool:
        present = self.executor.effect_present(action, since_ms=since_ms)
        if present is not None:
            return present
        if action.key in self._resolve:
            return self._resolve[action.key]
        if action.kind in IDEMPOTENT:
            return False  # safe to run again
        raise StageFailed(
            f"step {action.key} was interrupted and sluice cannot tell whether it took effect: "
            f"check the node, then advance again with --step-done {action.key} or "
            f"--step-rerun {action.key}"
        )

    def _record_done(self, uid: str, action: Action, direction: Direction, how: str) -> None:
        extra: dict[str, str] = {}
        placement = _placement_after(action, direction)
        if placement is not None and action.node is not None:
            extra = {"node": action.node, "placement": placement.value}
        self.journal.append("done", unit=uid, step=action.key, how=how, **extra)

    def _record_baseline(self) -> None:
        if self.state.baseline is not None:
            return
        result = self.executor.probe(ProbeRequest(ProbeKind.DECISIONS, "S2"))
        self.journal.append("probe", decisions=dict(result.decisions))

    # -- verification -------------------------------------------------------------------

    def verify(self, stage: Stage, node: str | None, direction: Direction) -> list[str]:
        """The unit's verification problems (empty when it passes); journals nothing."""
        problems: list[str] = []
        ready = self.executor.nodes_ready()
        not_ready = sorted(n for n, ok in ready.items() if not ok)
        if not_ready:
            problems.append(f"node(s) not Ready: {', '.join(not_ready)}")
        if stage is Stage.S4 and node is not None:
            pool = (
                self.plan.cilium_cidr if direction is Direction.ADVANCE else self.plan.weave_range
            )
            ips = self.executor.pod_ips(node)
            if not ips:
                problems.append(f"no pods running on {node}")
            outside = [ip for ip in ips if ipaddress.ip_address(ip) not in pool]
            if outside:
                problems.append(f"pods on {node} outside {pool}: {', '.join(outside)}")
        if stage is Stage.S3 and direction is Direction.ADVANCE:
            health = self.executor.probe(ProbeRequest(ProbeKind.GATEWAY_HEALTH, "S3"))
            if not health.ok:
                problems.append(f"gateway not healthy: {health.detail}")
        if stage in (Stage.S2, Stage.S3, Stage.S4, Stage.S5) and self.state.baseline is not None:
            now = self.executor.probe(ProbeRequest(ProbeKind.DECISIONS, stage.value, node))
            for name, before in sorted(self.state.baseline.items()):
                after = now.decisions.get(name, "missing")
                if after != before:
                    problems.append(f"probe {name}: was {before}, now {after}")
        return problems

    def _verify(self, stage: Stage, node: str | None, direction: Direction) -> None:
        uid = unit_id(stage, node)
        try:
            problems = self.verify(stage, node, direction)
        except (ActionFailed, ProbeUnavailable) as exc:
            problems = [str(exc)]
        self.journal.append("verified", unit=uid, ok=not problems, detail="; ".join(problems))
        if problems:
            raise StageFailed(f"{uid} verification failed: {'; '.join(problems)}")


def next_unit(plan: MigrationPlan, state: JournalState) -> tuple[Stage, str | None] | None:
    """The unit ``advance`` works on next: an unfinished advance first, then the first unit
    not done in the order S0-S3, S4 per node in plan order, S5, S6; None when all are done."""
    for uid, unit in state.units.items():
        if unit.status is UnitStatus.IN_PROGRESS and unit.direction is Direction.ADVANCE:
            stage, _, node = uid.partition(":")
            return Stage(stage), node or None

    def done(stage: Stage, node: str | None = None) -> bool:
        return state.unit(unit_id(stage, node)).status is UnitStatus.DONE

    for stage in CLUSTER_ORDER:
        if not done(stage):
            return stage, None
    for planned in plan.nodes:
        if not done(Stage.S4, planned.name):
            return Stage.S4, planned.name
    for stage in (Stage.S5, Stage.S6):
        if not done(stage):
            return stage, None
    return None


def status_rows(plan: MigrationPlan, state: JournalState) -> list[tuple[str, str, str, str]]:
    """``(unit, status, detail, placement)`` for ``sluice migrate status``."""
    rows: list[tuple[str, str, str, str]] = []

    def describe(uid: str) -> tuple[str, str]:
        unit = state.unit(uid)
        status = unit.status.value
        if unit.status is UnitStatus.IN_PROGRESS and unit.direction is not None:
            status = f"{unit.direction.value} in progress"
        detail = ""
        if unit.open_step:
            detail = f"interrupted in {unit.open_step}"
        elif unit.last_detail:
            detail = unit.last_detail
        elif unit.steps_done:
            detail = f"{len(unit.steps_done)} step(s) done"
        return status, detail

    for stage in CLUSTER_ORDER:
        rows.append((stage.value, *describe(stage.value), ""))
    for node in plan.nodes:
        uid = unit_id(Stage.S4, node.name)
        placement = state.placement.get(node.name, Placement.WEAVE).value
        rows.append((uid, *describe(uid), placement))
    for stage in (Stage.S5, Stage.S6):
        rows.append((stage.value, *describe(stage.value), ""))
    return rows
