"""The gateway's TOML config as frozen dataclasses (every key is documented in docs/config.md).

:func:`gateway_config_from_document` is pure: it maps a parsed document and reports every problem
at once, each naming its key path and line. :func:`load_gateway_config` reads the file first.
"""

from config.gateway.loader import gateway_config_from_document, load_gateway_config
from config.gateway.model import (
    Anchor,
    Audit,
    FsyncPolicy,
    GatewayConfig,
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
from config.gateway.rules import MAX_FRAME_BYTES_CAP, scope_pattern_problem, scope_problem

__all__ = [
    "MAX_FRAME_BYTES_CAP",
    "Anchor",
    "Audit",
    "FsyncPolicy",
    "GatewayConfig",
    "GatewaySection",
    "HostPort",
    "Identity",
    "IdentitySource",
    "Limits",
    "Log",
    "LogFormat",
    "LogLevel",
    "Migration",
    "MigrationWorkload",
    "Network",
    "NetworkKind",
    "Peer",
    "Route",
    "Scope",
    "Spool",
    "Tier",
    "Trust",
    "TrustBundle",
    "gateway_config_from_document",
    "load_gateway_config",
    "scope_pattern_problem",
    "scope_problem",
]
