"""The gateway config's values: frozen dataclasses and enums (keys documented in docs/config.md)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from identity.spiffe_id import SpiffeID, TrustDomain


class IdentitySource(enum.StrEnum):
    WORKLOAD_API = "workload_api"
    FILES = "files"


class NetworkKind(enum.StrEnum):
    WEAVE = "weave"
    CILIUM = "cilium"
    LOCAL = "local"
    FEDERATION = "federation"


class FsyncPolicy(enum.StrEnum):
    ALWAYS = "always"  # fsync after every record, before the decision is acted on
    INTERVAL = "interval"  # group commit every fsync_interval_ms


class LogFormat(enum.StrEnum):
    JSON = "json"
    TEXT = "text"


class LogLevel(enum.StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class GatewaySection:
    name: str
    spiffe_id: SpiffeID


@dataclass(frozen=True, slots=True)
class Identity:
    """Where the gateway's X.509-SVID comes from. With ``workload_api`` only ``socket`` is set;
    with ``files`` only the three paths are."""

    trust_domain: TrustDomain
    source: IdentitySource
    socket: str | None
    cert_chain: Path | None
    private_key: Path | None
    bundle: Path | None


@dataclass(frozen=True, slots=True)
class Anchor:
    private_key: Path  # PKCS#8 PEM, Ed25519
    endorsement: Path


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    level: int


@dataclass(frozen=True, slots=True)
class TrustBundle:
    trust_domain: TrustDomain
    path: Path  # PEM certificates or a SPIFFE bundle (JWKS, .json)


@dataclass(frozen=True, slots=True)
class Trust:
    tiers: tuple[Tier, ...]
    bundles: tuple[TrustBundle, ...]
    anchors_dir: Path | None
    endorsements: tuple[Path, ...]
    clock_skew_seconds: int

    def tier_level(self, name: str) -> int | None:
        return next((t.level for t in self.tiers if t.name == name), None)


@dataclass(frozen=True, slots=True)
class Network:
    name: str
    kind: NetworkKind
    listen: HostPort
    tls: bool  # mutual TLS with the gateway's SVID; always true for federation listeners


@dataclass(frozen=True, slots=True)
class Scope:
    name: str
    policy: Path
    seal_key: Path | None  # X25519 public key file


@dataclass(frozen=True, slots=True)
class Peer:
    name: str
    address: HostPort
    spiffe_id: SpiffeID
    trust_domain: TrustDomain
    bundle: Path | None  # exactly one of bundle and bundle_endpoint is set
    bundle_endpoint: str | None
    export_scopes: tuple[str, ...]
    import_scopes: tuple[str, ...]
    scope_map: tuple[tuple[str, str], ...]  # (local, remote) pairs
    # CA file authenticating the bundle endpoint (https_web with a private PKI); None = system CAs.
    bundle_endpoint_ca: Path | None = None

    def remote_scope(self, local: str) -> str:
        return dict(self.scope_map).get(local, local)


@dataclass(frozen=True, slots=True)
class Route:
    """Exactly one of ``scope`` (a pattern) and ``workload``; exactly one of ``network`` (then
    ``address`` is set) and ``peer``."""

    scope: str | None
    workload: SpiffeID | None
    network: str | None
    peer: str | None
    address: HostPort | None


@dataclass(frozen=True, slots=True)
class Limits:
    max_frame_bytes: int
    max_in_flight: int
    max_connections: int
    handshake_timeout_seconds: float
    idle_timeout_seconds: float
    envelope_max_lifetime_seconds: int
    replay_window_capacity: int


@dataclass(frozen=True, slots=True)
class Audit:
    path: Path
    fsync: FsyncPolicy
    fsync_interval_ms: int
    keep_envelopes: bool = False  # raw envelope bytes in each record, for offline replay


@dataclass(frozen=True, slots=True)
class Spool:
    dir: Path
    max_bytes: int


@dataclass(frozen=True, slots=True)
class Log:
    level: LogLevel
    format: LogFormat


@dataclass(frozen=True, slots=True)
class MigrationWorkload:
    """A workload whose envelopes follow its node through a Weave -> Cilium migration: its
    receiver's address on each side."""

    spiffe_id: SpiffeID
    node: str
    weave: HostPort
    cilium: HostPort


@dataclass(frozen=True, slots=True)
class Migration:
    """``[migration]``: route the listed workloads by the migration journal's node placement."""

    journal: Path
    weave_network: str
    cilium_network: str
    workloads: tuple[MigrationWorkload, ...]


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    source: Path
    gateway: GatewaySection
    identity: Identity
    anchor: Anchor
    trust: Trust
    networks: tuple[Network, ...]
    scopes: tuple[Scope, ...]
    peers: tuple[Peer, ...]
    routes: tuple[Route, ...]
    limits: Limits
    audit: Audit
    spool: Spool
    metrics_listen: HostPort
    log: Log
    migration: Migration | None = None

    def summary(self) -> str:
        """``2 networks, 3 scopes, 1 peer, 4 routes``."""
        counts = (
            (len(self.networks), "network"),
            (len(self.scopes), "scope"),
            (len(self.peers), "peer"),
            (len(self.routes), "route"),
        )
        return ", ".join(f"{n} {word}{'' if n == 1 else 's'}" for n, word in counts)
