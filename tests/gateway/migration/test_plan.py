"""Plan choices, the plan TOML round trip and its errors, and the generated artifacts."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from pathlib import Path

import pytest
import yaml

from config.errors import ConfigError
from config.migration_plan import load_plan, render_plan
from gateway.migration.artifacts import render_artifacts
from gateway.migration.inventory import parse_service_cidrs
from gateway.migration.plan import PlanError, build_plan, choose_cilium_cidr
from tests.gateway.migration.test_inventory import load_inventory


def test_plan_choices_for_the_fixture_cluster() -> None:
    plan = build_plan(load_inventory())
    assert plan.cilium_cidr == ipaddress.IPv4Network("10.48.0.0/16")
    assert plan.native_routing_cidr == ipaddress.IPv4Network("10.32.0.0/11")
    assert (plan.pod_mtu, plan.cilium_device_mtu, plan.tunnel_port) == (1376, 1426, 8473)
    assert [(n.name, n.role) for n in plan.nodes] == [
        ("worker-1", "worker"), ("worker-2", "worker"), ("cp-1", "control-plane"),
    ]


def test_pool_skips_taken_candidates_and_mtu_follows_the_underlay() -> None:
    nodes = list(load_inventory().nodes)
    nodes[1] = dataclasses.replace(nodes[1], pod_cidrs=parse_service_cidrs("10.48.7.0/24"))
    plan = build_plan(load_inventory(nodes=tuple(nodes)), underlay_mtu=1400)
    assert plan.cilium_cidr == ipaddress.IPv4Network("10.49.0.0/16")
    assert plan.pod_mtu == 1350  # underlay 1400 - VXLAN 50 < Weave's 1376


def test_single_masquerade_exclusion_limits_the_choice() -> None:
    # ipv4NativeRoutingCIDR is one CIDR: a service range between the Weave range and a
    # candidate pool rules the candidate out, and the error lists every reason.
    with pytest.raises(PlanError, match=re.escape(
            "would need the masquerade exclusion 10.32.0.0/11, which overlaps service CIDR "
            "10.48.0.0/15")):
        build_plan(load_inventory(service_cidrs=parse_service_cidrs("10.48.0.0/15")))


def test_pinned_pool_that_overlaps_is_refused_with_the_reason() -> None:
    with pytest.raises(PlanError, match=r"^--cilium-cidr: 10.0.0.0/8 overlaps the Weave range "
                       r"10.32.0.0/12$"):
        choose_cilium_cidr(load_inventory(), pinned="10.0.0.0/8")
    with pytest.raises(PlanError, match=re.escape("overlaps service CIDR 10.96.0.0/12")):
        choose_cilium_cidr(load_inventory(), pinned="10.96.0.0/16")


def test_plan_toml_round_trips(tmp_path: Path) -> None:
    plan = build_plan(load_inventory())
    path = tmp_path / "plan.toml"
    path.write_text(render_plan(plan, notes=("test",)))
    assert load_plan(path) == plan


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (('cilium_cidr = "10.48.0.0/16"', 'cilium_cidr = "10.0.0.0/8"'),
         "network.cilium_cidr: 10.0.0.0/8 overlaps the Weave range 10.32.0.0/12"),
        (("pod_mtu = 1376", "pod_mtu = 1450"),
         "network.pod_mtu: 1450 is larger than Weave's MTU 1376"),
        (("tunnel_port = 8473", "tunnel_port = 8472"),
         "network.tunnel_port: 8472 collides with Weave"),
        (('role = "control-plane"', 'role = "master"'),
         "node[2].role: expected one of 'worker', 'control-plane', found 'master'"),
        (("pod_mtu = 1376", "pod_mtu = \"1376\""),
         "network.pod_mtu: expected an integer, found a string ('1376')"),
        (("[helm]", "[helm]\ncolour = 1"), "helm.colour: unknown key"),
    ],
)
def test_plan_edit_mistakes_name_the_key_and_line(
    tmp_path: Path, edit: tuple[str, str], expected: str
) -> None:
    text = render_plan(build_plan(load_inventory()))
    assert edit[0] in text
    path = tmp_path / "plan.toml"
    path.write_text(text.replace(edit[0], edit[1], 1))
    with pytest.raises(ConfigError) as caught:
        load_plan(path)
    assert any(expected in line for line in str(caught.value).splitlines()), str(caught.value)
    assert str(caught.value).startswith(f"{path}:")


def test_workers_must_come_before_control_plane(tmp_path: Path) -> None:
    plan = build_plan(load_inventory())
    swapped = dataclasses.replace(plan, nodes=(plan.nodes[2], plan.nodes[0], plan.nodes[1]))
    path = tmp_path / "plan.toml"
    path.write_text(render_plan(swapped))
    with pytest.raises(ConfigError, match=r"node\[1\]: worker 'worker-1' comes after a "
                       "control-plane node"):
        load_plan(path)


def test_artifacts_carry_the_guides_values() -> None:
    plan = build_plan(load_inventory())
    files = render_artifacts(plan, "out")
    secondary = yaml.safe_load(files["values-secondary.yaml"])
    assert secondary["operator"] == {"unmanagedPodWatcher": {"restart": False}}
    assert (secondary["routingMode"], secondary["tunnelProtocol"], secondary["tunnelPort"]) == (
        "tunnel", "vxlan", 8473)
    assert secondary["cni"] == {"customConf": True, "uninstall": False}
    assert secondary["ipam"]["mode"] == "cluster-pool"
    assert secondary["ipam"]["operator"]["clusterPoolIPv4PodCIDRList"] == ["10.48.0.0/16"]
    assert secondary["policyEnforcementMode"] == "never"
    assert secondary["bpf"] == {"hostLegacyRouting": True}
    assert secondary["MTU"] == 1426 and secondary["ipv4NativeRoutingCIDR"] == "10.32.0.0/11"
    final = yaml.safe_load(files["values-final.yaml"])
    assert final["operator"]["unmanagedPodWatcher"]["restart"] is True
    assert final["cni"]["customConf"] is False and final["policyEnforcementMode"] == "default"
    cnc = yaml.safe_load(files["ciliumnodeconfig.yaml"])
    assert cnc["apiVersion"] == "cilium.io/v2alpha1" and cnc["metadata"]["name"] == "cilium-default"
    assert cnc["spec"]["nodeSelector"] == {
        "matchLabels": {"io.cilium.migration/cilium-default": "true"}}
    assert cnc["spec"]["defaults"] == {
        "write-cni-conf-when-ready": "/host/etc/cni/net.d/05-cilium.conflist",
        "custom-cni-conf": "false", "cni-chaining-mode": "none", "cni-exclusive": "true",
    }
    runbook = files["runbook.md"]
    section = runbook[runbook.index("## S4 node cutover: worker-1"):]
    order = ["kubectl cordon worker-1",
             "kubectl drain worker-1 --ignore-daemonsets --delete-emptydir-data",
             "kubectl label node worker-1 --overwrite io.cilium.migration/cilium-default=true",
             "kubectl delete pod --namespace kube-system -l k8s-app=cilium --field-selector "
             "spec.nodeName=worker-1",
             "ssh worker-1 sudo systemctl reboot", "kubectl uncordon worker-1",
             "kubectl label node worker-1 io.cilium.migration/cilium-default-"]
    positions = [section.index(cmd) for cmd in order]
    assert positions == sorted(positions)
    assert runbook.index("## S4 node cutover: worker-2") < runbook.index("## S4 node cutover: cp-1")
