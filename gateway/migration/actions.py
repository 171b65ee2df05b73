"""What a migration step does to the cluster, and the exact commands that do it (pure).

An :class:`Action` is data (a kind and, for per-node actions, the node). :func:`commands_for`
turns it into the kubectl / helm command lines, and the same function writes the runbook and
drives :class:`gateway.migration.executor.SubprocessExecutor`, so the runbook a person reads and
the commands sluice runs cannot drift apart. Actions kubectl cannot do (reboot a node, remove a
file on it, hand the policy freeze to sluice's policy engine) are *hooks*: argv arrays from the
plan's ``[hooks]`` table, with ``{node}`` replaced.
"""

from __future__ import annotations

import enum
import shlex
from dataclasses import dataclass

from config.migration_plan import MigrationPlan

MIGRATION_LABEL = "io.cilium.migration/cilium-default"
NODE_CONFIG_NAME = "cilium-default"
CILIUM_POD_SELECTOR = "k8s-app=cilium"
WEAVE_POD_SELECTOR = "name=weave-net"
VALUES_SECONDARY = "values-secondary.yaml"
VALUES_FINAL = "values-final.yaml"
NODE_CONFIG_FILE = "ciliumnodeconfig.yaml"
DRAIN_TIMEOUT = "10m"


class ActionKind(enum.StrEnum):
    HELM_INSTALL_SECONDARY = "helm_install_secondary"
    APPLY_NODE_CONFIG = "apply_node_config"
    POLICY_FREEZE = "policy_freeze"
    GATEWAY_BRIDGE_UP = "gateway_bridge_up"
    CORDON = "cordon"
    DRAIN = "drain"
    LABEL_NODE = "label_node"
    RESTART_CILIUM_AGENT = "restart_cilium_agent"
    REBOOT_NODE = "reboot_node"
    UNCORDON = "uncordon"
    UNLABEL_NODE = "unlabel_node"
    REMOVE_CILIUM_CNI_CONF = "remove_cilium_cni_conf"
    RESTART_WEAVE_AGENT = "restart_weave_agent"
    HELM_UPGRADE_FINAL = "helm_upgrade_final"
    DELETE_NODE_CONFIG = "delete_node_config"
    POLICY_RESTORE = "policy_restore"
    GATEWAY_BRIDGE_DOWN = "gateway_bridge_down"
    HELM_UNINSTALL = "helm_uninstall"
    CLEAN_CILIUM_LINKS = "clean_cilium_links"
    DELETE_WEAVE = "delete_weave"
    CLEAN_WEAVE_NODE = "clean_weave_node"


# Kinds carried out by a plan hook rather than by kubectl/helm.
HOOK_KINDS = frozenset(
    {
        ActionKind.POLICY_FREEZE,
        ActionKind.POLICY_RESTORE,
        ActionKind.GATEWAY_BRIDGE_UP,
        ActionKind.GATEWAY_BRIDGE_DOWN,
        ActionKind.REBOOT_NODE,
        ActionKind.REMOVE_CILIUM_CNI_CONF,
        ActionKind.CLEAN_CILIUM_LINKS,
        ActionKind.CLEAN_WEAVE_NODE,
    }
)


@dataclass(frozen=True, slots=True)
class Action:
    kind: ActionKind
    node: str | None = None

    @property
    def key(self) -> str:
        """The step's name in the journal: ``drain`` or ``clean_weave_node:worker-1``."""
        return self.kind.value if self.node is None else f"{self.kind.value}:{self.node}"


class MissingHook(LookupError):
    """The plan has no ``[hooks]`` entry for an action that needs one."""


def _helm_upgrade(plan: MigrationPlan, values: str, artifacts: str) -> tuple[str, ...]:
    h = plan.helm
    argv = ["helm", "upgrade", "--install", h.release, h.chart, "--namespace", h.namespace]
    if h.version:
        argv += ["--version", h.version]
    return (*argv, "--values", f"{artifacts}/{values}", "--wait", "--timeout", "10m")


def hook_argv(plan: MigrationPlan, action: Action) -> tuple[str, ...]:
    """The hook command for ``action`` with ``{node}`` replaced.

    Raises:
        MissingHook: the plan's ``[hooks]`` has no entry for this kind.
    """
    argv = plan.hooks.get(action.kind.value)
    if not argv:
        raise MissingHook(
            f"no hook for {action.kind.value}: set hooks.{action.kind.value} in the plan "
            "(an argv array; {node} is replaced by the node name)"
        )
    return tuple(a.replace("{node}", action.node or "") for a in argv)


def commands_for(
    action: Action, plan: MigrationPlan, artifacts: str
) -> tuple[tuple[str, ...], ...]:
    """The command lines that carry out ``action``, in order.

    Args:
        artifacts: directory holding the files ``sluice migrate artifacts`` wrote.

    Raises:
        MissingHook: ``action`` is a hook kind and the plan does not configure it.
    """
    node = action.node or ""
    ns = ("--namespace", "kube-system")
    on_node = f"spec.nodeName={node}"
    match action.kind:
        case ActionKind.HELM_INSTALL_SECONDARY:
            return (_helm_upgrade(plan, VALUES_SECONDARY, artifacts),)
        case ActionKind.HELM_UPGRADE_FINAL:
            return (_helm_upgrade(plan, VALUES_FINAL, artifacts),)
        case ActionKind.HELM_UNINSTALL:
            h = plan.helm
            return (("helm", "uninstall", h.release, "--namespace", h.namespace, "--wait"),)
        case ActionKind.APPLY_NODE_CONFIG:
            return (("kubectl", "apply", "-f", f"{artifacts}/{NODE_CONFIG_FILE}"),)
        case ActionKind.DELETE_NODE_CONFIG:
            return (
                (
                    "kubectl", "delete", "ciliumnodeconfigs.cilium.io", NODE_CONFIG_NAME,
                    *ns, "--ignore-not-found",
                ),
            )
        case ActionKind.CORDON:
            return (("kubectl", "cordon", node),)
        case ActionKind.UNCORDON:
            return (("kubectl", "uncordon", node),)
        case ActionKind.DRAIN:
            return (
                (
                    "kubectl", "drain", node, "--ignore-daemonsets", "--delete-emptydir-data",
                    f"--timeout={DRAIN_TIMEOUT}",
                ),
            )
        case ActionKind.LABEL_NODE:
            return (("kubectl", "label", "node", node, "--overwrite", f"{MIGRATION_LABEL}=true"),)
        case ActionKind.UNLABEL_NODE:
            return (("kubectl", "label", "node", node, f"{MIGRATION_LABEL}-"),)
        case ActionKind.RESTART_CILIUM_AGENT:
            return (
                (
                    "kubectl", "delete", "pod", *ns, "-l", CILIUM_POD_SELECTOR,
                    "--field-selector", on_node, "--wait",
                ),
                ("kubectl", "rollout", "status", "daemonset/cilium", *ns, "--timeout=5m"),
            )
        case ActionKind.RESTART_WEAVE_AGENT:
            return (
                (
                    "kubectl", "delete", "pod", *ns, "-l", WEAVE_POD_SELECTOR,
                    "--field-selector", on_node, "--wait",
                ),
                ("kubectl", "rollout", "status", "daemonset/weave-net", *ns, "--timeout=5m"),
            )
        case ActionKind.DELETE_WEAVE:
            return (
                ("kubectl", "delete", "daemonset", "weave-net", *ns, "--ignore-not-found"),
                ("kubectl", "delete", "configmap", "weave-net", *ns, "--ignore-not-found"),
            )
    return (hook_argv(plan, action),)


def shell_line(argv: tuple[str, ...]) -> str:
    """One command line for a person to read or paste (POSIX shell quoting)."""
    return shlex.join(argv)
