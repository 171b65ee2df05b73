"""From the TOML config and an identity snapshot to everything the gateway runs with.

Everything here is rebuilt, never mutated: on SVID/bundle rotation and on SIGHUP the daemon builds
a new :class:`~gateway.pipeline.GatewayState` (and TLS contexts) and swaps it in, so in-progress
envelopes finish with the snapshot they started with.

The gateway's own anchor is endorsed here with its current X.509-SVID (it holds the SVID key), for
the reserved scope ``sluice/transit`` and tier 0 only: the endorsement lets others verify its
transit stamps, and grants it no scope to originate envelopes in. The endorsement is re-made on
every SVID rotation (an endorsement never outlives the SVID that signed it) and written to the
configured path, from where operators distribute it to peers and auditors.
"""

from __future__ import annotations

import datetime as dt
import logging
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import trio

from config.gateway import GatewayConfig, NetworkKind
from config.policy import TierNames
from gateway.daemon.core import GatewaySettings, ListenerSpec, PeerAuthenticator
from gateway.migration.placement import load_overrides
from gateway.pipeline import RESERVED_TRANSIT_SCOPE as TRANSIT_SCOPE
from gateway.pipeline import FederationScopes, GatewayState
from gateway.policy.files import load_policy_store
from gateway.router import RouteEntry, Router, RouteTarget
from identity.anchors import AnchorKeyPair, load_private_key, write_file_atomic
from identity.bundle import BundleSet, TrustBundle, load_bundle_file
from identity.endorsement import endorse, verify_endorsement
from identity.registry import AnchorRegistry, RegistryBuilder, load_registry, load_revocations
from identity.sources import IdentitySnapshot
from identity.spiffe_id import TrustDomain
from identity.tls import check_peer, client_context, server_context

log = logging.getLogger("sluice.runtime")


@dataclass(frozen=True, slots=True)
class Built:
    """One consistent generation of runtime state."""

    state: GatewayState
    bundles: BundleSet
    registry: AnchorRegistry
    own_endorsement: bytes


def tier_names(cfg: GatewayConfig) -> TierNames:
    return TierNames(tuple((tier.name, tier.level) for tier in cfg.trust.tiers))


def load_bundles(
    cfg: GatewayConfig,
    snapshot: IdentitySnapshot,
    fetched: Mapping[TrustDomain, TrustBundle] | None = None,
) -> BundleSet:
    """The snapshot's bundles, plus configured bundle files, peers' bundle files and bundles
    fetched from peers' bundle endpoints."""
    bundles = snapshot.bundles
    for bundle in (fetched or {}).values():
        if bundle.trust_domain not in bundles:
            bundles = bundles.with_bundle(bundle)
    for entry in cfg.trust.bundles:
        if entry.trust_domain not in bundles:
            bundles = bundles.with_bundle(load_bundle_file(entry.path, entry.trust_domain))
    for peer in cfg.peers:
        if peer.bundle is not None and peer.trust_domain not in bundles:
            bundles = bundles.with_bundle(load_bundle_file(peer.bundle, peer.trust_domain))
    return bundles


def endorse_own_anchor(anchor: AnchorKeyPair, snapshot: IdentitySnapshot, now: int) -> bytes:
    """Endorse the gateway's anchor with its current SVID (see the module docstring)."""
    leaf_end = int(snapshot.svid.leaf.not_valid_after_utc.timestamp())
    leaf_start = int(snapshot.svid.leaf.not_valid_before_utc.timestamp())
    return endorse(
        anchor.public_key,
        snapshot.svid,
        (TRANSIT_SCOPE,),
        0,
        max(leaf_start, now - 60),
        leaf_end,
    )


def build_registry(
    cfg: GatewayConfig, bundles: BundleSet, own_endorsement: bytes, now: int
) -> AnchorRegistry:
    """Anchors from the anchors directory, listed endorsement files, and our own."""
    revocations_file = (
        cfg.trust.anchors_dir / "revoked.toml" if cfg.trust.anchors_dir is not None else None
    )
    if cfg.trust.anchors_dir is not None and cfg.trust.anchors_dir.is_dir():
        report = load_registry(
            cfg.trust.anchors_dir,
            bundles,
            now=now,
            revocation_file=revocations_file
            if revocations_file and revocations_file.exists()
            else None,
        )
        for rejected in report.rejected:
            log.warning("anchor endorsement skipped: %s: %s", rejected.path, rejected.error)
        builder = RegistryBuilder(report.registry)
    else:
        builder = RegistryBuilder()
    for path in cfg.trust.endorsements:
        builder.add(Path(path).read_bytes(), bundles, now=now)
    builder.add_verified(verify_endorsement(own_endorsement, bundles, now=now), now=now)
    if revocations_file is not None and revocations_file.exists():
        builder.set_revocations(load_revocations(revocations_file))
    return builder.build()


def build_router(cfg: GatewayConfig) -> Router:
    peers = {peer.name: peer for peer in cfg.peers}
    entries = []
    for route in cfg.routes:
        if route.peer is not None:
            peer = peers[route.peer]
            target = RouteTarget(
                route.peer, "peer", peer.address.host, peer.address.port, peer.spiffe_id
            )
        else:
            assert route.network is not None and route.address is not None  # the loader checks
            target = RouteTarget(route.network, "network", route.address.host, route.address.port)
        entries.append(RouteEntry(target, scope=route.scope, workload=route.workload))
    router = Router.build(entries)
    if cfg.migration is not None:  # workloads follow their node's placement in the journal
        router = router.with_overrides(load_overrides(cfg.migration))
    return router


def build(
    cfg: GatewayConfig,
    snapshot: IdentitySnapshot,
    anchor: AnchorKeyPair,
    now: int,
    fetched: Mapping[TrustDomain, TrustBundle] | None = None,
    own_endorsement: bytes | None = None,
) -> Built:
    """Build one generation of state.

    Raises:
        ConfigError, InvalidEndorsement, InvalidBundle, OSError, LineageError: the config's files
            are not usable; the caller keeps the previous generation.
    """
    bundles = load_bundles(cfg, snapshot, fetched)
    # Re-endorsing makes new bytes each time (fresh signature and window), so callers pass the
    # endorsement of the current identity back in and it is only re-made when the SVID changes.
    own = own_endorsement or endorse_own_anchor(anchor, snapshot, now)
    registry = build_registry(cfg, bundles, own, now)
    policies = load_policy_store([scope.policy for scope in cfg.scopes], tiers=tier_names(cfg))
    state = GatewayState(
        gateway_id=cfg.gateway.spiffe_id,
        signing_key=anchor.signing_key,
        resolver=registry,
        policies=policies,
        router=build_router(cfg),
        peers={p.name: FederationScopes(p.export_scopes, p.import_scopes) for p in cfg.peers},
    )
    return Built(state, bundles, registry, own)


def write_own_endorsement(cfg: GatewayConfig, data: bytes) -> None:
    write_file_atomic(cfg.anchor.endorsement, data, overwrite=True)


def anchors_fingerprint(cfg: GatewayConfig) -> tuple[tuple[str, int, int], ...]:
    """Names, mtimes and sizes of the endorsement and revocation files this gateway reads, so a
    watcher notices a peer's new endorsement; the gateway's own endorsement is left out (the
    gateway writes it itself)."""
    paths = [Path(p) for p in cfg.trust.endorsements]
    directory = cfg.trust.anchors_dir
    if directory is not None and directory.is_dir():
        paths += sorted(directory.glob("*.endorsement"))
        paths.append(directory / "revoked.toml")
    own = cfg.anchor.endorsement.resolve()
    out = []
    for path in paths:
        try:
            if path.resolve() == own:
                continue
            info = path.stat()
        except OSError:
            continue
        out.append((str(path), info.st_mtime_ns, info.st_size))
    return tuple(out)


class TlsMaterial:
    """TLS contexts for the current identity, replaced on rotation."""

    def __init__(self, cfg: GatewayConfig) -> None:
        self._cfg = cfg
        self._server: ssl.SSLContext | None = None
        self._clients: dict[str, ssl.SSLContext] = {}
        self._bundles = BundleSet()

    def update(self, snapshot: IdentitySnapshot, bundles: BundleSet) -> None:
        peer_domains = {peer.trust_domain for peer in self._cfg.peers}
        peer_bundles = [bundles.for_trust_domain(td) for td in peer_domains if td in bundles]
        self._server = server_context(snapshot.svid, peer_bundles) if peer_bundles else None
        self._clients = {
            peer.name: client_context(snapshot.svid, bundles.for_trust_domain(peer.trust_domain))
            for peer in self._cfg.peers
            if peer.trust_domain in bundles
        }
        self._bundles = bundles

    def server(self) -> ssl.SSLContext:
        if self._server is None:
            raise ValueError("no federation peer bundles: cannot accept TLS connections")
        return self._server

    def authenticate(self, tls: trio.SSLStream[trio.SocketStream]) -> str:
        """Which configured peer is on the other end; raises ValueError when none is."""
        now = dt.datetime.now(dt.UTC)
        errors = []
        for peer in self._cfg.peers:
            try:
                check_peer(tls, peer.spiffe_id, self._bundles, now=now)
            except ValueError as exc:
                errors.append(f"{peer.name}: {exc}")
                continue
            return peer.name
        raise ValueError("TLS peer is no configured federation peer (" + "; ".join(errors) + ")")

    async def connect(self, target: RouteTarget) -> trio.abc.Stream:
        """Connector for links: plain TCP to networks, mutual TLS to peers (identity checked)."""
        stream = await trio.open_tcp_stream(target.host, target.port)
        if target.kind != "peer":
            return stream
        context = self._clients.get(target.name)
        if context is None or target.peer_id is None:
            await stream.aclose()
            raise OSError(f"no TLS material for peer {target.name}")
        tls = trio.SSLStream(stream, context, server_hostname=None)
        try:
            await tls.do_handshake()
            check_peer(tls, target.peer_id, self._bundles, now=dt.datetime.now(dt.UTC))
        except (ValueError, trio.BrokenResourceError) as exc:
            await trio.aclose_forcefully(tls)
            raise OSError(f"peer {target.name} failed authentication: {exc}") from exc
        return tls


def settings_for(cfg: GatewayConfig, tls: TlsMaterial) -> GatewaySettings:
    listeners = []
    for network in cfg.networks:
        context_factory: Callable[[], ssl.SSLContext] | None = None
        authenticate: PeerAuthenticator | None = None
        if network.tls or network.kind is NetworkKind.FEDERATION:
            context_factory = tls.server
            authenticate = tls.authenticate
        listeners.append(
            ListenerSpec(
                network.name,
                network.listen.host,
                network.listen.port,
                ssl_context=context_factory,
                authenticate=authenticate,
            )
        )
    limits = cfg.limits
    return GatewaySettings(
        name=str(cfg.gateway.spiffe_id),
        listeners=tuple(listeners),
        http=(cfg.metrics_listen.host, cfg.metrics_listen.port),
        handshake_timeout=limits.handshake_timeout_seconds,
        idle_timeout=limits.idle_timeout_seconds,
        max_connections=limits.max_connections,
        max_in_flight=limits.max_in_flight,
        max_frame_bytes=limits.max_frame_bytes,
        replay_capacity=limits.replay_window_capacity,
        keep_envelopes=cfg.audit.keep_envelopes,
    )


def load_anchor(cfg: GatewayConfig) -> AnchorKeyPair:
    return load_private_key(cfg.anchor.private_key)


__all__ = [
    "TRANSIT_SCOPE",
    "Built",
    "TlsMaterial",
    "TrustDomain",
    "build",
    "load_anchor",
    "settings_for",
    "write_own_endorsement",
]
