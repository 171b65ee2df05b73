"""A simulated cluster for tests and rehearsals: an :class:`Executor` over a durable state file.

This is a mock of kubectl/helm (a Kubernetes cluster cannot run here), and says so: the state
file is the "cluster". Every :meth:`SimulatedCluster.perform` applies the action's semantics to
the state and appends the action's key to ``log``, then rewrites the file atomically and fsyncs
it, so the log is the cluster's own durable record of what was done, independent of the journal.

Semantics kept: a node's pods get addresses from the Cilium pool once the node is labelled, its
Cilium agent restarted and it is rebooted (``05-cilium.conflist`` sorts before Weave's
``10-weave.conflist``), and from the Weave range otherwise; a drain fails when a
PodDisruptionBudget listed in ``pdb_blocks`` covers the node; decision probes between workloads on
different CNIs answer ``deny:no_route`` unless the gateway bridge is up.

Crash injection: ``SLUICE_SIM_KILL=after:K`` (or ``before:K``) SIGKILLs the process right after
the K-th action is durably applied (or right before it is applied), once per K.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from config.migration_plan import MigrationPlan
from gateway.migration.actions import MIGRATION_LABEL, Action, ActionKind
from gateway.migration.executor import DrainBlocked, ProbeKind, ProbeRequest, ProbeResult
from gateway.spool._fs import atomic_create

KILL_ENV = "SLUICE_SIM_KILL"
PODS_PER_NODE = 2


def initial_state(plan: MigrationPlan) -> dict[str, Any]:
    """A healthy Weave cluster with the plan's nodes, two pods each."""
    nodes: dict[str, Any] = {}
    for index, node in enumerate(plan.nodes):
        nodes[node.name] = {
            "ready": True,
            "cordoned": False,
            "labels": {},
            "agent": "weave-only",
            "cilium_conf": False,
            "weave_conf": True,
            "restarted_ms": {"cilium": 0, "weave": 0},
            "rebooted_ms": 0,
            "pods": _weave_pods(plan, index),
            "weave_clean": False,
        }
    return {
        "nodes": nodes,
        "helm": None,
        "node_config": False,
        "policy_frozen": False,
        "bridge": False,
        "weave_installed": True,
        "gateway_healthy": True,
        "pdb_blocks": {},
        "probe_overrides": {},
        "log": [],
        "kills_done": [],
    }


def _weave_pods(plan: MigrationPlan, index: int) -> list[str]:
    base = int(plan.weave_range.network_address) + (index + 1) * 256
    return [str(ipaddress.IPv4Address(base + i + 1)) for i in range(PODS_PER_NODE)]


def _cilium_pods(plan: MigrationPlan, index: int) -> list[str]:
    block = 2 ** (32 - plan.cilium_node_mask)
    base = int(plan.cilium_cidr.network_address) + index * block
    return [str(ipaddress.IPv4Address(base + i + 10)) for i in range(PODS_PER_NODE)]


class SimulatedCluster:
    """An :class:`~gateway.migration.executor.Executor` backed by the JSON file at ``path``."""

    def __init__(self, path: Path | str, plan: MigrationPlan) -> None:
        self.path = Path(path)
        self._plan = plan
        if not self.path.exists():
            self._state = initial_state(plan)
            self._save()
        else:
            self._state = json.loads(self.path.read_text())

    @property
    def state(self) -> dict[str, Any]:
        return self._state

    @property
    def log(self) -> list[str]:
        return list(self._state["log"])

    def _save(self) -> None:
        atomic_create(self.path, [json.dumps(self._state, indent=1, sort_keys=True).encode()])

    def _maybe_kill(self, when: str, count: int) -> None:
        spec = os.environ.get(KILL_ENV, "")
        mode, _, number = spec.partition(":")
        if mode != when or not number.isdigit() or int(number) != count:
            return
        marker = f"{mode}:{count}"
        if marker in self._state["kills_done"]:
            return
        self._state["kills_done"].append(marker)
        self._save()
        os.kill(os.getpid(), signal.SIGKILL)

    # -- Executor ------------------------------------------------------------------------

    def perform(self, action: Action) -> None:
        self._maybe_kill("before", len(self._state["log"]) + 1)
        self._apply(action)
        self._state["log"].append(action.key)
        self._save()
        self._maybe_kill("after", len(self._state["log"]))

    def _node(self, action: Action) -> dict[str, Any]:
        node: dict[str, Any] = self._state["nodes"][action.node or ""]
        return node

    def _apply(self, action: Action) -> None:  # noqa: PLR0915 - one flat dispatch per kind
        s = self._state
        now_ms = int(time.time() * 1000)
        match action.kind:
            case ActionKind.HELM_INSTALL_SECONDARY:
                s["helm"] = "secondary"
            case ActionKind.HELM_UPGRADE_FINAL:
                s["helm"] = "final"
            case ActionKind.HELM_UNINSTALL:
                s["helm"] = None
            case ActionKind.APPLY_NODE_CONFIG:
                s["node_config"] = True
            case ActionKind.DELETE_NODE_CONFIG:
                s["node_config"] = False
            case ActionKind.POLICY_FREEZE:
                s["policy_frozen"] = True
            case ActionKind.POLICY_RESTORE:
                s["policy_frozen"] = False
            case ActionKind.GATEWAY_BRIDGE_UP:
                s["bridge"] = True
            case ActionKind.GATEWAY_BRIDGE_DOWN:
                s["bridge"] = False
            case ActionKind.CORDON:
                self._node(action)["cordoned"] = True
            case ActionKind.UNCORDON:
                self._node(action)["cordoned"] = False
            case ActionKind.DRAIN:
                blockers = s["pdb_blocks"].get(action.node, [])
                if blockers:
                    raise DrainBlocked(action.node or "", tuple(blockers))
                self._node(action)["pods"] = []
            case ActionKind.LABEL_NODE:
                self._node(action)["labels"][MIGRATION_LABEL] = "true"
            case ActionKind.UNLABEL_NODE:
                self._node(action)["labels"].pop(MIGRATION_LABEL, None)
            case ActionKind.RESTART_CILIUM_AGENT:
                node = self._node(action)
                labelled = MIGRATION_LABEL in node["labels"] and s["node_config"]
                node["agent"] = "cilium-default" if labelled else "cilium-secondary"
                node["cilium_conf"] = node["cilium_conf"] or labelled
                node["restarted_ms"]["cilium"] = now_ms
            case ActionKind.RESTART_WEAVE_AGENT:
                node = self._node(action)
                node["weave_conf"] = s["weave_installed"]
                node["restarted_ms"]["weave"] = now_ms
            case ActionKind.REMOVE_CILIUM_CNI_CONF:
                self._node(action)["cilium_conf"] = False
            case ActionKind.REBOOT_NODE:
                node = self._node(action)
                node["rebooted_ms"] = now_ms
                index = [n.name for n in self._plan.nodes].index(action.node or "")
                if node["cilium_conf"]:
                    node["pods"] = _cilium_pods(self._plan, index)
                else:
                    node["pods"] = _weave_pods(self._plan, index)
            case ActionKind.DELETE_WEAVE:
                s["weave_installed"] = False
            case ActionKind.CLEAN_WEAVE_NODE:
                self._node(action)["weave_clean"] = True
            case ActionKind.CLEAN_CILIUM_LINKS:
                pass

    def effect_present(self, action: Action, *, since_ms: int) -> bool | None:
        s = self._state
        node = s["nodes"].get(action.node or "", {})
        match action.kind:
            case ActionKind.HELM_INSTALL_SECONDARY:
                return bool(s["helm"] == "secondary")
            case ActionKind.HELM_UPGRADE_FINAL:
                return bool(s["helm"] == "final")
            case ActionKind.HELM_UNINSTALL:
                return s["helm"] is None
            case ActionKind.APPLY_NODE_CONFIG | ActionKind.DELETE_NODE_CONFIG:
                return bool(s["node_config"]) == (action.kind is ActionKind.APPLY_NODE_CONFIG)
            case ActionKind.POLICY_FREEZE | ActionKind.POLICY_RESTORE:
                return bool(s["policy_frozen"]) == (action.kind is ActionKind.POLICY_FREEZE)
            case ActionKind.GATEWAY_BRIDGE_UP | ActionKind.GATEWAY_BRIDGE_DOWN:
                return bool(s["bridge"]) == (action.kind is ActionKind.GATEWAY_BRIDGE_UP)
            case ActionKind.CORDON | ActionKind.UNCORDON:
                return bool(node["cordoned"]) == (action.kind is ActionKind.CORDON)
            case ActionKind.DRAIN:
                return not node["pods"]
            case ActionKind.LABEL_NODE | ActionKind.UNLABEL_NODE:
                return (MIGRATION_LABEL in node["labels"]) == (
                    action.kind is ActionKind.LABEL_NODE
                )
            case ActionKind.RESTART_CILIUM_AGENT:
                return bool(node["restarted_ms"]["cilium"] >= since_ms)
            case ActionKind.RESTART_WEAVE_AGENT:
                return bool(node["restarted_ms"]["weave"] >= since_ms)
            case ActionKind.REMOVE_CILIUM_CNI_CONF:
                return not node["cilium_conf"]
            case ActionKind.REBOOT_NODE:
                return bool(node["rebooted_ms"] >= since_ms)
            case ActionKind.DELETE_WEAVE:
                return not s["weave_installed"]
            case ActionKind.CLEAN_WEAVE_NODE:
                return bool(node["weave_clean"])
        return None

    def nodes_ready(self) -> Mapping[str, bool]:
        return {name: bool(n["ready"]) for name, n in self._state["nodes"].items()}

    def drain_blockers(self, node: str) -> tuple[str, ...]:
        return tuple(self._state["pdb_blocks"].get(node, []))

    def pod_ips(self, node: str) -> tuple[str, ...]:
        return tuple(self._state["nodes"][node]["pods"])

    def _side(self, name: str) -> str:
        node = self._state["nodes"][name]
        pods = node["pods"]
        if not pods:
            return "none"
        in_pool = ipaddress.IPv4Address(pods[0]) in self._plan.cilium_cidr
        return "cilium" if in_pool else "weave"

    def probe(self, request: ProbeRequest) -> ProbeResult:
        s = self._state
        if request.kind is ProbeKind.GATEWAY_HEALTH:
            healthy = bool(s["gateway_healthy"] and s["bridge"])
            return ProbeResult(healthy, "gateway bridging" if healthy else "gateway not bridging")
        decisions: dict[str, str] = {}
        names = [n.name for n in self._plan.nodes]
        for src in names:
            for dst in names:
                if src == dst:
                    continue
                a, b = self._side(src), self._side(dst)
                if "none" in (a, b):
                    continue  # a drained node has no workloads to probe
                crosses = a != b
                decision = "deny:no_route" if crosses and not s["bridge"] else "allow"
                decisions[f"app@{src}->app@{dst}"] = decision
        decisions.update(s["probe_overrides"])
        return ProbeResult(True, f"{len(decisions)} probes", decisions)
