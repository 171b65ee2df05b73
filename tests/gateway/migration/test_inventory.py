"""S0 inventory: parsing kubectl/curl output, findings, and one clear line per malformed input."""

from __future__ import annotations

import copy
import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.migration.inventory import (
    FindingCode,
    InputError,
    Inventory,
    analyse,
    is_clean,
    parse_daemonset,
    parse_nodes,
    parse_peers_configmap,
    parse_report,
    parse_service_cidrs,
    service_cidrs_from_apiserver,
)

FIXTURES = Path(__file__).parent / "fixtures"
REPORTS = sorted((FIXTURES / "reports").glob("*.json"))


def report_data(name: str = "worker-2") -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / "reports" / f"{name}.json").read_text())
    return data


def load_inventory(**overrides: Any) -> Inventory:
    fields: dict[str, Any] = {
        "weave": parse_daemonset((FIXTURES / "weave-net.yaml").read_bytes(), "weave-net.yaml"),
        "reports": tuple(parse_report(p.read_bytes(), p.name) for p in REPORTS),
        "nodes": parse_nodes((FIXTURES / "nodes.yaml").read_bytes(), "nodes.yaml"),
        "service_cidrs": parse_service_cidrs("10.96.0.0/12"),
        "node_cidrs": parse_service_cidrs("192.168.10.0/24"),
    }
    fields.update(overrides)
    return Inventory(**fields)


def test_fixture_cluster_reads_and_is_clean() -> None:
    inv = load_inventory()
    assert inv.weave.ipalloc_range == ipaddress.IPv4Network("10.32.0.0/12")
    assert (inv.weave.mtu, inv.weave.conn_limit, inv.weave.encrypted) == (1376, 200, True)
    assert dict(inv.weave.env)["WEAVE_PASSWORD"] == "<secret>"
    assert {n.name: n.control_plane for n in inv.nodes} == {
        "cp-1": True, "worker-1": False, "worker-2": False,
    }
    report = next(r for r in inv.reports if r.node == "worker-1")
    assert len(report.peers) == 3 and all(c.state == "established" for c in report.connections)
    assert {c.mtu for c in report.connections} == {1376}
    findings = analyse(inv)
    assert findings == () and is_clean(findings)


def test_unhealthy_reports_are_reported_per_node() -> None:
    data = report_data("worker-2")
    data["Router"]["Connections"][0]["State"] = "retrying"
    data["Router"]["Peers"][1]["Connections"][0]["Established"] = False
    data["IPAM"]["Entries"].append(
        {"Token": "10.46.0.0", "Size": 4096, "Peer": "de:ad:be:ef:00:01", "Nickname": "old-7",
         "IsKnownPeer": False}
    )
    data["IPAM"]["PendingClaims"] = [{"Ident": "weave:expose", "CIDR": "10.44.0.1/12"}]
    bad = parse_report(json.dumps(data), "reports/worker-2.json")
    reports = (*(r for r in load_inventory().reports if r.node != "worker-2"), bad)
    findings = analyse(load_inventory(reports=reports))
    codes = [(f.code, f.subject) for f in findings]
    assert (FindingCode.CONNECTION_DOWN, "worker-2") in codes
    assert codes.count((FindingCode.CONNECTION_DOWN, "worker-2")) == 2
    assert (FindingCode.UNKNOWN_PEER, "worker-2") in codes
    assert (FindingCode.PENDING_CLAIMS, "worker-2") in codes
    assert not is_clean(findings)
    unknown = next(f for f in findings if f.code is FindingCode.UNKNOWN_PEER)
    assert "old-7 (de:ad:be:ef:00:01)" in unknown.message and "10.46.0.0" in unknown.message


def test_every_cidr_overlap_is_listed() -> None:
    inv = load_inventory(
        service_cidrs=parse_service_cidrs("10.32.0.0/16"),  # inside the Weave range
        node_cidrs=parse_service_cidrs("10.244.1.0/24"),  # a node's podCIDR
    )
    messages = [f.message for f in analyse(inv) if f.code is FindingCode.CIDR_OVERLAP]
    assert "Weave range (IPALLOC_RANGE) 10.32.0.0/12 overlaps service CIDR 10.32.0.0/16" in messages
    assert "node CIDR 10.244.1.0/24 overlaps podCIDR of worker-1 10.244.1.0/24" in messages
    assert len(messages) == 2


def test_missing_report_not_ready_node_and_version_skew() -> None:
    nodes = list(load_inventory().nodes)
    nodes[1] = type(nodes[1])(nodes[1].name, False, False, nodes[1].pod_cidrs, nodes[1].addresses)
    data = report_data("cp-1")
    data["Version"] = "2.8.0"
    reports = (parse_report(json.dumps(data), "cp-1.json"),
               next(r for r in load_inventory().reports if r.node == "worker-1"))
    findings = analyse(load_inventory(nodes=tuple(nodes), reports=reports))
    codes = {(f.code, f.subject) for f in findings}
    assert (FindingCode.NODE_NOT_READY, "worker-2") in codes
    assert (FindingCode.REPORT_MISSING, "worker-2") in codes
    assert (FindingCode.VERSION_SKEW, "cluster") in codes


def test_peers_configmap_and_apiserver_manifest() -> None:
    cm = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: weave-net\n  annotations:\n"
        "    kube-peers.weave.works/peers: '{\"Peers\":[{\"PeerName\":\"ce:31\","
        "\"NodeName\":\"cp-1\"},{\"PeerName\":\"aa:01\",\"NodeName\":\"gone-9\"}]}'\n"
    )
    peers = parse_peers_configmap(cm, "cm.yaml")
    assert peers == (("ce:31", "cp-1"), ("aa:01", "gone-9"))
    findings = analyse(load_inventory(peers_configmap=peers))
    assert [f.code for f in findings] == [FindingCode.PEERS_CONFIGMAP_STALE]
    manifest = (
        "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: kube-apiserver\n"
        "    command:\n    - kube-apiserver\n"
        "    - --service-cluster-ip-range=10.96.0.0/12,fd00:96::/112\n"
    )
    nets = service_cidrs_from_apiserver(manifest, "kube-apiserver.yaml")
    assert [str(n) for n in nets] == ["10.96.0.0/12", "fd00:96::/112"]


def _report_text(mutate: Any) -> str:
    data = report_data("worker-2")
    mutate(data)
    return json.dumps(data)


def _set(path: list[Any], value: Any) -> Any:
    def mutate(data: Any) -> None:
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return mutate


def _del(path: list[Any]) -> Any:
    def mutate(data: Any) -> None:
        target = data
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return mutate


DS = (FIXTURES / "weave-net.yaml").read_text()
NODES = (FIXTURES / "nodes.yaml").read_text()

# (parser, file name, content, exact error line)
MALFORMED = [
    ("report", "reports/node-2.json",
     _report_text(_set(["Router", "Peers", 1, "Connections", 0, "Established"], "yes")),
     "reports/node-2.json: Router.Peers[1].Connections[0].Established: expected a boolean, "
     "found a string"),
    ("report", "reports/node-2.json", _report_text(_del(["Ready"])),
     "reports/node-2.json: Ready: missing required field"),
    ("report", "reports/node-2.json", _report_text(_set(["IPAM", "Range"], "10.32.0.0/33")),
     "reports/node-2.json: IPAM.Range: expected a CIDR such as 10.32.0.0/12, found "
     "'10.32.0.0/33'"),
    ("report", "reports/node-2.json",
     _report_text(_set(["IPAM", "Entries", 2, "IsKnownPeer"], None)),
     "reports/node-2.json: IPAM.Entries[2].IsKnownPeer: missing required field"),
    ("report", "reports/node-2.json", _report_text(_set(["IPAM", "Entries", 0, "Size"], -1)),
     "reports/node-2.json: IPAM.Entries[0].Size: expected an integer from 0 to "
     "9223372036854775807, found -1"),
    ("report", "reports/node-2.json",
     _report_text(_set(["Router", "Connections", 1, "Attrs", "mtu"], "1376")),
     "reports/node-2.json: Router.Connections[1].Attrs.mtu: expected an integer, found a string"),
    ("report", "reports/node-2.json", _report_text(_set(["Router", "Peers"], {})),
     "reports/node-2.json: Router.Peers: expected an array, found an object"),
    ("report", "reports/node-2.json", _report_text(_set(["IPAM", "PendingClaims"], 3)),
     "reports/node-2.json: IPAM.PendingClaims: expected an array, found a number"),
    ("report", "reports/node-2.json", '{"Ready": true,\n "Router": }',
     "reports/node-2.json: invalid JSON at line 2, column 12: Expecting value"),
    ("report", "reports/node-2.json", "[]",
     "reports/node-2.json: expected an object, found an array"),
    ("report", "reports/node-2.json", b"\xff\xfe{}",
     "reports/node-2.json: not UTF-8 text (invalid byte at offset 0)"),
    ("daemonset", "weave-net.yaml", DS.replace("value: 10.32.0.0/12", "value: 10.32.0.1/12"),
     "weave-net.yaml: spec.template.spec.containers[0].env[2].value: expected a CIDR such as "
     "10.32.0.0/12, found '10.32.0.1/12'"),
    ("daemonset", "weave-net.yaml", DS.replace('value: "1376"', 'value: "big"'),
     "weave-net.yaml: spec.template.spec.containers[0].env[3].value: WEAVE_MTU must be an "
     "integer from 576 to 65535, found 'big'"),
    ("daemonset", "weave-net.yaml", DS.replace("- name: weave\n", "- name: weave-router\n"),
     "weave-net.yaml: spec.template.spec.containers: no container named 'weave'"),
    ("daemonset", "weave-net.yaml", "kind: ConfigMap\nmetadata: {name: x}\n",
     "weave-net.yaml: kind: no DaemonSet found (expected the weave-net DaemonSet)"),
    ("daemonset", "weave-net.yaml", "spec: [unclosed\n",
     "weave-net.yaml: invalid YAML at line 2, column 1: expected ',' or ']', "
     "but got '<stream end>'"),
    ("nodes", "nodes.yaml", NODES.replace("podCIDR: 10.244.2.0/24", "podCIDR: 10.244.2.0/24")
     .replace("podCIDRs: [10.244.2.0/24]", "podCIDRs: [10.244.2.1/24]"),
     "nodes.yaml: items[1].spec.podCIDRs[0]: expected a CIDR such as 10.32.0.0/12, found "
     "'10.244.2.1/24'"),
    ("nodes", "nodes.yaml", NODES.replace("address: 192.168.10.13", "address: 192.168.10.300"),
     "nodes.yaml: items[1].status.addresses[0].address: expected an IP address, found "
     "'192.168.10.300'"),
    ("nodes", "nodes.yaml", NODES.replace("      name: worker-1\n", "      name: 7\n", 1),
     "nodes.yaml: items[2].metadata.name: expected a string, found a number"),
    ("nodes", "nodes.yaml", "apiVersion: v1\nkind: List\nitems: []\n",
     "nodes.yaml: items: no Node objects found (expected kubectl get nodes)"),
]
PARSERS = {"report": parse_report, "daemonset": parse_daemonset, "nodes": parse_nodes}


@pytest.mark.parametrize(("parser", "name", "content", "line"), MALFORMED,
                         ids=[f"{m[0]}-{i}" for i, m in enumerate(MALFORMED)])
def test_malformed_input_gets_one_exact_line(
    parser: str, name: str, content: str | bytes, line: str
) -> None:
    with pytest.raises(InputError) as caught:
        PARSERS[parser](content, name)
    assert str(caught.value) == line
    assert "\n" not in str(caught.value)


def test_fixture_reports_are_not_mutated_by_helpers() -> None:
    before = copy.deepcopy(report_data())
    _report_text(_set(["Ready"], False))
    assert report_data() == before
