"""A Weave -> Cilium migration of a three-node cluster in network namespaces, with the gateway
bridging both sides and governed probes checking every step.

Topology (every address exists only in the namespaces this test creates)::

    ops: bridges brw 192.168.10.100/24 (Weave underlay) and brc 192.168.20.100/24 (Cilium
         underlay); the operator's machine: `sluice migrate` runs here
    gw:  wv0 192.168.10.5 / cl0 192.168.20.5 / vtep0 10.47.255.1 (VXLAN VNI 2 :8472), all made by
         `sluice appliance apply` from the gateway's own sluice.toml; `sluice run` listens on
         192.168.10.5:7443 (weave) and 10.47.255.1:7443 (cilium)
    worker-1, worker-2, cp-1: wn0 192.168.10.1x on brw, cn0 192.168.20.2x on brc, vx0 (the node's
         VTEP); the node's probe workload's pod address on lo: 10.32.<i>.1 while on Weave,
         10.48.<i-1>.10 once on Cilium, and its receiver (tests.appliance.drivers.receiver) on it.
         worker-1 is the exposed Weave node; the nodes route each other's Weave /24 (standing in
         for the Weave mesh).

Kubernetes cannot run here: ``SimulatedCluster`` (a mock of kubectl/helm, with its own durable
action log) is the cluster, driven by the real ``sluice migrate`` CLI. The test plays the kubelet:
after each CLI call it moves each node's pod address and receiver to where the simulated cluster
says the pods are (``_reconcile``). Everything else is real: the gateway daemon with its spool and
audit log, the appliance network, VXLAN, the probe envelopes (``--probes``), SIGKILL.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from appliance.netconfig import default_vtep_mac
from config.migration_plan import load_plan, render_plan
from config.migration_probes import load_probes
from gateway.envelope.wire import decode_unverified
from gateway.migration.journal import Direction, read_state
from gateway.migration.plan import build_plan
from gateway.migration.prober import GatewayProber
from gateway.migration.simulated import KILL_ENV, SimulatedCluster
from gateway.migration.stages import Stage, steps
from identity.anchors import AnchorKeyPair, save_private_key
from identity.ca import SvidAuthority
from identity.endorsement import endorse
from identity.spiffe_id import parse_spiffe_id
from identity.x509svid import X509SVID
from tests.appliance.conftest import ip, stop_process, time_limit, wait_for_file
from tests.gateway.migration.test_inventory import load_inventory

pytestmark = pytest.mark.netns

TEST_SECONDS = 150
BIN = Path(sys.executable).parent
SLUICE = str(BIN / "sluice")
PYTHON = str(BIN / "python")
REPO = Path(__file__).resolve().parents[3]

TD = "cluster.example"
GATEWAY_ID = f"spiffe://{TD}/sluice/gateway/gw-migrate"
GW_WEAVE, GW_CILIUM, GW_VTEP_ADDR = "192.168.10.5", "192.168.20.5", "10.47.255.1"
GW_VTEP_MAC = "02:53:4c:00:00:01"
OPS_WEAVE, OPS_CILIUM = "192.168.10.100", "192.168.20.100"
LISTEN, RECEIVER_PORT = 7443, 9000
NODES = ("worker-1", "worker-2", "cp-1")  # the plan's order: workers first
WEAVE_RANGE = ipaddress.IPv4Network("10.32.0.0/12")


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    namespace: str
    node: str

    @property
    def spiffe_id(self) -> str:
        return f"spiffe://{TD}/ns/{self.namespace}/sa/{self.name}"

    @property
    def scope(self) -> str:
        return f"{self.namespace}/{self.name}"


WORKLOADS = (
    Workload("frontend", "shop", "worker-1"),
    Workload("api", "shop", "worker-2"),
    Workload("ledger", "payments", "cp-1"),
)
BY_NODE = {w.node: w for w in WORKLOADS}

# What Kubernetes would decide with the NetworkPolicies below (L3): the baseline the probes must
# show before S2 and keep at every step.
EXPECTED = {
    "frontend@worker-1->api@worker-2": "allow",
    "frontend@worker-1->ledger@cp-1": "deny:origin_not_allowed",
    "api@worker-2->frontend@worker-1": "allow",
    "api@worker-2->ledger@cp-1": "allow",
    "ledger@cp-1->frontend@worker-1": "allow",
    "ledger@cp-1->api@worker-2": "deny:origin_not_allowed",
}

NETPOL = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny, namespace: payments}
spec: {podSelector: {}, policyTypes: [Ingress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: ledger-from-shop-api, namespace: payments}
spec:
  podSelector: {matchLabels: {app: ledger}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: shop}}
      podSelector: {matchLabels: {app: api}}
    ports: [{port: 8443}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-from-frontend, namespace: shop}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from:
    - podSelector: {matchLabels: {app: frontend}}
"""

INVENTORY = "".join(
    f"---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {w.name}-1, namespace: {w.namespace}, "
    f"labels: {{app: {w.name}}}}}\nspec: {{serviceAccountName: {w.name}}}\n"
    for w in WORKLOADS
) + "".join(
    f"---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: "
    f"{{kubernetes.io/metadata.name: {ns}}}}}\n"
    for ns in ("shop", "payments")
)


@dataclass(frozen=True, slots=True)
class Names:
    ops: str
    gw: str
    nodes: dict[str, str]

    @classmethod
    def unique(cls) -> Names:
        tag = os.getpid()
        return cls(
            f"sl-mg-ops-{tag}",
            f"sl-mg-gw-{tag}",
            {node: f"sl-mg-n{i}-{tag}" for i, node in enumerate(NODES, start=1)},
        )

    def all(self) -> list[str]:
        return [self.ops, self.gw, *self.nodes.values()]


def _underlay(index: int) -> tuple[str, str]:
    return f"192.168.10.{10 + index}", f"192.168.20.{20 + index}"


def _run(*args: str, timeout: float = 30, env: dict[str, str] | None = None,
         check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=REPO, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {done.returncode}: {done.stderr}")
    return done


def _in(ns: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *args]


def _build_namespaces(n: Names) -> None:
    for ns in n.all():
        ip("netns", "add", ns)
        ip("-n", ns, "link", "set", "lo", "up")
    ip("-n", n.ops, "link", "add", "brw", "type", "bridge")
    ip("-n", n.ops, "link", "add", "brc", "type", "bridge")
    ip("-n", n.ops, "addr", "add", f"{OPS_WEAVE}/24", "dev", "brw")
    ip("-n", n.ops, "addr", "add", f"{OPS_CILIUM}/24", "dev", "brc")
    for dev in ("brw", "brc"):
        ip("-n", n.ops, "link", "set", dev, "up")
    # The operator reaches the gateway's Cilium-side listener through the appliance's NIC.
    ip("-n", n.ops, "route", "add", f"{GW_VTEP_ADDR}/32", "via", GW_CILIUM)

    def plug(ns: str, inside: str, port: str, bridge: str) -> None:
        ip("-n", ns, "link", "add", inside, "type", "veth", "peer", "name", port, "netns", n.ops)
        ip("-n", n.ops, "link", "set", port, "master", bridge, "up")

    plug(n.gw, "wv0", "pw-gw", "brw")  # gw gets bare NICs: apply does the rest
    plug(n.gw, "cl0", "pc-gw", "brc")
    for index, node in enumerate(NODES, start=1):
        ns = n.nodes[node]
        weave, cilium = _underlay(index)
        plug(ns, "wn0", f"pw-n{index}", "brw")
        plug(ns, "cn0", f"pc-n{index}", "brc")
        ip("-n", ns, "addr", "add", f"{weave}/24", "dev", "wn0")
        ip("-n", ns, "addr", "add", f"{cilium}/24", "dev", "cn0")
        for dev in ("wn0", "cn0"):
            ip("-n", ns, "link", "set", dev, "up")
        ip("-n", ns, "link", "add", "vx0", "type", "vxlan", "id", "2", "dstport", "8472",
           "local", cilium, "dev", "cn0", "nolearning")  # fmt: skip
        mac = default_vtep_mac(IPv4Address(cilium))
        ip("-n", ns, "link", "set", "vx0", "address", mac, "mtu", "1376", "up")
        ip("-n", ns, "neigh", "add", GW_CILIUM, "dev", "vx0", "lladdr", GW_VTEP_MAC,
           "nud", "permanent")  # fmt: skip
        _run("bridge", "-n", ns, "fdb", "append", GW_VTEP_MAC, "dev", "vx0", "dst", GW_CILIUM)
        ip("-n", ns, "route", "add", f"{GW_VTEP_ADDR}/32", "via", GW_CILIUM, "dev", "vx0",
           "onlink")  # fmt: skip
        # The Weave mesh, in miniature: each node reaches the others' Weave pod /24s.
        for other, _ in enumerate(NODES, start=1):
            if other != index:
                ip("-n", ns, "route", "add", f"10.32.{other}.0/24", "via", _underlay(other)[0])
        _run(*_in(ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"))


def _gateway_toml(journal: Path, weave: dict[str, str], cilium: dict[str, str],
                  policies: list[Path]) -> str:
    scopes = "".join(
        f'\n[[scopes]]\nname = "{p.stem.replace("_", "/", 1)}"\npolicy = "{p}"\n'
        for p in policies
    )
    workloads = "".join(
        f'\n[[migration.workloads]]\nspiffe_id = "{w.spiffe_id}"\nnode = "{w.node}"\n'
        f'weave = "{weave[w.node]}:{RECEIVER_PORT}"\ncilium = "{cilium[w.node]}:{RECEIVER_PORT}"\n'
        for w in WORKLOADS
    )
    nodes = "".join(
        f'\n[[appliance.cilium.nodes]]\nname = "{node}"\nunderlay = "{_underlay(i)[1]}"\n'
        f'pod_cidrs = ["{ipaddress.IPv4Network(cilium[node] + "/24", strict=False)}"]\n'
        for i, node in enumerate(NODES, start=1)
    )
    return f"""\
[gateway]
name = "gw-migrate"
spiffe_id = "{GATEWAY_ID}"

[identity]
trust_domain = "{TD}"
source = "files"
cert_chain = "svid/chain.pem"
private_key = "svid/key.pem"
bundle = "bundles/{TD}.pem"

[anchor]
private_key = "keys/gw-anchor.pem"
endorsement = "anchors/gw-migrate.endorsement"

[trust]
anchors_dir = "anchors"

[[networks]]
name = "weave"
kind = "weave"
listen = "{GW_WEAVE}:{LISTEN}"

[[networks]]
name = "cilium"
kind = "cilium"
listen = "{GW_VTEP_ADDR}:{LISTEN}"
{scopes}
[limits]
handshake_timeout_seconds = 5

[audit]
path = "state/audit.log"

[spool]
dir = "state/spool"
max_bytes = 67108864

[metrics]
listen = "127.0.0.1:0"

[log]
level = "info"
format = "text"

[migration]
journal = "{journal}"
weave_network = "weave"
cilium_network = "cilium"
{workloads}
[appliance.weave]
interface = "wv0"
addresses = ["{GW_WEAVE}/24"]
gateways = ["{_underlay(1)[0]}"]

[appliance.cilium]
interface = "cl0"
addresses = ["{GW_CILIUM}/24"]
cluster_pool = "10.48.0.0/16"

[appliance.cilium.vxlan]
name = "vtep0"
vni = 2
port = 8472
mac = "{GW_VTEP_MAC}"
addresses = ["{GW_VTEP_ADDR}/32"]
{nodes}"""


def _probes_toml(policies: list[Path]) -> str:
    workloads = "".join(
        f'\n[[workloads]]\nname = "{w.name}"\nspiffe_id = "{w.spiffe_id}"\nnode = "{w.node}"\n'
        f'scope = "{w.scope}"\nanchor_key = "keys/{w.name}-anchor.pem"\n'
        for w in WORKLOADS
    )
    return f"""\
[gateway]
weave = "{GW_WEAVE}:{LISTEN}"
cilium = "{GW_VTEP_ADDR}:{LISTEN}"

[envelope]
policies = [{", ".join(f'"{p}"' for p in policies)}]
transit_domains = ["{TD}"]
deadline_seconds = 15
{workloads}"""


def _identities(etc: Path) -> None:
    """CA, the gateway's SVID and anchor, each workload's anchor endorsed for its scope."""
    now = int(time.time())
    ca = SvidAuthority.create_root(parse_spiffe_id(GATEWAY_ID).trust_domain)
    for sub in ("svid", "keys", "anchors", "bundles", "state"):
        (etc / sub).mkdir(parents=True, exist_ok=True)
    (etc / "bundles" / f"{TD}.pem").write_bytes(ca.bundle_pem())
    svid = ca.issue(parse_spiffe_id(GATEWAY_ID))
    (etc / "svid" / "chain.pem").write_bytes(svid.chain_pem())
    (etc / "svid" / "key.pem").write_bytes(svid.key_pem())
    save_private_key(AnchorKeyPair.generate(), etc / "keys" / "gw-anchor.pem")
    for w in WORKLOADS:
        issued = ca.issue(parse_spiffe_id(w.spiffe_id))
        anchor = AnchorKeyPair.generate()
        save_private_key(anchor, etc / "keys" / f"{w.name}-anchor.pem")
        x509 = X509SVID(issued.spiffe_id, issued.chain, issued.private_key)
        (etc / "anchors" / f"{w.name}.endorsement").write_bytes(
            endorse(anchor.public_key, x509, (w.scope,), 2, now - 60, now + 3600)
        )


@dataclass
class Cluster:
    """The test's kubelet: pod addresses and receivers where the simulated cluster has pods."""

    names: Names
    etc: Path
    state: Path
    work: Path
    where: dict[str, str | None] = field(default_factory=dict)
    receivers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    starts: int = 0

    def sink(self, workload: Workload, side: str) -> Path:
        return self.work / "sinks" / f"{workload.name}-{side}"

    def reconcile(self) -> None:
        pods = json.loads(self.state.read_text())["nodes"]
        for node in NODES:
            want = pods[node]["pods"][0] if pods[node]["pods"] else None
            have = self.where.get(node)
            if want == have:
                continue
            ns = self.names.nodes[node]
            if node in self.receivers:
                stop_process(self.receivers.pop(node))
            if have is not None:
                ip("-n", ns, "addr", "del", f"{have}/32", "dev", "lo")
            self.where[node] = want
            if want is None:
                continue  # drained: the pod is gone until it is recreated
            ip("-n", ns, "addr", "add", f"{want}/32", "dev", "lo")
            self._start_receiver(node, want)

    def _start_receiver(self, node: str, address: str) -> None:
        workload = BY_NODE[node]
        side = "weave" if ipaddress.IPv4Address(address) in WEAVE_RANGE else "cilium"
        self.starts += 1
        ready = self.work / f"ready-{self.starts}"
        log = self.work / f"receiver-{workload.name}-{self.starts}.log"
        with log.open("wb") as err:
            proc = subprocess.Popen(
                _in(self.names.nodes[node], PYTHON, "-m", "tests.appliance.drivers.receiver",
                    "--listen", f"{address}:{RECEIVER_PORT}", "--name", workload.spiffe_id,
                    "--anchors", str(self.etc / "anchors"),
                    "--bundle", f"{TD}={self.etc / 'bundles' / f'{TD}.pem'}",
                    "--sink", str(self.sink(workload, side)), "--ready-file", str(ready),
                    "--max-seconds", str(TEST_SECONDS)),
                stdout=subprocess.DEVNULL, stderr=err, cwd=REPO,
            )  # fmt: skip
        self.procs.append(proc)
        self.receivers[node] = proc
        wait_for_file(ready, proc, 15, log)


def _wait_delivered(sink: Path, ids: list[str], seconds: float = 20) -> None:
    give_up = time.monotonic() + seconds
    while not all((sink / i).exists() for i in ids):
        assert time.monotonic() < give_up, f"not delivered to {sink}: {ids}"
        time.sleep(0.1)


@pytest.fixture
def names() -> Iterator[Names]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    n = Names.unique()
    try:
        yield n
    finally:
        for ns in n.all():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10, check=False)


def test_three_node_migration_through_the_gateway(names: Names, tmp_path: Path) -> None:
    etc, work = tmp_path / "etc", tmp_path / "work"
    work.mkdir()
    _identities(etc)
    plan_file = tmp_path / "plan.toml"
    plan_file.write_text(render_plan(build_plan(load_inventory(), hooks={})))
    plan = load_plan(plan_file)
    assert [n.name for n in plan.nodes] == list(NODES)
    state, journal = tmp_path / "cluster.json", tmp_path / "migration.journal"
    pods = SimulatedCluster(state, plan).state["nodes"]
    weave = {node: pods[node]["pods"][0] for node in NODES}
    # Where each node's first pod lands on Cilium (the simulated IPAM; checked after each move).
    cilium = {node: f"10.48.{i}.10" for i, node in enumerate(NODES)}

    # S2's translation, run as the operator would before freezing: the gateway enforces it.
    (work / "netpol").mkdir()
    (work / "netpol" / "policies.yaml").write_text(NETPOL)
    (work / "netpol" / "inventory.yaml").write_text(INVENTORY)
    frozen = _run(SLUICE, "migrate", "freeze", "--netpol", str(work / "netpol"),
                  "--out", str(etc / "freeze"), "--trust-domain", TD,
                  "--issued-at", str(int(time.time()) - 3600))  # fmt: skip
    assert "stashed 3 NetworkPolicies" in frozen.stdout and "ports" in frozen.stdout
    policies = sorted((etc / "freeze" / "policies").glob("*.toml"))
    assert [p.name for p in policies] == ["payments_ledger.toml", "shop_api.toml",
                                          "shop_frontend.toml"]
    restored = _run(SLUICE, "migrate", "restore", "--stash", str(etc / "freeze" / "stash"))
    assert restored.stdout.count("kind: NetworkPolicy") == 3

    config = etc / "sluice.toml"
    config.write_text(_gateway_toml(journal, weave, cilium, policies))
    probes = etc / "probes.toml"
    probes.write_text(_probes_toml(policies))
    cluster = Cluster(names, etc, state, work)
    net_state = tmp_path / "appliance-net.json"
    common = ["--plan", str(plan_file), "--journal", str(journal), "--simulate", str(state),
              "--probes", str(probes)]

    def cli(*args: str, kill: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != KILL_ENV}
        if kill:
            env[KILL_ENV] = kill
        return _run(*_in(names.ops, SLUICE, "migrate", *args, *common), env=env,
                    timeout=60, check=False)

    def ok(*args: str) -> str:
        done = cli(*args)
        assert done.returncode == 0, done.stdout + done.stderr
        cluster.reconcile()
        return done.stdout

    def sim_log() -> list[str]:
        log: list[str] = json.loads(state.read_text())["log"]
        return log

    def send(from_node: str, to: Workload, count: int, tag: str) -> list[str]:
        """Envelopes from the node's workload to ``to``, sent from that node's namespace to the
        gateway listener of the side the node is on; returns their ids (hex)."""
        prober = GatewayProber(load_probes(probes), dict)
        cfg = load_probes(probes)
        source = cfg.workload(BY_NODE[from_node].name)
        files, ids = [], []
        for i in range(count):
            data = prober.envelope(source, cfg.workload(to.name), f"{tag}-{i}")
            path = work / f"{tag}-{i}.cose"
            path.write_bytes(data)
            files.append(str(path))
            ids.append(decode_unverified(data).claims.envelope_id.hex())
        on_weave = ipaddress.IPv4Address(cluster.where[from_node] or "10.48.0.1") in WEAVE_RANGE
        listener = f"{GW_WEAVE if on_weave else GW_VTEP_ADDR}:{LISTEN}"
        sent = _run(*_in(names.nodes[from_node], PYTHON, "-m", "tests.appliance.drivers.sender",
                         "--gateway", listener, "--name", str(source.spiffe_id),
                         "--deadline", "15", "--max-seconds", "30", *files), timeout=40)
        report = json.loads(sent.stdout)
        assert [r["delivered"] for r in report["results"]] == [True] * count, report
        return ids

    started = time.monotonic()
    try:
        with time_limit(TEST_SECONDS):
            _build_namespaces(names)
            _run(SLUICE, "appliance", "apply", "--config", str(config), "--netns", names.gw,
                 "--state", str(net_state))  # fmt: skip
            cluster.reconcile()  # every node's pod on its Weave address, receivers up
            assert cluster.where == weave
            with (work / "gateway.log").open("wb") as err:
                gateway = subprocess.Popen(
                    _in(names.gw, SLUICE, "run", "--config", str(config)),
                    stdout=subprocess.DEVNULL, stderr=err, cwd=etc,
                )
            cluster.procs.append(gateway)

            # S0-S3; S2 records the probe baseline through the gateway.
            for stage in ("S0", "S1", "S2", "S3"):
                assert f"{stage}: advance complete" in ok("advance")
            assert read_state(journal).baseline == EXPECTED

            # worker-1: SIGKILL right after the drain took effect, before the journal's `done`
            # (the journal still says weave). Envelopes sent now are spooled for the old address.
            before = len(sim_log())
            killed = cli("advance", kill=f"after:{before + 2}")
            assert killed.returncode == -signal.SIGKILL, killed.stderr
            assert sim_log()[before:] == ["cordon:worker-1", "drain:worker-1"]
            cluster.reconcile()
            assert cluster.where["worker-1"] is None  # drained: no pod, no receiver
            held_1 = send("worker-2", BY_NODE["worker-1"], 3, "w1-drained")
            out = ok("advance")
            assert "drain:worker-1 was interrupted; found done, not repeated" in out
            assert "S4:worker-1: advance complete" in out
            assert cluster.where["worker-1"] == cilium["worker-1"]
            _wait_delivered(cluster.sink(BY_NODE["worker-1"], "cilium"), held_1)

            # worker-2: SIGKILL before the label step: the journal says cutover, so the gateway
            # holds envelopes for its workload in the spool until the node is on Cilium.
            before = len(sim_log())
            killed = cli("advance", kill=f"before:{before + 3}")
            assert killed.returncode == -signal.SIGKILL, killed.stderr
            assert sim_log()[before:] == ["cordon:worker-2", "drain:worker-2"]
            assert read_state(journal).placement["worker-2"].value == "cutover"
            cluster.reconcile()
            time.sleep(2.5)  # the gateway polls the journal every second
            held_2 = send("worker-1", BY_NODE["worker-2"], 3, "w2-cutover")
            time.sleep(1.5)
            assert not any(
                (cluster.sink(BY_NODE["worker-2"], side) / i).exists()
                for i in held_2 for side in ("weave", "cilium")
            ), "delivered during the cutover"
            assert "S4:worker-2: advance complete" in ok("advance")
            _wait_delivered(cluster.sink(BY_NODE["worker-2"], "cilium"), held_2)

            # Roll worker-2 back to Weave (probes must still decide as before), then again.
            assert "S4:worker-2: rollback complete" in ok("rollback", "--node", "worker-2")
            assert cluster.where["worker-2"] == weave["worker-2"]
            back = send("worker-1", BY_NODE["worker-2"], 1, "w2-back")
            _wait_delivered(cluster.sink(BY_NODE["worker-2"], "weave"), back)
            assert "S4:worker-2: advance complete" in ok("advance")
            assert "S4:cp-1: advance complete" in ok("advance")
            assert "S5: advance complete" in ok("advance")
            assert cluster.where == cilium

            # The cluster's own durable log: every step exactly once, in order, across the two
            # crashes (the rollback's steps and the second advance included).
            expected: list[str] = []
            for stage in (Stage.S1, Stage.S2, Stage.S3):
                expected += [a.key for a in steps(plan, stage, None, Direction.ADVANCE)]
            s4 = {n: [a.key for a in steps(plan, Stage.S4, n, Direction.ADVANCE)] for n in NODES}
            expected += s4["worker-1"] + s4["worker-2"]
            expected += [a.key for a in steps(plan, Stage.S4, "worker-2", Direction.ROLLBACK)]
            expected += s4["worker-2"] + s4["cp-1"]
            expected += [a.key for a in steps(plan, Stage.S5, None, Direction.ADVANCE)]
            assert sim_log() == expected

            # Every verification passed, so every probe decided as in the baseline; and the
            # probes really crossed: each workload's Cilium-side receiver got probe envelopes.
            records = [json.loads(line) for line in journal.read_text().splitlines()]
            verified = [r for r in records if r["event"] == "verified"]
            assert verified and all(r["ok"] for r in verified), verified
            for w in WORKLOADS:
                payloads = [p.read_bytes() for p in cluster.sink(w, "cilium").iterdir()]
                assert any(p.startswith(b"sluice probe") for p in payloads), w

            stop_process(gateway)
            assert gateway.returncode == 0, (work / "gateway.log").read_text(errors="replace")
            assert _run(SLUICE, "audit", "verify", str(etc / "state" / "audit.log"))
            shown = _run(SLUICE, "audit", "show", "--json", str(etc / "state" / "audit.log"))
            audit = {
                r["envelope_id"]: r for r in map(json.loads, shown.stdout.splitlines())
            }
            # Decided while worker-1's journal still said weave; held ones named Cilium.
            assert {audit[i]["to"] for i in held_1} == {"net:weave"}
            assert {audit[i]["to"] for i in held_2} == {"net:cilium"}
    finally:
        for proc in cluster.procs:
            stop_process(proc)
        subprocess.run([SLUICE, "appliance", "teardown", "--netns", names.gw, "--state",
                        str(net_state)], capture_output=True, timeout=20, check=False)
        print(f"migration test took {time.monotonic() - started:.1f} s")
