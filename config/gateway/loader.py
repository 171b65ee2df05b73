"""Loading the gateway config: the entry points, cross-references between tables, and the
optional check that referenced files exist and are readable."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from config.errors import ConfigError, ConfigProblem
from config.fields import Context, Fields, root_fields
from config.gateway.model import GatewayConfig, Route
from config.gateway.rules import DEFAULT_METRICS_LISTEN, host_port_value
from config.gateway.tables import (
    FileRef,
    read_anchor,
    read_audit,
    read_gateway,
    read_identity,
    read_limits,
    read_log,
    read_migration,
    read_network,
    read_peer,
    read_route,
    read_scope,
    read_spool,
    read_trust,
)
from config.source import TomlDocument, load_toml


def load_gateway_config(path: Path | str, *, check_files: bool = False) -> GatewayConfig:
    """Read and check a gateway config file.

    Args:
        path: the TOML file; relative paths inside it are relative to its directory.
        check_files: also require every referenced file (keys, bundles, policies, endorsements)
            to exist and be readable; their contents are checked by their own loaders at start-up.

    Returns:
        The config.

    Raises:
        ConfigError: listing every problem (or the one reason the file could not be read).
    """
    return gateway_config_from_document(load_toml(path), check_files=check_files)


def gateway_config_from_document(doc: TomlDocument, *, check_files: bool = False) -> GatewayConfig:
    """Map a parsed document to a :class:`GatewayConfig` (pure unless ``check_files``).

    Raises:
        ConfigError: listing every problem, one per key, each with its line.
    """
    root = root_fields(doc)
    files: list[FileRef] = []
    gateway = read_gateway(_required_table(root, "gateway"))
    identity = read_identity(_required_table(root, "identity"), files)
    anchor = read_anchor(_required_table(root, "anchor"), files)
    trust = read_trust(root.table("trust", optional=True), files)
    networks = tuple(read_network(f) for f in root.tables("networks", max_items=64))
    scopes = tuple(read_scope(f, files) for f in root.tables("scopes", max_items=4096))
    peer_fields = root.tables("peers", max_items=256)
    peers = tuple(read_peer(f, files) for f in peer_fields)
    route_fields = root.tables("routes", max_items=4096)
    routes = tuple(read_route(f) for f in route_fields)
    limits = read_limits(root.table("limits", optional=True))
    audit = read_audit(root.table("audit", optional=True))
    spool = read_spool(root.table("spool", optional=True))
    metrics = root.table("metrics", optional=True)
    metrics_listen = host_port_value(
        metrics, "listen", DEFAULT_METRICS_LISTEN, allow_port_zero=True
    )
    metrics.finish()
    log = read_log(root.table("log", optional=True))
    migration = read_migration(root.table("migration")) if root.has("migration") else None
    # The appliance's network table may share the file (one /etc/sluice/sluice.toml on the VM);
    # `sluice appliance` validates it with appliance.netconfig, so here it is only accepted.
    root.table("appliance", optional=True)
    root.finish()

    if not networks and not root.has("networks"):
        root.problem("networks", "missing required array of tables (at least one [[networks]])")
    known = "invalid" not in (gateway.spiffe_id.trust_domain.name, identity.trust_domain.name)
    if known and not gateway.spiffe_id.member_of(identity.trust_domain):
        root.context.problem(
            "gateway.spiffe_id",
            f"trust domain '{gateway.spiffe_id.trust_domain}' is not the identity's trust "
            f"domain '{identity.trust_domain}' (identity.trust_domain)",
        )
    _check_unique(root, "networks", [n.name for n in networks], "name")
    _check_unique(root, "networks", [str(n.listen) for n in networks], "listen")
    _check_unique(root, "scopes", [s.name for s in scopes], "name")
    _check_unique(root, "peers", [p.name for p in peers], "name")
    network_names = [n.name for n in networks]
    for i, peer in enumerate(peers):
        if peer.name and peer.name in network_names:
            root.context.problem(
                f"peers[{i}].name",
                f"name '{peer.name}' is already used by networks[{network_names.index(peer.name)}]"
                " (networks and peers share one namespace)",
            )
    _check_routes(root, routes, network_names, [p.name for p in peers])
    if migration is not None:
        for key in ("weave_network", "cilium_network"):
            name = getattr(migration, key)
            if name not in network_names:
                root.context.problem(
                    f"migration.{key}", f"unknown network '{name}' ({_known(network_names)})"
                )
    if check_files:
        _check_files(root, files)
    if root.context.problems:
        # Report in file order, so the output reads top to bottom like the file.
        raise ConfigError(sorted(root.context.problems, key=lambda p: p.line or 0))
    return GatewayConfig(
        source=doc.path,
        gateway=gateway,
        identity=identity,
        anchor=anchor,
        trust=trust,
        networks=networks,
        scopes=scopes,
        peers=peers,
        routes=routes,
        limits=limits,
        audit=audit,
        spool=spool,
        metrics_listen=metrics_listen,
        log=log,
        migration=migration,
    )


# -- cross-references ------------------------------------------------------------------------------


def _required_table(root: Fields, key: str) -> Fields:
    """The table ``key``; when it is missing that is the one problem reported, not each of its
    required keys as well."""
    if root.has(key):
        return root.table(key)
    root.table(key)  # records "missing required table"
    return Fields({}, key, Context(root.context.file))


def _check_unique(root: Fields, array: str, values: list[str], key: str) -> None:
    first: dict[str, int] = {}
    for i, value in enumerate(values):
        if not value or (key == "listen" and value.endswith(":0")):
            continue
        if value in first:
            root.context.problem(
                f"{array}[{i}].{key}",
                f"duplicate {key} '{value}' (first in {array}[{first[value]}])",
            )
        else:
            first[value] = i


def _known(names: list[str]) -> str:
    return f"known: {', '.join(repr(n) for n in names)}" if names else "none are defined"


def _check_routes(
    root: Fields, routes: tuple[Route, ...], networks: list[str], peers: list[str]
) -> None:
    seen: dict[str, int] = {}
    for i, route in enumerate(routes):
        if route.network is not None and route.network not in networks:
            root.context.problem(
                f"routes[{i}].network", f"unknown network '{route.network}' ({_known(networks)})"
            )
        if route.peer is not None and route.peer not in peers:
            root.context.problem(
                f"routes[{i}].peer", f"unknown peer '{route.peer}' ({_known(peers)})"
            )
        destination = route.scope if route.scope is not None else str(route.workload)
        key = "scope" if route.scope is not None else "workload"
        if destination in seen:
            root.context.problem(
                f"routes[{i}].{key}",
                f"duplicate route for '{destination}' (first in routes[{seen[destination]}])",
            )
        else:
            seen[destination] = i


def _check_files(root: Fields, files: list[FileRef]) -> None:
    ctx = root.context
    for ref in files:
        if (why := _unreadable(ref.path, ref.directory)) is not None:
            ctx.problems.append(
                ConfigProblem(ctx.file, ref.display, why, ctx.index.line_of(ref.lookup))
            )


def _unreadable(path: Path, directory: bool) -> str | None:
    """Why ``path`` cannot be used, or None. Only existence, kind and permission are checked: the
    content of keys, bundles and policies is checked by their own loaders at start-up."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return f"{'directory' if directory else 'file'} not found: {path}"
    except OSError as exc:
        return f"cannot access {path}: {exc.strerror or exc}"
    if directory:
        if not stat.S_ISDIR(mode):
            return f"not a directory: {path}"
        if not os.access(path, os.R_OK | os.X_OK):
            return f"cannot read directory: {path}"
        return None
    if not stat.S_ISREG(mode):
        return f"not a regular file: {path}"
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    return None
