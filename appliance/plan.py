"""The appliance's desired network state, as a pure list of typed operations.

Theory of operation: ``plan(cfg)`` turns the validated configuration into resources the appliance
must have (links, addresses, FDB and neighbour entries, routes, sysctls), ordered so that each one
only depends on earlier ones. It reads nothing from the machine; ``appliance.diff`` compares the
plan with what was observed and ``appliance.apply`` performs the differences with pyroute2.

Topology:

* Weave side: an existing NIC with its addresses; the Weave pod range is routed via the exposed
  Weave node(s) on that NIC, as one ECMP multipath route when several are given.
* Cilium side: an existing NIC (the underlay) and a VXLAN device on it acting as an external VTEP
  (learning off). Per Cilium node: an all-zeros FDB entry toward the node's underlay address
  (head-end replication for broadcast and unknown unicast), a permanent neighbour entry mapping
  the node's underlay address *on the VXLAN device* to the node's VTEP MAC, an FDB entry sending
  that MAC to the node, and a route ``pod_cidr via <underlay> dev <vxlan> onlink`` per pod CIDR.
  This is flannel's scheme: neighbour tables are per device, so using the underlay address as the
  on-link next hop on the VXLAN device cannot clash with the underlay NIC, and each pod CIDR is
  encapsulated straight to the node that owns it.
* Sysctls: IPv4 forwarding on, and reverse-path filtering on the three interfaces set to
  ``rp_filter`` (2, loose, by default). Why loose: the return path is not symmetric by design.
  Replies from Weave pods may come back through a different exposed Weave node than the one the
  ECMP hash chose, and Cilium-side traffic enters on the VXLAN device while its underlay packets
  enter on the NIC, so strict mode (1) would drop valid traffic; loose mode still drops packets
  whose source is not routable at all. ``net.ipv4.conf.all`` is left alone (the kernel uses the
  maximum of ``all`` and the interface value), so nothing else on the machine changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from appliance.netconfig import ApplianceNetConfig, vxlan_mtu_ceiling

ALL_ZEROS_MAC = "00:00:00:00:00:00"

# A resource's identity, independent of its attributes: used to match the plan against the
# observed state and, in the state file, to remember what apply created.
Key = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ExistingLink:
    """A NIC that must already exist; apply sets it up and, when ``mtu`` is given, its MTU."""

    ifname: str
    mtu: int | None
    role: str

    @property
    def key(self) -> Key:
        return ("link", self.ifname)

    def __str__(self) -> str:
        mtu = f" mtu {self.mtu}" if self.mtu is not None else ""
        return f"link {self.ifname} ({self.role}) up{mtu}"


@dataclass(frozen=True, slots=True)
class VxlanLink:
    """A VXLAN device created by apply: a VTEP toward the Cilium nodes, learning off."""

    ifname: str
    vni: int
    port: int
    local: IPv4Address
    underlay: str
    mtu: int
    mac: str | None
    learning: bool = False

    @property
    def key(self) -> Key:
        return ("link", self.ifname)

    def __str__(self) -> str:
        mac = f" address {self.mac}" if self.mac else ""
        learning = "learning" if self.learning else "nolearning"
        return (
            f"link {self.ifname} type vxlan id {self.vni} dstport {self.port} local {self.local} "
            f"dev {self.underlay} {learning} mtu {self.mtu}{mac} up"
        )


@dataclass(frozen=True, slots=True)
class Address:
    """An IPv4 address (with its prefix) on a link."""

    ifname: str
    interface: IPv4Interface

    @property
    def key(self) -> Key:
        return ("address", self.ifname, str(self.interface))

    def __str__(self) -> str:
        return f"address {self.interface} dev {self.ifname}"


@dataclass(frozen=True, slots=True)
class FdbEntry:
    """A static forwarding entry on a VXLAN device: frames for ``lladdr`` go to underlay ``dst``."""

    ifname: str
    lladdr: str
    dst: IPv4Address

    @property
    def key(self) -> Key:
        return ("fdb", self.ifname, self.lladdr, str(self.dst))

    def __str__(self) -> str:
        return f"fdb {self.lladdr} dev {self.ifname} dst {self.dst}"


@dataclass(frozen=True, slots=True)
class Neighbour:
    """A permanent neighbour (ARP) entry: ``address`` on ``ifname`` is at ``lladdr``."""

    ifname: str
    address: IPv4Address
    lladdr: str

    @property
    def key(self) -> Key:
        return ("neigh", self.ifname, str(self.address))

    def __str__(self) -> str:
        return f"neigh {self.address} dev {self.ifname} lladdr {self.lladdr} permanent"


@dataclass(frozen=True, slots=True, order=True)
class Nexthop:
    """One next hop of a route; ``onlink`` tells the kernel the gateway is reachable on the link."""

    gateway: IPv4Address
    ifname: str
    onlink: bool = False

    def __str__(self) -> str:
        return f"via {self.gateway} dev {self.ifname}{' onlink' if self.onlink else ''}"


@dataclass(frozen=True, slots=True)
class Route:
    """A route in the main table; several next hops make it an ECMP multipath route."""

    dst: IPv4Network
    nexthops: tuple[Nexthop, ...]

    @property
    def key(self) -> Key:
        return ("route", str(self.dst))

    @property
    def multipath(self) -> bool:
        return len(self.nexthops) > 1

    def __str__(self) -> str:
        if not self.multipath:
            return f"route {self.dst} {self.nexthops[0]}"
        hops = " ".join(f"nexthop {h}" for h in self.nexthops)
        return f"route {self.dst} {hops}"


@dataclass(frozen=True, slots=True)
class Sysctl:
    """A sysctl value; ``path`` is under /proc/sys, '/'-separated (safe for 'eth0.100')."""

    path: str
    value: str
    why: str

    @property
    def key(self) -> Key:
        return ("sysctl", self.path)

    @property
    def ifname(self) -> str | None:
        """The interface this sysctl belongs to, for per-interface ``net/ipv4/conf/<if>/...``."""
        parts = self.path.split("/")
        return parts[3] if len(parts) == 5 and parts[:3] == ["net", "ipv4", "conf"] else None

    def __str__(self) -> str:
        return f"sysctl {self.path} = {self.value}  # {self.why}"


Operation = ExistingLink | VxlanLink | Address | FdbEntry | Neighbour | Route | Sysctl


def plan(cfg: ApplianceNetConfig) -> tuple[Operation, ...]:
    """The appliance's desired network state, in dependency order.

    Args:
        cfg: a validated configuration (from ``appliance.netconfig.from_mapping``).
    Returns:
        links, then addresses, VXLAN device, its FDB and neighbour entries, routes, sysctls.
    """
    weave, cilium, vx = cfg.weave, cfg.cilium, cfg.cilium.vxlan
    ops: list[Operation] = [
        ExistingLink(weave.interface, weave.mtu, "weave"),
        ExistingLink(cilium.interface, cilium.mtu, "cilium underlay"),
    ]
    ops += [Address(weave.interface, a) for a in weave.addresses]
    ops += [Address(cilium.interface, a) for a in cilium.addresses]
    mtu = vx.mtu if vx.mtu is not None else vxlan_mtu_ceiling(weave, cilium)
    ops.append(VxlanLink(vx.name, vx.vni, vx.port, vx.local, cilium.interface, mtu, vx.mac))
    ops += [Address(vx.name, a) for a in vx.addresses]
    for node in cilium.nodes:
        ops.append(FdbEntry(vx.name, ALL_ZEROS_MAC, node.underlay))
        ops.append(FdbEntry(vx.name, node.vtep_mac, node.underlay))
        ops.append(Neighbour(vx.name, node.underlay, node.vtep_mac))
    hops = tuple(Nexthop(gw, weave.interface) for gw in weave.gateways)
    ops.append(Route(weave.pod_range, hops))
    for node in cilium.nodes:
        hop = (Nexthop(node.underlay, vx.name, onlink=True),)
        ops += [Route(cidr, hop) for cidr in node.pod_cidrs]
    ops.append(Sysctl("net/ipv4/ip_forward", "1", "the appliance routes between the two sides"))
    why = {0: "off", 1: "strict", 2: "loose: return paths are asymmetric (ECMP, VXLAN)"}[
        cfg.rp_filter
    ]
    for ifname in (weave.interface, cilium.interface, vx.name):
        ops.append(Sysctl(f"net/ipv4/conf/{ifname}/rp_filter", str(cfg.rp_filter), why))
    return tuple(ops)
