"""The files a migration needs, generated from the plan (pure: name -> text).

* ``values-secondary.yaml``: Helm values for installing Cilium beside Weave, exactly the
  migration guide's (``operator.unmanagedPodWatcher.restart=false``, ``routingMode=tunnel``,
  ``tunnelProtocol=vxlan``, ``tunnelPort=8473``, ``cni.customConf=true``, ``cni.uninstall=false``,
  ``ipam.mode=cluster-pool``, the pool, ``policyEnforcementMode=never``,
  ``bpf.hostLegacyRouting=true``) plus the MTU and the masquerade exclusion of the Weave range
  (``ipv4NativeRoutingCIDR``; why not ``ipMasqAgent``: see ``gateway.migration.plan``);
* ``values-final.yaml``: the same with ``unmanagedPodWatcher.restart=true``,
  ``cni.customConf=false``, ``policyEnforcementMode=default`` and the MTU left to auto-detection;
* ``ciliumnodeconfig.yaml``: the ``cilium-default`` CiliumNodeConfig;
* ``runbook.md``: per stage and per node, the exact commands in order, and the rollback.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from config.migration_plan import MigrationPlan
from gateway.migration.actions import (
    MIGRATION_LABEL,
    NODE_CONFIG_FILE,
    NODE_CONFIG_NAME,
    VALUES_FINAL,
    VALUES_SECONDARY,
    Action,
    MissingHook,
    commands_for,
    shell_line,
)
from gateway.migration.journal import Direction
from gateway.migration.stages import STAGES, Stage, steps

RUNBOOK = "runbook.md"


def secondary_values(plan: MigrationPlan) -> dict[str, Any]:
    """Helm values for S1 (Cilium installed as a secondary CNI)."""
    return {
        "operator": {"unmanagedPodWatcher": {"restart": False}},
        "routingMode": "tunnel",
        "tunnelProtocol": "vxlan",
        "tunnelPort": plan.tunnel_port,
        "cni": {"customConf": True, "uninstall": False},
        "ipam": {
            "mode": "cluster-pool",
            "operator": {
                "clusterPoolIPv4PodCIDRList": [str(plan.cilium_cidr)],
                "clusterPoolIPv4MaskSize": plan.cilium_node_mask,
            },
        },
        "policyEnforcementMode": "never",
        "bpf": {"hostLegacyRouting": True},
        # Device MTU: Cilium subtracts the VXLAN overhead for pod routes, so pods get pod_mtu.
        "MTU": plan.cilium_device_mtu,
        # Destinations in this range (Weave pods and the Cilium pool) are not masqueraded.
        "ipv4NativeRoutingCIDR": str(plan.native_routing_cidr),
    }


def final_values(plan: MigrationPlan) -> dict[str, Any]:
    """Helm values for S5 (Cilium the only CNI, policy enforced)."""
    values = secondary_values(plan)
    values["operator"] = {"unmanagedPodWatcher": {"restart": True}}
    values["cni"] = {"customConf": False, "uninstall": False}
    values["policyEnforcementMode"] = "default"
    values["MTU"] = 0  # auto-detect again once pods no longer share paths with Weave
    return values


def node_config(plan: MigrationPlan) -> dict[str, Any]:
    """The ``cilium-default`` CiliumNodeConfig selecting the migrated nodes."""
    return {
        "apiVersion": "cilium.io/v2alpha1",
        "kind": "CiliumNodeConfig",
        "metadata": {"namespace": plan.helm.namespace, "name": NODE_CONFIG_NAME},
        "spec": {
            "nodeSelector": {"matchLabels": {MIGRATION_LABEL: "true"}},
            "defaults": {
                "write-cni-conf-when-ready": "/host/etc/cni/net.d/05-cilium.conflist",
                "custom-cni-conf": "false",
                "cni-chaining-mode": "none",
                "cni-exclusive": "true",
            },
        },
    }


def _yaml(header: str, data: Mapping[str, Any]) -> str:
    return f"# {header}\n" + yaml.safe_dump(dict(data), sort_keys=False, default_flow_style=False)


def _command_block(actions: tuple[Action, ...], plan: MigrationPlan, artifacts: str) -> list[str]:
    lines = ["```sh"]
    for action in actions:
        lines.append(f"# {action.key}")
        try:
            lines += [shell_line(argv) for argv in commands_for(action, plan, artifacts)]
        except MissingHook:
            lines.append(
                f"# (by hand: no hooks.{action.kind.value} in the plan) "
                f"{action.kind.value.replace('_', ' ')} {action.node or ''}".rstrip()
            )
    lines.append("```")
    return lines


def runbook(plan: MigrationPlan, artifacts: str = ".") -> str:
    """The per-stage, per-node runbook in Markdown (commands in the order sluice runs them)."""
    out = [
        "# Weave Net -> Cilium runbook",
        "",
        f"Cilium pool {plan.cilium_cidr} (Weave {plan.weave_range}); pod MTU {plan.pod_mtu} "
        f"(Helm MTU {plan.cilium_device_mtu}); VXLAN port {plan.tunnel_port}.",
        "`sluice migrate advance` runs these same commands and journals each one; run them by "
        "hand only if you are not using sluice to drive the migration.",
        "",
    ]
    for stage in (Stage.S0, Stage.S1, Stage.S2, Stage.S3):
        out += _stage_section(plan, stage, None, artifacts)
    for node in plan.nodes:
        out += _stage_section(plan, Stage.S4, node.name, artifacts, role=node.role)
        out += [
            f"Verify {node.name}: pods get addresses in {plan.cilium_cidr}:",
            "",
            "```sh",
            shell_line(("kubectl", "get", "pods", "--all-namespaces", "-o", "wide",
                        "--field-selector", f"spec.nodeName={node.name}")),
            shell_line(("kubectl", "-n", "kube-system", "exec", "ds/cilium", "--",
                        "cilium-dbg", "status", "--brief")),
            f"sluice migrate verify --node {node.name} --plan PLAN --journal JOURNAL",
            "```",
            "",
        ]
    for stage in (Stage.S5, Stage.S6):
        out += _stage_section(plan, stage, None, artifacts)
    return "\n".join(out)


def _stage_section(
    plan: MigrationPlan, stage: Stage, node: str | None, artifacts: str, *, role: str = ""
) -> list[str]:
    spec = STAGES[stage]
    title = f"{stage.value} {spec.title}" + (f": {node} ({role})" if node else "")
    out = [
        f"## {title}",
        "",
        f"Precondition: {spec.precondition}. Verification: {spec.verification}.",
        "",
    ]
    advance = steps(plan, stage, node, Direction.ADVANCE)
    if advance:
        out += [*_command_block(advance, plan, artifacts), ""]
    back = steps(plan, stage, node, Direction.ROLLBACK)
    out.append(f"Rollback: {spec.rollback}.")
    out.append("")
    if back:
        out += [*_command_block(back, plan, artifacts), ""]
    return out


def render_artifacts(plan: MigrationPlan, artifacts: str = ".") -> dict[str, str]:
    """Every artifact file: name -> content. ``artifacts`` is the directory named in commands."""
    return {
        VALUES_SECONDARY: _yaml(
            "Cilium as a secondary CNI beside Weave (S1). Generated by sluice.",
            secondary_values(plan),
        ),
        VALUES_FINAL: _yaml(
            "Cilium as the only CNI (S5 finalize). Generated by sluice.", final_values(plan)
        ),
        NODE_CONFIG_FILE: _yaml(
            "Nodes labelled for migration use Cilium's CNI config. Generated by sluice.",
            node_config(plan),
        ),
        RUNBOOK: runbook(plan, artifacts),
    }
