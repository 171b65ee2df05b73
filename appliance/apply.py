"""Observe and change the appliance's network with pyroute2 (rtnetlink) and /proc/sys.

Everything here is blocking and runs outside any event loop (the CLI calls it before, and
instead of, ``trio.run``).

Network namespaces:

* rtnetlink: ``IPRoute(netns=NAME, flags=0)`` (pyroute2 >= 0.9 opens the netlink socket inside
  the namespace in a short-lived child process and hands back the descriptor; ``flags=0`` makes
  a missing namespace an error instead of silently creating it).
* sysctls: ``/proc/sys/net`` shows the namespace *of the thread that opens the file*, so reads
  and writes run in a dedicated, throw-away thread that first calls ``setns(2)`` on
  ``/run/netns/NAME``. ``setns`` with ``CLONE_NEWNET`` changes only the calling thread, and the
  thread ends right after, so no other thread ever runs in the wrong namespace. This needs no
  ``ip`` binary and no subprocess, and errors surface as ordinary Python exceptions.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from appliance import state
from appliance.diff import (
    Action,
    Change,
    LinkState,
    Observed,
    Record,
    VxlanAttrs,
    diff,
    updated_record,
)
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

NETNS_DIR = Path("/run/netns")
PROC_SYS = Path("/proc/sys")
CLONE_NEWNET = 0x40000000
IFF_UP = 0x1
RTNH_F_ONLINK = 0x4
NUD_PERMANENT = 0x80
RT_TABLE_MAIN = 254
RTN_UNICAST = 1
RTPROT_STATIC = 4
NO_GATEWAY = IPv4Address(0)  # stands for "no gateway" (a connected route)
# Errors that mean "already gone" when removing: removal stays idempotent.
_GONE = {errno.ENOENT, errno.ESRCH, errno.ENODEV, errno.EADDRNOTAVAIL}

T = TypeVar("T")


class NetnsNotFound(ValueError):
    """The named network namespace does not exist."""


class ApplyError(RuntimeError):
    """The kernel refused a change; the message names the change."""


def check_netns(netns: str | None) -> None:
    """Raise :class:`NetnsNotFound` unless ``netns`` is None or exists under /run/netns."""
    if netns is None:
        return
    if "/" in netns or netns in {"", ".", ".."} or not (NETNS_DIR / netns).exists():
        raise NetnsNotFound(f"network namespace {netns!r} not found in {NETNS_DIR}")


def open_rtnl(netns: str | None) -> IPRoute:
    """An rtnetlink socket in ``netns`` (the caller closes it)."""
    check_netns(netns)
    return IPRoute(netns=netns, flags=0) if netns else IPRoute()


def in_netns(netns: str | None, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a throw-away thread switched into ``netns`` (see the module docstring)."""
    if netns is None:
        return fn()
    check_netns(netns)
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(NETNS_DIR / netns, os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({netns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            box["result"] = fn()
        except BaseException as exc:  # handed to the caller's thread below
            box["error"] = exc

    thread = threading.Thread(target=run, name=f"netns-{netns}")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    result: T = box["result"]
    return result


def read_sysctls(paths: Iterable[str], netns: str | None) -> dict[str, str]:
    """Current values of the given sysctls (paths under /proc/sys); absent ones are omitted."""
    wanted = sorted(set(paths))

    def read() -> dict[str, str]:
        out: dict[str, str] = {}
        for rel in wanted:
            try:
                out[rel] = (PROC_SYS / rel).read_text().strip()
            except FileNotFoundError:
                continue
        return out

    return in_netns(netns, read)


def write_sysctl(path: str, value: str, netns: str | None) -> None:
    """Write one sysctl (path under /proc/sys) in ``netns``."""
    in_netns(netns, lambda: (PROC_SYS / path).write_text(value + "\n"))


def _index_names(ipr: IPRoute) -> dict[int, str]:
    return {int(m["index"]): str(m.get("ifname")) for m in ipr.get_links()}


def observe(ipr: IPRoute, ops: Iterable[Operation], record: Record, netns: str | None) -> Observed:
    """Read the state that ``ops`` and ``record`` talk about.

    Args:
        ipr: an rtnetlink socket in the target namespace.
        ops: the plan (its sysctls are read).
        record: the state file's record (its sysctls are read too).
        netns: the namespace name, for sysctls.
    Returns:
        links, IPv4 addresses, main-table routes with the default metric, FDB entries of the
        VXLAN devices, permanent neighbours and the sysctls named by ``ops`` or ``record``.
    """
    ops = tuple(ops)
    names = _index_names(ipr)
    links: dict[str, LinkState] = {}
    for msg in ipr.get_links():
        name = str(msg.get("ifname"))
        kind = msg.get(("linkinfo", "kind"))
        vx = None
        if kind == "vxlan":
            data = msg.get(("linkinfo", "data"))
            local = data.get("vxlan_local")
            vx = VxlanAttrs(
                vni=int(data.get("vxlan_id")),
                port=int(data.get("vxlan_port")),
                local=IPv4Address(local) if local else None,
                learning=bool(data.get("vxlan_learning")),
                underlay=names.get(int(data.get("vxlan_link") or 0)),
            )
        links[name] = LinkState(
            name, int(msg.get("mtu")), bool(msg["flags"] & IFF_UP), kind, msg.get("address"), vx
        )
    addresses = frozenset(
        (names.get(int(m["index"]), "?"), IPv4Interface(f"{m.get('address')}/{m['prefixlen']}"))
        for m in ipr.get_addr(family=socket.AF_INET)
    )
    routes: dict[IPv4Network, frozenset[Nexthop]] = {}
    for m in ipr.get_routes(family=socket.AF_INET):
        if m.get("table") != RT_TABLE_MAIN or m["type"] != RTN_UNICAST or m.get("priority"):
            continue
        dst = IPv4Network((m.get("dst") or 0, int(m["dst_len"])))
        routes[dst] = _nexthops(m, names)
    vxlans = {n for n, link in links.items() if link.kind == "vxlan"}
    fdb = frozenset(
        (names[int(m["ifindex"])], str(m.get("lladdr")), IPv4Address(m.get("dst")))
        for m in ipr.fdb("dump")
        if names.get(int(m["ifindex"])) in vxlans and m.get("dst")
    )
    neighbours = {
        (names.get(int(m["ifindex"]), "?"), IPv4Address(m.get("dst"))): str(m.get("lladdr"))
        for m in ipr.get_neighbours(family=socket.AF_INET)
        if m["state"] & NUD_PERMANENT and m.get("lladdr")
    }
    paths = [op.path for op in ops if isinstance(op, Sysctl)] + list(record.sysctls)
    return Observed(links, addresses, routes, fdb, neighbours, read_sysctls(paths, netns))


def _nexthops(msg: Any, names: dict[int, str]) -> frozenset[Nexthop]:
    hops = msg.get("multipath")
    if hops:
        return frozenset(
            Nexthop(
                IPv4Address(h.get("gateway") or NO_GATEWAY),
                names.get(int(h["oif"]), "?"),
                bool(h["flags"] & RTNH_F_ONLINK),
            )
            for h in hops
        )
    gateway = msg.get("gateway")
    return frozenset(
        {
            Nexthop(
                IPv4Address(gateway or NO_GATEWAY),
                names.get(int(msg.get("oif") or 0), "?"),
                bool(msg["flags"] & RTNH_F_ONLINK),
            )
        }
    )


def _index(ipr: IPRoute, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise ApplyError(f"interface {ifname} does not exist")
    return int(found[0])


def _route_args(ipr: IPRoute, route: Route) -> dict[str, Any]:
    args: dict[str, Any] = {"dst": str(route.dst), "table": RT_TABLE_MAIN, "proto": RTPROT_STATIC}
    hops = [
        {
            "gateway": str(h.gateway),
            "oif": _index(ipr, h.ifname),
            "flags": RTNH_F_ONLINK if h.onlink else 0,
        }
        for h in route.nexthops
    ]
    if route.multipath:
        args["multipath"] = hops
    else:
        args.update(hops[0])
    return args


def _create_vxlan(ipr: IPRoute, op: VxlanLink) -> None:
    args: dict[str, Any] = {
        "ifname": op.ifname,
        "kind": "vxlan",
        "vxlan_id": op.vni,
        "vxlan_port": op.port,
        "vxlan_local": str(op.local),
        "vxlan_learning": int(op.learning),
        "vxlan_link": _index(ipr, op.underlay),
        "mtu": op.mtu,
    }
    if op.mac:
        args["address"] = op.mac
    ipr.link("add", **args)
    ipr.link("set", index=_index(ipr, op.ifname), state="up")


def _remove(ipr: IPRoute, key: Key) -> None:
    kind = key[0]
    found = ipr.link_lookup(ifname=key[1]) if kind != "route" else [0]
    if not found:
        return  # the link is gone, and with it everything that lived on it
    index = int(found[0])
    try:
        if kind == "route":
            ipr.route("del", dst=key[1], table=RT_TABLE_MAIN)
        elif kind == "neigh":
            ipr.neigh("del", ifindex=index, dst=key[2])
        elif kind == "fdb":
            ipr.fdb("del", ifindex=index, lladdr=key[2], dst=key[3])
        elif kind == "address":
            iface = IPv4Interface(key[2])
            ipr.addr("del", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
        elif kind == "link":
            ipr.link("del", index=index)
    except NetlinkError as exc:
        if exc.code not in _GONE:
            raise


def execute(ipr: IPRoute, change: Change, record: Record, netns: str | None) -> None:
    """Make one change.

    Args:
        ipr: an rtnetlink socket in the target namespace.
        change: from :func:`appliance.diff.diff`.
        record: the current record (values to restore come from it).
        netns: the namespace name, for sysctls.
    Raises:
        ApplyError: the kernel refused; the message names the change and the reason.
    """
    try:
        _execute(ipr, change, record, netns)
    except (NetlinkError, OSError) as exc:
        reason = os.strerror(exc.code) if isinstance(exc, NetlinkError) else str(exc)
        raise ApplyError(f"{change}: {reason}") from exc


def _execute(ipr: IPRoute, change: Change, record: Record, netns: str | None) -> None:
    op, kind = change.op, change.key[0]
    if change.action is Action.REMOVE:
        _remove(ipr, change.key)
    elif change.action is Action.RESTORE:
        name = change.key[1]
        if kind == "sysctl":
            write_sysctl(name, record.sysctls[name], netns)
        elif kind == "mtu":
            ipr.link("set", index=_index(ipr, name), mtu=record.mtus[name])
        else:
            ipr.link("set", index=_index(ipr, name), state="down")
    elif isinstance(op, Sysctl):
        write_sysctl(op.path, op.value, netns)
    elif isinstance(op, ExistingLink | VxlanLink) and change.action is Action.SET:
        if kind == "mtu":
            ipr.link("set", index=_index(ipr, op.ifname), mtu=op.mtu)
        else:
            ipr.link("set", index=_index(ipr, op.ifname), state="up")
    elif isinstance(op, VxlanLink):
        if change.action is Action.REPLACE:
            ipr.link("del", index=_index(ipr, op.ifname))
        _create_vxlan(ipr, op)
    elif isinstance(op, Address):
        ipr.addr(
            "add",
            index=_index(ipr, op.ifname),
            address=str(op.interface.ip),
            prefixlen=op.interface.network.prefixlen,
        )
    elif isinstance(op, FdbEntry):
        ipr.fdb("append", ifindex=_index(ipr, op.ifname), lladdr=op.lladdr, dst=str(op.dst))
    elif isinstance(op, Neighbour):
        ipr.neigh(
            "replace",
            ifindex=_index(ipr, op.ifname),
            dst=str(op.address),
            lladdr=op.lladdr,
            state=NUD_PERMANENT,
        )
    elif isinstance(op, Route):
        command = "replace" if change.action is Action.REPLACE else "add"
        ipr.route(command, **_route_args(ipr, op))
    else:  # pragma: no cover - diff only produces the cases above
        raise ApplyError(f"cannot execute {change}")


@dataclass(frozen=True, slots=True)
class Target:
    """Where to act: a network namespace (None = this one) and the state file recording it."""

    netns: str | None
    state_path: Path

    @classmethod
    def of(cls, netns: str | None, state_path: Path | None = None) -> Target:
        return cls(netns, state_path or state.default_state_path(netns))


def pending(ops: tuple[Operation, ...], target: Target) -> tuple[Change, ...]:
    """What :func:`converge` would change now (reads only).

    Raises:
        NetnsNotFound, StateFileError, MissingLink, Conflict.
    """
    record = state.load(target.state_path, target.netns)
    with open_rtnl(target.netns) as ipr:
        return diff(ops, observe(ipr, ops, record, target.netns), record)


def converge(ops: tuple[Operation, ...], target: Target) -> tuple[Change, ...]:
    """Make the namespace match ``ops``; ``()`` tears down everything an earlier apply did.

    The record is saved after every change, so an interrupted run can be repeated. After a
    teardown that succeeded the state file is deleted.

    Args:
        ops: the plan from :func:`appliance.plan.plan`, or ``()`` for teardown.
        target: namespace and state file.
    Returns:
        the changes made, in order (empty when nothing had to change).
    Raises:
        NetnsNotFound, StateFileError, MissingLink, Conflict: before anything changed.
        ApplyError: the kernel refused a change; earlier changes stay recorded.
    """
    with state.locked(target.state_path):
        record = state.load(target.state_path, target.netns)
        with open_rtnl(target.netns) as ipr:
            changes = diff(ops, observe(ipr, ops, record, target.netns), record)
            for change in changes:
                execute(ipr, change, record, target.netns)
                record = updated_record(record, change)
                state.save(target.state_path, record, target.netns)
        if not ops:
            state.remove(target.state_path)
        return changes
