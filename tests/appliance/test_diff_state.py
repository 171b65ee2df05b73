"""The pure diff (ownership, conflicts, teardown as the empty plan) and the state file."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

import pytest

from appliance import state
from appliance.diff import (
    Action,
    Conflict,
    LinkState,
    MissingLink,
    Observed,
    Record,
    VxlanAttrs,
    diff,
    updated_record,
)
from appliance.netconfig import from_mapping
from appliance.plan import FdbEntry, Neighbour, Nexthop, Route, Sysctl, VxlanLink, plan
from tests.appliance.conftest import base_config

OPS = plan(from_mapping(base_config()))
VX = next(op for op in OPS if isinstance(op, VxlanLink))


def nic(name: str, mtu: int = 1500, up: bool = True) -> LinkState:
    return LinkState(name, mtu, up, "veth", "02:00:00:00:00:aa")


def converged() -> Observed:
    """What the machine looks like after a successful apply of OPS."""
    vx = LinkState(
        VX.ifname,
        VX.mtu,
        True,
        "vxlan",
        VX.mac,
        VxlanAttrs(VX.vni, VX.port, VX.local, False, "cl0"),
    )
    routes = {op.dst: frozenset(op.nexthops) for op in OPS if isinstance(op, Route)}
    return Observed(
        links={"wv0": nic("wv0"), "cl0": nic("cl0", 1400), "vtep0": vx},
        addresses=frozenset(
            {("wv0", IPv4Interface("192.168.10.5/24")), ("cl0", IPv4Interface("192.168.20.5/24"))}
        ),
        routes=routes,
        fdb=frozenset((op.ifname, op.lladdr, op.dst) for op in OPS if isinstance(op, FdbEntry)),
        neighbours={(op.ifname, op.address): op.lladdr for op in OPS if isinstance(op, Neighbour)},
        sysctls={op.path: op.value for op in OPS if isinstance(op, Sysctl)},
    )


def applied_record(observed_before: Observed) -> Record:
    record = Record()
    for change in diff(OPS, observed_before, Record()):
        record = updated_record(record, change)
    return record


def fresh_machine() -> Observed:
    return Observed(
        links={"wv0": nic("wv0", up=False), "cl0": nic("cl0")},
        addresses=frozenset({("wv0", IPv4Interface("192.168.10.5/24"))}),
        sysctls={
            "net/ipv4/ip_forward": "0",
            "net/ipv4/conf/wv0/rp_filter": "0",
            "net/ipv4/conf/cl0/rp_filter": "1",
        },
    )


def test_converged_state_needs_no_change() -> None:
    assert diff(OPS, converged(), applied_record(fresh_machine())) == ()


def test_fresh_machine_records_only_what_apply_creates() -> None:
    changes = diff(OPS, fresh_machine(), Record())
    keys = {c.key for c in changes}
    assert ("address", "wv0", "192.168.10.5/24") not in keys  # already there: not ours
    assert ("link", "vtep0") in keys and ("up", "wv0") in keys and ("mtu", "cl0") in keys
    record = applied_record(fresh_machine())
    assert ("address", "wv0", "192.168.10.5/24") not in record.created
    assert record.sysctls == {
        "net/ipv4/ip_forward": "0",
        "net/ipv4/conf/wv0/rp_filter": "0",
        "net/ipv4/conf/cl0/rp_filter": "1",
    }
    assert record.mtus == {"cl0": 1500} and record.upped == ("wv0",)


def test_teardown_is_the_empty_plan() -> None:
    record = applied_record(fresh_machine())
    changes = diff((), converged(), record)
    actions = [(c.action, c.key[0]) for c in changes]
    removes = [k for a, k in actions if a is Action.REMOVE]
    assert removes == sorted(removes, key=["route", "neigh", "fdb", "address", "link"].index)
    assert removes[-1] == "link"
    restores = {c.key: c.after for c in changes if c.action is Action.RESTORE}
    assert restores == {
        ("sysctl", "net/ipv4/ip_forward"): "0",
        ("sysctl", "net/ipv4/conf/wv0/rp_filter"): "0",
        ("sysctl", "net/ipv4/conf/cl0/rp_filter"): "1",
        ("mtu", "cl0"): "1500",
        ("up", "wv0"): "down",
    }
    for change in changes:
        record = updated_record(record, change)
    assert record.empty


def test_foreign_resources_are_conflicts_owned_ones_are_replaced() -> None:
    other = frozenset({Nexthop(IPv4Address("192.168.10.99"), "wv0")})
    drifted = converged()
    drifted = Observed(
        drifted.links,
        drifted.addresses,
        {**drifted.routes, IPv4Network("10.32.0.0/12"): other},
        drifted.fdb,
        drifted.neighbours,
        drifted.sysctls,
    )
    with pytest.raises(Conflict, match="not created by sluice"):
        diff(OPS, drifted, Record())
    (change,) = diff(OPS, drifted, applied_record(fresh_machine()))
    assert (change.action, change.key) == (Action.REPLACE, ("route", "10.32.0.0/12"))


def test_changed_vxlan_attributes_recreate_everything_on_it() -> None:
    obs = converged()
    wrong = LinkState(
        "vtep0",
        VX.mtu,
        True,
        "vxlan",
        VX.mac,
        VxlanAttrs(VX.vni + 1, VX.port, VX.local, False, "cl0"),
    )
    obs = Observed(
        {**obs.links, "vtep0": wrong},
        obs.addresses,
        obs.routes,
        obs.fdb,
        obs.neighbours,
        obs.sysctls,
    )
    with pytest.raises(Conflict, match="link vtep0 exists with other attributes"):
        diff(OPS, obs, Record())
    changes = diff(OPS, obs, applied_record(fresh_machine()))
    assert changes[0].action is Action.REPLACE
    kinds = {c.key[0] for c in changes}
    assert kinds == {"link", "fdb", "neigh", "route", "sysctl"}


def test_missing_nic_is_an_error() -> None:
    obs = converged()
    links = {k: v for k, v in obs.links.items() if k != "cl0"}
    with pytest.raises(MissingLink, match=r"interface cl0 .cilium underlay side. does not exist"):
        diff(OPS, Observed(links=links), Record())


def test_state_file_round_trip_is_atomic_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "st.json"
    assert state.load(path, "ns1") == Record()
    record = applied_record(fresh_machine())
    state.save(path, record, "ns1")
    assert state.load(path, "ns1") == record
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []
    with pytest.raises(state.StateFileError, match="records namespace 'ns1', not 'ns2'"):
        state.load(path, "ns2")
    doc = json.loads(path.read_text())
    doc["mtus"] = {"cl0": "1500"}
    path.write_text(json.dumps(doc))
    with pytest.raises(state.StateFileError, match="mtus: expected a table of integers"):
        state.load(path, "ns1")
    path.write_text("{")
    with pytest.raises(state.StateFileError, match="not valid JSON"):
        state.load(path, "ns1")
    state.remove(path)
    assert not path.exists()


def test_state_lock_refuses_a_second_writer(tmp_path: Path) -> None:
    path = tmp_path / "st.json"
    with (
        state.locked(path),
        pytest.raises(state.StateFileError, match="another sluice"),
        state.locked(path),
    ):
        pass
