"""End to end across three network namespaces: Weave node -> appliance (gateway) -> Cilium node.

Topology (every address lives only in the namespaces this test creates)::

    weave-node                  gw (the appliance)                   cilium-node
    wn0 192.168.10.11/24 <-veth-> wv0 192.168.10.5/24
    lo  10.32.1.7/32 (pod)        cl0 192.168.20.5/24  <-veth->  cn0 192.168.20.21/24
                                  vtep0 VXLAN VNI 2 :8472  ~~~>  vx0 VXLAN VNI 2 :8472
                                    10.47.255.1/32                 MAC = the node's vtep_mac
                                                                 lo  10.48.1.15/32 (pod)

The gw namespace starts with nothing but two bare veth NICs (and loopback up): its addresses,
the route to the Weave pod range via the exposed Weave node, the VXLAN VTEP with its FDB and
neighbour entries, the route to the Cilium pod CIDR and the sysctls are all made by
``sluice appliance apply`` run on the same ``sluice.toml`` the gateway daemon runs with. The two
node namespaces stand in for a Weave node and a Cilium node and are configured with iproute2.

Then the gateway daemon (``sluice run``) runs in gw, a receiver for the ``ledger`` workload runs in
cilium-node on the pod address, and the ``orders`` workload sends envelopes from the Weave pod
address: the allowed ones arrive, the refused ones do not and the sender gets the reason, the
audit log verifies and records both, and the Cilium node's VXLAN counters prove the traffic
crossed the overlay that apply built.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from appliance.netconfig import default_vtep_mac
from gateway.demo.harness import envelope
from gateway.demo.topology import CILIUM, WEAVE, Topology, build_topology, gateway_id
from gateway.envelope.wire import decode_unverified
from identity.anchors import AnchorKeyPair, save_private_key
from tests.appliance.conftest import ip, ipj, stop_process, time_limit, wait_for_file

pytestmark = pytest.mark.netns

TEST_SECONDS = 60
BIN = Path(sys.executable).parent
SLUICE = str(BIN / "sluice")
REPO = Path(__file__).resolve().parents[2]

GW_WEAVE = "192.168.10.5"
WEAVE_NODE = "192.168.10.11"
WEAVE_POD = "10.32.1.7"
GW_CILIUM = "192.168.20.5"
CILIUM_NODE = "192.168.20.21"
CILIUM_POD = "10.48.1.15"
GW_VTEP_ADDR = "10.47.255.1"
GW_VTEP_MAC = "02:53:4c:00:00:01"
NODE_VTEP_MAC = default_vtep_mac(IPv4Address(CILIUM_NODE))
VNI, VXLAN_PORT, VXLAN_MTU = 2, 8472, 1376
LISTEN_PORT, RECEIVER_PORT, METRICS_PORT = 7443, 9000, 9464
GATEWAY = "gw-appliance"


@dataclass(frozen=True, slots=True)
class Names:
    weave: str
    gw: str
    cilium: str

    @classmethod
    def unique(cls) -> Names:
        tag = os.getpid()
        return cls(f"sluice-wn-{tag}", f"sluice-gw3-{tag}", f"sluice-cn-{tag}")


def _gateway_toml() -> str:
    """One file for both ``sluice appliance apply`` and ``sluice run``, as on the VM."""
    return f"""\
[gateway]
name = "{GATEWAY}"
spiffe_id = "{gateway_id(WEAVE, GATEWAY)}"

[identity]
trust_domain = "{WEAVE.name}"
source = "files"
cert_chain = "svid/chain.pem"
private_key = "svid/key.pem"
bundle = "bundles/{WEAVE.name}.pem"

[anchor]
private_key = "keys/{GATEWAY}-anchor.pem"
endorsement = "anchors/{GATEWAY}.endorsement"

[trust]
anchors_dir = "anchors"

[trust.bundles]
"{CILIUM.name}" = "bundles/{CILIUM.name}.pem"

[[networks]]
name = "weave"
kind = "weave"
listen = "{GW_WEAVE}:{LISTEN_PORT}"

[[networks]]
name = "cilium"
kind = "cilium"
listen = "{GW_VTEP_ADDR}:{LISTEN_PORT}"

[[scopes]]
name = "orders/intake"
policy = "policies/orders-intake.toml"

[[scopes]]
name = "payments/ledger"
policy = "policies/payments-ledger.toml"

[[routes]]
scope = "payments/*"
network = "cilium"
address = "{CILIUM_POD}:{RECEIVER_PORT}"

[limits]
handshake_timeout_seconds = 5

[audit]
path = "state/audit.log"

[spool]
dir = "state/spool"
max_bytes = 67108864

[metrics]
listen = "127.0.0.1:{METRICS_PORT}"

[log]
level = "info"

[appliance.weave]
interface = "wv0"
addresses = ["{GW_WEAVE}/24"]
gateways = ["{WEAVE_NODE}"]

[appliance.cilium]
interface = "cl0"
addresses = ["{GW_CILIUM}/24"]
cluster_pool = "10.48.0.0/16"

[appliance.cilium.vxlan]
name = "vtep0"
vni = {VNI}
port = {VXLAN_PORT}
mac = "{GW_VTEP_MAC}"
addresses = ["{GW_VTEP_ADDR}/32"]

[[appliance.cilium.nodes]]
name = "cilium-a"
underlay = "{CILIUM_NODE}"
pod_cidrs = ["10.48.1.0/24"]
"""


def _deployment(root: Path) -> tuple[Topology, Path]:
    """The demo's CAs, workloads and policies, plus one gateway's SVID, anchor key and TOML."""
    topo = build_topology(root)
    svid = topo.weave_ca.issue(gateway_id(WEAVE, GATEWAY))
    (root / "svid").mkdir()
    (root / "svid" / "chain.pem").write_bytes(svid.chain_pem())
    (root / "svid" / "key.pem").write_bytes(svid.key_pem())
    save_private_key(AnchorKeyPair.generate(), root / "keys" / f"{GATEWAY}-anchor.pem")
    config = root / "sluice.toml"
    config.write_text(_gateway_toml())
    return topo, config


def _run(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {done.returncode}: {done.stderr}")
    return done


def _in(ns: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *args]


def _build_namespaces(n: Names) -> None:
    """Namespaces, veths and the two stand-in nodes; gw gets bare NICs only."""
    for ns in (n.weave, n.gw, n.cilium):
        ip("netns", "add", ns)
        ip("-n", ns, "link", "set", "lo", "up")
    ip("-n", n.gw, "link", "add", "wv0", "type", "veth", "peer", "name", "wn0", "netns", n.weave)
    ip("-n", n.gw, "link", "add", "cl0", "type", "veth", "peer", "name", "cn0", "netns", n.cilium)

    w = n.weave  # the exposed Weave node: pod address on loopback, underlay on the veth
    ip("-n", w, "addr", "add", f"{WEAVE_NODE}/24", "dev", "wn0")
    ip("-n", w, "link", "set", "wn0", "up")
    ip("-n", w, "addr", "add", f"{WEAVE_POD}/32", "dev", "lo")
    # Traffic from this node toward the appliance leaves with the pod's address as its source.
    ip("-n", w, "route", "replace", "192.168.10.0/24", "dev", "wn0", "proto", "kernel",
       "scope", "link", "src", WEAVE_POD)  # fmt: skip
    ip("-n", w, "route", "add", "10.48.0.0/16", "via", GW_WEAVE, "src", WEAVE_POD)
    _run(*_in(w, "sysctl", "-qw", "net.ipv4.conf.all.arp_announce=2"))

    c = n.cilium  # a Cilium node: underlay veth, VXLAN device with the node's VTEP MAC, a pod
    ip("-n", c, "addr", "add", f"{CILIUM_NODE}/24", "dev", "cn0")
    ip("-n", c, "link", "set", "cn0", "up")
    ip("-n", c, "link", "add", "vx0", "type", "vxlan", "id", str(VNI), "dstport",
       str(VXLAN_PORT), "local", CILIUM_NODE, "dev", "cn0", "nolearning")  # fmt: skip
    ip("-n", c, "link", "set", "vx0", "address", NODE_VTEP_MAC, "mtu", str(VXLAN_MTU), "up")
    ip("-n", c, "addr", "add", f"{CILIUM_POD}/32", "dev", "lo")
    # The way back to the appliance and the Weave range: over VXLAN to the appliance's VTEP.
    ip("-n", c, "neigh", "add", GW_CILIUM, "dev", "vx0", "lladdr", GW_VTEP_MAC, "nud", "permanent")
    _run("bridge", "-n", c, "fdb", "append", GW_VTEP_MAC, "dev", "vx0", "dst", GW_CILIUM)
    for dst in ("10.32.0.0/12", f"{GW_VTEP_ADDR}/32"):
        ip("-n", c, "route", "add", dst, "via", GW_CILIUM, "dev", "vx0", "onlink")


def _link_stats(ns: str, dev: str) -> tuple[int, int]:
    (link,) = ipj("-s", "-n", ns, "link", "show", "dev", dev)
    return int(link["stats64"]["rx"]["packets"]), int(link["stats64"]["tx"]["packets"])


@pytest.fixture
def names() -> Iterator[Names]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    n = Names.unique()
    try:
        yield n
    finally:
        for ns in (n.weave, n.gw, n.cilium):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10, check=False)


def _apply(gw: str, config: Path, state: Path) -> None:
    """Build the appliance's network with ``sluice appliance apply`` and check the result."""
    before = subprocess.run(
        ["ip", "-n", gw, "route", "get", CILIUM_POD], capture_output=True, timeout=10, check=False
    )
    assert before.returncode != 0, "gw reached the Cilium pod before apply"
    common = ("--config", str(config), "--netns", gw, "--state", str(state))
    assert "create   link vtep0 type vxlan" in _run(SLUICE, "appliance", "apply", *common).stdout
    assert _run(SLUICE, "appliance", "apply", *common).stdout == "no changes\n"
    (route,) = ipj("-n", gw, "route", "get", CILIUM_POD)
    assert (route["dev"], route["gateway"], route["prefsrc"]) == (
        "vtep0",
        CILIUM_NODE,
        GW_VTEP_ADDR,
    )
    (back,) = ipj("-n", gw, "route", "get", WEAVE_POD)
    assert (back["dev"], back["gateway"]) == ("wv0", WEAVE_NODE)


def _send(weave_ns: str, topo: Topology, envelopes: list[bytes], out: Path) -> dict[str, Any]:
    """Run the sender driver in the Weave node namespace; its JSON report."""
    out.mkdir()
    files = []
    for i, data in enumerate(envelopes):
        (out / f"{i}.cose").write_bytes(data)
        files.append(str(out / f"{i}.cose"))
    sent = _run(
        *_in(weave_ns, str(BIN / "python"), "-m", "tests.appliance.drivers.sender",
             "--gateway", f"{GW_WEAVE}:{LISTEN_PORT}", "--name", str(topo.orders.spiffe_id),
             "--deadline", "20", "--max-seconds", "40", *files),
        timeout=45,
    )  # fmt: skip
    report: dict[str, Any] = json.loads(sent.stdout)
    return report


def _audit_decisions(audit_log: Path) -> list[dict[str, Any]]:
    """``sluice audit verify`` must pass; the records ``audit show --json`` prints."""
    assert _run(SLUICE, "audit", "verify", str(audit_log)).returncode == 0
    shown = _run(SLUICE, "audit", "show", "--json", str(audit_log)).stdout
    return [json.loads(line) for line in shown.splitlines()]


def _hex_id(data: bytes) -> str:
    return decode_unverified(data).claims.envelope_id.hex()


def test_governed_traffic_from_weave_pod_to_cilium_pod_through_the_appliance(
    names: Names, tmp_path: Path
) -> None:
    topo, config = _deployment(tmp_path / "etc")
    state = tmp_path / "appliance-net.json"
    logs = tmp_path / "logs"
    logs.mkdir()
    sink = tmp_path / "delivered"
    procs: list[subprocess.Popen[bytes]] = []

    def start(ns: str, log_name: str, *cmd: str, cwd: Path = REPO) -> subprocess.Popen[bytes]:
        with (logs / log_name).open("wb") as err:
            proc = subprocess.Popen(_in(ns, *cmd), stdout=subprocess.DEVNULL, stderr=err, cwd=cwd)
        procs.append(proc)
        return proc

    torn_down = False
    try:
        with time_limit(TEST_SECONDS):
            _build_namespaces(names)
            # The appliance's whole network state comes from the project's own apply, reading
            # the same file the daemon runs with (which the gateway's loader accepts).
            _apply(names.gw, config, state)
            checked = _run(SLUICE, "config", "check", "--skip-files", str(config))
            assert checked.stdout.startswith("ok:")

            ready = tmp_path / "receiver.ready"
            receiver = start(
                names.cilium, "receiver.log", str(BIN / "python"), "-m",
                "tests.appliance.drivers.receiver",
                "--listen", f"{CILIUM_POD}:{RECEIVER_PORT}",
                "--name", str(topo.ledger_id),
                "--anchors", str(topo.anchors_dir),
                "--bundle", f"{WEAVE.name}={topo.root / 'bundles' / f'{WEAVE.name}.pem'}",
                "--bundle", f"{CILIUM.name}={topo.root / 'bundles' / f'{CILIUM.name}.pem'}",
                "--sink", str(sink),
                "--ready-file", str(ready),
                "--max-seconds", str(TEST_SECONDS),
            )  # fmt: skip
            wait_for_file(ready, receiver, 15, logs / "receiver.log")
            gateway = start(
                names.gw, "gateway.log", SLUICE, "run", "--config", str(config), cwd=config.parent
            )
            vx_before = _link_stats(names.cilium, "vx0")

            allowed = [envelope(topo, payload=f"order {n}: 3 units".encode()) for n in (1, 2)]
            refused = {
                "tier_too_low": envelope(topo, tier=0),
                "scope_not_endorsed": envelope(topo, origin_scope="payments/api"),
                "lineage_revoked": envelope(topo, lineage=topo.lineage("orders/intake", number=1)),
            }
            report = _send(names.weave, topo, [*allowed, *refused.values()], tmp_path / "out")
            assert report["source"] == WEAVE_POD  # the gateway saw the Weave pod's address
            results = report["results"]
            assert [r["delivered"] for r in results] == [True, True, False, False, False], results
            assert [r["reason"] for r in results[2:]] == list(refused), results

            # Allowed envelopes arrive, refused ones never do. (A gateway ACKs an envelope once
            # it is delivered or durably spooled, so wait for the files.)
            ids = [_hex_id(d) for d in allowed]
            give_up = time.monotonic() + 15
            while not all((sink / i).exists() for i in ids) and time.monotonic() < give_up:
                time.sleep(0.05)
            assert sorted(p.name for p in sink.iterdir()) == sorted(ids)
            payloads = [(sink / i).read_bytes() for i in ids]
            assert payloads == [b"order 1: 3 units", b"order 2: 3 units"]

            # The traffic crossed the VXLAN overlay apply built (there is no other path).
            vx_after = _link_stats(names.cilium, "vx0")
            assert vx_after[0] > vx_before[0] and vx_after[1] > vx_before[1], (vx_before, vx_after)
            assert all(n > 0 for n in _link_stats(names.gw, "vtep0"))

            stop_process(gateway)
            assert gateway.returncode == 0, (logs / "gateway.log").read_text(errors="replace")
            records = _audit_decisions(config.parent / "state" / "audit.log")
            got = {
                (r["envelope_id"], r["decision"], r["reason"], r["from"], r["to"]) for r in records
            }
            for eid in ids:
                assert (eid, "allow", "allowed", "net:weave", "net:cilium") in got, records
            for data, reason in zip(refused.values(), refused, strict=True):
                assert (_hex_id(data), "deny", reason, "net:weave", "") in got, records

            out = _run(SLUICE, "appliance", "teardown", "--netns", names.gw, "--state", str(state))
            torn_down = True
            assert "remove   link vtep0" in out.stdout
            assert not state.exists()
            assert "vtep0" not in ip("-n", names.gw, "link", "show")
    finally:
        for proc in procs:
            stop_process(proc)
        if not torn_down:
            subprocess.run(
                [SLUICE, "appliance", "teardown", "--netns", names.gw, "--state", str(state)],
                capture_output=True,
                timeout=20,
                check=False,
            )
