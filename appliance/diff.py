"""Pure comparison of the planned network state with the observed one.

``diff(ops, observed, record)`` returns the changes ``apply`` must make, in the order it must make
them. The :class:`Record` is what earlier runs created (read from the state file): only recorded
resources are ever removed or replaced, so pre-existing configuration is left alone, and a
resource that exists but differs and was *not* created by sluice is a :class:`Conflict`, never
silently overwritten. Teardown is ``diff((), observed, record)``: converge to the empty plan, which
removes what apply created and restores the sysctls and MTUs it changed.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from appliance.plan import (
    Address,
    ExistingLink,
    FdbEntry,
    Key,
    Neighbour,
    Nexthop,
    Operation,
    Route,
    Sysctl,
    VxlanLink,
)


@dataclass(frozen=True, slots=True)
class VxlanAttrs:
    """The VXLAN attributes of an observed link."""

    vni: int
    port: int
    local: IPv4Address | None
    learning: bool
    underlay: str | None


@dataclass(frozen=True, slots=True)
class LinkState:
    """One observed link."""

    ifname: str
    mtu: int
    up: bool
    kind: str | None
    mac: str | None
    vxlan: VxlanAttrs | None = None


@dataclass(frozen=True, slots=True)
class Observed:
    """What the machine (or namespace) has now, restricted to what the plan and record name."""

    links: Mapping[str, LinkState] = field(default_factory=dict)
    addresses: frozenset[tuple[str, IPv4Interface]] = frozenset()
    # Main-table IPv4 routes with the default metric, by destination.
    routes: Mapping[IPv4Network, frozenset[Nexthop]] = field(default_factory=dict)
    fdb: frozenset[tuple[str, str, IPv4Address]] = frozenset()
    # Permanent neighbour entries: (ifname, address) -> lladdr.
    neighbours: Mapping[tuple[str, IPv4Address], str] = field(default_factory=dict)
    # Sysctl path -> value; a missing path (e.g. interface absent) is simply not present.
    sysctls: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Record:
    """What sluice changed, so that teardown can undo exactly that.

    ``created`` holds the keys of resources apply created; ``sysctls`` and ``mtus`` the values they
    had before apply first changed them; ``upped`` the pre-existing links apply set up.
    """

    created: tuple[Key, ...] = ()
    sysctls: Mapping[str, str] = field(default_factory=dict)
    mtus: Mapping[str, int] = field(default_factory=dict)
    upped: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.created or self.sysctls or self.mtus or self.upped)


class Action(enum.StrEnum):
    """What a change does."""

    CREATE = "create"
    REPLACE = "replace"
    SET = "set"
    REMOVE = "remove"
    RESTORE = "restore"


@dataclass(frozen=True, slots=True)
class Change:
    """One change apply will make.

    ``key`` names the resource (``("mtu", "ens4")``, ``("up", "ens4")`` for link settings);
    ``op`` is the desired operation (None for REMOVE/RESTORE); ``before``/``after`` are readable
    values for the report; ``before`` is also what the record keeps for a later restore.
    """

    action: Action
    key: Key
    op: Operation | None = None
    before: str | None = None
    after: str | None = None

    def __str__(self) -> str:
        what = str(self.op) if self.op is not None else " ".join(self.key)
        if self.action in (Action.SET, Action.RESTORE) or (self.before and self.after):
            return f"{self.action:<8} {what}: {self.before} -> {self.after}"
        return f"{self.action:<8} {what}"


class Conflict(ValueError):
    """The machine has something sluice would have to overwrite but did not create."""


class MissingLink(ValueError):
    """A NIC named by the configuration does not exist."""


_REMOVE_ORDER = {"route": 0, "neigh": 1, "fdb": 2, "address": 3, "link": 4}


def _vxlan_matches(op: VxlanLink, link: LinkState) -> bool:
    attrs = link.vxlan
    return (
        link.kind == "vxlan"
        and attrs is not None
        and (attrs.vni, attrs.port, attrs.local, attrs.learning, attrs.underlay)
        == (op.vni, op.port, op.local, op.learning, op.underlay)
        and (op.mac is None or link.mac == op.mac)
    )


def _link_changes(op: ExistingLink | VxlanLink, link: LinkState) -> list[Change]:
    out: list[Change] = []
    if op.mtu is not None and link.mtu != op.mtu:
        out.append(Change(Action.SET, ("mtu", op.ifname), op, str(link.mtu), str(op.mtu)))
    if not link.up:
        out.append(Change(Action.SET, ("up", op.ifname), op, "down", "up"))
    return out


def _on_fresh(op: Operation, fresh: set[str]) -> bool:
    """Whether ``op`` lives on a link about to be created or replaced (so it is absent then)."""
    match op:
        case Address() | FdbEntry() | Neighbour():
            return op.ifname in fresh
        case Route():
            return any(h.ifname in fresh for h in op.nexthops)
        case _:
            return False


def diff(ops: tuple[Operation, ...], observed: Observed, record: Record) -> tuple[Change, ...]:
    """The changes that make ``observed`` match ``ops``, in execution order.

    Args:
        ops: the plan (``()`` for teardown).
        observed: the current state, as read by ``appliance.apply.observe``.
        record: what earlier applies created or changed.
    Returns:
        removals of recorded resources no longer planned (routes first, links last), then the
        creations/replacements/settings in plan order, then restorations of recorded values.
    Raises:
        MissingLink: a configured NIC does not exist.
        Conflict: a resource exists with other attributes and was not created by sluice.
    """
    owned = set(record.created)
    wanted = {op.key for op in ops}
    changes: list[Change] = []
    stale = [k for k in record.created if k not in wanted]
    for key in sorted(stale, key=lambda k: _REMOVE_ORDER.get(k[0], 9)):
        changes.append(Change(Action.REMOVE, key))
    removed_links = {k[1] for k in stale if k[0] == "link"}

    fresh: set[str] = set()
    for op in ops:
        if isinstance(op, VxlanLink):
            link = observed.links.get(op.ifname)
            if link is None:
                fresh.add(op.ifname)
                changes.append(Change(Action.CREATE, op.key, op))
            elif not _vxlan_matches(op, link):
                if op.key not in owned:
                    raise Conflict(
                        f"link {op.ifname} exists with other attributes and was not created by "
                        "sluice; remove it or choose another cilium.vxlan.name"
                    )
                fresh.add(op.ifname)
                changes.append(
                    Change(Action.REPLACE, op.key, op, "other vxlan attributes", str(op))
                )
            else:
                changes += _link_changes(op, link)
        elif isinstance(op, ExistingLink):
            link = observed.links.get(op.ifname)
            if link is None:
                raise MissingLink(f"interface {op.ifname} ({op.role} side) does not exist")
            changes += _link_changes(op, link)
        elif isinstance(op, Sysctl) and op.ifname in fresh:
            # A new link starts with the kernel's default: nothing of the user's to restore later.
            changes.append(Change(Action.SET, op.key, op, None, op.value))
        elif _on_fresh(op, fresh):
            changes.append(Change(Action.CREATE, op.key, op))
        else:
            changes += _resource_changes(op, observed, owned)

    wanted_sysctls = {op.path for op in ops if isinstance(op, Sysctl)}
    wanted_mtus = {
        op.ifname for op in ops if isinstance(op, ExistingLink | VxlanLink) and op.mtu is not None
    }
    wanted_links = {op.ifname for op in ops if isinstance(op, ExistingLink | VxlanLink)}
    for path, prior in record.sysctls.items():
        now = observed.sysctls.get(path)
        gone = any(path.startswith(f"net/ipv4/conf/{name}/") for name in removed_links)
        if path not in wanted_sysctls and not gone and now is not None and now != prior:
            changes.append(Change(Action.RESTORE, ("sysctl", path), None, now, prior))
    for ifname, prior_mtu in record.mtus.items():
        link = observed.links.get(ifname)
        if (
            ifname not in wanted_mtus
            and ifname not in removed_links
            and link is not None
            and link.mtu != prior_mtu
        ):
            changes.append(
                Change(Action.RESTORE, ("mtu", ifname), None, str(link.mtu), str(prior_mtu))
            )
    for ifname in record.upped:
        link = observed.links.get(ifname)
        if ifname not in wanted_links and link is not None and link.up:
            changes.append(Change(Action.RESTORE, ("up", ifname), None, "up", "down"))
    return tuple(changes)


def _resource_changes(op: Operation, observed: Observed, owned: set[Key]) -> list[Change]:
    match op:
        case Address():
            if (op.ifname, op.interface) not in observed.addresses:
                return [Change(Action.CREATE, op.key, op)]
        case FdbEntry():
            if (op.ifname, op.lladdr, op.dst) not in observed.fdb:
                return [Change(Action.CREATE, op.key, op)]
        case Neighbour():
            have = observed.neighbours.get((op.ifname, op.address))
            if have is None:
                return [Change(Action.CREATE, op.key, op)]
            if have != op.lladdr:
                if op.key not in owned:
                    raise Conflict(
                        f"neighbour {op.address} dev {op.ifname} is at {have}, "
                        "not created by sluice"
                    )
                return [Change(Action.REPLACE, op.key, op, have, op.lladdr)]
        case Route():
            hops = observed.routes.get(op.dst)
            if hops is None:
                return [Change(Action.CREATE, op.key, op)]
            if hops != frozenset(op.nexthops):
                before = ", ".join(str(h) for h in sorted(hops))
                if op.key not in owned:
                    raise Conflict(
                        f"route {op.dst} exists ({before}) and was not created by sluice; "
                        "remove it first"
                    )
                return [Change(Action.REPLACE, op.key, op, before, str(op))]
        case Sysctl():
            now = observed.sysctls.get(op.path)
            if now != op.value:
                return [Change(Action.SET, op.key, op, now, op.value)]
        case _:
            pass
    return []


def updated_record(record: Record, change: Change) -> Record:
    """The record after ``change`` was made successfully.

    Args:
        record: the record before the change.
        change: a change that apply has just made.
    Returns:
        a record that still lets teardown undo everything apply did, and nothing else.
    """
    created = list(record.created)
    key = change.key
    match change.action:
        case Action.CREATE | Action.REPLACE:
            if key not in created:
                created.append(key)
            return replace(record, created=tuple(created))
        case Action.REMOVE:
            record = replace(record, created=tuple(k for k in created if k != key))
            return forget_link(record, key[1]) if key[0] == "link" else record
        case Action.SET:
            return _record_setting(record, change)
        case Action.RESTORE:
            kind, name = key[0], key[1]
            if kind == "sysctl":
                return replace(
                    record, sysctls={k: v for k, v in record.sysctls.items() if k != name}
                )
            if kind == "mtu":
                return replace(record, mtus={k: v for k, v in record.mtus.items() if k != name})
            return replace(record, upped=tuple(n for n in record.upped if n != name))
    return record  # pragma: no cover - every action is matched above


def _record_setting(record: Record, change: Change) -> Record:
    kind, name = change.key[0], change.key[1]
    link_owned = ("link", name) in record.created
    if kind == "sysctl" and name not in record.sysctls and change.before is not None:
        return replace(record, sysctls={**record.sysctls, name: change.before})
    if kind == "mtu" and not link_owned and name not in record.mtus and change.before is not None:
        return replace(record, mtus={**record.mtus, name: int(change.before)})
    if kind == "up" and not link_owned and name not in record.upped:
        return replace(record, upped=(*record.upped, name))
    return record


def forget_link(record: Record, ifname: str) -> Record:
    """Drop recorded sysctls of a link that no longer exists (it went away with the link)."""
    prefix = f"net/ipv4/conf/{ifname}/"
    return replace(
        record, sysctls={k: v for k, v in record.sysctls.items() if not k.startswith(prefix)}
    )
