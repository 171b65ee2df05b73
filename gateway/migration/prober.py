"""Governed probes through the gateway: the ``prober`` of :class:`~gateway.migration.executor.
SubprocessExecutor` (and of :class:`ProbingExecutor`, which gives any executor real probes).

Theory of operation: for each probe pair of the probe file (``config.migration_probes``) a fresh
envelope is sealed with the *source* workload's own governance anchor (origin scope = its scope,
destination scope and ID = the destination workload's, lineage = the origin scope's current
revision), and sent with :class:`gateway.shim.Sender` to the gateway's listener on the side the
source's node is on now (from the journal's placement). The gateway's receipt is the decision:
ACK -> ``allow`` (delivered, or held in the spool during a cutover), NACK -> ``deny:<reason>``, no
final receipt -> ``error:<reason>``. The runner compares these with the baseline taken before S2,
so any change of governance during the migration blocks ``advance`` and is shown.

The health probe completes a framed handshake with both listeners.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import trio

from config.migration_probes import ProbeConfig, ProbeWorkload
from gateway.daemon.links import Link
from gateway.envelope.model import RoutingConstraint
from gateway.envelope.recipe import seal
from gateway.framing import Hello, Role
from gateway.migration.actions import Action
from gateway.migration.executor import (
    Executor,
    ProbeKind,
    ProbeRequest,
    ProbeResult,
)
from gateway.migration.journal import Placement
from gateway.policy.files import load_policy_store
from gateway.router import RouteTarget
from gateway.shim import Sender
from identity.anchors import AnchorKeyPair, load_private_key

PROBE_LIFETIME = 600  # seconds: long enough to wait out a node's cutover in the spool
PROBE_NAME = "sluice-migrate-prober"


def probe_name(source: ProbeWorkload, destination: ProbeWorkload) -> str:
    """``frontend@worker-1->ledger@worker-2``."""
    return f"{source.name}@{source.node}->{destination.name}@{destination.node}"


@dataclass(frozen=True, slots=True)
class _Keys:
    anchors: Mapping[str, AnchorKeyPair]
    lineage: Mapping[str, bytes]


class GatewayProber:
    """Sends governed probes through the gateway; call it with a :class:`ProbeRequest`.

    Args:
        config: the probe file.
        placement: the journal's node placement now (``Journal.placement``).
        clock: unix seconds, for the envelopes' validity.

    Raises (on construction):
        OSError, ValueError: an anchor key or policy file cannot be read.
    """

    def __init__(
        self,
        config: ProbeConfig,
        placement: Callable[[], Mapping[str, Placement]],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._placement = placement
        self._clock = clock
        store = load_policy_store(config.policies)
        lineage = {}
        for workload in config.workloads:
            chain = store.chain(workload.scope)
            if not chain:
                raise ValueError(f"probe workload {workload.name}: no policy for scope "
                                 f"{workload.scope!r} among [envelope] policies")
            lineage[workload.scope] = chain[-1].digest
        self._keys = _Keys(
            {w.name: load_private_key(w.anchor_key) for w in config.workloads}, lineage
        )

    def __call__(self, request: ProbeRequest) -> ProbeResult:
        if request.kind is ProbeKind.GATEWAY_HEALTH:
            return trio.run(self._health)
        return trio.run(self._decisions, request)

    def _listener(self, workload: ProbeWorkload) -> tuple[str, int]:
        on_cilium = self._placement().get(workload.node) is Placement.CILIUM
        return self._config.cilium if on_cilium else self._config.weave

    async def _health(self) -> ProbeResult:
        async def check(side: str, address: tuple[str, int], out: dict[str, str]) -> None:
            link = Link(
                RouteTarget("gateway", "network", *address), _tcp, Hello(Role.SHIM, PROBE_NAME)
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(link.run)
                with trio.move_on_after(self._config.deadline_seconds):
                    await link.wait_up()
                out[side] = "up" if link.up else f"down ({link.last_error or 'no answer'})"
                nursery.cancel_scope.cancel()

        found: dict[str, str] = {}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(check, "weave", self._config.weave, found)
            nursery.start_soon(check, "cilium", self._config.cilium, found)
        detail = "; ".join(
            f"{side} listener {host}:{port} {found[side]}"
            for side, (host, port) in (("weave", self._config.weave),
                                       ("cilium", self._config.cilium))
        )
        return ProbeResult(all(v == "up" for v in found.values()), detail)

    def envelope(self, source: ProbeWorkload, destination: ProbeWorkload, tag: str) -> bytes:
        """A fresh probe envelope from ``source`` to ``destination`` (payload names ``tag``)."""
        now = int(self._clock())
        cfg = self._config
        return seal(
            issuer=source.spiffe_id,
            origin_scope=source.scope,
            destination_scope=destination.scope,
            destination_id=destination.spiffe_id,
            tier=cfg.tier,
            lineage=self._keys.lineage[source.scope],
            routing=RoutingConstraint(cfg.transit_domains, (), cfg.max_hops),
            issued_at=now - 1,
            expires_at=now + PROBE_LIFETIME,
            payload=f"sluice probe {tag} {probe_name(source, destination)} "
            f"{secrets.token_hex(4)}".encode(),
            signing_key=self._keys.anchors[source.name].signing_key,
        )

    async def _decisions(self, request: ProbeRequest) -> ProbeResult:
        cfg = self._config
        tag = f"{request.stage}:{request.node or '-'}"
        senders: dict[tuple[str, int], Sender] = {}
        decisions: dict[str, str] = {}

        async def probe(source: ProbeWorkload, destination: ProbeWorkload) -> None:
            sender = senders[self._listener(source)]
            result = await sender.send(
                self.envelope(source, destination, tag), deadline=cfg.deadline_seconds
            )
            if result.delivered:
                decision = "allow"
            elif result.attempts == 0 or result.detail == "deadline passed":
                decision = f"error:{(result.reason.value if result.reason else 'unavailable')}"
            else:
                decision = f"deny:{result.reason.value if result.reason else 'unknown'}"
            decisions[probe_name(source, destination)] = decision

        async with trio.open_nursery() as nursery:
            for address in {cfg.weave, cfg.cilium}:
                senders[address] = Sender(*address, name=PROBE_NAME)
                await nursery.start(senders[address].run)
            async with trio.open_nursery() as probes:
                for source, destination in cfg.pairs:
                    probes.start_soon(probe, cfg.workload(source), cfg.workload(destination))
            nursery.cancel_scope.cancel()
        errors = sum(1 for d in decisions.values() if d.startswith("error:"))
        return ProbeResult(
            errors == 0, f"{len(decisions)} probes, {errors} without a final receipt", decisions
        )


async def _tcp(target: RouteTarget) -> trio.abc.Stream:
    return await trio.open_tcp_stream(target.host, target.port)


class ProbingExecutor:
    """Any :class:`Executor` (e.g. the simulated cluster) with probes sent through the gateway."""

    def __init__(self, inner: Executor, prober: Callable[[ProbeRequest], ProbeResult]) -> None:
        self._inner = inner
        self._prober = prober

    def perform(self, action: Action) -> None:
        self._inner.perform(action)

    def effect_present(self, action: Action, *, since_ms: int) -> bool | None:
        return self._inner.effect_present(action, since_ms=since_ms)

    def nodes_ready(self) -> Mapping[str, bool]:
        return self._inner.nodes_ready()

    def drain_blockers(self, node: str) -> tuple[str, ...]:
        return self._inner.drain_blockers(node)

    def pod_ips(self, node: str) -> tuple[str, ...]:
        return self._inner.pod_ips(node)

    def probe(self, request: ProbeRequest) -> ProbeResult:
        return self._prober(request)
