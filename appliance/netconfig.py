"""The appliance's network section of the configuration: frozen values and a pure ``from_mapping``.

The section is a TOML table (today ``[appliance]`` at the top of the file given to
``sluice appliance``; later the same table inside the gateway's TOML). ``from_mapping`` takes the
sub-mapping and the key-path prefix under which it lives, so every error names the full key path
(``appliance.cilium.nodes[1].pod_cidrs[0]: ...``). All problems are collected and raised together
as one :class:`config.errors.ConfigError`.

Schema (defaults in brackets)::

    [appliance]
    rp_filter = 2                       # [2] 0 off, 1 strict, 2 loose; applied per interface
    [appliance.weave]
    interface = "ens4"                  # existing NIC toward the Weave side (required)
    addresses = ["192.168.10.5/24"]     # [[]] addresses to ensure on it
    mtu = 1500                          # [unset] NIC MTU to set; unset = leave the NIC's MTU alone
    pod_range = "10.32.0.0/12"          # [10.32.0.0/12] Weave IPALLOC_RANGE
    overlay_mtu = 1376                  # [1376] Weave's WEAVE_MTU
    gateways = ["192.168.10.11"]        # exposed Weave nodes (required, >= 1; several = ECMP)
    [appliance.cilium]
    interface = "ens5"                  # existing NIC toward the Cilium underlay (required)
    addresses = ["192.168.20.5/24"]     # [[]]
    mtu = 1500                          # [unset]; the VXLAN clamp assumes 1500 when unset
    cluster_pool = "10.48.0.0/16"       # Cilium clusterPoolIPv4PodCIDRList (required, see below)
    [appliance.cilium.vxlan]
    name = "sluice-vtep"                # [sluice-vtep]
    vni = 2                             # [2] Cilium's reserved identity `world` for external VTEPs
    port = 8472                         # [8472] Cilium's VXLAN port
    local = "192.168.20.5"              # [first cilium address] underlay source address
    mac = "02:00:00:00:00:01"           # [kernel-chosen] fixed MAC, to give Cilium as vtep-mac
    mtu = 1376                          # [min(weave overlay_mtu, underlay MTU - 50)], or lower
    addresses = ["10.47.255.1/32"]      # [[]] addresses on the VXLAN device itself
    [[appliance.cilium.nodes]]
    name = "node-a"
    underlay = "192.168.20.21"          # the node's underlay (VXLAN endpoint) address
    pod_cidrs = ["10.48.1.0/24"]        # inside cluster_pool, disjoint from other nodes
    vtep_mac = "02:00:c0:a8:14:15"      # [02:00 + underlay bytes] inner MAC routed to that node

``cluster_pool`` has no default on purpose: Cilium's own default, 10.0.0.0/8, contains Weave's
10.32.0.0/12, and every migration must choose a non-overlapping range.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import TypeVar

from config.errors import ConfigError, ConfigProblem

DEFAULT_WEAVE_POD_RANGE = IPv4Network("10.32.0.0/12")
DEFAULT_WEAVE_MTU = 1376
DEFAULT_UNDERLAY_MTU = 1500
CILIUM_DEFAULT_CLUSTER_POOL = IPv4Network("10.0.0.0/8")
DEFAULT_VXLAN_NAME = "sluice-vtep"
DEFAULT_VXLAN_PORT = 8472
# Cilium's reserved security identity `world`: the identity an external VTEP must carry.
DEFAULT_VNI = 2
DEFAULT_RP_FILTER = 2
VXLAN_OVERHEAD = 50
MIN_MTU = 68  # the IPv4 minimum (RFC 791)
MAX_MTU = 65535
MAX_VNI = (1 << 24) - 1
IFNAMSIZ = 15  # the kernel's limit without the trailing NUL
MAX_NODES = 4096
MAX_LIST = 256

_IFNAME = re.compile(r"[A-Za-z0-9_.\-@+]{1,15}")
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


@dataclass(frozen=True, slots=True)
class WeaveSide:
    """The NIC toward the Weave network and how the Weave pod range is reached through it."""

    interface: str
    addresses: tuple[IPv4Interface, ...]
    mtu: int | None
    pod_range: IPv4Network
    overlay_mtu: int
    gateways: tuple[IPv4Address, ...]


@dataclass(frozen=True, slots=True)
class VxlanConfig:
    """The appliance's VTEP toward the Cilium nodes."""

    name: str
    vni: int
    port: int
    local: IPv4Address
    mac: str | None
    mtu: int | None
    addresses: tuple[IPv4Interface, ...]


@dataclass(frozen=True, slots=True)
class CiliumNode:
    """One Cilium node: where its VXLAN endpoint is and which pod CIDRs live behind it."""

    name: str
    underlay: IPv4Address
    pod_cidrs: tuple[IPv4Network, ...]
    vtep_mac: str


@dataclass(frozen=True, slots=True)
class CiliumSide:
    """The NIC toward the Cilium underlay, the cluster pool and the nodes reached over VXLAN."""

    interface: str
    addresses: tuple[IPv4Interface, ...]
    mtu: int | None
    cluster_pool: IPv4Network
    vxlan: VxlanConfig
    nodes: tuple[CiliumNode, ...]


@dataclass(frozen=True, slots=True)
class ApplianceNetConfig:
    """The whole appliance network section."""

    weave: WeaveSide
    cilium: CiliumSide
    rp_filter: int = DEFAULT_RP_FILTER
    source: str = field(default="<config>", compare=False)


def default_vtep_mac(underlay: IPv4Address) -> str:
    """A locally administered unicast MAC derived from a node's underlay address (02:00:a.b.c.d).

    Args:
        underlay: the node's underlay IPv4 address.
    Returns:
        the MAC as lower-case colon-separated hex.
    """
    return ":".join(f"{b:02x}" for b in (0x02, 0x00, *underlay.packed))


class _Reader:
    """Collects problems while reading typed values out of nested mappings."""

    def __init__(self, file: Path | str) -> None:
        self.file = file
        self.problems: list[ConfigProblem] = []

    def fail(self, key_path: str, message: str) -> None:
        self.problems.append(ConfigProblem(self.file, key_path, message))

    def table(self, value: object, key_path: str, allowed: Sequence[str]) -> Mapping[str, object]:
        if not isinstance(value, Mapping):
            self.fail(key_path, f"expected a table, got {_kind(value)}")
            return {}
        for key in value:
            if key not in allowed:
                self.fail(_join(key_path, str(key)), f"unknown key (allowed: {', '.join(allowed)})")
        return value

    def integer(self, value: object, key_path: str, lo: int, hi: int) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key_path, f"expected an integer in {lo}..{hi}, got {_kind(value)}")
            return None
        if not lo <= value <= hi:
            self.fail(key_path, f"expected an integer in {lo}..{hi}, got {value}")
            return None
        return value

    def ifname(self, value: object, key_path: str) -> str | None:
        if not isinstance(value, str) or not _IFNAME.fullmatch(value) or value in {".", ".."}:
            self.fail(
                key_path,
                f"expected an interface name of 1..{IFNAMSIZ} characters "
                f"(letters, digits, _ . - @ +), got {value!r}",
            )
            return None
        return value

    def string(self, value: object, key_path: str, max_len: int = 64) -> str | None:
        if not isinstance(value, str) or not 0 < len(value) <= max_len:
            self.fail(key_path, f"expected a non-empty string of at most {max_len} characters")
            return None
        return value

    def address(self, value: object, key_path: str) -> IPv4Address | None:
        try:
            if not isinstance(value, str):
                raise ValueError
            return IPv4Address(value)
        except ValueError:
            self.fail(key_path, f"expected an IPv4 address like '192.0.2.1', got {value!r}")
            return None

    def network(self, value: object, key_path: str) -> IPv4Network | None:
        if not isinstance(value, str):
            self.fail(key_path, f"expected an IPv4 CIDR like '10.48.0.0/16', got {_kind(value)}")
            return None
        try:
            return IPv4Network(value)
        except ValueError:
            try:
                loose = IPv4Network(value, strict=False)
            except ValueError:
                self.fail(key_path, f"expected an IPv4 CIDR like '10.48.0.0/16', got {value!r}")
                return None
            self.fail(key_path, f"{value!r} has host bits set; did you mean '{loose}'?")
            return None

    def host_interface(self, value: object, key_path: str) -> IPv4Interface | None:
        if not isinstance(value, str) or "/" not in value:
            self.fail(
                key_path, f"expected an address with prefix like '192.0.2.5/24', got {value!r}"
            )
            return None
        try:
            iface = IPv4Interface(value)
        except ValueError:
            self.fail(
                key_path, f"expected an address with prefix like '192.0.2.5/24', got {value!r}"
            )
            return None
        net = iface.network
        if net.prefixlen < 31 and iface.ip in (net.network_address, net.broadcast_address):
            self.fail(key_path, f"{value} is the network or broadcast address of {net}, not a host")
            return None
        return iface

    def mac(self, value: object, key_path: str) -> str | None:
        text = value.lower() if isinstance(value, str) else None
        if text is None or not _MAC.fullmatch(text):
            self.fail(key_path, f"expected a MAC address like '02:00:00:00:00:01', got {value!r}")
            return None
        if int(text[:2], 16) & 1 or text == "00:00:00:00:00:00":
            self.fail(key_path, f"{text} is not a unicast MAC address")
            return None
        return text

    def items(self, value: object, key_path: str, *, required: bool) -> list[object]:
        if value is None:
            if required:
                self.fail(key_path, "missing required key")
            return []
        if not isinstance(value, list):
            self.fail(key_path, f"expected an array, got {_kind(value)}")
            return []
        if len(value) > MAX_LIST:
            self.fail(key_path, f"at most {MAX_LIST} entries allowed, got {len(value)}")
            return []
        if required and not value:
            self.fail(key_path, "expected at least one entry")
        return list(value)


T = TypeVar("T")


def _kind(value: object) -> str:
    return {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}.get(
        type(value), "a table" if isinstance(value, Mapping) else type(value).__name__
    )


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _present(items: list[T | None]) -> tuple[T, ...]:
    return tuple(x for x in items if x is not None)


def _host_list(r: _Reader, raw: object, key_path: str) -> tuple[IPv4Interface, ...]:
    values = [
        r.host_interface(v, f"{key_path}[{i}]")
        for i, v in enumerate(r.items(raw, key_path, required=False))
    ]
    result = _present(values)
    seen: set[IPv4Address] = set()
    for i, iface in enumerate(values):
        if iface is not None and iface.ip in seen:
            r.fail(f"{key_path}[{i}]", f"duplicate address {iface.ip}")
        elif iface is not None:
            seen.add(iface.ip)
    return result


def _read_weave(r: _Reader, raw: object, kp: str) -> WeaveSide | None:
    allowed = ("interface", "addresses", "mtu", "pod_range", "overlay_mtu", "gateways")
    t = r.table(raw, kp, allowed)
    if "interface" not in t:
        r.fail(_join(kp, "interface"), "missing required key")
    interface = r.ifname(t.get("interface"), _join(kp, "interface")) if "interface" in t else None
    addresses = _host_list(r, t.get("addresses"), _join(kp, "addresses"))
    mtu = r.integer(t["mtu"], _join(kp, "mtu"), MIN_MTU, MAX_MTU) if "mtu" in t else None
    pod_range = (
        r.network(t["pod_range"], _join(kp, "pod_range"))
        if "pod_range" in t
        else DEFAULT_WEAVE_POD_RANGE
    )
    overlay_mtu = (
        r.integer(t["overlay_mtu"], _join(kp, "overlay_mtu"), MIN_MTU, MAX_MTU)
        if "overlay_mtu" in t
        else DEFAULT_WEAVE_MTU
    )
    gw_path = _join(kp, "gateways")
    gateways: list[IPv4Address] = []
    for i, raw_gw in enumerate(r.items(t.get("gateways"), gw_path, required=True)):
        gw = r.address(raw_gw, f"{gw_path}[{i}]")
        if gw is None:
            continue
        where = f"{gw_path}[{i}]"
        if gw in gateways:
            r.fail(where, f"duplicate gateway {gw}")
        elif any(gw == a.ip for a in addresses):
            r.fail(where, f"{gw} is one of the appliance's own addresses")
        elif addresses and not any(gw in a.network for a in addresses):
            nets = ", ".join(str(a.network) for a in addresses)
            r.fail(where, f"{gw} is not on a directly connected network of this side ({nets})")
        elif pod_range is not None and gw in pod_range:
            r.fail(
                where, f"{gw} is inside the Weave pod range {pod_range}; expected a node address"
            )
        else:
            gateways.append(gw)
    if interface is None or pod_range is None or overlay_mtu is None:
        return None
    return WeaveSide(interface, addresses, mtu, pod_range, overlay_mtu, tuple(gateways))


def _read_vxlan(
    r: _Reader, raw: object, kp: str, addresses: tuple[IPv4Interface, ...]
) -> VxlanConfig | None:
    t = r.table(raw, kp, ("name", "vni", "port", "local", "mac", "mtu", "addresses"))
    name = r.ifname(t["name"], _join(kp, "name")) if "name" in t else DEFAULT_VXLAN_NAME
    vni = r.integer(t["vni"], _join(kp, "vni"), 1, MAX_VNI) if "vni" in t else DEFAULT_VNI
    port = r.integer(t["port"], _join(kp, "port"), 1, 65535) if "port" in t else DEFAULT_VXLAN_PORT
    mac = r.mac(t["mac"], _join(kp, "mac")) if "mac" in t else None
    mtu = r.integer(t["mtu"], _join(kp, "mtu"), MIN_MTU, MAX_MTU) if "mtu" in t else None
    local: IPv4Address | None
    if "local" in t:
        local = r.address(t["local"], _join(kp, "local"))
        if local is not None and addresses and local not in {a.ip for a in addresses}:
            own = ", ".join(str(a.ip) for a in addresses)
            r.fail(_join(kp, "local"), f"{local} is not one of the Cilium-side addresses ({own})")
    elif addresses:
        local = addresses[0].ip
    else:
        r.fail(_join(kp, "local"), "missing: required when cilium.addresses is empty")
        local = None
    vx_addresses = _host_list(r, t.get("addresses"), _join(kp, "addresses"))
    if name is None or vni is None or port is None or local is None:
        return None
    return VxlanConfig(name, vni, port, local, mac, mtu, vx_addresses)


def _read_node(r: _Reader, raw: object, kp: str, pool: IPv4Network | None) -> CiliumNode | None:
    t = r.table(raw, kp, ("name", "underlay", "pod_cidrs", "vtep_mac"))
    name = r.string(t.get("name"), _join(kp, "name"))
    underlay = r.address(t.get("underlay"), _join(kp, "underlay"))
    cidr_path = _join(kp, "pod_cidrs")
    cidrs: list[IPv4Network] = []
    for i, raw_cidr in enumerate(r.items(t.get("pod_cidrs"), cidr_path, required=True)):
        net = r.network(raw_cidr, f"{cidr_path}[{i}]")
        if net is not None and pool is not None and not net.subnet_of(pool):
            r.fail(f"{cidr_path}[{i}]", f"{net} is not inside cilium.cluster_pool {pool}")
        elif net is not None:
            cidrs.append(net)
    mac: str | None
    if "vtep_mac" in t:
        mac = r.mac(t["vtep_mac"], _join(kp, "vtep_mac"))
    else:
        mac = default_vtep_mac(underlay) if underlay is not None else None
    if name is None or underlay is None or mac is None:
        return None
    return CiliumNode(name, underlay, tuple(cidrs), mac)


def _check_nodes(r: _Reader, nodes: list[tuple[int, CiliumNode]], kp: str) -> None:
    # Node names, underlay addresses and VTEP MACs, as text, each mapped to the first node using it.
    names: dict[str, int] = {}
    underlays: dict[str, int] = {}
    macs: dict[str, int] = {}
    owners: list[tuple[IPv4Network, int]] = []
    for i, node in nodes:
        here = f"{kp}[{i}]"
        for seen, value, key in (
            (names, node.name, "name"),
            (underlays, str(node.underlay), "underlay"),
            (macs, node.vtep_mac, "vtep_mac"),
        ):
            if value in seen:
                r.fail(f"{here}.{key}", f"{value} is already used by {kp}[{seen[value]}]")
            else:
                seen[value] = i
        for j, net in enumerate(node.pod_cidrs):
            for other, k in owners:
                if net.overlaps(other):
                    r.fail(f"{here}.pod_cidrs[{j}]", f"{net} overlaps {other} of {kp}[{k}]")
            owners.append((net, i))


def _check_pools(r: _Reader, key_path: str, weave_range: IPv4Network, pool: IPv4Network) -> None:
    if weave_range.overlaps(pool):
        hint = " (that is Cilium's default pool)" if pool == CILIUM_DEFAULT_CLUSTER_POOL else ""
        r.fail(
            key_path,
            f"{pool}{hint} overlaps the Weave pod range {weave_range}; "
            "the two pod ranges must be disjoint (for example 10.48.0.0/16)",
        )


def _read_cilium(
    r: _Reader, raw: object, kp: str, weave_range: IPv4Network | None
) -> CiliumSide | None:
    t = r.table(raw, kp, ("interface", "addresses", "mtu", "cluster_pool", "vxlan", "nodes"))
    if "interface" not in t:
        r.fail(_join(kp, "interface"), "missing required key")
    interface = r.ifname(t.get("interface"), _join(kp, "interface")) if "interface" in t else None
    addresses = _host_list(r, t.get("addresses"), _join(kp, "addresses"))
    mtu = r.integer(t["mtu"], _join(kp, "mtu"), MIN_MTU, MAX_MTU) if "mtu" in t else None
    pool: IPv4Network | None = None
    if "cluster_pool" in t:
        pool = r.network(t["cluster_pool"], _join(kp, "cluster_pool"))
        if pool is not None and weave_range is not None:
            _check_pools(r, _join(kp, "cluster_pool"), weave_range, pool)
    else:
        r.fail(
            _join(kp, "cluster_pool"),
            f"missing required key: Cilium's default {CILIUM_DEFAULT_CLUSTER_POOL} contains "
            f"Weave's {DEFAULT_WEAVE_POD_RANGE}, so choose a non-overlapping pool "
            "such as 10.48.0.0/16",
        )
    vxlan = _read_vxlan(r, t.get("vxlan", {}), _join(kp, "vxlan"), addresses)
    nodes_path = _join(kp, "nodes")
    raw_nodes = r.items(t.get("nodes"), nodes_path, required=True)
    if len(raw_nodes) > MAX_NODES:
        r.fail(nodes_path, f"at most {MAX_NODES} nodes allowed")
    read = [(i, _read_node(r, n, f"{nodes_path}[{i}]", pool)) for i, n in enumerate(raw_nodes)]
    nodes = [(i, n) for i, n in read if n is not None]
    _check_nodes(r, nodes, nodes_path)
    if interface is None or pool is None or vxlan is None or len(nodes) != len(raw_nodes):
        return None
    return CiliumSide(interface, addresses, mtu, pool, vxlan, tuple(n for _, n in nodes))


def vxlan_mtu_ceiling(weave: WeaveSide, cilium: CiliumSide) -> int:
    """The largest MTU the VXLAN device may have: the smaller overlay wins.

    Args:
        weave: the Weave side (its overlay MTU, 1376 by default).
        cilium: the Cilium side (its NIC MTU, 1500 when not configured).
    Returns:
        min(weave overlay MTU, underlay MTU - 50 bytes of VXLAN overhead).
    """
    underlay = cilium.mtu if cilium.mtu is not None else DEFAULT_UNDERLAY_MTU
    return min(weave.overlay_mtu, underlay - VXLAN_OVERHEAD)


def _cross_checks(r: _Reader, prefix: str, weave: WeaveSide, cilium: CiliumSide) -> None:
    wk, ck = _join(prefix, "weave"), _join(prefix, "cilium")
    if weave.interface == cilium.interface:
        r.fail(
            _join(ck, "interface"),
            f"{cilium.interface} is also weave.interface; each side needs its own NIC",
        )
    if cilium.vxlan.name in (weave.interface, cilium.interface):
        r.fail(_join(ck, "vxlan.name"), f"{cilium.vxlan.name} is already used by a NIC")
    pods = (("the Weave pod range", weave.pod_range), ("cilium.cluster_pool", cilium.cluster_pool))
    sides = (
        (_join(wk, "addresses"), weave.addresses),
        (_join(ck, "addresses"), cilium.addresses),
        (_join(ck, "vxlan.addresses"), cilium.vxlan.addresses),
    )
    for key, addrs in sides[:2]:
        for i, a in enumerate(addrs):
            for label, net in pods:
                if a.network.overlaps(net):
                    r.fail(f"{key}[{i}]", f"{a.network} overlaps {label} {net}")
    everything = [(f"{key}[{i}]", a) for key, addrs in sides for i, a in enumerate(addrs)]
    for n, (key, a) in enumerate(everything):
        for other_key, b in everything[:n]:
            if a.ip == b.ip:
                r.fail(key, f"{a.ip} is already assigned by {other_key}")
    for i, node in enumerate(cilium.nodes):
        for label, net in pods:
            if node.underlay in net:
                r.fail(f"{ck}.nodes[{i}].underlay", f"{node.underlay} is inside {label} {net}")
    ceiling = vxlan_mtu_ceiling(weave, cilium)
    if ceiling < MIN_MTU:
        r.fail(_join(ck, "mtu"), f"leaves a VXLAN MTU of {ceiling}, below the minimum {MIN_MTU}")
    if cilium.vxlan.mtu is not None and cilium.vxlan.mtu > ceiling:
        r.fail(
            _join(ck, "vxlan.mtu"),
            f"{cilium.vxlan.mtu} exceeds {ceiling} = min(weave overlay_mtu, underlay MTU - "
            f"{VXLAN_OVERHEAD}); a larger MTU black-holes big packets",
        )


def from_mapping(
    data: object, *, prefix: str = "appliance", file: Path | str = "<config>"
) -> ApplianceNetConfig:
    """Build the appliance network configuration from a parsed TOML table.

    Args:
        data: the ``[appliance]`` table as returned by ``tomllib`` (a mapping).
        prefix: the key path of that table, prepended to every key in error messages.
        file: the configuration file, named in error messages.
    Returns:
        the validated configuration.
    Raises:
        ConfigError: one :class:`ConfigProblem` per mistake (unknown key, wrong type, bad address,
            overlapping ranges, MTU or VNI out of range, ...), each naming its key path.
    """
    r = _Reader(file)
    t = r.table(data, prefix, ("rp_filter", "weave", "cilium"))
    rp_filter = (
        r.integer(t["rp_filter"], _join(prefix, "rp_filter"), 0, 2)
        if "rp_filter" in t
        else DEFAULT_RP_FILTER
    )
    for side in ("weave", "cilium"):
        if side not in t:
            r.fail(_join(prefix, side), "missing required table")
    weave = _read_weave(r, t["weave"], _join(prefix, "weave")) if "weave" in t else None
    weave_range = weave.pod_range if weave is not None else None
    cilium = (
        _read_cilium(r, t["cilium"], _join(prefix, "cilium"), weave_range)
        if "cilium" in t
        else None
    )
    if weave is not None and cilium is not None:
        _cross_checks(r, prefix, weave, cilium)
    if r.problems or weave is None or cilium is None or rp_filter is None:
        raise ConfigError(r.problems or [ConfigProblem(file, prefix, "invalid")])
    return ApplianceNetConfig(weave, cilium, rp_filter, str(file))
