"""A typed model of Kubernetes ``networking.k8s.io/v1`` NetworkPolicy, and of the workloads it
selects.

Theory of operation: :mod:`gateway.migration.netpol` reads YAML into these frozen values once,
checking everything the API server would; the translators (``to_cilium``, ``to_sluice``) and the
reference evaluator in the tests read only these values. Semantics follow the Kubernetes API
reference:

- ``podSelector`` selects pods of the policy's own namespace; empty selects them all.
- ``policyTypes`` omitted: ``Ingress`` always, plus ``Egress`` when ``spec.egress`` has rules.
- An ingress (egress) rule with no ``from`` (``to``) peers matches every source (destination).
- A peer is ``ipBlock`` alone, or ``podSelector`` and/or ``namespaceSelector``: with both, a pod
  must match both (AND); separate peers of one rule are alternatives (OR).
- Rules and policies are additive: a flow is allowed when any rule of any selecting policy allows
  it, and only directions listed in ``policyTypes`` isolate the selected pods.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


class Operator(enum.StrEnum):
    """A label selector requirement's operator."""

    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class PolicyType(enum.StrEnum):
    INGRESS = "Ingress"
    EGRESS = "Egress"


class Protocol(enum.StrEnum):
    TCP = "TCP"
    UDP = "UDP"
    SCTP = "SCTP"


@dataclass(frozen=True, slots=True)
class Requirement:
    """One ``matchExpressions`` entry. ``values`` is empty for Exists / DoesNotExist."""

    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        match self.operator:
            case Operator.IN:
                return present and labels[self.key] in self.values
            case Operator.NOT_IN:
                return not present or labels[self.key] not in self.values
            case Operator.EXISTS:
                return present
            case Operator.DOES_NOT_EXIST:
                return not present


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """``matchLabels`` (sorted key/value pairs) AND every ``matchExpressions`` requirement."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[Requirement, ...] = ()

    @property
    def empty(self) -> bool:
        """An empty selector selects everything in its domain."""
        return not self.match_labels and not self.match_expressions

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels) and all(
            r.matches(labels) for r in self.match_expressions
        )

    def keys(self) -> frozenset[str]:
        """Every label key the selector reads."""
        return frozenset(k for k, _ in self.match_labels) | {r.key for r in self.match_expressions}


@dataclass(frozen=True, slots=True)
class IPBlock:
    cidr: str
    except_: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Peer:
    """A ``NetworkPolicyPeer``: ``ip_block`` alone, or one or both selectors."""

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None


@dataclass(frozen=True, slots=True)
class PolicyPort:
    """A ``NetworkPolicyPort``; ``port`` is a number, a named port (str) or None (all ports)."""

    protocol: Protocol = Protocol.TCP
    port: int | str | None = None
    end_port: int | None = None


@dataclass(frozen=True, slots=True)
class PolicyRule:
    """An ingress rule (``peers`` = ``from``) or egress rule (``peers`` = ``to``).

    ``peers`` empty means every peer (the field was missing or an empty list); ``ports`` empty
    means every port.
    """

    peers: tuple[Peer, ...] = ()
    ports: tuple[PolicyPort, ...] = ()


@dataclass(frozen=True, slots=True)
class Source:
    """Where an object was read: file, 1-based YAML document number, and the path of the object
    inside that document (``""``, or ``items[3]`` for a member of a List)."""

    file: str
    document: int
    item: str = ""

    def field(self, path: str) -> str:
        """The full field path of ``path`` (``spec.ingress[0]``) inside the document."""
        if not self.item:
            return path
        return f"{self.item}.{path}" if path else self.item

    def __str__(self) -> str:
        return f"{self.file} document {self.document}"


@dataclass(frozen=True, slots=True)
class NetworkPolicy:
    """One NetworkPolicy. ``policy_types_given`` records whether ``policyTypes`` was written
    (Cilium's translator reads the written list, Kubernetes the defaulted one).

    ``raw`` is the object exactly as read, for the stash; it does not take part in equality.
    """

    name: str
    namespace: str
    pod_selector: LabelSelector
    policy_types: tuple[PolicyType, ...]
    ingress: tuple[PolicyRule, ...]
    egress: tuple[PolicyRule, ...]
    policy_types_given: bool
    source: Source
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def key(self) -> str:
        """``namespace/name``."""
        return f"{self.namespace}/{self.name}"

    @property
    def isolates_ingress(self) -> bool:
        return PolicyType.INGRESS in self.policy_types

    @property
    def isolates_egress(self) -> bool:
        return PolicyType.EGRESS in self.policy_types


@dataclass(frozen=True, slots=True)
class Pod:
    """A pod of the workload inventory (``kubectl get pods -A -o yaml``)."""

    namespace: str
    name: str
    labels: tuple[tuple[str, str], ...]
    service_account: str = "default"

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


@dataclass(frozen=True, slots=True)
class Namespace:
    """A namespace with its labels; ``kubernetes.io/metadata.name`` is always among them (the
    API server sets it on every namespace since Kubernetes 1.22)."""

    name: str
    labels: tuple[tuple[str, str], ...]

    @property
    def label_map(self) -> dict[str, str]:
        labels = dict(self.labels)
        labels[NAMESPACE_NAME_LABEL] = self.name
        return labels
