"""Readers for each table of the gateway config. Each takes the table's :class:`Fields`, reads
every key it knows (so ``finish`` can report the rest as unknown) and returns a model value; files
the config refers to are collected in ``files`` for the optional existence check."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from config.errors import ConfigProblem
from config.fields import Fields
from config.gateway.model import (
    Anchor,
    Audit,
    FsyncPolicy,
    GatewaySection,
    HostPort,
    Identity,
    IdentitySource,
    Limits,
    Log,
    LogFormat,
    LogLevel,
    Migration,
    MigrationWorkload,
    Network,
    NetworkKind,
    Peer,
    Route,
    Scope,
    Spool,
    Tier,
    Trust,
    TrustBundle,
)
from config.gateway.rules import (
    DEFAULT_TIERS,
    MAX_FRAME_BYTES_CAP,
    MAX_SCOPE_BYTES,
    MAX_URL_BYTES,
    MIN_FRAME_BYTES,
    host_port_value,
    name_problem,
    scope_pattern_problem,
    scope_problem,
    socket_problem,
    url_problem,
)
from identity.anchor_contract import scope_matches
from identity.spiffe_id import InvalidSpiffeID, SpiffeID, parse_trust_domain

_BARE_KEY = re.compile(r"[A-Za-z0-9_\-]+")


E = TypeVar("E", bound=enum.StrEnum)


def choice(f: Fields, key: str, kind: type[E], default: E | None = None) -> E:
    """An enum member chosen by its string value; a problem (and the first member) otherwise."""
    text = f.string(
        key, None if default is None else default.value, choices=[m.value for m in kind]
    )
    try:
        return kind(text)
    except ValueError:
        return default if default is not None else next(iter(kind))


@dataclass(frozen=True, slots=True)
class FileRef:
    """A file the config refers to: where it was named (``display`` is the key path as a person
    reads it, ``lookup`` the path the line index knows) and where it resolves to."""

    display: str
    lookup: str
    path: Path
    directory: bool = False


def map_key_path(f: Fields, key: str) -> tuple[str, str]:
    """(display, lookup) key paths for ``key`` of a map-like table; keys that are data, such as
    ``"weave.prod.example"``, are quoted for display so their dots are not read as nesting."""
    display = key if _BARE_KEY.fullmatch(key) else '"' + key.replace('"', '\\"') + '"'
    return f"{f.path}.{display}", f.key_path(key)


def map_problem(f: Fields, key: str, message: str) -> None:
    display, lookup = map_key_path(f, key)
    ctx = f.context
    ctx.problems.append(ConfigProblem(ctx.file, display, message, ctx.index.line_of(lookup)))


def read_gateway(f: Fields) -> GatewaySection:
    section = GatewaySection(f.string("name", check=name_problem), f.spiffe_id("spiffe_id"))
    f.finish()
    return section


def read_identity(f: Fields, files: list[FileRef]) -> Identity:
    trust_domain = f.trust_domain("trust_domain")
    source = choice(f, "source", IdentitySource)
    file_keys = ("cert_chain", "private_key", "bundle")
    socket: str | None = None
    paths: dict[str, Path | None] = dict.fromkeys(file_keys)
    if source is IdentitySource.WORKLOAD_API:
        socket = f.string("socket", check=socket_problem)
        for key in file_keys:
            if f.has(key):
                f.path_value(key)
                f.problem(key, "only used with source = 'files'")
    else:
        if f.has("socket"):
            f.string("socket")
            f.problem("socket", "only used with source = 'workload_api'")
        for key in file_keys:
            paths[key] = _file(f, key, files)
    f.finish()
    return Identity(
        trust_domain,
        source,
        socket,
        paths["cert_chain"],
        paths["private_key"],
        paths["bundle"],
    )


def _file(f: Fields, key: str, files: list[FileRef], *, directory: bool = False) -> Path:
    path = f.path_value(key)
    if f.has(key):
        display, lookup = map_key_path(f, key)
        files.append(FileRef(display, lookup, path, directory))
    return path


def _optional_file(f: Fields, key: str, files: list[FileRef]) -> Path | None:
    if not f.has(key):
        f.path_value(key, "")  # marks the key as known
        return None
    return _file(f, key, files)


def read_anchor(f: Fields, files: list[FileRef]) -> Anchor:
    anchor = Anchor(_file(f, "private_key", files), _file(f, "endorsement", files))
    f.finish()
    return anchor


def read_trust(f: Fields, files: list[FileRef]) -> Trust:
    tiers = _tiers(f)
    bundles_fields = f.table("bundles", optional=True)
    bundles: list[TrustBundle] = []
    for key in bundles_fields.key_names():
        path = _file(bundles_fields, key, files)
        try:
            bundles.append(TrustBundle(parse_trust_domain(key), path))
        except InvalidSpiffeID as exc:
            map_problem(bundles_fields, key, f"not a trust domain: {exc}")
    anchors_dir = None
    if f.has("anchors_dir"):
        anchors_dir = _file(f, "anchors_dir", files, directory=True)
    endorsements = tuple(f.strings("endorsements", (), max_items=4096))
    endorsement_paths = []
    for i, text in enumerate(endorsements):
        path = Path(text) if Path(text).is_absolute() else f.context.file.parent / text
        where = f"{f.key_path('endorsements')}[{i}]"
        files.append(FileRef(where, where, path))
        endorsement_paths.append(path)
    trust = Trust(
        tiers,
        tuple(bundles),
        anchors_dir,
        tuple(endorsement_paths),
        f.integer("clock_skew_seconds", 60, low=0, high=600),
    )
    f.finish()
    return trust


def _tiers(f: Fields) -> tuple[Tier, ...]:
    if not f.has("tiers"):
        f.table("tiers", optional=True)
        return tuple(Tier(n, level) for n, level in DEFAULT_TIERS)
    tiers_fields = f.table("tiers")
    tiers: list[Tier] = []
    seen: dict[int, str] = {}
    for name in tiers_fields.key_names():
        level = tiers_fields.integer(name, low=0, high=255)
        if (why := name_problem(name)) is not None:
            tiers_fields.problem(name, why.replace("a name", "a tier name", 1))
        elif level in seen:
            tiers_fields.problem(name, f"level {level} is already used by tier '{seen[level]}'")
        else:
            seen[level] = name
            tiers.append(Tier(name, level))
    if not tiers_fields.key_names():
        f.problem("tiers", "expected at least one tier")
    return tuple(tiers)


def read_network(f: Fields) -> Network:
    name = f.string("name", check=name_problem)
    kind = choice(f, "kind", NetworkKind)
    listen = host_port_value(f, "listen", allow_port_zero=True)
    tls = f.boolean("tls", kind is NetworkKind.FEDERATION)
    if kind is NetworkKind.FEDERATION and not tls:
        f.problem("tls", "federation listeners require mutual TLS (tls = true)")
    f.finish()
    return Network(name, kind, listen, tls)


def read_scope(f: Fields, files: list[FileRef]) -> Scope:
    scope = Scope(
        f.string("name", max_length=MAX_SCOPE_BYTES * 4, check=scope_problem),
        _file(f, "policy", files),
        _optional_file(f, "seal_key", files),
    )
    f.finish()
    return scope


def _patterns(f: Fields, key: str) -> tuple[str, ...]:
    patterns = f.strings(key, (), max_items=1024)
    for i, pattern in enumerate(patterns):
        if (why := scope_pattern_problem(pattern)) is not None:
            f.context.problem(f"{f.key_path(key)}[{i}]", why)
    return patterns


def read_peer(f: Fields, files: list[FileRef]) -> Peer:
    name = f.string("name", check=name_problem)
    address = host_port_value(f, "address")
    spiffe_id = f.spiffe_id("spiffe_id")
    trust_domain = f.trust_domain("trust_domain")
    if (
        f.has("spiffe_id")
        and f.has("trust_domain")
        and "invalid" not in (spiffe_id.trust_domain.name, trust_domain.name)
        and not spiffe_id.member_of(trust_domain)
    ):
        f.problem(
            "spiffe_id",
            f"trust domain '{spiffe_id.trust_domain}' differs from this peer's trust_domain "
            f"'{trust_domain}'",
        )
    bundle = _optional_file(f, "bundle", files)
    endpoint: str | None = None
    if f.has("bundle_endpoint"):
        endpoint = f.string("bundle_endpoint", max_length=MAX_URL_BYTES, check=url_problem)
    else:
        f.string("bundle_endpoint", "")
    endpoint_ca = _optional_file(f, "bundle_endpoint_ca", files)
    if endpoint_ca is not None and endpoint is None:
        f.problem("bundle_endpoint_ca", "only used with bundle_endpoint")
    if (bundle is None) == (endpoint is None):
        f.problem(
            "" if bundle is None else "bundle",
            "expected exactly one of bundle (a file) and bundle_endpoint (an https:// URL)",
        )
    exports = _patterns(f, "export_scopes")
    imports = _patterns(f, "import_scopes")
    scope_map: list[tuple[str, str]] = []
    map_fields = f.table("scope_map", optional=True)
    for local in map_fields.key_names():
        remote = map_fields.string(local, max_length=MAX_SCOPE_BYTES * 4, check=scope_problem)
        if (why := scope_problem(local)) is not None:
            map_problem(map_fields, local, why)
        elif not any(scope_matches(p, local) for p in exports + imports):
            map_problem(map_fields, local, f"scope '{local}' is neither exported nor imported")
        else:
            scope_map.append((local, remote))
    f.finish()
    map_fields.finish()
    return Peer(
        name,
        address,
        spiffe_id,
        trust_domain,
        bundle,
        endpoint,
        exports,
        imports,
        tuple(scope_map),
        endpoint_ca,
    )


def read_route(f: Fields) -> Route:
    scope: str | None = None
    workload: SpiffeID | None = None
    if f.has("scope"):
        scope = f.string("scope", max_length=MAX_SCOPE_BYTES * 4, check=scope_pattern_problem)
    if f.has("workload"):
        workload = f.spiffe_id("workload")
    if (scope is None) == (workload is None):
        f.problem("" if scope is None else "workload", "expected exactly one of scope and workload")
    network = f.string("network") if f.has("network") else None
    peer = f.string("peer") if f.has("peer") else None
    address: HostPort | None = None
    if (network is None) == (peer is None):
        f.problem("" if network is None else "peer", "expected exactly one of network and peer")
    elif network is not None:
        address = host_port_value(f, "address")
    elif f.has("address"):
        f.string("address")
        f.problem("address", "only used with network (a peer's address is in its [[peers]] entry)")
    if network is None and peer is None and f.has("address"):
        f.string("address")
    f.finish()
    return Route(scope, workload, network, peer, address)


def read_limits(f: Fields) -> Limits:
    limits = Limits(
        max_frame_bytes=f.integer(
            "max_frame_bytes", MAX_FRAME_BYTES_CAP, low=MIN_FRAME_BYTES, high=MAX_FRAME_BYTES_CAP
        ),
        max_in_flight=f.integer("max_in_flight", 64, low=1, high=65536),
        max_connections=f.integer("max_connections", 1024, low=1, high=1_000_000),
        handshake_timeout_seconds=f.number("handshake_timeout_seconds", 10.0, low=0.1, high=300),
        idle_timeout_seconds=f.number("idle_timeout_seconds", 300.0, low=1, high=86400),
        envelope_max_lifetime_seconds=f.integer(
            "envelope_max_lifetime_seconds", 3600, low=1, high=3600
        ),
        replay_window_capacity=f.integer(
            "replay_window_capacity", 1_000_000, low=1, high=100_000_000
        ),
    )
    f.finish()
    return limits


def read_audit(f: Fields) -> Audit:
    audit = Audit(
        f.path_value("path", "state/audit.log"),
        choice(f, "fsync", FsyncPolicy, FsyncPolicy.ALWAYS),
        f.integer("fsync_interval_ms", 100, low=1, high=10_000),
        f.boolean("keep_envelopes", False),
    )
    if audit.fsync is FsyncPolicy.ALWAYS and f.has("fsync_interval_ms"):
        f.problem("fsync_interval_ms", "only used with fsync = 'interval'")
    f.finish()
    return audit


def read_spool(f: Fields) -> Spool:
    spool = Spool(
        f.path_value("dir", "state/spool"),
        f.integer("max_bytes", 1 << 30, low=1 << 20, high=1 << 44),
    )
    f.finish()
    return spool


def read_log(f: Fields) -> Log:
    log = Log(
        choice(f, "level", LogLevel, LogLevel.INFO),
        choice(f, "format", LogFormat, LogFormat.JSON),
    )
    f.finish()
    return log


MAX_MIGRATION_WORKLOADS = 4096
_NODE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def _node_name_problem(name: str) -> str | None:
    if len(name) > 253 or _NODE_NAME.fullmatch(name) is None:
        return f"expected a Kubernetes node name (RFC 1123 subdomain), found {name!r}"
    return None


def read_migration(f: Fields) -> Migration:
    """``[migration]``: the journal to follow and the workloads it moves."""
    journal = f.path_value("journal")
    weave = f.string("weave_network", "weave", check=name_problem)
    cilium = f.string("cilium_network", "cilium", check=name_problem)
    if weave == cilium:
        f.problem("cilium_network", f"must differ from weave_network ('{weave}')")
    workloads: list[MigrationWorkload] = []
    seen: dict[str, int] = {}
    for i, w in enumerate(f.tables("workloads", max_items=MAX_MIGRATION_WORKLOADS)):
        workload = MigrationWorkload(
            w.spiffe_id("spiffe_id"),
            w.string("node", max_length=253, check=_node_name_problem),
            host_port_value(w, "weave"),
            host_port_value(w, "cilium"),
        )
        w.finish()
        key = str(workload.spiffe_id)
        if w.has("spiffe_id") and key in seen:
            w.problem("spiffe_id", f"duplicate workload '{key}' (first in {f.path}.workloads"
                      f"[{seen[key]}])")
        seen.setdefault(key, i)
        workloads.append(workload)
    f.finish()
    return Migration(journal, weave, cilium, tuple(workloads))
