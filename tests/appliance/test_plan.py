# The expected messages are compared whole: long lines read better than split strings.
# ruff: noqa: E501
"""The pure plan and the configuration it comes from."""

from __future__ import annotations

import copy
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest

from appliance.netconfig import DEFAULT_WEAVE_MTU, default_vtep_mac, from_mapping
from appliance.plan import (
    Address,
    ExistingLink,
    FdbEntry,
    Neighbour,
    Nexthop,
    Route,
    Sysctl,
    VxlanLink,
    plan,
)
from config.errors import ConfigError
from tests.appliance.conftest import base_config


def problems(cfg: Any, prefix: str = "appliance") -> list[str]:
    with pytest.raises(ConfigError) as info:
        from_mapping(cfg, prefix=prefix, file="sluice.toml")
    return [f"{p.key_path}: {p.message}" for p in info.value.problems]


def edited(**changes: Any) -> dict[str, Any]:
    """base_config() with dotted-path edits, e.g. edited(**{"cilium.vxlan.vni": 0})."""
    cfg = copy.deepcopy(base_config())
    for path, value in changes.items():
        *parents, last = path.split(".")
        node = cfg
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        node[last] = value
    return cfg


def test_plan_has_every_resource_in_dependency_order() -> None:
    ops = plan(from_mapping(base_config()))
    kinds = [type(op).__name__ for op in ops]
    assert kinds.index("VxlanLink") > kinds.index("ExistingLink")
    assert kinds.index("Route") > max(i for i, k in enumerate(kinds) if k == "Neighbour")
    assert kinds[-4:] == ["Sysctl"] * 4
    assert ExistingLink("wv0", None, "weave") in ops
    assert ExistingLink("cl0", 1400, "cilium underlay") in ops
    assert Address("cl0", __import__("ipaddress").IPv4Interface("192.168.20.5/24")) in ops


def test_weave_range_is_ecmp_over_every_gateway() -> None:
    ops = plan(from_mapping(base_config()))
    (weave,) = [op for op in ops if isinstance(op, Route) and op.dst == IPv4Network("10.32.0.0/12")]
    assert weave.multipath
    assert weave.nexthops == (
        Nexthop(IPv4Address("192.168.10.11"), "wv0"),
        Nexthop(IPv4Address("192.168.10.12"), "wv0"),
    )
    single = plan(from_mapping(edited(**{"weave.gateways": ["192.168.10.11"]})))
    (route,) = [op for op in single if isinstance(op, Route) and op.dst.prefixlen == 12]
    assert not route.multipath
    assert str(route) == "route 10.32.0.0/12 via 192.168.10.11 dev wv0"


def test_cilium_routes_fdb_and_neighbours_per_node() -> None:
    ops = plan(from_mapping(base_config()))
    routes = {op.dst: op.nexthops for op in ops if isinstance(op, Route)}
    b = (Nexthop(IPv4Address("192.168.20.22"), "vtep0", onlink=True),)
    assert routes[IPv4Network("10.48.2.0/24")] == b
    assert routes[IPv4Network("10.48.3.0/24")] == b
    fdb = {(op.lladdr, str(op.dst)) for op in ops if isinstance(op, FdbEntry)}
    assert fdb == {
        ("00:00:00:00:00:00", "192.168.20.21"),
        ("00:00:00:00:00:00", "192.168.20.22"),
        (default_vtep_mac(IPv4Address("192.168.20.21")), "192.168.20.21"),
        ("02:aa:bb:cc:dd:02", "192.168.20.22"),
    }
    assert default_vtep_mac(IPv4Address("192.168.20.21")) == "02:00:c0:a8:14:15"
    neigh = {(str(op.address), op.lladdr) for op in ops if isinstance(op, Neighbour)}
    assert ("192.168.20.22", "02:aa:bb:cc:dd:02") in neigh


@pytest.mark.parametrize(
    ("underlay_mtu", "weave_mtu", "expected"),
    [(1400, None, 1350), (1500, None, DEFAULT_WEAVE_MTU), (9000, 8950, 8950), (None, None, 1376)],
)
def test_vxlan_mtu_is_clamped_to_the_smaller_overlay(
    underlay_mtu: int | None, weave_mtu: int | None, expected: int
) -> None:
    cfg = edited()
    if underlay_mtu is None:
        del cfg["cilium"]["mtu"]
    else:
        cfg["cilium"]["mtu"] = underlay_mtu
    if weave_mtu is not None:
        cfg["weave"]["overlay_mtu"] = weave_mtu
    (vx,) = [op for op in plan(from_mapping(cfg)) if isinstance(op, VxlanLink)]
    assert vx.mtu == expected
    assert (vx.vni, vx.port, vx.learning, vx.underlay) == (2, 8472, False, "cl0")


def test_explicit_vxlan_mtu_may_only_lower_the_clamp() -> None:
    ok = plan(from_mapping(edited(**{"cilium.vxlan.mtu": 1300})))
    assert [op.mtu for op in ok if isinstance(op, VxlanLink)] == [1300]
    assert problems(edited(**{"cilium.vxlan.mtu": 1351})) == [
        "appliance.cilium.vxlan.mtu: 1351 exceeds 1350 = min(weave overlay_mtu, underlay MTU - 50);"
        " a larger MTU black-holes big packets"
    ]


def test_sysctls_forwarding_and_loose_rp_filter_only() -> None:
    sysctls = {
        op.path: op.value for op in plan(from_mapping(base_config())) if isinstance(op, Sysctl)
    }
    assert sysctls == {
        "net/ipv4/ip_forward": "1",
        "net/ipv4/conf/wv0/rp_filter": "2",
        "net/ipv4/conf/cl0/rp_filter": "2",
        "net/ipv4/conf/vtep0/rp_filter": "2",
    }
    strict = plan(from_mapping({**base_config(), "rp_filter": 1}))
    assert {op.value for op in strict if isinstance(op, Sysctl) and op.ifname} == {"1"}


def test_cilium_default_pool_is_rejected_because_it_contains_weave() -> None:
    msgs = problems(
        edited(
            **{
                "cilium.cluster_pool": "10.0.0.0/8",
                "cilium.nodes": [
                    {"name": "a", "underlay": "192.168.20.21", "pod_cidrs": ["10.1.0.0/24"]}
                ],
            }
        )
    )
    assert msgs == [
        "appliance.cilium.cluster_pool: 10.0.0.0/8 (that is Cilium's default pool) overlaps the "
        "Weave pod range 10.32.0.0/12; the two pod ranges must be disjoint (for example 10.48.0.0/16)"
    ]
    cfg = edited()
    del cfg["cilium"]["cluster_pool"]
    (msg,) = problems(cfg)
    assert msg.startswith("appliance.cilium.cluster_pool: missing required key: Cilium's default")


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            {"cilium.vxlan.vni": 0},
            "appliance.cilium.vxlan.vni: expected an integer in 1..16777215, got 0",
        ),
        (
            {"cilium.vxlan.vni": 1 << 24},
            "appliance.cilium.vxlan.vni: expected an integer in 1..16777215, got 16777216",
        ),
        (
            {"cilium.vxlan.port": "8472"},
            "appliance.cilium.vxlan.port: expected an integer in 1..65535, got a string",
        ),
        ({"cilium.mtu": 67}, "appliance.cilium.mtu: expected an integer in 68..65535, got 67"),
        (
            {"weave.overlay_mtu": True},
            "appliance.weave.overlay_mtu: expected an integer in 68..65535, got a boolean",
        ),
        (
            {"weave.addresses": ["192.168.10.0/24"]},
            "appliance.weave.addresses[0]: 192.168.10.0/24 is the network or broadcast address of 192.168.10.0/24, not a host",
        ),
        (
            {"weave.addresses": ["192.168.10.5"]},
            "appliance.weave.addresses[0]: expected an address with prefix like '192.0.2.5/24', got '192.168.10.5'",
        ),
        (
            {"weave.gateways": ["192.168.11.1"]},
            "appliance.weave.gateways[0]: 192.168.11.1 is not on a directly connected network of this side (192.168.10.0/24)",
        ),
        ({"weave.gateways": []}, "appliance.weave.gateways: expected at least one entry"),
        (
            {"weave.pod_range": "10.32.0.1/12"},
            "appliance.weave.pod_range: '10.32.0.1/12' has host bits set; did you mean '10.32.0.0/12'?",
        ),
        (
            {"weave.colour": "blue"},
            "appliance.weave.colour: unknown key (allowed: interface, addresses, mtu, pod_range, overlay_mtu, gateways)",
        ),
        (
            {"cilium.interface": "a-very-long-nic-name"},
            "appliance.cilium.interface: expected an interface name of 1..15 characters (letters, digits, _ . - @ +), got 'a-very-long-nic-name'",
        ),
        (
            {"cilium.interface": "wv0"},
            "appliance.cilium.interface: wv0 is also weave.interface; each side needs its own NIC",
        ),
        (
            {"cilium.vxlan.local": "192.168.20.6"},
            "appliance.cilium.vxlan.local: 192.168.20.6 is not one of the Cilium-side addresses (192.168.20.5)",
        ),
        (
            {"cilium.vxlan.mac": "01:00:5e:00:00:01"},
            "appliance.cilium.vxlan.mac: 01:00:5e:00:00:01 is not a unicast MAC address",
        ),
        (
            {"cilium.nodes.1.pod_cidrs": ["10.49.0.0/24"]},
            "appliance.cilium.nodes[1].pod_cidrs[0]: 10.49.0.0/24 is not inside cilium.cluster_pool 10.48.0.0/16",
        ),
        (
            {"cilium.nodes.1.pod_cidrs": ["10.48.1.0/25"]},
            "appliance.cilium.nodes[1].pod_cidrs[0]: 10.48.1.0/25 overlaps 10.48.1.0/24 of appliance.cilium.nodes[0]",
        ),
        (
            {"cilium.nodes.1.underlay": "192.168.20.21"},
            "appliance.cilium.nodes[1].underlay: 192.168.20.21 is already used by appliance.cilium.nodes[0]",
        ),
        (
            {"cilium.nodes.0.underlay": "10.40.0.1"},
            "appliance.cilium.nodes[0].underlay: 10.40.0.1 is inside the Weave pod range 10.32.0.0/12",
        ),
        (
            {"cilium.addresses": ["10.48.200.1/24"]},
            "appliance.cilium.addresses[0]: 10.48.200.0/24 overlaps cilium.cluster_pool 10.48.0.0/16",
        ),
    ],
)
def test_bad_config_names_the_key_path(edit: dict[str, Any], expected: str) -> None:
    assert expected in problems(edited(**edit))


def test_all_problems_are_reported_together_with_the_prefix_and_file() -> None:
    cfg = edited(**{"cilium.vxlan.vni": -1, "cilium.vxlan.port": 0, "weave.mtu": 70000})
    with pytest.raises(ConfigError) as info:
        from_mapping(cfg, prefix="gateway.appliance", file="sluice.toml")
    keys = sorted(p.key_path for p in info.value.problems)
    assert keys == [
        "gateway.appliance.cilium.vxlan.port",
        "gateway.appliance.cilium.vxlan.vni",
        "gateway.appliance.weave.mtu",
    ]
    assert str(info.value).splitlines()[0].startswith("sluice.toml: gateway.appliance.")


def test_missing_tables_and_wrong_types() -> None:
    assert problems({}) == [
        "appliance.weave: missing required table",
        "appliance.cilium: missing required table",
    ]
    assert problems([])[0] == "appliance: expected a table, got list"
    assert "appliance.cilium.nodes: expected an array, got a table" in problems(
        edited(**{"cilium.nodes": {"name": "x"}})
    )
