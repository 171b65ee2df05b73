"""Theory of operation: the gateway's router follows the migration journal.

The journal (``gateway.migration.journal``) records, per node, where its workloads are: ``weave``,
``cutover`` (drained and moving) or ``cilium``. The gateway config's ``[migration]`` table lists
the workloads to follow, each with its node and its receiver's address on both sides. From these
two, :func:`overrides` (pure) computes per-workload route overrides
(:meth:`gateway.router.Router.with_overrides`):

* node on ``weave`` (or not in the journal yet): the Weave network, at the Weave address;
* node on ``cilium``: the Cilium network, at the Cilium address;
* node in ``cutover``: a *hold* target (kind :data:`gateway.router.HOLD`). The delivery layer never
  connects to a hold target: every envelope for it is spooled (fsynced, so it survives a gateway
  crash), and released to whatever the route is once the placement changes. The hold target is
  named after the network the node is moving to (Cilium when advancing, Weave when rolling
  back), so the transit stamp signed at decision time names the side the envelope is delivered on.

:func:`load_overrides` reads the journal (without locking it: ``sluice migrate`` holds the lock)
and :func:`journal_stamp` is what the daemon polls to notice a change.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from config.gateway import HostPort, Migration, MigrationWorkload
from gateway.migration.journal import (
    Direction,
    JournalError,
    JournalState,
    Placement,
    UnitStatus,
    read_state,
)
from gateway.router import HOLD, RouteTarget
from identity.spiffe_id import SpiffeID


class Side(enum.StrEnum):
    WEAVE = "weave"
    CILIUM = "cilium"


@dataclass(frozen=True, slots=True)
class NodeState:
    """Where a node's workloads are, and (in cutover) which side they are moving to."""

    placement: Placement
    moving_to: Side = Side.CILIUM


def node_states(state: JournalState) -> dict[str, NodeState]:
    """Each node the journal has moved (nodes absent are on Weave).

    A node in cutover moves to Cilium unless its S4 unit is being rolled back.
    """
    out: dict[str, NodeState] = {}
    for node, placement in state.placement.items():
        unit = state.unit(f"S4:{node}")
        rolling_back = (
            unit.status is UnitStatus.IN_PROGRESS and unit.direction is Direction.ROLLBACK
        )
        out[node] = NodeState(placement, Side.WEAVE if rolling_back else Side.CILIUM)
    return out


def _target(network: str, address: HostPort, kind: str = "network") -> RouteTarget:
    return RouteTarget(network, kind, address.host, address.port)


def overrides(
    nodes: Mapping[str, NodeState],
    workloads: Sequence[MigrationWorkload],
    *,
    weave_network: str,
    cilium_network: str,
) -> dict[SpiffeID, RouteTarget]:
    """The route override of every listed workload for the nodes' current placement.

    Args:
        nodes: from :func:`node_states`; a node absent is on Weave.
        workloads: the ``[migration]`` workload map.
        weave_network, cilium_network: the gateway's network names for the two sides.

    Returns:
        SPIFFE ID -> route target (a network target, or a hold target during cutover).
    """
    out: dict[SpiffeID, RouteTarget] = {}
    for workload in workloads:
        state = nodes.get(workload.node, NodeState(Placement.WEAVE))
        match state.placement:
            case Placement.WEAVE:
                out[workload.spiffe_id] = _target(weave_network, workload.weave)
            case Placement.CILIUM:
                out[workload.spiffe_id] = _target(cilium_network, workload.cilium)
            case Placement.CUTOVER:
                if state.moving_to is Side.CILIUM:
                    out[workload.spiffe_id] = _target(cilium_network, workload.cilium, HOLD)
                else:
                    out[workload.spiffe_id] = _target(weave_network, workload.weave, HOLD)
    return out


def read_nodes(migration: Migration) -> dict[str, NodeState]:
    """The journal's node states; every node on Weave while the journal does not exist yet.

    Raises:
        ValueError: the journal is damaged (the message names the file and line).
        OSError: it exists and cannot be read.
    """
    if not migration.journal.exists():
        return {}
    try:
        return node_states(read_state(migration.journal))
    except JournalError as exc:
        raise ValueError(f"migration journal {migration.journal}: {exc}") from None


def load_overrides(migration: Migration) -> dict[SpiffeID, RouteTarget]:
    """:func:`overrides` for the journal's current state (see :func:`read_nodes` for errors)."""
    return overrides(
        read_nodes(migration),
        migration.workloads,
        weave_network=migration.weave_network,
        cilium_network=migration.cilium_network,
    )


def journal_stamp(migration: Migration | None) -> tuple[int, int] | None:
    """``(mtime_ns, size)`` of the journal, None when there is none: polled for changes."""
    if migration is None:
        return None
    try:
        st = os.stat(migration.journal)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)
