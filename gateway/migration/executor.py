"""How migration steps reach a cluster: the :class:`Executor` protocol and the kubectl/helm one.

The stage runner (``gateway.migration.stages``) only ever talks to an ``Executor``: tests use
:class:`gateway.migration.simulated.SimulatedCluster` (a durable state file standing for the
cluster), a real deployment uses :class:`SubprocessExecutor`, which runs the command lines of
:func:`gateway.migration.actions.commands_for` (the same ones the runbook prints).

Hook for the gateway integration: :meth:`Executor.probe` runs governed probes. The subprocess
executor takes a ``prober`` callable (the lead wires it to the gateway); without one, probes
raise :class:`ProbeUnavailable` and the stages that need them refuse to proceed.
"""

from __future__ import annotations

import datetime
import enum
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from config.migration_plan import MigrationPlan
from gateway.migration.actions import (
    CILIUM_POD_SELECTOR,
    MIGRATION_LABEL,
    WEAVE_POD_SELECTOR,
    Action,
    ActionKind,
    commands_for,
    shell_line,
)

COMMAND_TIMEOUT_S = 15 * 60  # above drain's and helm's own 10-minute timeouts
QUERY_TIMEOUT_S = 60


class ActionFailed(Exception):
    """A step's command failed; the message is one line (the command and its error)."""


class DrainBlocked(ActionFailed):
    """A drain cannot proceed: a PodDisruptionBudget forbids an eviction."""

    def __init__(self, node: str, blockers: tuple[str, ...]) -> None:
        self.node = node
        self.blockers = blockers
        super().__init__(
            f"drain of {node} blocked by PodDisruptionBudget(s): {', '.join(blockers)}"
        )


class ProbeUnavailable(Exception):
    """No probe runner is wired in; stages that need probes cannot be verified."""


class ProbeKind(enum.StrEnum):
    GATEWAY_HEALTH = "gateway_health"  # is the sluice gateway up and bridging both sides?
    DECISIONS = "decisions"  # governed probe envelopes between workloads on both sides


@dataclass(frozen=True, slots=True)
class ProbeRequest:
    """What the runner asks: ``stage`` and ``node`` say when (for logs and the gateway)."""

    kind: ProbeKind
    stage: str
    node: str | None = None


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """``decisions`` maps a probe name (``frontend@worker-1->ledger@worker-2``) to the
    gateway's decision (``allow`` or ``deny:<reason>``); empty for health probes."""

    ok: bool
    detail: str = ""
    decisions: Mapping[str, str] = field(default_factory=dict)


class Executor(Protocol):
    """Everything a stage does to, or asks of, the cluster."""

    def perform(self, action: Action) -> None:
        """Carry out ``action``; returns once it took effect.

        Raises:
            DrainBlocked: a drain is refused by a PodDisruptionBudget.
            ActionFailed: any other failure.
        """

    def effect_present(self, action: Action, *, since_ms: int) -> bool | None:
        """After a crash between a step's begin and done: did ``action`` take effect?

        ``since_ms`` is when the step began (for effects seen as "restarted after").
        Returns None when this executor cannot tell (the runner then re-runs idempotent
        actions and asks the operator about the others).
        """

    def nodes_ready(self) -> Mapping[str, bool]:
        """Every node's Ready condition."""

    def drain_blockers(self, node: str) -> tuple[str, ...]:
        """PodDisruptionBudgets that would refuse draining ``node`` now (``ns/name``)."""

    def pod_ips(self, node: str) -> tuple[str, ...]:
        """Addresses of the (non-host-network) pods running on ``node``."""

    def probe(self, request: ProbeRequest) -> ProbeResult:
        """Run governed probes through the gateway (hook for the gateway integration).

        Raises:
            ProbeUnavailable: no probe runner is configured.
        """


# Actions that are safe to run twice; the others need a yes/no from effect_present.
IDEMPOTENT = frozenset(ActionKind) - {
    ActionKind.RESTART_CILIUM_AGENT,
    ActionKind.RESTART_WEAVE_AGENT,
    ActionKind.REBOOT_NODE,
}


def _parse_k8s_time(text: str) -> int:
    stamp = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int(stamp.timestamp() * 1000)


class SubprocessExecutor:
    """Runs kubectl and helm (and the plan's hooks) for real.

    Args:
        plan: the validated plan.
        artifacts: directory written by ``sluice migrate artifacts``.
        echo: called with each command line before it runs (the CLI prints them).
        prober: runs governed probes through the gateway; None until the lead wires it.
        dry_run: print the commands of ``perform`` instead of running them (queries still run
            read-only kubectl commands).
    """

    def __init__(
        self,
        plan: MigrationPlan,
        artifacts: str,
        *,
        echo: Callable[[str], None] = lambda _line: None,
        prober: Callable[[ProbeRequest], ProbeResult] | None = None,
        dry_run: bool = False,
    ) -> None:
        self._plan = plan
        self._artifacts = artifacts
        self._echo = echo
        self._prober = prober
        self._dry_run = dry_run

    def _run(self, argv: tuple[str, ...], *, timeout: float) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, check=False
            )
        except FileNotFoundError:
            raise ActionFailed(f"{argv[0]}: command not found") from None
        except subprocess.TimeoutExpired:
            raise ActionFailed(f"{shell_line(argv)}: timed out after {timeout:.0f}s") from None

    def _query(self, *args: str) -> str:
        argv = ("kubectl", *args)
        done = self._run(argv, timeout=QUERY_TIMEOUT_S)
        if done.returncode != 0:
            first = (done.stderr.strip().splitlines() or ["failed"])[0]
            raise ActionFailed(f"{shell_line(argv)}: {first}")
        return done.stdout

    def perform(self, action: Action) -> None:
        for argv in commands_for(action, self._plan, self._artifacts):
            self._echo(shell_line(argv))
            if self._dry_run:
                continue
            done = self._run(argv, timeout=COMMAND_TIMEOUT_S)
            if done.returncode != 0:
                if action.kind is ActionKind.DRAIN and "disruption budget" in done.stderr:
                    raise DrainBlocked(action.node or "", self.drain_blockers(action.node or ""))
                first = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[0]
                raise ActionFailed(f"{shell_line(argv)}: {first}")

    def effect_present(self, action: Action, *, since_ms: int) -> bool | None:
        node = action.node or ""
        match action.kind:
            case ActionKind.CORDON | ActionKind.UNCORDON:
                cordoned = self._query(
                    "get", "node", node, "-o", "jsonpath={.spec.unschedulable}"
                ).strip() == "true"
                return cordoned == (action.kind is ActionKind.CORDON)
            case ActionKind.LABEL_NODE | ActionKind.UNLABEL_NODE:
                escaped = MIGRATION_LABEL.replace(".", "\\.")
                value = self._query(
                    "get", "node", node, "-o", f"jsonpath={{.metadata.labels.{escaped}}}"
                ).strip()
                return (value == "true") == (action.kind is ActionKind.LABEL_NODE)
            case ActionKind.RESTART_CILIUM_AGENT | ActionKind.RESTART_WEAVE_AGENT:
                selector = (
                    CILIUM_POD_SELECTOR
                    if action.kind is ActionKind.RESTART_CILIUM_AGENT
                    else WEAVE_POD_SELECTOR
                )
                created = self._query(
                    "get", "pods", "--namespace", "kube-system", "-l", selector,
                    "--field-selector", f"spec.nodeName={node}",
                    "-o", "jsonpath={.items[*].metadata.creationTimestamp}",
                ).split()
                return bool(created) and all(_parse_k8s_time(t) >= since_ms for t in created)
            case ActionKind.REBOOT_NODE:
                since = self._query(
                    "get", "node", node, "-o",
                    'jsonpath={.status.conditions[?(@.type=="Ready")].lastTransitionTime}',
                ).strip()
                return bool(since) and _parse_k8s_time(since) >= since_ms
        return None

    def nodes_ready(self) -> Mapping[str, bool]:
        out = self._query(
            "get", "nodes", "-o",
            'jsonpath={range .items[*]}{.metadata.name}{" "}'
            '{.status.conditions[?(@.type=="Ready")].status}{"\\n"}{end}',
        )
        ready: dict[str, bool] = {}
        for line in out.splitlines():
            name, _, status = line.partition(" ")
            if name:
                ready[name] = status.strip() == "True"
        return ready

    def drain_blockers(self, node: str) -> tuple[str, ...]:
        # A server-side dry-run drain sends dry-run evictions, which the API server checks
        # against PodDisruptionBudgets without evicting anything.
        argv = (
            "kubectl", "drain", node, "--ignore-daemonsets", "--delete-emptydir-data",
            "--dry-run=server",
        )
        done = self._run(argv, timeout=QUERY_TIMEOUT_S)
        if done.returncode == 0:
            return ()
        blocked = [
            line.strip() for line in done.stderr.splitlines() if "disruption budget" in line
        ]
        if not blocked:
            first = (done.stderr.strip().splitlines() or ["failed"])[0]
            raise ActionFailed(f"{shell_line(argv)}: {first}")
        return tuple(blocked)

    def pod_ips(self, node: str) -> tuple[str, ...]:
        out = self._query(
            "get", "pods", "--all-namespaces", "--field-selector",
            f"spec.nodeName={node},status.phase=Running",
            "-o", "jsonpath={range .items[?(@.spec.hostNetwork!=true)]}{.status.podIP}{\" \"}{end}",
        )
        return tuple(out.split())

    def probe(self, request: ProbeRequest) -> ProbeResult:
        if self._prober is None:
            raise ProbeUnavailable(
                "governed probes are not wired to a gateway yet (stage "
                f"{request.stage}: {request.kind.value})"
            )
        return self._prober(request)
