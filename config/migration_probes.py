"""The governed-probe file for ``sluice migrate --probes``: which workloads probe each other
through the gateway, with which keys (schema in ``docs/migration.md``)::

    [gateway]
    weave = "192.168.10.5:7443"      # the gateway's listener on the Weave side
    cilium = "10.47.255.1:7443"      # ... and on the Cilium side

    [envelope]
    policies = ["policies/shop_frontend.toml", ...]   # origin scopes' policies (lineage)
    transit_domains = ["cluster.example"]
    max_hops = 2
    tier = 1
    deadline_seconds = 10

    [[workloads]]
    name = "frontend"
    spiffe_id = "spiffe://cluster.example/ns/shop/sa/frontend"
    node = "worker-1"
    scope = "shop/frontend"
    anchor_key = "keys/frontend-anchor.pem"

Every ordered pair of workloads is probed unless ``pairs = ["frontend->ledger", ...]``.
Relative paths are relative to the file's directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from config.fields import Fields, root_fields
from config.gateway.rules import host_port_value, name_problem, scope_problem
from config.source import TomlDocument, load_toml
from identity.spiffe_id import InvalidSpiffeID, SpiffeID, TrustDomain, parse_trust_domain

MAX_PROBE_WORKLOADS = 256


@dataclass(frozen=True, slots=True)
class ProbeWorkload:
    name: str
    spiffe_id: SpiffeID
    node: str
    scope: str
    anchor_key: Path


@dataclass(frozen=True, slots=True)
class ProbeConfig:
    weave: tuple[str, int]
    cilium: tuple[str, int]
    policies: tuple[Path, ...]
    transit_domains: tuple[TrustDomain, ...]
    max_hops: int
    tier: int
    deadline_seconds: float
    workloads: tuple[ProbeWorkload, ...]
    pairs: tuple[tuple[str, str], ...]  # (source name, destination name), in probe order

    def workload(self, name: str) -> ProbeWorkload:
        return next(w for w in self.workloads if w.name == name)


def _paths(f: Fields, key: str) -> tuple[Path, ...]:
    out = []
    for text in f.strings(key, max_items=4096):
        path = Path(text)
        out.append(path if path.is_absolute() else f.context.file.parent / path)
    return tuple(out)


def _workload(f: Fields) -> ProbeWorkload:
    workload = ProbeWorkload(
        f.string("name", check=name_problem),
        f.spiffe_id("spiffe_id"),
        f.string("node", max_length=253),
        f.string("scope", check=scope_problem),
        f.path_value("anchor_key"),
    )
    f.finish()
    return workload


def _trust_domains(f: Fields, key: str) -> tuple[TrustDomain, ...]:
    out = []
    for i, text in enumerate(f.strings(key, max_items=64)):
        try:
            out.append(parse_trust_domain(text))
        except InvalidSpiffeID as exc:
            f.context.problem(f"{f.key_path(key)}[{i}]", f"not a trust domain: {exc}")
    return tuple(out)


def _pairs(f: Fields, names: list[str]) -> tuple[tuple[str, str], ...]:
    if not f.has("pairs"):
        return tuple((a, b) for a in names for b in names if a != b)
    pairs = []
    for i, text in enumerate(f.strings("pairs", max_items=MAX_PROBE_WORKLOADS**2)):
        source, sep, destination = text.partition("->")
        if not sep or source not in names or destination not in names or source == destination:
            f.context.problem(
                f"pairs[{i}]",
                f"expected 'source->destination' with two different workload names "
                f"({', '.join(names)}), found {text!r}",
            )
            continue
        pairs.append((source, destination))
    return tuple(pairs)


def probes_from_document(doc: TomlDocument) -> ProbeConfig:
    """Map a parsed probe file (pure).

    Raises:
        ConfigError: every problem, one per key, with its line.
    """
    root = root_fields(doc)
    gw = root.table("gateway")
    weave, cilium = host_port_value(gw, "weave"), host_port_value(gw, "cilium")
    gw.finish()
    env = root.table("envelope")
    policies = _paths(env, "policies")
    transit = _trust_domains(env, "transit_domains")
    max_hops = env.integer("max_hops", 2, low=1, high=16)
    tier = env.integer("tier", 1, low=0, high=255)
    deadline = env.number("deadline_seconds", 10.0, low=0.5, high=600)
    env.finish()
    workloads = tuple(
        _workload(f) for f in root.tables("workloads", max_items=MAX_PROBE_WORKLOADS)
    )
    names = [w.name for w in workloads]
    for i, name in enumerate(names):
        if name in names[:i]:
            root.context.problem(f"workloads[{i}].name", f"duplicate workload name '{name}'")
    pairs = _pairs(root, names)
    root.finish()
    root.context.raise_if_problems()
    return ProbeConfig(
        (weave.host, weave.port),
        (cilium.host, cilium.port),
        policies,
        transit,
        max_hops,
        tier,
        deadline,
        workloads,
        pairs,
    )


def load_probes(path: Path | str) -> ProbeConfig:
    """Read and check a probe file.

    Raises:
        ConfigError: unreadable, not TOML, or every problem of its content.
    """
    return probes_from_document(load_toml(path))
