"""Choosing the migration plan from an S0 inventory (pure).

The choices and why:

* **Cilium pool**: the first candidate that overlaps none of the Weave range, the service CIDRs,
  the node podCIDRs and node addresses/CIDRs, *and* whose smallest common supernet with the Weave
  range (the masquerade exclusion, see below) overlaps no service or node CIDR. Cilium's default
  10.0.0.0/8 is never a candidate: it contains Weave's 10.32.0.0/12. A pinned pool is checked
  with the same rules and refused with the reason.
* **Masquerade exclusion**: ``ipv4NativeRoutingCIDR`` (Cilium hands traffic to that range to the
  Linux stack without SNAT) set to the smallest supernet of the Weave range and the pool, so
  Cilium pods reach Weave pods with their own address. We do not use Cilium's ``ipMasqAgent``:
  it is BPF masquerading, which needs BPF NodePort (kube-proxy replacement), a second big change
  in the middle of a CNI migration.
* **MTU**: pods on Cilium get ``min(WEAVE_MTU, underlay - 50)`` so no packet that fits one
  overlay is too big for the other (the MTU black holes of real migrations).
* **Tunnel port** 8473, the migration guide's: distinct from Weave's 6784 and Cilium's 8472.
* **Order**: workers first (by name), control-plane nodes last.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from config.migration_plan import (
    MIGRATION_TUNNEL_PORT,
    VXLAN_OVERHEAD,
    HelmRelease,
    MigrationPlan,
    PlanNode,
)
from gateway.migration.inventory import Inventory, Network

DEFAULT_CANDIDATES = (
    "10.48.0.0/16",
    "10.49.0.0/16",
    "10.56.0.0/16",
    "10.64.0.0/16",
    "10.100.0.0/16",
    "10.128.0.0/16",
    "10.200.0.0/16",
    "172.20.0.0/16",
    "172.30.0.0/16",
    "192.168.128.0/17",
)
DEFAULT_UNDERLAY_MTU = 1500
DEFAULT_NODE_MASK = 24
DEFAULT_HOOKS: Mapping[str, tuple[str, ...]] = {
    "reboot_node": ("ssh", "{node}", "sudo", "systemctl", "reboot"),
    "remove_cilium_cni_conf": (
        "ssh", "{node}", "sudo", "rm", "-f", "/etc/cni/net.d/05-cilium.conflist",
    ),
}


class PlanError(ValueError):
    """No acceptable plan: the message says which rule failed and for which value."""


@dataclass(frozen=True, slots=True)
class _Taken:
    label: str
    network: Network


def _taken(inv: Inventory) -> list[_Taken]:
    taken = [_Taken("the Weave range", inv.weave.ipalloc_range)]
    taken += [_Taken("service CIDR", n) for n in inv.service_cidrs]
    taken += [_Taken("node CIDR", n) for n in inv.node_cidrs]
    for node in inv.nodes:
        taken += [_Taken(f"podCIDR of {node.name}", c) for c in node.pod_cidrs]
        taken += [
            _Taken(f"address of {node.name}", ipaddress.ip_network(a)) for _, a in node.addresses
        ]
    return taken


def native_routing_cidr(
    weave: ipaddress.IPv4Network, pool: ipaddress.IPv4Network
) -> ipaddress.IPv4Network:
    """The smallest network holding both ``weave`` and ``pool``."""
    net = weave if weave.prefixlen <= pool.prefixlen else pool
    while not (net.supernet_of(weave) and net.supernet_of(pool)):
        net = net.supernet()
    return net


def why_not(pool: ipaddress.IPv4Network, inv: Inventory, *, node_mask: int) -> str | None:
    """Why ``pool`` cannot be the Cilium pool for ``inv``, or None when it can."""
    for t in _taken(inv):
        if t.network.version == 4 and pool.overlaps(t.network):
            return f"{pool} overlaps {t.label} {t.network}"
    if node_mask <= pool.prefixlen or 2 ** (node_mask - pool.prefixlen) < len(inv.nodes):
        return f"{pool} has too few /{node_mask} blocks for {len(inv.nodes)} nodes"
    exclusion = native_routing_cidr(inv.weave.ipalloc_range, pool)
    for t in _taken(inv):
        if t.label != "the Weave range" and t.network.version == 4:
            if t.label.startswith("podCIDR"):
                continue  # unused by both CNIs' pools; overlap is already reported by S0
            if exclusion.overlaps(t.network):
                return (
                    f"{pool} would need the masquerade exclusion {exclusion}, which overlaps "
                    f"{t.label} {t.network}"
                )
    return None


def choose_cilium_cidr(
    inv: Inventory,
    *,
    pinned: str | None = None,
    candidates: Sequence[str] = DEFAULT_CANDIDATES,
    node_mask: int = DEFAULT_NODE_MASK,
) -> ipaddress.IPv4Network:
    """The Cilium cluster-pool CIDR.

    Raises:
        PlanError: the pinned CIDR is not an IPv4 CIDR or breaks a rule (the message says which),
            or no candidate is free.
    """
    if pinned is not None:
        try:
            pool = ipaddress.IPv4Network(pinned, strict=True)
        except ValueError as exc:
            raise PlanError(f"--cilium-cidr: expected an IPv4 CIDR: {exc}") from None
        reason = why_not(pool, inv, node_mask=node_mask)
        if reason is not None:
            raise PlanError(f"--cilium-cidr: {reason}")
        return pool
    refused = []
    for text in candidates:
        pool = ipaddress.IPv4Network(text)
        reason = why_not(pool, inv, node_mask=node_mask)
        if reason is None:
            return pool
        refused.append(reason)
    raise PlanError("no free Cilium pool among the candidates: " + "; ".join(refused))


def pod_mtu(weave_mtu: int, underlay_mtu: int) -> int:
    """Cilium pods' MTU: no larger than Weave's, and room for VXLAN on the underlay."""
    return min(weave_mtu, underlay_mtu - VXLAN_OVERHEAD)


def node_order(inv: Inventory) -> tuple[PlanNode, ...]:
    """Workers first, then control-plane nodes; by name within each group."""
    workers = sorted(n.name for n in inv.nodes if not n.control_plane)
    planes = sorted(n.name for n in inv.nodes if n.control_plane)
    return tuple(PlanNode(n, "worker") for n in workers) + tuple(
        PlanNode(n, "control-plane") for n in planes
    )


def build_plan(
    inv: Inventory,
    *,
    pinned_cidr: str | None = None,
    underlay_mtu: int = DEFAULT_UNDERLAY_MTU,
    helm: HelmRelease | None = None,
    hooks: Mapping[str, tuple[str, ...]] | None = None,
    node_mask: int = DEFAULT_NODE_MASK,
) -> MigrationPlan:
    """The plan for ``inv``.

    The Weave MTU is the lowest of ``WEAVE_MTU`` and every MTU a fast-datapath connection
    reports, so a path that already runs smaller is respected.

    Raises:
        PlanError: no acceptable pool (see :func:`choose_cilium_cidr`), or the underlay MTU
            leaves no room for VXLAN.
    """
    pool = choose_cilium_cidr(inv, pinned=pinned_cidr, node_mask=node_mask)
    observed = [c.mtu for r in inv.reports for c in r.connections if c.mtu]
    weave_mtu = min([inv.weave.mtu, *observed])
    mtu = pod_mtu(weave_mtu, underlay_mtu)
    if mtu < 576:
        raise PlanError(f"--underlay-mtu {underlay_mtu} leaves no room for VXLAN overhead")
    return MigrationPlan(
        weave_range=inv.weave.ipalloc_range,
        weave_mtu=weave_mtu,
        underlay_mtu=underlay_mtu,
        cilium_cidr=pool,
        cilium_node_mask=node_mask,
        pod_mtu=mtu,
        tunnel_port=MIGRATION_TUNNEL_PORT,
        native_routing_cidr=native_routing_cidr(inv.weave.ipalloc_range, pool),
        service_cidrs=inv.service_cidrs,
        node_cidrs=inv.node_cidrs,
        helm=helm or HelmRelease(),
        nodes=node_order(inv),
        hooks=dict(DEFAULT_HOOKS if hooks is None else hooks),
    )
