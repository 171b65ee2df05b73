"""Stage S0: read a Weave Net cluster's state from files a user makes with kubectl and curl.

Pure: every parser takes the file's bytes (or text) and the name to use in messages, and returns
frozen values; nothing here opens a file or a socket. The inputs are:

* the Weave DaemonSet (``kubectl -n kube-system get ds weave-net -o yaml``): the environment of the
  ``weave`` container (``IPALLOC_RANGE``, ``WEAVE_MTU``, ``CONN_LIMIT``, ...);
* each node's ``/report`` JSON (``curl -H 'Accept: application/json' 127.0.0.1:6784/report``);
* the node list (``kubectl get nodes -o yaml`` or ``-o json``);
* optionally the peers ConfigMap (``kubectl -n kube-system get cm weave-net -o yaml``) and the
  kube-apiserver manifest (for ``--service-cluster-ip-range``).

A malformed file raises :class:`InputError` with one line naming the file and the field.
:func:`analyse` then turns the parsed state into :class:`Finding` values: S0's verification is
"no finding of severity error".
"""

from __future__ import annotations

import enum
import ipaddress
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from gateway.migration._reader import MAX_INPUT_BYTES, Cursor, InputError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

WEAVE_DEFAULT_RANGE = ipaddress.IPv4Network("10.32.0.0/12")
WEAVE_DEFAULT_MTU = 1376
WEAVE_DEFAULT_CONN_LIMIT = 200
CONTROL_PLANE_LABELS = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")
PEERS_ANNOTATION = "kube-peers.weave.works/peers"

__all__ = [
    "Finding",
    "FindingCode",
    "InputError",
    "Inventory",
    "IpamEntry",
    "NodeInfo",
    "Peer",
    "PeerConnection",
    "RouterConnection",
    "Severity",
    "WeaveReport",
    "WeaveSettings",
    "analyse",
    "parse_daemonset",
    "parse_nodes",
    "parse_peers_configmap",
    "parse_report",
    "parse_service_cidrs",
    "render_text",
    "service_cidrs_from_apiserver",
]


# -- decoded values -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WeaveSettings:
    """What the Weave DaemonSet's ``weave`` container is configured with."""

    source: str
    ipalloc_range: ipaddress.IPv4Network
    mtu: int
    conn_limit: int
    encrypted: bool  # WEAVE_PASSWORD is set (inline or from a Secret)
    fastdp_disabled: bool  # WEAVE_NO_FASTDP is set
    env: tuple[tuple[str, str], ...]  # every variable; values from Secrets shown as <secret>


@dataclass(frozen=True, slots=True)
class PeerConnection:
    address: str
    established: bool


@dataclass(frozen=True, slots=True)
class Peer:
    name: str
    nickname: str
    connections: tuple[PeerConnection, ...]


@dataclass(frozen=True, slots=True)
class RouterConnection:
    address: str
    state: str  # "established", "pending", "retrying", "failed", "connecting"
    datapath: str | None  # "fastdp" or "sleeve" once established
    mtu: int | None


@dataclass(frozen=True, slots=True)
class IpamEntry:
    token: str
    size: int
    peer: str
    nickname: str
    known: bool


@dataclass(frozen=True, slots=True)
class WeaveReport:
    """One node's ``/report``; ``node`` is the router's NickName (the node's hostname)."""

    source: str
    node: str
    ready: bool
    version: str
    peers: tuple[Peer, ...]
    connections: tuple[RouterConnection, ...]
    ipam_range: ipaddress.IPv4Network
    active_ips: int | None
    entries: tuple[IpamEntry, ...]
    pending_claims: int


@dataclass(frozen=True, slots=True)
class NodeInfo:
    name: str
    control_plane: bool
    ready: bool
    pod_cidrs: tuple[Network, ...]
    addresses: tuple[tuple[str, Address], ...]  # (type, address): InternalIP, ExternalIP


@dataclass(frozen=True, slots=True)
class Inventory:
    """Everything S0 read. ``node_cidrs`` are underlay networks the user named (optional)."""

    weave: WeaveSettings
    reports: tuple[WeaveReport, ...]
    nodes: tuple[NodeInfo, ...]
    service_cidrs: tuple[Network, ...] = ()
    node_cidrs: tuple[Network, ...] = ()
    peers_configmap: tuple[tuple[str, str], ...] | None = None  # (peer name, node name)
    network_policies: int | None = None


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"


class FindingCode(enum.StrEnum):
    """Stable codes for what S0 found; add new ones at the end."""

    NODE_NOT_READY = "node_not_ready"
    WEAVE_NOT_READY = "weave_not_ready"
    REPORT_MISSING = "report_missing"
    REPORT_UNEXPECTED = "report_unexpected"
    CONNECTION_DOWN = "connection_down"
    PEER_MISSING = "peer_missing"
    UNKNOWN_PEER = "unknown_peer"
    PENDING_CLAIMS = "pending_claims"
    RANGE_MISMATCH = "range_mismatch"
    CIDR_OVERLAP = "cidr_overlap"
    VERSION_SKEW = "version_skew"
    SLEEVE_FALLBACK = "sleeve_fallback"
    MTU_BELOW_SETTING = "mtu_below_setting"
    PEERS_CONFIGMAP_STALE = "peers_configmap_stale"


@dataclass(frozen=True, slots=True)
class Finding:
    severity: Severity
    code: FindingCode
    subject: str  # a node, a file, or "cluster"
    message: str

    def __str__(self) -> str:
        return f"{self.severity.value}: {self.subject}: {self.message} [{self.code.value}]"


# -- decoding -------------------------------------------------------------------------------


def _text(data: str | bytes, source: str) -> str:
    if isinstance(data, bytes):
        if len(data) > MAX_INPUT_BYTES:
            raise InputError(source, "", f"file is larger than {MAX_INPUT_BYTES} bytes")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(
                source, "", f"not UTF-8 text (invalid byte at offset {exc.start})"
            ) from None
    if len(data) > MAX_INPUT_BYTES:
        raise InputError(source, "", f"file is larger than {MAX_INPUT_BYTES} bytes")
    return data


def _yaml_documents(data: str | bytes, source: str) -> list[Any]:
    text = _text(data, source)
    try:
        return [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise InputError(source, "", f"invalid YAML{where}: {problem}") from None


def _objects(data: str | bytes, source: str) -> list[Cursor]:
    """Every Kubernetes object in a file: several documents, ``List`` kinds flattened."""
    out: list[Cursor] = []
    documents = _yaml_documents(data, source)
    for number, doc in enumerate(documents):
        prefix = f"document {number + 1}" if len(documents) > 1 else ""
        root = Cursor(doc, source, prefix)
        root.obj()
        kind = root.opt("kind")
        if kind is not None and kind.string().endswith("List"):
            out.extend(item.obj() for item in root.get("items").items(allow_null=True))
        else:
            out.append(root)
    return out


def parse_daemonset(data: str | bytes, source: str) -> WeaveSettings:
    """Read the Weave DaemonSet's ``weave`` container environment.

    Raises:
        InputError: the file is not YAML, holds no DaemonSet with a ``weave`` container, or an
            environment entry is malformed (``IPALLOC_RANGE`` not a CIDR, ``WEAVE_MTU`` not an
            integer from 576 to 65535, ...).
    """
    for obj in _objects(data, source):
        kind = obj.opt("kind")
        if kind is None or kind.string() != "DaemonSet":
            continue
        containers = obj.get("spec").get("template").get("spec").get("containers")
        for container in containers.items():
            if container.get("name").string() == "weave":
                return _weave_settings(container, source)
        raise containers.fail("no container named 'weave'")
    raise InputError(source, "kind", "no DaemonSet found (expected the weave-net DaemonSet)")


def _weave_settings(container: Cursor, source: str) -> WeaveSettings:
    env: dict[str, str] = {}
    positions: dict[str, Cursor] = {}
    env_list = container.opt("env")
    for entry in env_list.items() if env_list is not None else ():
        name = entry.get("name").string(max_length=256)
        value = entry.opt("value")
        if value is not None:
            env[name] = value.string()
            positions[name] = value
        elif entry.opt("valueFrom") is not None:
            env[name] = "<secret>" if entry.get("valueFrom").has("secretKeyRef") else "<ref>"
            positions[name] = entry.get("valueFrom")
        else:
            env[name] = ""
            positions[name] = entry
    ipalloc = WEAVE_DEFAULT_RANGE
    if env.get("IPALLOC_RANGE"):
        network = positions["IPALLOC_RANGE"].network()
        if not isinstance(network, ipaddress.IPv4Network):
            raise positions["IPALLOC_RANGE"].fail("Weave allocates IPv4 only, found an IPv6 CIDR")
        ipalloc = network
    mtu = _env_int(env, positions, "WEAVE_MTU", WEAVE_DEFAULT_MTU, 576, 65535)
    conn_limit = _env_int(env, positions, "CONN_LIMIT", WEAVE_DEFAULT_CONN_LIMIT, 0, 1_000_000)
    return WeaveSettings(
        source=source,
        ipalloc_range=ipalloc,
        mtu=mtu,
        conn_limit=conn_limit,
        encrypted=bool(env.get("WEAVE_PASSWORD")),
        fastdp_disabled=bool(env.get("WEAVE_NO_FASTDP")),
        env=tuple(sorted(env.items())),
    )


def _env_int(
    env: dict[str, str], positions: dict[str, Cursor], name: str, default: int, low: int, high: int
) -> int:
    text = env.get(name, "")
    if not text:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise positions[name].fail(
            f"{name} must be an integer from {low} to {high}, found {text!r}"
        )
    return int(text)


def parse_report(data: str | bytes, source: str) -> WeaveReport:
    """Read one node's Weave ``/report`` (JSON).

    Raises:
        InputError: not JSON, or a field of ``Ready``, ``Version``, ``Router`` or ``IPAM`` is
            missing or of the wrong type (message names the field path).
    """
    text = _text(data, source)
    try:
        decoded = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            source, "", f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    root = Cursor(decoded, source).obj()
    router = root.get("Router")
    ipam = root.get("IPAM")
    ipam_range = ipam.get("Range").network()
    if not isinstance(ipam_range, ipaddress.IPv4Network):
        raise ipam.get("Range").fail("Weave allocates IPv4 only, found an IPv6 CIDR")
    active = ipam.opt("ActiveIPs")
    claims = ipam.opt("PendingClaims")
    return WeaveReport(
        source=source,
        node=router.get("NickName").string(max_length=253),
        ready=root.get("Ready").boolean(),
        version=root.get("Version").string(max_length=128),
        peers=tuple(_peer(p) for p in router.get("Peers").items(allow_null=True)),
        connections=tuple(
            _router_connection(c) for c in _optional_items(router, "Connections")
        ),
        ipam_range=ipam_range,
        active_ips=active.integer() if active is not None else None,
        entries=tuple(_ipam_entry(e) for e in _optional_items(ipam, "Entries")),
        pending_claims=sum(1 for _ in claims.items()) if claims is not None else 0,
    )


def _optional_items(parent: Cursor, key: str) -> Iterable[Cursor]:
    child = parent.opt(key)
    return child.items() if child is not None else ()


def _peer(peer: Cursor) -> Peer:
    return Peer(
        name=peer.get("Name").string(max_length=64),
        nickname=peer.get("NickName").string(max_length=253),
        connections=tuple(
            PeerConnection(
                address=c.get("Address").string(max_length=128),
                established=c.get("Established").boolean(),
            )
            for c in _optional_items(peer, "Connections")
        ),
    )


def _router_connection(conn: Cursor) -> RouterConnection:
    attrs = conn.opt("Attrs")
    datapath = mtu = None
    if attrs is not None:
        name = attrs.opt("name")
        datapath = name.string(max_length=32) if name is not None else None
        mtu_value = attrs.opt("mtu")
        mtu = mtu_value.integer(low=0, high=65535) if mtu_value is not None else None
    return RouterConnection(
        address=conn.get("Address").string(max_length=128),
        state=conn.get("State").string(max_length=32),
        datapath=datapath,
        mtu=mtu,
    )


def _ipam_entry(entry: Cursor) -> IpamEntry:
    nickname = entry.opt("Nickname")
    return IpamEntry(
        token=entry.get("Token").string(max_length=64),
        size=entry.get("Size").integer(),
        peer=entry.get("Peer").string(max_length=64),
        nickname=nickname.string(max_length=253) if nickname is not None else "",
        known=entry.get("IsKnownPeer").boolean(),
    )


def parse_nodes(data: str | bytes, source: str) -> tuple[NodeInfo, ...]:
    """Read ``kubectl get nodes -o yaml`` (or ``-o json``, which is YAML too).

    Raises:
        InputError: no Node objects, or a node's name, labels, podCIDR(s), addresses or
            conditions are malformed.
    """
    nodes: list[NodeInfo] = []
    for obj in _objects(data, source):
        kind = obj.opt("kind")
        if kind is None or kind.string() != "Node":
            continue
        meta = obj.get("metadata")
        labels = meta.opt("labels")
        label_keys = set(labels.obj().value) if labels is not None else set()
        spec = obj.opt("spec")
        cidrs: list[Network] = []
        if spec is not None:
            many = spec.opt("podCIDRs")
            if many is not None:
                cidrs.extend(c.network() for c in many.items())
            elif (one := spec.opt("podCIDR")) is not None:
                cidrs.append(one.network())
        status = obj.get("status")
        addresses = tuple(
            (a.get("type").string(max_length=64), a.get("address").address())
            for a in _optional_items(status, "addresses")
            if a.get("type").string(max_length=64) in ("InternalIP", "ExternalIP")
        )
        ready = any(
            c.get("type").string() == "Ready" and c.get("status").string() == "True"
            for c in _optional_items(status, "conditions")
        )
        nodes.append(
            NodeInfo(
                name=meta.get("name").string(max_length=253),
                control_plane=any(label in label_keys for label in CONTROL_PLANE_LABELS),
                ready=ready,
                pod_cidrs=tuple(cidrs),
                addresses=addresses,
            )
        )
    if not nodes:
        raise InputError(source, "items", "no Node objects found (expected kubectl get nodes)")
    return tuple(nodes)


def parse_peers_configmap(data: str | bytes, source: str) -> tuple[tuple[str, str], ...]:
    """Read the ``kube-system/weave-net`` ConfigMap's peer list annotation.

    Returns:
        ``(peer name, node name)`` pairs in the annotation's order.

    Raises:
        InputError: no ConfigMap, or the annotation is not the JSON Weave writes.
    """
    for obj in _objects(data, source):
        kind = obj.opt("kind")
        if kind is None or kind.string() != "ConfigMap":
            continue
        annotations = obj.get("metadata").get("annotations")
        raw = annotations.get(PEERS_ANNOTATION)
        try:
            decoded = json.loads(raw.string(max_length=MAX_INPUT_BYTES))
        except json.JSONDecodeError as exc:
            raise raw.fail(f"invalid JSON at column {exc.colno}: {exc.msg}") from None
        peers = Cursor(decoded, source, raw.path).get("Peers")
        return tuple(
            (p.get("PeerName").string(max_length=64), p.get("NodeName").string(max_length=253))
            for p in peers.items()
        )
    raise InputError(source, "kind", "no ConfigMap found (expected kube-system/weave-net)")


def parse_service_cidrs(text: str, source: str = "--service-cidr") -> tuple[Network, ...]:
    """Parse ``10.96.0.0/12`` or a dual-stack ``10.96.0.0/12,fd00:10:96::/112``.

    Raises:
        InputError: an element is not a CIDR.
    """
    out: list[Network] = []
    for i, part in enumerate(text.split(",")):
        try:
            out.append(ipaddress.ip_network(part.strip(), strict=True))
        except ValueError:
            raise InputError(
                source, f"[{i}]", f"expected a CIDR such as 10.96.0.0/12, found {part!r}"
            ) from None
    return tuple(out)


def service_cidrs_from_apiserver(data: str | bytes, source: str) -> tuple[Network, ...]:
    """Find ``--service-cluster-ip-range`` in a kube-apiserver static Pod manifest.

    Raises:
        InputError: no Pod with a kube-apiserver container, or the flag is absent or malformed.
    """
    for obj in _objects(data, source):
        for container in obj.get("spec").get("containers").items():
            for key in ("command", "args"):
                for arg in _optional_items(container, key):
                    text = arg.string()
                    if text.startswith("--service-cluster-ip-range="):
                        return parse_service_cidrs(text.split("=", 1)[1], f"{source}: {arg.path}")
    raise InputError(source, "spec.containers", "no --service-cluster-ip-range flag found")


# -- analysis -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Labelled:
    label: str
    network: Network
    kind: str  # "weave", "service", "pod", "node-ip", "node-cidr"
    node: str = field(default="")


def _labelled_networks(inv: Inventory) -> list[_Labelled]:
    nets = [_Labelled("Weave range (IPALLOC_RANGE)", inv.weave.ipalloc_range, "weave")]
    nets += [_Labelled("service CIDR", n, "service") for n in inv.service_cidrs]
    nets += [_Labelled("node CIDR", n, "node-cidr") for n in inv.node_cidrs]
    for node in inv.nodes:
        nets += [_Labelled(f"podCIDR of {node.name}", c, "pod", node.name) for c in node.pod_cidrs]
        nets += [
            _Labelled(f"{kind} of {node.name}", ipaddress.ip_network(addr), "node-ip", node.name)
            for kind, addr in node.addresses
        ]
    return nets


def _overlaps(inv: Inventory) -> list[Finding]:
    found: list[Finding] = []
    nets = _labelled_networks(inv)
    for i, a in enumerate(nets):
        for b in nets[i + 1 :]:
            if a.network.version != b.network.version or not a.network.overlaps(b.network):
                continue
            # A node's own address inside the underlay network the user named is expected.
            if {a.kind, b.kind} == {"node-ip", "node-cidr"}:
                continue
            if a.kind == b.kind == "node-ip" and a.node == b.node:
                continue
            found.append(
                Finding(
                    Severity.ERROR,
                    FindingCode.CIDR_OVERLAP,
                    "cluster",
                    f"{a.label} {a.network} overlaps {b.label} {b.network}",
                )
            )
    return found


def _report_findings(inv: Inventory, report: WeaveReport) -> list[Finding]:
    out: list[Finding] = []
    node = report.node

    def add(severity: Severity, code: FindingCode, message: str) -> None:
        out.append(Finding(severity, code, node, message))

    if not report.ready:
        add(Severity.ERROR, FindingCode.WEAVE_NOT_READY, f"router not Ready ({report.source})")
    if report.ipam_range != inv.weave.ipalloc_range:
        add(
            Severity.ERROR,
            FindingCode.RANGE_MISMATCH,
            f"IPAM.Range {report.ipam_range} differs from IPALLOC_RANGE "
            f"{inv.weave.ipalloc_range} in {inv.weave.source}",
        )
    for conn in report.connections:
        if conn.state != "established":
            add(
                Severity.ERROR,
                FindingCode.CONNECTION_DOWN,
                f"connection to {conn.address} is {conn.state!r}",
            )
        elif conn.datapath == "sleeve" and not inv.weave.fastdp_disabled:
            add(
                Severity.WARNING,
                FindingCode.SLEEVE_FALLBACK,
                f"connection to {conn.address} fell back to sleeve (often an MTU problem)",
            )
        if conn.mtu is not None and 0 < conn.mtu < inv.weave.mtu:
            add(
                Severity.WARNING,
                FindingCode.MTU_BELOW_SETTING,
                f"connection to {conn.address} runs at MTU {conn.mtu} < WEAVE_MTU {inv.weave.mtu}",
            )
    for peer in report.peers:
        for pconn in peer.connections:
            if not pconn.established:
                add(
                    Severity.ERROR,
                    FindingCode.CONNECTION_DOWN,
                    f"peer {peer.nickname} ({peer.name}) reports its connection to "
                    f"{pconn.address} not established",
                )
    seen = {p.nickname for p in report.peers}
    missing = sorted(n.name for n in inv.nodes if n.name not in seen)
    if missing:
        add(Severity.ERROR, FindingCode.PEER_MISSING, f"does not see peer(s) {', '.join(missing)}")
    for entry in report.entries:
        if not entry.known:
            owner = f"{entry.nickname} ({entry.peer})" if entry.nickname else entry.peer
            add(
                Severity.ERROR,
                FindingCode.UNKNOWN_PEER,
                f"IPAM range at token {entry.token} ({entry.size} addresses) is owned by "
                f"unknown peer {owner}: reclaim it (weave rmpeer) before migrating",
            )
    if report.pending_claims:
        add(
            Severity.ERROR,
            FindingCode.PENDING_CLAIMS,
            f"{report.pending_claims} pending IPAM claim(s): wait for them to settle",
        )
    return out


def analyse(inv: Inventory) -> tuple[Finding, ...]:
    """Everything S0's verification looks at, errors first, in a stable order.

    Returns:
        The findings; the inventory is clean when none has severity ``error``.
    """
    out: list[Finding] = []
    for node in inv.nodes:
        if not node.ready:
            out.append(
                Finding(Severity.ERROR, FindingCode.NODE_NOT_READY, node.name, "node is not Ready")
            )
    by_node = {r.node: r for r in inv.reports}
    for node in inv.nodes:
        if node.name not in by_node:
            out.append(
                Finding(
                    Severity.ERROR,
                    FindingCode.REPORT_MISSING,
                    node.name,
                    "no Weave /report for this node",
                )
            )
    names = {n.name for n in inv.nodes}
    for report in inv.reports:
        if report.node not in names:
            out.append(
                Finding(
                    Severity.ERROR,
                    FindingCode.REPORT_UNEXPECTED,
                    report.node,
                    f"{report.source} is from a node that is not in the node list",
                )
            )
        out.extend(_report_findings(inv, report))
    versions = sorted({r.version for r in inv.reports})
    if len(versions) > 1:
        out.append(
            Finding(
                Severity.WARNING,
                FindingCode.VERSION_SKEW,
                "cluster",
                f"Weave versions differ between nodes: {', '.join(versions)}",
            )
        )
    if inv.peers_configmap is not None:
        stale = sorted({node for _, node in inv.peers_configmap} - names)
        if stale:
            out.append(
                Finding(
                    Severity.WARNING,
                    FindingCode.PEERS_CONFIGMAP_STALE,
                    "cluster",
                    f"peers ConfigMap lists node(s) no longer in the cluster: {', '.join(stale)}",
                )
            )
    out.extend(_overlaps(inv))
    order = {Severity.ERROR: 0, Severity.WARNING: 1}
    return tuple(sorted(out, key=lambda f: order[f.severity]))


def is_clean(findings: Sequence[Finding]) -> bool:
    """S0's verification: no finding of severity error."""
    return not any(f.severity is Severity.ERROR for f in findings)


def render_text(inv: Inventory, findings: Sequence[Finding]) -> str:
    """The inventory report a person reads (``sluice migrate inventory``)."""
    w = inv.weave
    lines = [
        f"Weave range:    {w.ipalloc_range} (IPALLOC_RANGE)",
        f"Weave MTU:      {w.mtu} (WEAVE_MTU)",
        f"Conn limit:     {w.conn_limit} (CONN_LIMIT)",
        f"Encryption:     {'on (WEAVE_PASSWORD set)' if w.encrypted else 'off'}",
        f"Service CIDRs:  {', '.join(map(str, inv.service_cidrs)) or '(not given)'}",
        "NetworkPolicies: "
        + (str(inv.network_policies) if inv.network_policies is not None else "(not read)"),
        "",
        "node               role           ready  weave  peers  conns (est/total)  podCIDRs",
    ]
    by_node = {r.node: r for r in inv.reports}
    for node in inv.nodes:
        report = by_node.get(node.name)
        role = "control-plane" if node.control_plane else "worker"
        if report is None:
            weave = peers = conns = "-"
        else:
            weave = "ready" if report.ready else "NOT"
            peers = str(len(report.peers))
            established = sum(1 for c in report.connections if c.state == "established")
            conns = f"{established}/{len(report.connections)}"
        cidrs = ",".join(map(str, node.pod_cidrs)) or "-"
        lines.append(
            f"{node.name:<18} {role:<14} {'yes' if node.ready else 'NO':<6} {weave:<6} "
            f"{peers:<6} {conns:<18} {cidrs}"
        )
    lines.append("")
    if findings:
        lines.extend(str(f) for f in findings)
    lines.append("S0 verification: " + ("clean" if is_clean(findings) else "NOT clean"))
    return "\n".join(lines)
