"""apply / diff / teardown in real network namespaces (root, veth, VXLAN), checked with iproute2.

Links, addresses, routes, FDB and neighbour entries are read back with ``ip``/``bridge`` (an
implementation independent of pyroute2) and sysctls with ``ip netns exec ... cat``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from appliance.apply import NetnsNotFound, Target, converge, pending, read_sysctls
from appliance.diff import Action, Conflict, MissingLink
from appliance.netconfig import from_mapping
from appliance.plan import plan
from tests.appliance.conftest import NETNS_TEST_SECONDS, base_config, ip, ipj, time_limit

pytestmark = pytest.mark.netns
# Carrier follows the link's state a moment later; it is not configuration.
CARRIER_FLAGS = {"LOWER_UP", "NO-CARRIER"}
SLUICE = str(Path(sys.executable).with_name("sluice"))


def snapshot(ns: str) -> dict[str, Any]:
    """Everything apply may touch, read with iproute2 and /proc inside the namespace.

    IPv4 only: the plan is IPv4-only, and IPv6 link-local addresses and routes come and go on
    their own (asynchronously, after DAD) whenever a link goes up.
    """
    links = sorted(
        (
            link["ifname"],
            link["mtu"],
            tuple(sorted(set(link["flags"]) - CARRIER_FLAGS)),
            link.get("linkinfo", {}).get("info_kind"),
        )
        for link in ipj("-d", "-n", ns, "link", "show")
    )
    addrs = sorted(
        (a["ifname"], i["local"], i["prefixlen"])
        for a in ipj("-4", "-n", ns, "addr", "show")
        for i in a["addr_info"]
    )
    routes = ip("-4", "-n", ns, "route", "show", "table", "all")
    fdb = subprocess.run(
        ["bridge", "-n", ns, "fdb", "show"], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    # Multicast filter entries (33:33:..., 01:00:5e:...) mirror the group memberships that IPv6
    # joins when a link goes up; they are kernel bookkeeping of link state, not configuration.
    fdb = "".join(
        line
        for line in fdb.splitlines(keepends=True)
        if not line.startswith(("33:33:", "01:00:5e:"))
    )
    neigh = ip("-n", ns, "neigh", "show", "nud", "permanent")
    sysctls = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            ns,
            "grep",
            "-r",
            ".",
            "/proc/sys/net/ipv4/conf/",
            "/proc/sys/net/ipv4/ip_forward",
        ],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout
    return {
        "links": links,
        "addrs": addrs,
        "routes": routes,
        "fdb": fdb,
        "neigh": neigh,
        "sysctls": sorted(sysctls.splitlines()),
    }


def sysctl(ns: str, path: str) -> str:
    done = subprocess.run(
        ["ip", "netns", "exec", ns, "cat", f"/proc/sys/{path}"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return done.stdout.strip()


def target(ns: str, tmp_path: Path) -> Target:
    return Target(ns, tmp_path / "state.json")


def test_apply_builds_the_planned_network(netns_pair: tuple[str, str], tmp_path: Path) -> None:
    gw, _ = netns_pair
    with time_limit(NETNS_TEST_SECONDS):
        ops = plan(from_mapping(base_config()))
        changes = converge(ops, target(gw, tmp_path))
        assert changes

        links = {link["ifname"]: link for link in ipj("-d", "-n", gw, "link", "show")}
        assert "UP" in links["wv0"]["flags"]
        assert links["cl0"]["mtu"] == 1400
        vx = links["vtep0"]
        info = vx["linkinfo"]["info_data"]
        assert vx["linkinfo"]["info_kind"] == "vxlan"
        assert (info["id"], info["port"], info["local"], info["learning"]) == (
            2,
            8472,
            "192.168.20.5",
            False,
        )
        assert info["link"] == "cl0"
        assert vx["mtu"] == 1350  # min(1376, 1400 - 50)
        assert vx["address"] == "02:53:4c:00:00:01"
        assert "UP" in vx["flags"]

        addrs = {
            (a["ifname"], i["local"], i["prefixlen"])
            for a in ipj("-n", gw, "addr", "show")
            for i in a["addr_info"]
        }
        assert ("cl0", "192.168.20.5", 24) in addrs

        routes = {r["dst"]: r for r in ipj("-n", gw, "route", "show")}
        weave = routes["10.32.0.0/12"]
        assert sorted((h["gateway"], h["dev"]) for h in weave["nexthops"]) == [
            ("192.168.10.11", "wv0"),
            ("192.168.10.12", "wv0"),
        ]
        for dst, via in (
            ("10.48.1.0/24", "192.168.20.21"),
            ("10.48.2.0/24", "192.168.20.22"),
            ("10.48.3.0/24", "192.168.20.22"),
        ):
            assert (routes[dst]["gateway"], routes[dst]["dev"]) == (via, "vtep0")
            assert "onlink" in routes[dst]["flags"]

        fdb = subprocess.run(
            ["bridge", "-n", gw, "-j", "fdb", "show", "dev", "vtep0"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        entries = {(e["mac"], e.get("dst")) for e in json.loads(fdb)}
        assert entries >= {
            ("00:00:00:00:00:00", "192.168.20.21"),
            ("00:00:00:00:00:00", "192.168.20.22"),
            ("02:00:c0:a8:14:15", "192.168.20.21"),
            ("02:aa:bb:cc:dd:02", "192.168.20.22"),
        }

        neigh = {(n["dst"], n["lladdr"]) for n in ipj("-n", gw, "neigh", "show", "dev", "vtep0")}
        assert neigh == {
            ("192.168.20.21", "02:00:c0:a8:14:15"),
            ("192.168.20.22", "02:aa:bb:cc:dd:02"),
        }

        assert sysctl(gw, "net/ipv4/ip_forward") == "1"
        for dev in ("wv0", "cl0", "vtep0"):
            assert sysctl(gw, f"net/ipv4/conf/{dev}/rp_filter") == "2"
        # The host's own namespace is not touched by a namespaced apply.
        assert "vtep0" not in ip("link", "show")


def test_apply_twice_changes_nothing(netns_pair: tuple[str, str], tmp_path: Path) -> None:
    gw, _ = netns_pair
    with time_limit(NETNS_TEST_SECONDS):
        ops = plan(from_mapping(base_config()))
        assert converge(ops, target(gw, tmp_path))
        before = snapshot(gw)
        assert converge(ops, target(gw, tmp_path)) == ()
        assert pending(ops, target(gw, tmp_path)) == ()
        assert snapshot(gw) == before


def test_diff_shows_drift_and_apply_repairs_it(netns_pair: tuple[str, str], tmp_path: Path) -> None:
    gw, _ = netns_pair
    with time_limit(NETNS_TEST_SECONDS):
        ops = plan(from_mapping(base_config()))
        converge(ops, target(gw, tmp_path))
        ip("-n", gw, "route", "del", "10.48.2.0/24")
        ip("-n", gw, "link", "set", "vtep0", "mtu", "1300")
        subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                gw,
                "sh",
                "-c",
                "echo 0 > /proc/sys/net/ipv4/conf/wv0/rp_filter",
            ],
            check=True,
            timeout=10,
        )
        drift = {(c.action, c.key) for c in pending(ops, target(gw, tmp_path))}
        assert drift == {
            (Action.CREATE, ("route", "10.48.2.0/24")),
            (Action.SET, ("mtu", "vtep0")),
            (Action.SET, ("sysctl", "net/ipv4/conf/wv0/rp_filter")),
        }
        assert len(converge(ops, target(gw, tmp_path))) == 3
        assert pending(ops, target(gw, tmp_path)) == ()


def test_teardown_leaves_nothing_behind(netns_pair: tuple[str, str], tmp_path: Path) -> None:
    gw, _ = netns_pair
    with time_limit(NETNS_TEST_SECONDS):
        # Something that pre-exists and that apply wants too: it must survive teardown.
        ip("-n", gw, "addr", "add", "192.168.20.5/24", "dev", "cl0")
        ip("-n", gw, "route", "add", "172.16.0.0/16", "via", "192.168.20.1")
        before = snapshot(gw)
        state = target(gw, tmp_path)
        converge(plan(from_mapping(base_config())), state)
        assert state.state_path.exists()
        assert snapshot(gw) != before
        removed = converge((), state)
        assert removed
        after = snapshot(gw)
        assert after == before
        assert not state.state_path.exists()
        assert converge((), state) == ()


def test_changed_config_converges_and_drops_stale_resources(
    netns_pair: tuple[str, str], tmp_path: Path
) -> None:
    gw, _ = netns_pair
    with time_limit(NETNS_TEST_SECONDS):
        state = target(gw, tmp_path)
        before = snapshot(gw)
        converge(plan(from_mapping(base_config())), state)
        cfg = base_config()
        cfg["weave"]["gateways"] = ["192.168.10.11"]  # ECMP -> single next hop
        cfg["cilium"]["nodes"] = cfg["cilium"]["nodes"][:1]  # node b leaves
        changes = {(c.action, c.key) for c in converge(plan(from_mapping(cfg)), state)}
        assert (Action.REPLACE, ("route", "10.32.0.0/12")) in changes
        assert (Action.REMOVE, ("route", "10.48.3.0/24")) in changes
        assert (Action.REMOVE, ("neigh", "vtep0", "192.168.20.22")) in changes
        routes = {r["dst"]: r for r in ipj("-n", gw, "route", "show")}
        assert routes["10.32.0.0/12"]["gateway"] == "192.168.10.11"
        assert "10.48.2.0/24" not in routes
        converge((), state)
        assert snapshot(gw) == before


def test_refuses_to_overwrite_what_it_did_not_create(
    netns_pair: tuple[str, str], tmp_path: Path
) -> None:
    gw, _ = netns_pair
    with time_limit(NETNS_TEST_SECONDS):
        ip("-n", gw, "link", "set", "wv0", "up")
        ip("-n", gw, "route", "add", "10.32.0.0/12", "via", "192.168.10.99")
        before = snapshot(gw)
        with pytest.raises(Conflict, match=r"route 10\.32\.0\.0/12 exists"):
            converge(plan(from_mapping(base_config())), target(gw, tmp_path))
        assert snapshot(gw) == before


def test_missing_nic_and_missing_namespace(netns_pair: tuple[str, str], tmp_path: Path) -> None:
    gw, _ = netns_pair
    with time_limit(NETNS_TEST_SECONDS):
        cfg = base_config()
        cfg["weave"]["interface"] = "eth9"
        with pytest.raises(MissingLink, match=r"interface eth9 .weave side. does not exist"):
            converge(plan(from_mapping(cfg)), target(gw, tmp_path))
        with pytest.raises(NetnsNotFound):
            pending(plan(from_mapping(base_config())), target(gw + "-nope", tmp_path))


def test_sysctls_are_read_inside_the_namespace(netns_pair: tuple[str, str]) -> None:
    gw, _ = netns_pair
    with time_limit(NETNS_TEST_SECONDS):
        subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                gw,
                "sh",
                "-c",
                "echo 1 > /proc/sys/net/ipv4/conf/cl0/rp_filter",
            ],
            check=True,
            timeout=10,
        )
        got = read_sysctls(["net/ipv4/conf/cl0/rp_filter", "net/ipv4/conf/nosuch/rp_filter"], gw)
        assert got == {"net/ipv4/conf/cl0/rp_filter": "1"}
        # The calling thread stayed in its own namespace: cl0 does not exist here.
        assert read_sysctls(["net/ipv4/conf/cl0/rp_filter"], None) == {}


def test_cli_apply_diff_teardown(netns_pair: tuple[str, str], tmp_path: Path) -> None:
    """The commands a user runs, as real subprocesses."""
    gw, _ = netns_pair
    cfg = base_config()
    toml = tmp_path / "sluice.toml"
    toml.write_text(_to_toml(cfg))
    common = ["--netns", gw, "--state", str(tmp_path / "st.json")]

    def sluice(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SLUICE, "appliance", *args],
            capture_output=True,
            text=True,
            timeout=NETNS_TEST_SECONDS,
            check=False,
        )

    with time_limit(4 * NETNS_TEST_SECONDS):
        before = snapshot(gw)
        d = sluice("diff", "--config", str(toml), *common, "--exit-code")
        assert d.returncode == 1, d.stderr
        assert "create   route 10.32.0.0/12 nexthop" in d.stdout
        a = sluice("apply", "--config", str(toml), *common)
        assert a.returncode == 0, a.stderr
        assert a.stdout.splitlines() == d.stdout.splitlines()
        again = sluice("apply", "--config", str(toml), *common)
        assert (again.returncode, again.stdout) == (0, "no changes\n")
        assert sluice("diff", "--config", str(toml), *common, "--exit-code").returncode == 0
        t = sluice("teardown", *common)
        assert t.returncode == 0, t.stderr
        assert "remove   link vtep0" in t.stdout
        assert snapshot(gw) == before
        bad = sluice("apply", "--config", str(toml), "--netns", gw + "-nope")
        assert bad.returncode == 3
        assert bad.stderr.startswith("error: network namespace") and "Traceback" not in bad.stderr


def _to_toml(cfg: dict[str, Any]) -> str:
    w, c = cfg["weave"], cfg["cilium"]
    lines = ["[appliance.weave]"] + [f"{k} = {json.dumps(v)}" for k, v in w.items()]
    lines += ["[appliance.cilium]"] + [
        f"{k} = {json.dumps(v)}" for k, v in c.items() if k not in ("vxlan", "nodes")
    ]
    lines += ["[appliance.cilium.vxlan]"] + [
        f"{k} = {json.dumps(v)}" for k, v in c["vxlan"].items()
    ]
    for node in c["nodes"]:
        lines += ["[[appliance.cilium.nodes]]"] + [
            f"{k} = {json.dumps(v)}" for k, v in node.items()
        ]
    return "\n".join(lines) + "\n"
