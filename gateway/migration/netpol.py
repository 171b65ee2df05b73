"""Read NetworkPolicies (and the pod / namespace inventory) from the YAML ``kubectl`` writes.

Theory of operation: a path is a file or a directory of ``*.yaml`` / ``*.yml`` files (sorted, not
recursive). Each file holds one or many YAML documents; a document is an object or a ``List`` /
``NetworkPolicyList`` / ``PodList`` / ``NamespaceList`` whose ``items`` are objects. Every object is
checked as the API server would check it (:mod:`gateway.migration.netpol_model` documents the
semantics) and every mistake becomes one :class:`NetpolProblem` line naming the file, the line,
the 1-based document number and the field path (``spec.ingress[0].from[1].ipBlock.cidr``). All
files are read before :class:`NetpolError` is raised, so one run shows every problem. Objects of
other kinds are skipped, not errors: a directory exported with ``kubectl get all`` may hold them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from gateway.migration.netpol_model import (
    IPBlock,
    LabelSelector,
    Namespace,
    NetworkPolicy,
    Operator,
    Peer,
    Pod,
    PolicyPort,
    PolicyRule,
    PolicyType,
    Protocol,
    Requirement,
    Source,
)

MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_DOCUMENTS = 10_000
NETWORKING_API = "networking.k8s.io/v1"
LIST_KINDS = frozenset({"List", "NetworkPolicyList", "PodList", "NamespaceList"})

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_PORT_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")

Segment = str | int
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class NetpolProblem:
    """One mistake: ``file:line: document N: field: message``."""

    file: str
    document: int
    field: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        what = f" {self.field}:" if self.field else ""
        return f"{where}: document {self.document}:{what} {self.message}"


class NetpolError(ValueError):
    """Malformed input; ``str()`` is one line per problem."""

    def __init__(self, problems: Iterable[NetpolProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True, slots=True)
class Objects:
    """Everything read from a path: the objects, and the kinds that were skipped."""

    policies: tuple[NetworkPolicy, ...] = ()
    pods: tuple[Pod, ...] = ()
    namespaces: tuple[Namespace, ...] = ()
    skipped: tuple[tuple[Source, str], ...] = ()  # (where, "kind name") of other objects


# -- entry points ----------------------------------------------------------------------------


def yaml_files(path: Path | str) -> tuple[Path, ...]:
    """The file itself, or a directory's ``*.yaml`` / ``*.yml`` files in name order.

    Raises:
        NetpolError: the path does not exist.
    """
    path = Path(path)
    if path.is_dir():
        return tuple(sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml")))
    if not path.exists():
        raise NetpolError([NetpolProblem(str(path), 0, "", "no such file or directory")])
    return (path,)


def load_objects(path: Path | str) -> Objects:
    """Read every NetworkPolicy, Pod and Namespace under ``path``.

    Returns:
        The objects in file and document order.

    Raises:
        NetpolError: every problem of every file (unreadable file, bad YAML, invalid object).
    """
    found = _Found()
    for file in yaml_files(path):
        try:
            data = file.read_bytes()
        except OSError as exc:
            found.problems.append(NetpolProblem(str(file), 0, "", f"cannot read: {exc.strerror}"))
            continue
        if len(data) > MAX_FILE_BYTES:
            found.problems.append(
                NetpolProblem(str(file), 0, "", f"larger than {MAX_FILE_BYTES} bytes")
            )
            continue
        parse_text(data.decode("utf-8", errors="replace"), str(file), found)
    if found.problems:
        raise NetpolError(found.problems)
    return Objects(
        tuple(found.policies), tuple(found.pods), tuple(found.namespaces), tuple(found.skipped)
    )


def load_network_policies(path: Path | str) -> tuple[NetworkPolicy, ...]:
    """Read the NetworkPolicies under ``path`` (see :func:`load_objects`).

    Raises:
        NetpolError: one line per problem, naming file, line, document and field.
    """
    return load_objects(path).policies


@dataclass(slots=True)
class _Found:
    policies: list[NetworkPolicy] = field(default_factory=list)
    pods: list[Pod] = field(default_factory=list)
    namespaces: list[Namespace] = field(default_factory=list)
    skipped: list[tuple[Source, str]] = field(default_factory=list)
    problems: list[NetpolProblem] = field(default_factory=list)


def parse_text(text: str, file: str, found: _Found | None = None) -> Objects:
    """Parse the YAML ``text`` of ``file`` (pure: no I/O).

    Returns:
        The objects it holds (when ``found`` is None).

    Raises:
        NetpolError: when ``found`` is None and there are problems; otherwise problems are
            appended to ``found``.
    """
    own = found is None
    sink = _Found() if found is None else found
    loader = yaml.SafeLoader(text)
    document = 0
    try:
        while document < MAX_DOCUMENTS:
            try:
                if not loader.check_node():
                    break
                document += 1
                node = loader.get_node()
                data = loader.construct_document(node)
            except yaml.YAMLError as exc:
                mark = getattr(exc, "problem_mark", None)
                line = mark.line + 1 if mark is not None else None
                sink.problems.append(
                    NetpolProblem(
                        file, max(document, 1), "", f"invalid YAML: {_yaml_why(exc)}", line
                    )
                )
                break
            if data is None or node is None:
                continue  # an empty document (a stray ---)
            _document(_Ctx(file, document, node, sink.problems), data, sink)
        else:
            sink.problems.append(NetpolProblem(file, document, "", "too many documents"))
    finally:
        loader.dispose()
    if own:
        if sink.problems:
            raise NetpolError(sink.problems)
        return Objects(
            tuple(sink.policies), tuple(sink.pods), tuple(sink.namespaces), tuple(sink.skipped)
        )
    return Objects()


def _yaml_why(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None)
    return str(problem) if problem else str(exc).splitlines()[0]


# -- reading helpers -------------------------------------------------------------------------


@dataclass(slots=True)
class _Ctx:
    file: str
    document: int
    node: yaml.Node
    problems: list[NetpolProblem]

    def problem(self, path: tuple[Segment, ...], message: str) -> None:
        self.problems.append(
            NetpolProblem(self.file, self.document, render_path(path), message, self._line(path))
        )

    def _line(self, path: tuple[Segment, ...]) -> int:
        """The line of the deepest node of ``path`` that exists (1-based)."""
        node = self.node
        for segment in path:
            child: yaml.Node | None = None
            if isinstance(node, yaml.MappingNode):
                for key, value in node.value:
                    if isinstance(key, yaml.ScalarNode) and key.value == segment:
                        child = value
                        break
            elif (
                isinstance(node, yaml.SequenceNode)
                and isinstance(segment, int)
                and 0 <= segment < len(node.value)
            ):
                child = node.value[segment]
            if child is None:
                break
            node = child
        return int(node.start_mark.line) + 1


def render_path(path: tuple[Segment, ...]) -> str:
    """``("spec", "ingress", 0, "from")`` -> ``spec.ingress[0].from``."""
    out = ""
    for segment in path:
        if isinstance(segment, int):
            out += f"[{segment}]"
        else:
            out += f".{segment}" if out else segment
    return out


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({value})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _mapping(
    ctx: _Ctx, value: object, path: tuple[Segment, ...], known: Iterable[str] | None = None
) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        ctx.problem(path, f"expected a mapping, found {_describe(value)}")
        return None
    if known is not None:
        allowed = set(known)
        for key in value:
            if key not in allowed:
                ctx.problem(
                    (*path, str(key)),
                    f"unknown field (expected one of {', '.join(sorted(allowed))})",
                )
    return value


def _list(ctx: _Ctx, value: object, path: tuple[Segment, ...]) -> list[Any]:
    if value is None:
        return []  # "ingress:" with nothing after it is a null, which the API reads as absent
    if not isinstance(value, list):
        ctx.problem(path, f"expected a list, found {_describe(value)}")
        return []
    return value


def _string(
    ctx: _Ctx,
    value: object,
    path: tuple[Segment, ...],
    pattern: re.Pattern[str] | None = None,
    what: str = "",
) -> str:
    if not isinstance(value, str):
        ctx.problem(path, f"expected a string, found {_describe(value)}")
        return ""
    if pattern is not None and pattern.fullmatch(value) is None:
        ctx.problem(path, f"expected {what}, found {value!r}")
    return value


def _items(
    ctx: _Ctx,
    value: object,
    path: tuple[Segment, ...],
    read: Callable[[_Ctx, object, tuple[Segment, ...]], T],
) -> tuple[T, ...]:
    return tuple(read(ctx, item, (*path, i)) for i, item in enumerate(_list(ctx, value, path)))


# -- documents and objects -------------------------------------------------------------------


def _document(ctx: _Ctx, data: object, found: _Found) -> None:
    top = _mapping(ctx, data, ())
    if top is None:
        return
    kind = top.get("kind")
    if kind in LIST_KINDS:
        for i, item in enumerate(_list(ctx, top.get("items"), ("items",))):
            _object(ctx, item, ("items", i), found)
    else:
        _object(ctx, top, (), found)


def _object(ctx: _Ctx, data: object, path: tuple[Segment, ...], found: _Found) -> None:
    obj = _mapping(ctx, data, path)
    if obj is None:
        return
    source = Source(ctx.file, ctx.document, render_path(path))
    kind = obj.get("kind")
    if not isinstance(kind, str):
        ctx.problem((*path, "kind"), f"expected the object's kind, found {_describe(kind)}")
        return
    before = len(ctx.problems)
    if kind == "NetworkPolicy":
        policy = _network_policy(ctx, obj, path, source)
        if len(ctx.problems) == before:
            found.policies.append(policy)
    elif kind == "Pod":
        pod = _pod(ctx, obj, path)
        if len(ctx.problems) == before:
            found.pods.append(pod)
    elif kind == "Namespace":
        namespace = _namespace(ctx, obj, path)
        if len(ctx.problems) == before:
            found.namespaces.append(namespace)
    else:
        meta = obj.get("metadata")
        name = meta.get("name") if isinstance(meta, dict) else None
        found.skipped.append((source, f"{kind} {name}"))


def _metadata(ctx: _Ctx, obj: dict[str, Any], path: tuple[Segment, ...]) -> tuple[str, str]:
    meta = _mapping(ctx, obj.get("metadata"), (*path, "metadata"))
    if meta is None:
        return "", "default"
    if "name" not in meta:
        ctx.problem((*path, "metadata", "name"), "missing required field")
        name = ""
    else:
        name = _string(
            ctx,
            meta["name"],
            (*path, "metadata", "name"),
            _DNS_SUBDOMAIN,
            "a lowercase DNS subdomain name",
        )
    namespace = "default"
    if "namespace" in meta:
        namespace = _string(
            ctx,
            meta["namespace"],
            (*path, "metadata", "namespace"),
            _DNS_LABEL,
            "a lowercase DNS label (a namespace name)",
        )
    return name, namespace


def _labels(ctx: _Ctx, value: object, path: tuple[Segment, ...]) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    table = _mapping(ctx, value, path)
    if table is None:
        return ()
    out: list[tuple[str, str]] = []
    for key, item in table.items():
        key_text = _label_key(ctx, key, (*path, str(key)))
        text = _string(
            ctx,
            item,
            (*path, str(key)),
            _LABEL_VALUE,
            "a label value (up to 63 letters, digits, '-', '_', '.')",
        )
        out.append((key_text, text))
    return tuple(sorted(out))


def _label_key(ctx: _Ctx, key: object, path: tuple[Segment, ...]) -> str:
    text = _string(ctx, key, path)
    prefix, _, name = text.rpartition("/")
    if (
        len(name) > 63
        or _LABEL_NAME.fullmatch(name) is None
        or (prefix and _DNS_SUBDOMAIN.fullmatch(prefix) is None)
    ):
        ctx.problem(path, f"expected a label key such as app or example.com/tier, found {text!r}")
    return text


def _network_policy(
    ctx: _Ctx, obj: dict[str, Any], path: tuple[Segment, ...], source: Source
) -> NetworkPolicy:
    if obj.get("apiVersion") != NETWORKING_API:
        ctx.problem(
            (*path, "apiVersion"),
            f"expected {NETWORKING_API!r}, found {_describe(obj.get('apiVersion'))}",
        )
    name, namespace = _metadata(ctx, obj, path)
    spec_path = (*path, "spec")
    spec = _mapping(
        ctx, obj.get("spec"), spec_path, ("podSelector", "policyTypes", "ingress", "egress")
    )
    spec = spec or {}
    if "podSelector" not in spec:
        ctx.problem((*spec_path, "podSelector"), "missing required field (use {} for every pod)")
    pod_selector = _selector(ctx, spec.get("podSelector") or {}, (*spec_path, "podSelector"))
    ingress = _items(ctx, spec.get("ingress"), (*spec_path, "ingress"), _ingress_rule)
    egress = _items(ctx, spec.get("egress"), (*spec_path, "egress"), _egress_rule)
    given = "policyTypes" in spec and spec["policyTypes"] is not None
    if given:
        types = _policy_types(ctx, spec["policyTypes"], (*spec_path, "policyTypes"))
    else:
        # The API server's default: Ingress always, Egress when there are egress rules.
        types = (PolicyType.INGRESS, PolicyType.EGRESS) if egress else (PolicyType.INGRESS,)
    return NetworkPolicy(
        name, namespace, pod_selector, types, ingress, egress, given, source, raw=obj
    )


def _policy_types(ctx: _Ctx, value: object, path: tuple[Segment, ...]) -> tuple[PolicyType, ...]:
    out: list[PolicyType] = []
    for i, item in enumerate(_list(ctx, value, path)):
        if item not in {t.value for t in PolicyType}:
            ctx.problem((*path, i), f"expected 'Ingress' or 'Egress', found {_describe(item)}")
        elif PolicyType(item) in out:
            ctx.problem((*path, i), f"{item!r} is listed twice")
        else:
            out.append(PolicyType(item))
    return tuple(out)


def _ingress_rule(ctx: _Ctx, value: object, path: tuple[Segment, ...]) -> PolicyRule:
    return _rule(ctx, value, path, "from")


def _egress_rule(ctx: _Ctx, value: object, path: tuple[Segment, ...]) -> PolicyRule:
    return _rule(ctx, value, path, "to")


def _rule(ctx: _Ctx, value: object, path: tuple[Segment, ...], peers_key: str) -> PolicyRule:
    rule = _mapping(ctx, value, path, (peers_key, "ports"))
    if rule is None:
        return PolicyRule()
    peers = _items(ctx, rule.get(peers_key), (*path, peers_key), _peer)
    ports = _items(ctx, rule.get("ports"), (*path, "ports"), _port)
    return PolicyRule(peers, ports)


def _peer(ctx: _Ctx, value: object, path: tuple[Segment, ...]) -> Peer:
    peer = _mapping(ctx, value, path, ("podSelector", "namespaceSelector", "ipBlock"))
    if peer is None:
        return Peer()
    present = [
        k for k in ("podSelector", "namespaceSelector", "ipBlock") if peer.get(k) is not None
    ]
    if not present:
        ctx.problem(path, "a peer needs podSelector, namespaceSelector or ipBlock")
        return Peer()
    if "ipBlock" in present and len(present) > 1:
        ctx.problem(path, "ipBlock cannot be combined with podSelector or namespaceSelector")
    pods = peer.get("podSelector")
    namespaces = peer.get("namespaceSelector")
    return Peer(
        pod_selector=None if pods is None else _selector(ctx, pods, (*path, "podSelector")),
        namespace_selector=(
            None if namespaces is None else _selector(ctx, namespaces, (*path, "namespaceSelector"))
        ),
        ip_block=(
            None
            if peer.get("ipBlock") is None
            else _ip_block(ctx, peer["ipBlock"], (*path, "ipBlock"))
        ),
    )


def _selector(ctx: _Ctx, value: object, path: tuple[Segment, ...]) -> LabelSelector:
    table = _mapping(ctx, value, path, ("matchLabels", "matchExpressions"))
    if table is None:
        return LabelSelector()
    labels = _labels(ctx, table.get("matchLabels"), (*path, "matchLabels"))
    expressions = _items(
        ctx, table.get("matchExpressions"), (*path, "matchExpressions"), _requirement
    )
    return LabelSelector(labels, expressions)


def _requirement(ctx: _Ctx, value: object, path: tuple[Segment, ...]) -> Requirement:
    table = _mapping(ctx, value, path, ("key", "operator", "values"))
    if table is None:
        return Requirement("", Operator.EXISTS)
    key = _label_key(ctx, table.get("key"), (*path, "key"))
    text = table.get("operator")
    if text not in {o.value for o in Operator}:
        ctx.problem(
            (*path, "operator"),
            f"expected In, NotIn, Exists or DoesNotExist, found {_describe(text)}",
        )
        return Requirement(key, Operator.EXISTS)
    operator = Operator(text)
    values = tuple(
        _string(ctx, v, (*path, "values", i))
        for i, v in enumerate(_list(ctx, table.get("values"), (*path, "values")))
    )
    if operator in (Operator.IN, Operator.NOT_IN) and not values:
        ctx.problem((*path, "values"), f"operator {operator.value} needs at least one value")
    if operator in (Operator.EXISTS, Operator.DOES_NOT_EXIST) and values:
        ctx.problem((*path, "values"), f"operator {operator.value} takes no values")
    return Requirement(key, operator, values)


def _ip_block(ctx: _Ctx, value: object, path: tuple[Segment, ...]) -> IPBlock:
    table = _mapping(ctx, value, path, ("cidr", "except"))
    if table is None:
        return IPBlock("")
    cidr_text = _string(ctx, table.get("cidr"), (*path, "cidr"))
    network = _network(ctx, cidr_text, (*path, "cidr"))
    excepts: list[str] = []
    for i, item in enumerate(_list(ctx, table.get("except"), (*path, "except"))):
        text = _string(ctx, item, (*path, "except", i))
        inner = _network(ctx, text, (*path, "except", i))
        if (
            network is not None
            and inner is not None
            and (
                inner.version != network.version or not inner.subnet_of(network)  # type: ignore[arg-type]
            )
        ):
            ctx.problem((*path, "except", i), f"{text} is not inside cidr {cidr_text}")
        excepts.append(text)
    return IPBlock(cidr_text, tuple(excepts))


def _network(
    ctx: _Ctx, text: str, path: tuple[Segment, ...]
) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    if not text:
        return None
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        ctx.problem(path, f"expected a CIDR such as 10.0.0.0/8, found {text!r}")
        return None


def _port(ctx: _Ctx, value: object, path: tuple[Segment, ...]) -> PolicyPort:
    table = _mapping(ctx, value, path, ("protocol", "port", "endPort"))
    if table is None:
        return PolicyPort()
    protocol = Protocol.TCP
    if table.get("protocol") is not None:
        text = table["protocol"]
        if text not in {p.value for p in Protocol}:
            ctx.problem((*path, "protocol"), f"expected TCP, UDP or SCTP, found {_describe(text)}")
        else:
            protocol = Protocol(text)
    port: int | str | None = table.get("port")
    if isinstance(port, bool) or not (port is None or isinstance(port, int | str)):
        ctx.problem((*path, "port"), f"expected a port number or name, found {_describe(port)}")
        port = None
    elif isinstance(port, int) and not 1 <= port <= 65535:
        ctx.problem((*path, "port"), f"expected a port number from 1 to 65535, found {port}")
    elif isinstance(port, str) and (
        len(port) > 15 or _PORT_NAME.fullmatch(port) is None or not re.search("[a-z]", port)
    ):
        ctx.problem((*path, "port"), f"expected a port name (IANA_SVC_NAME), found {port!r}")
    end_port = table.get("endPort")
    if end_port is not None:
        if isinstance(end_port, bool) or not isinstance(end_port, int):
            ctx.problem((*path, "endPort"), f"expected a port number, found {_describe(end_port)}")
            end_port = None
        elif not isinstance(port, int):
            ctx.problem((*path, "endPort"), "endPort needs a numeric port")
        elif not port <= end_port <= 65535:
            ctx.problem(
                (*path, "endPort"), f"expected {port}..65535 (port to 65535), found {end_port}"
            )
    return PolicyPort(protocol, port, end_port)


def _pod(ctx: _Ctx, obj: dict[str, Any], path: tuple[Segment, ...]) -> Pod:
    name, namespace = _metadata(ctx, obj, path)
    meta: dict[str, Any] = obj["metadata"] if isinstance(obj.get("metadata"), dict) else {}
    labels = _labels(ctx, meta.get("labels"), (*path, "metadata", "labels"))
    spec: dict[str, Any] = obj["spec"] if isinstance(obj.get("spec"), dict) else {}
    account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    account = _string(
        ctx,
        account,
        (*path, "spec", "serviceAccountName"),
        _DNS_SUBDOMAIN,
        "a service account name",
    )
    return Pod(namespace, name, labels, account)


def _namespace(ctx: _Ctx, obj: dict[str, Any], path: tuple[Segment, ...]) -> Namespace:
    meta = _mapping(ctx, obj.get("metadata"), (*path, "metadata")) or {}
    name = _string(
        ctx, meta.get("name"), (*path, "metadata", "name"), _DNS_LABEL, "a namespace name"
    )
    return Namespace(name, _labels(ctx, meta.get("labels"), (*path, "metadata", "labels")))


def policies_by_key(policies: Iterable[NetworkPolicy]) -> Mapping[str, NetworkPolicy]:
    """Index policies by ``namespace/name`` (later duplicates win, as with ``kubectl apply``)."""
    return {p.key: p for p in policies}
