"""The migration plan file: what ``sluice migrate plan`` chose, as TOML a person can edit.

``sluice migrate plan`` writes it (:func:`render_plan`); every later command reads it back with
:func:`load_plan`, which reports every mistake with file, key path and line, and re-checks the
rules an edit could break (no overlap between the Cilium pool and the Weave, service or node
CIDRs; pod MTU no larger than Weave's and than the underlay less VXLAN's 50 bytes; workers before
control-plane nodes). The format is documented in ``docs/migration.md``::

    format = 1

    [network]
    weave_range = "10.32.0.0/12"
    weave_mtu = 1376
    underlay_mtu = 1500
    cilium_cidr = "10.48.0.0/16"
    cilium_node_mask = 24
    pod_mtu = 1376
    tunnel_port = 8473
    native_routing_cidr = "10.32.0.0/11"
    service_cidrs = ["10.96.0.0/12"]
    node_cidrs = ["192.168.10.0/24"]

    [helm]
    release = "cilium"
    namespace = "kube-system"
    chart = "cilium/cilium"
    version = "1.16.5"

    [[node]]
    name = "worker-1"
    role = "worker"

    [hooks]
    reboot_node = ["ssh", "{node}", "sudo", "systemctl", "reboot"]
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from config.fields import Fields, root_fields
from config.source import TomlDocument, load_toml

PLAN_FORMAT = 1
VXLAN_OVERHEAD = 50  # outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14 (Cilium pkg/mtu)
WEAVE_PORTS = (6781, 6782, 6783, 6784)
CILIUM_DEFAULT_VXLAN_PORT = 8472
MIGRATION_TUNNEL_PORT = 8473
MAX_NODES = 5000
HOOK_NAMES = (
    "reboot_node",
    "remove_cilium_cni_conf",
    "policy_freeze",
    "policy_restore",
    "gateway_bridge_up",
    "gateway_bridge_down",
    "clean_cilium_links",
    "clean_weave_node",
)
_NODE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")

Role = Literal["worker", "control-plane"]


@dataclass(frozen=True, slots=True)
class PlanNode:
    name: str
    role: Role


@dataclass(frozen=True, slots=True)
class HelmRelease:
    release: str = "cilium"
    namespace: str = "kube-system"
    chart: str = "cilium/cilium"
    version: str = ""  # "" = whatever the chart repository has; pin it in production


@dataclass(frozen=True, slots=True)
class MigrationPlan:
    """A validated plan. ``nodes`` is the migration order (workers first)."""

    weave_range: ipaddress.IPv4Network
    weave_mtu: int
    underlay_mtu: int
    cilium_cidr: ipaddress.IPv4Network
    cilium_node_mask: int
    pod_mtu: int
    tunnel_port: int
    native_routing_cidr: ipaddress.IPv4Network
    service_cidrs: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    node_cidrs: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    helm: HelmRelease
    nodes: tuple[PlanNode, ...]
    hooks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def cilium_device_mtu(self) -> int:
        """Cilium's Helm ``MTU`` is the device MTU; it subtracts the tunnel overhead for pod
        routes, so the pods see ``pod_mtu`` (inferred from Cilium's pkg/mtu)."""
        return self.pod_mtu + VXLAN_OVERHEAD

    def node(self, name: str) -> PlanNode:
        """The plan's node called ``name``.

        Raises:
            KeyError: no such node in the plan.
        """
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)


def plan_problems(plan: MigrationPlan) -> list[tuple[str, str]]:
    """The consistency rules a hand edit could break, as ``(key path, message)`` pairs."""
    out: list[tuple[str, str]] = []
    pool = plan.cilium_cidr
    if pool.overlaps(plan.weave_range):
        out.append(
            (
                "network.cilium_cidr",
                f"{pool} overlaps the Weave range {plan.weave_range} (Cilium's default "
                "10.0.0.0/8 contains Weave's 10.32.0.0/12): choose another pool",
            )
        )
    for i, net in enumerate(plan.service_cidrs):
        if net.version == 4 and pool.overlaps(net):
            out.append(("network.cilium_cidr", f"{pool} overlaps service CIDR {net}"))
        if net.version == 4 and plan.native_routing_cidr.overlaps(net):
            out.append(
                (
                    f"network.service_cidrs[{i}]",
                    f"{net} overlaps native_routing_cidr {plan.native_routing_cidr}: service "
                    "traffic would skip masquerading",
                )
            )
    for net in plan.node_cidrs:
        if net.version == 4 and pool.overlaps(net):
            out.append(("network.cilium_cidr", f"{pool} overlaps node CIDR {net}"))
    if not pool.prefixlen < plan.cilium_node_mask <= 30:
        out.append(
            (
                "network.cilium_node_mask",
                f"must be longer than the pool's /{pool.prefixlen} and at most 30",
            )
        )
    elif 2 ** (plan.cilium_node_mask - pool.prefixlen) < len(plan.nodes):
        out.append(
            (
                "network.cilium_cidr",
                f"{pool} holds {2 ** (plan.cilium_node_mask - pool.prefixlen)} "
                f"/{plan.cilium_node_mask} node blocks, fewer than the {len(plan.nodes)} nodes",
            )
        )
    if not (
        plan.native_routing_cidr.supernet_of(plan.weave_range)
        and plan.native_routing_cidr.supernet_of(pool)
    ):
        out.append(
            (
                "network.native_routing_cidr",
                f"{plan.native_routing_cidr} must contain both the Weave range "
                f"{plan.weave_range} and the Cilium pool {pool}",
            )
        )
    if plan.pod_mtu > plan.weave_mtu:
        out.append(
            ("network.pod_mtu", f"{plan.pod_mtu} is larger than Weave's MTU {plan.weave_mtu}")
        )
    if plan.pod_mtu > plan.underlay_mtu - VXLAN_OVERHEAD:
        out.append(
            (
                "network.pod_mtu",
                f"{plan.pod_mtu} leaves no room for VXLAN's {VXLAN_OVERHEAD} bytes on an "
                f"underlay MTU of {plan.underlay_mtu}",
            )
        )
    if plan.tunnel_port in WEAVE_PORTS or plan.tunnel_port == CILIUM_DEFAULT_VXLAN_PORT:
        out.append(
            (
                "network.tunnel_port",
                f"{plan.tunnel_port} collides with Weave (6781-6784) or an existing Cilium "
                f"VXLAN ({CILIUM_DEFAULT_VXLAN_PORT}); the migration guide uses "
                f"{MIGRATION_TUNNEL_PORT}",
            )
        )
    seen: set[str] = set()
    saw_control_plane = False
    for i, node in enumerate(plan.nodes):
        if node.name in seen:
            out.append((f"node[{i}].name", f"node {node.name!r} is listed twice"))
        seen.add(node.name)
        if node.role == "control-plane":
            saw_control_plane = True
        elif saw_control_plane:
            out.append(
                (
                    f"node[{i}]",
                    f"worker {node.name!r} comes after a control-plane node: migrate workers "
                    "first and control-plane nodes last",
                )
            )
    return out


def _ipv4(fields: Fields, key: str) -> ipaddress.IPv4Network:
    net = fields.network(key)
    if not isinstance(net, ipaddress.IPv4Network):
        fields.problem(key, "expected an IPv4 CIDR")
        return ipaddress.IPv4Network("0.0.0.0/32")
    return net


def _networks(
    fields: Fields, key: str
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    out: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for i, text in enumerate(fields.strings(key, (), max_items=64)):
        try:
            out.append(ipaddress.ip_network(text, strict=True))
        except ValueError as exc:
            fields.context.problem(f"{fields.key_path(key)}[{i}]", f"expected a CIDR: {exc}")
    return tuple(out)


def _node_name_problem(name: str) -> str | None:
    if len(name) > 253 or _NODE_NAME.fullmatch(name) is None:
        return f"not a Kubernetes node name (RFC 1123 subdomain), found {name!r}"
    return None


def plan_from_document(doc: TomlDocument) -> MigrationPlan:
    """Build a plan from a parsed TOML document.

    Raises:
        ConfigError: one line per problem (unknown keys, wrong types, broken rules).
    """
    root = root_fields(doc)
    root.integer("format", low=PLAN_FORMAT, high=PLAN_FORMAT)
    net = root.table("network")
    helm_fields = root.table("helm", optional=True)
    node_fields = root.tables("node", max_items=MAX_NODES)
    plan = MigrationPlan(
        weave_range=_ipv4(net, "weave_range"),
        weave_mtu=net.integer("weave_mtu", low=576, high=65535),
        underlay_mtu=net.integer("underlay_mtu", 1500, low=576 + VXLAN_OVERHEAD, high=65535),
        cilium_cidr=_ipv4(net, "cilium_cidr"),
        cilium_node_mask=net.integer("cilium_node_mask", 24, low=1, high=32),
        pod_mtu=net.integer("pod_mtu", low=576, high=65535),
        tunnel_port=net.integer("tunnel_port", MIGRATION_TUNNEL_PORT, low=1, high=65535),
        native_routing_cidr=_ipv4(net, "native_routing_cidr"),
        service_cidrs=_networks(net, "service_cidrs"),
        node_cidrs=_networks(net, "node_cidrs"),
        helm=HelmRelease(
            release=helm_fields.string("release", "cilium", max_length=53),
            namespace=helm_fields.string("namespace", "kube-system", max_length=63),
            chart=helm_fields.string("chart", "cilium/cilium", max_length=512),
            version=helm_fields.string("version", "", max_length=64),
        ),
        nodes=tuple(
            PlanNode(
                name=n.string("name", max_length=253, check=_node_name_problem),
                role=_role(n),
            )
            for n in node_fields
        ),
        hooks=_hooks(root.table("hooks", optional=True)),
    )
    net.finish()
    helm_fields.finish()
    for n in node_fields:
        n.finish()
    root.finish()
    ctx = root.context
    if not plan.nodes:
        ctx.problem("node", "the plan lists no [[node]]")
    if not ctx.problems:
        for key_path, message in plan_problems(plan):
            ctx.problem(key_path, message)
    ctx.raise_if_problems()
    return plan


def _role(fields: Fields) -> Role:
    return "control-plane" if fields.string(
        "role", choices=("worker", "control-plane")
    ) == "control-plane" else "worker"


def _hooks(fields: Fields) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for name in fields.key_names():
        if name not in HOOK_NAMES:
            continue  # reported as an unknown key by finish()
        argv = fields.strings(name, max_items=64)
        if not argv:
            fields.problem(name, "a hook is a non-empty array: the command and its arguments")
        out[name] = argv
    fields.finish()
    return out


def load_plan(path: Path | str) -> MigrationPlan:
    """Read and validate a plan file.

    Raises:
        ConfigError: unreadable, not TOML, or any problem :func:`plan_from_document` finds.
    """
    return plan_from_document(load_toml(path))


def _q(text: str) -> str:
    # A JSON string of printable text is a valid TOML basic string.
    return json.dumps(text)


def _list(items: tuple[object, ...]) -> str:
    return "[" + ", ".join(_q(str(i)) for i in items) + "]"


def render_plan(plan: MigrationPlan, *, notes: tuple[str, ...] = ()) -> str:
    """The plan as commented TOML; :func:`load_plan` reads it back to an equal plan."""
    lines = [
        "# sluice migration plan (Weave Net -> Cilium). Written by `sluice migrate plan`;",
        "# edit it, then run `sluice migrate artifacts --plan <this file> --out DIR`.",
        *(f"# {note}" for note in notes),
        "",
        f"format = {PLAN_FORMAT}",
        "",
        "[network]",
        f"weave_range = {_q(str(plan.weave_range))}          # IPALLOC_RANGE",
        f"weave_mtu = {plan.weave_mtu}                          # WEAVE_MTU",
        f"underlay_mtu = {plan.underlay_mtu}",
        "# Never Cilium's default 10.0.0.0/8: it contains Weave's 10.32.0.0/12.",
        f"cilium_cidr = {_q(str(plan.cilium_cidr))}",
        f"cilium_node_mask = {plan.cilium_node_mask}",
        f"# Pod MTU on Cilium: <= weave_mtu and <= underlay_mtu - {VXLAN_OVERHEAD} (VXLAN).",
        f"pod_mtu = {plan.pod_mtu}",
        "# The migration guide's VXLAN port: not Weave's 6784, not Cilium's default 8472.",
        f"tunnel_port = {plan.tunnel_port}",
        "# Destinations Cilium does not masquerade to: must hold the Weave range and the pool.",
        f"native_routing_cidr = {_q(str(plan.native_routing_cidr))}",
        f"service_cidrs = {_list(plan.service_cidrs)}",
        f"node_cidrs = {_list(plan.node_cidrs)}",
        "",
        "[helm]",
        f"release = {_q(plan.helm.release)}",
        f"namespace = {_q(plan.helm.namespace)}",
        f"chart = {_q(plan.helm.chart)}",
        f"version = {_q(plan.helm.version)}",
        "",
        "# Migration order: workers first, control-plane nodes last.",
    ]
    for node in plan.nodes:
        lines += ["[[node]]", f"name = {_q(node.name)}", f"role = {_q(node.role)}", ""]
    lines += [
        "# Commands sluice runs for steps kubectl cannot do; \"{node}\" is replaced.",
        "[hooks]",
    ]
    lines += [f"{name} = {_list(argv)}" for name, argv in plan.hooks.items()]
    return "\n".join(lines) + "\n"
