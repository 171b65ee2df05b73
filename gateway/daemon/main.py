"""``sluice run``: the gateway daemon's top level (trio).

Start-up order: config (every problem reported, nothing started on an invalid file) -> identity
(SVID source ready) -> anchor and its endorsement -> policies, anchors, routes -> audit log (its
chain resumed, and the replay window rebuilt from its recent forwards, so a restart does not
reopen replay) -> spool (recovered) -> listeners. Then three background duties: identity rotation
(rebuild and swap state and TLS material), SIGHUP (reload the config file: a bad file is logged
and the old generation stays), SIGTERM/SIGINT (drain, then exit 0).

Listener addresses, audit and spool paths are fixed at start-up; changing them needs a restart
(a reload that changes them logs that it ignored them).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import trio

from config.errors import ConfigError
from config.gateway import (
    FsyncPolicy,
    GatewayConfig,
    IdentitySource,
    LogFormat,
    Peer,
    load_gateway_config,
)
from gateway.audit.record import Decision as AuditDecision
from gateway.audit.verify import read_entries
from gateway.audit.writer import AuditLog
from gateway.daemon.audit_sink import AuditSink
from gateway.daemon.core import Gateway
from gateway.daemon.runtime import (
    TlsMaterial,
    anchors_fingerprint,
    build,
    load_anchor,
    settings_for,
    write_own_endorsement,
)
from gateway.envelope import limits as envelope_limits
from gateway.metrics import GatewayMetrics
from gateway.migration.placement import journal_stamp
from gateway.replay import ReplayWindow
from gateway.spool import Spool
from identity.anchors import AnchorKeyPair
from identity.bundle import TrustBundle
from identity.bundle_endpoint import (
    MIN_REFRESH,
    BundleFetchError,
    fetch_bundle,
    refresh_interval,
    web_context,
)
from identity.sources import FileSource, SourceStatus, SvidSource, WorkloadApiSource, watch
from identity.spiffe_id import TrustDomain

log = logging.getLogger("sluice.daemon")

IDENTITY_WAIT = 30.0
MIGRATION_POLL = 1.0


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (structured logs)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, separators=(",", ":"))


def configure_logging(cfg: GatewayConfig) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if cfg.log.format is LogFormat.JSON:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("sluice")
    root.handlers[:] = [handler]
    root.setLevel(cfg.log.level.value.upper())
    root.propagate = False


def identity_source(cfg: GatewayConfig) -> SvidSource:
    ident = cfg.identity
    if ident.source is IdentitySource.WORKLOAD_API:
        assert ident.socket is not None
        return WorkloadApiSource(ident.socket.removeprefix("unix://"))
    assert ident.cert_chain and ident.private_key and ident.bundle
    return FileSource(ident.cert_chain, ident.private_key, {ident.trust_domain: ident.bundle})


def restore_replay_window(
    path: Path, replay: ReplayWindow, now: int, recovered: set[bytes] | None = None
) -> int:
    """Re-record the ids this gateway forwarded within the longest envelope lifetime (and add
    them to ``recovered``: their hand-off to the next hop is not known)."""
    if not path.exists():
        return 0
    horizon = now - envelope_limits.MAX_LIFETIME - envelope_limits.CLOCK_SKEW
    restored = 0
    for entry in read_entries(path):
        if entry.ts_ms // 1000 < horizon or entry.record.decision is not AuditDecision.ALLOW:
            continue
        if not entry.record.envelope_id:
            continue
        replay.record(
            entry.record.envelope_id, entry.ts_ms // 1000 + envelope_limits.MAX_LIFETIME, now
        )
        if recovered is not None:
            recovered.add(entry.record.envelope_id)
        restored += 1
    return restored


async def run_gateway(
    config_path: Path,
    *,
    clock: Callable[[], float] = time.time,
    task_status: trio.TaskStatus[Gateway] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the gateway described by ``config_path`` until SIGTERM/SIGINT or cancellation.

    Raises:
        ConfigError: the config (or a file it names) is invalid at start-up.
        IdentityUnavailable: no SVID within IDENTITY_WAIT seconds.
    """
    cfg = load_gateway_config(config_path, check_files=False)
    configure_logging(cfg)
    source = identity_source(cfg)
    source.start()
    try:
        snapshot = await trio.to_thread.run_sync(source.wait_ready, IDENTITY_WAIT)
        anchor = load_anchor(cfg)
        fetched: dict[TrustDomain, TrustBundle] = {}
        for peer in cfg.peers:
            await _fetch_peer_bundle(peer, fetched)
        now = int(clock())
        built = build(cfg, snapshot, anchor, now, fetched)
        write_own_endorsement(cfg, built.own_endorsement)
        tls = TlsMaterial(cfg)
        tls.update(snapshot, built.bundles)
        audit_log = AuditLog.open(
            cfg.audit.path,
            gateway_id=str(cfg.gateway.spiffe_id),
            fsync="always" if cfg.audit.fsync is FsyncPolicy.ALWAYS else "never",
        )
        metrics = GatewayMetrics()
        with audit_log, Spool(cfg.spool.dir, cfg.spool.max_bytes) as spool:
            gateway = Gateway(
                settings_for(cfg, tls),
                built.state,
                audit=AuditSink(
                    audit_log,
                    interval=None
                    if cfg.audit.fsync is FsyncPolicy.ALWAYS
                    else cfg.audit.fsync_interval_ms / 1000,
                ),
                spool=spool,
                connector=tls.connect,
                metrics=metrics,
                clock=clock,
            )
            restored = restore_replay_window(cfg.audit.path, gateway.replay, now, gateway.recovered)
            log.info("replay window restored with %d recent envelope ids", restored)
            async with trio.open_nursery() as nursery:
                await nursery.start(gateway.serve)
                rebuild = _Rebuilder(
                    cfg,
                    anchor,
                    source,
                    gateway,
                    tls,
                    clock,
                    fetched,
                    (snapshot.version, built.own_endorsement),
                )
                nursery.start_soon(_follow_identity, source, rebuild, gateway)
                nursery.start_soon(_refresh_bundles, rebuild)
                nursery.start_soon(_follow_files, rebuild)
                nursery.start_soon(_signals, config_path, rebuild, gateway, nursery.cancel_scope)
                task_status.started(gateway)
    finally:
        source.close()


class _Rebuilder:
    """Rebuilds and swaps the gateway's state from the current config, identity and bundles."""

    def __init__(
        self,
        cfg: GatewayConfig,
        anchor: AnchorKeyPair,
        source: SvidSource,
        gateway: Gateway,
        tls: TlsMaterial,
        clock: Callable[[], float],
        fetched: dict[TrustDomain, TrustBundle],
        endorsed: tuple[int, bytes] | None = None,
    ) -> None:
        self.cfg = cfg
        self.anchor = anchor
        self.source = source
        self.gateway = gateway
        self.tls = tls
        self.clock = clock
        self.fetched = fetched
        self._endorsed = endorsed  # (identity version, our endorsement of it)

    def __call__(self) -> None:
        """Raises ValueError/OSError (ConfigError, InvalidBundle, ...): nothing was swapped."""
        snapshot = self.source.current()
        if snapshot is None:
            return
        own = (
            self._endorsed[1] if self._endorsed and self._endorsed[0] == snapshot.version else None
        )
        built = build(self.cfg, snapshot, self.anchor, int(self.clock()), self.fetched, own)
        if own is None:
            write_own_endorsement(self.cfg, built.own_endorsement)
            self._endorsed = (snapshot.version, built.own_endorsement)
        self.tls.update(snapshot, built.bundles)
        self.gateway.update_state(built.state)


async def _fetch_peer_bundle(peer: Peer, fetched: dict[TrustDomain, TrustBundle]) -> bool:
    """Fetch one peer's bundle from its endpoint into ``fetched``; True when it changed."""
    if peer.bundle_endpoint is None:
        return False
    try:
        bundle = await fetch_bundle(
            peer.bundle_endpoint, peer.trust_domain, context=web_context(peer.bundle_endpoint_ca)
        )
    except BundleFetchError as exc:
        log.error("bundle endpoint of peer %s: %s (keeping the last good bundle)", peer.name, exc)
        return False
    changed = fetched.get(peer.trust_domain) != bundle
    fetched[peer.trust_domain] = bundle
    return changed


async def _refresh_bundles(rebuild: _Rebuilder) -> None:
    """Refresh every peer's endpoint bundle at its refresh hint; rebuild when one changed."""
    while True:
        peers = [p for p in rebuild.cfg.peers if p.bundle_endpoint is not None]
        hints = [
            refresh_interval(rebuild.fetched[p.trust_domain])
            for p in peers
            if p.trust_domain in rebuild.fetched
        ]
        await trio.sleep(min(hints, default=MIN_REFRESH))
        changed = False
        for peer in peers:
            changed = await _fetch_peer_bundle(peer, rebuild.fetched) or changed
        if changed:
            try:
                rebuild()
            except (ValueError, OSError) as exc:
                log.error("refreshed peer bundle not applied: %s", exc)
                continue
            log.info("peer bundles refreshed from their endpoints")


async def _follow_files(rebuild: _Rebuilder) -> None:
    """Rebuild when the migration journal or the anchors' endorsement files change (polled every
    second): a node's cutover, or a peer's fresh endorsement after its SVID rotated, takes effect
    without a SIGHUP."""

    def fingerprint() -> object:
        return (journal_stamp(rebuild.cfg.migration), anchors_fingerprint(rebuild.cfg))

    seen = fingerprint()
    while True:
        await trio.sleep(MIGRATION_POLL)
        current = fingerprint()
        if current == seen:
            continue
        try:
            rebuild()
        except (ValueError, OSError) as exc:
            log.error("changed migration state or anchors not applied: %s", exc)
            continue  # retried at the next change
        finally:
            seen = current
        log.info("migration journal or anchors changed: state rebuilt")


async def _follow_identity(source: SvidSource, rebuild: _Rebuilder, gateway: Gateway) -> None:
    send, receive = trio.open_memory_channel[SourceStatus](0)
    async with trio.open_nursery() as nursery:
        first = await nursery.start(watch, source, send)
        version = first.snapshot.version if first.snapshot else 0
        async for status in receive:
            if status.error is not None:
                log.warning("identity source: %s", status.error)
            if status.snapshot is None or status.snapshot.version == version:
                continue
            version = status.snapshot.version
            try:
                rebuild()
            except (ValueError, OSError) as exc:
                log.error("identity rotation not applied: %s", exc)
                continue
            gateway.metrics.identity_rotations.inc()
            log.info("identity rotated to version %d", version)


async def _signals(
    config_path: Path, rebuild: _Rebuilder, gateway: Gateway, scope: trio.CancelScope
) -> None:
    with trio.open_signal_receiver(signal.SIGHUP, signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                previous = rebuild.cfg
                try:
                    rebuild.cfg = load_gateway_config(config_path)
                    rebuild()
                except (ConfigError, ValueError, OSError) as exc:
                    rebuild.cfg = previous
                    gateway.metrics.config_reloads.labels(result="error").inc()
                    log.error(
                        "reload refused, keeping the running config: %s",
                        str(exc).replace("\n", "; "),
                    )
                    continue
                gateway.metrics.config_reloads.labels(result="ok").inc()
                log.info("configuration reloaded from %s", config_path)
            else:
                log.info("signal %d: draining", signum)
                await gateway.drain()
                scope.cancel()
                return
