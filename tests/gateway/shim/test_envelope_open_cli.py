"""`sluice envelope open` through CliRunner, on the demo deployment's real files: CA bundles,
endorsements verified against them, policy TOML. The envelope carries two real transit stamps
(made with ``gateway.envelope.stamp`` by endorsed gateway anchors), so every byte of origin,
payload and both stamps is under test when we flip bytes."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import nacl.public
import pytest
from click.testing import CliRunner

from gateway.cli import main
from gateway.demo.topology import CILIUM, WEAVE, Topology, build_topology, gateway_id
from gateway.envelope import decode_unverified, open_envelope, seal, stamp
from identity.anchors import load_private_key
from identity.bundle import BundleSet, load_bundle_file
from identity.endorsement import endorse
from identity.registry import load_registry
from identity.x509svid import X509SVID

NOW = int(time.time())


def _endorse_gateway(topo: Topology, name: str) -> None:
    ca, td = (topo.weave_ca, WEAVE) if name == "gw-weave" else (topo.cilium_ca, CILIUM)
    svid = ca.issue(gateway_id(td, name), now=dt.datetime.fromtimestamp(NOW, dt.UTC))
    anchor = load_private_key(topo.root / "keys" / f"{name}-anchor.pem")
    data = endorse(
        anchor.public_key,
        X509SVID(svid.spiffe_id, svid.chain, svid.private_key),
        ("sluice/transit",),
        0,
        NOW - 60,
        NOW + 3600,
    )
    (topo.anchors_dir / f"{name}.endorsement").write_bytes(data)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Topology:
    # Everything is made valid at NOW (fixed at import): in a long session this fixture may run
    # minutes later, and the tests open envelopes `--at NOW`.
    topo = build_topology(
        tmp_path_factory.mktemp("open"), now=dt.datetime.fromtimestamp(NOW, dt.UTC)
    )
    for name in ("gw-weave", "gw-cilium"):
        _endorse_gateway(topo, name)
    return topo


def _bundle_args(topo: Topology) -> list[str]:
    return [
        "--bundle", f"{WEAVE.name}={topo.root / 'bundles' / (WEAVE.name + '.pem')}",
        "--bundle", f"{CILIUM.name}={topo.root / 'bundles' / (CILIUM.name + '.pem')}",
    ]  # fmt: skip


def _open_args(topo: Topology, file: Path, *extra: str) -> list[str]:
    policies = [a for p in topo.policies for a in ("--policy", str(p))]
    return [
        "envelope", "open", str(file), *_bundle_args(topo),
        "--anchors", str(topo.anchors_dir), *policies, "--at", str(NOW), *extra,
    ]  # fmt: skip


def _stamped(topo: Topology, *, tier: int = 1, seal_to: bytes | None = None) -> bytes:
    """orders -> ledger, stamped by gw-weave then gw-cilium."""
    data = seal(
        issuer=topo.orders.spiffe_id,
        origin_scope="orders/intake",
        destination_scope="payments/ledger",
        destination_id=topo.ledger_id,
        tier=tier,
        lineage=topo.lineage("orders/intake"),
        routing=topo.routing(),
        issued_at=NOW,
        expires_at=NOW + 300,
        payload=b"order 1042: 3 units",
        signing_key=topo.orders.signing_key,
        seal_to=seal_to,
    )
    bundles = BundleSet(
        load_bundle_file(topo.root / "bundles" / f"{td.name}.pem", td) for td in (WEAVE, CILIUM)
    )
    registry = load_registry(topo.anchors_dir, bundles, now=NOW).registry
    revision = topo.lineage("payments/ledger")
    for name, td, hop in (
        ("gw-weave", WEAVE, ("weave", "gw-cilium")),
        ("gw-cilium", CILIUM, ("gw-weave", "cilium")),
    ):
        verified = open_envelope(data, resolver=registry, now=NOW)
        data = stamp(
            verified,
            gateway_id=gateway_id(td, name),
            signing_key=load_private_key(topo.root / "keys" / f"{name}-anchor.pem").signing_key,
            from_network=hop[0],
            to_network=hop[1],
            rule="ledger-from-orders",
            policy_revision=revision,
            now=NOW,
        )
    return data


def test_valid_and_allowed_exits_0(world: Topology, tmp_path: Path) -> None:
    file = tmp_path / "env.cbor"
    file.write_bytes(_stamped(world))
    assert len(decode_unverified(file.read_bytes()).stamps) == 2
    out = tmp_path / "payload"
    result = CliRunner().invoke(main, _open_args(world, file, "--payload-out", str(out)))
    assert result.exit_code == 0, result.output
    assert "decision: ALLOW" in result.output
    assert "rule: ledger-from-orders" in result.output
    assert "reason: allowed" in result.output
    assert (
        "hop 2: stamped by spiffe://cilium.demo.example/sluice/gateway/gw-cilium" in result.output
    )
    assert out.read_bytes() == b"order 1042: 3 units"


def test_sealed_payload_is_unsealed_with_the_key(world: Topology, tmp_path: Path) -> None:
    key = nacl.public.PrivateKey.generate()
    file = tmp_path / "env.cbor"
    file.write_bytes(_stamped(world, seal_to=key.public_key.encode()))
    key_file = tmp_path / "ledger.key"
    key_file.write_text(key.encode().hex() + "\n")
    out = tmp_path / "payload"
    args = _open_args(world, file, "--unseal-key", str(key_file), "--payload-out", str(out))
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == b"order 1042: 3 units"
    wrong = tmp_path / "wrong.key"
    wrong.write_text(nacl.public.PrivateKey.generate().encode().hex())
    result = CliRunner().invoke(main, _open_args(world, file, "--unseal-key", str(wrong)))
    assert result.exit_code == 1 and "reason: payload_mismatch" in result.output


def test_denied_by_policy_exits_1_with_reason(world: Topology, tmp_path: Path) -> None:
    file = tmp_path / "env.cbor"
    file.write_bytes(_stamped(world, tier=0))  # the ledger policy wants tier >= internal
    result = CliRunner().invoke(main, _open_args(world, file))
    assert result.exit_code == 1, result.output
    assert "decision: DENY" in result.output
    assert "reason: tier_too_low" in result.output
    assert "rule: ledger-from-orders" in result.output


def test_every_single_byte_flip_is_rejected(world: Topology, tmp_path: Path) -> None:
    original = _stamped(world)
    env = decode_unverified(original)
    # The file covers the origin header, the payload and both stamps: check each is in there.
    for part in (env.origin_bytes, env.payload, *(s.encoded for s in env.stamps)):
        assert part in original
    file = tmp_path / "env.cbor"
    runner = CliRunner()
    accepted = []
    for position in range(len(original)):
        for mask in (0x01, 0xFF):
            flipped = bytearray(original)
            flipped[position] ^= mask
            file.write_bytes(bytes(flipped))
            result = runner.invoke(main, _open_args(world, file))
            if result.exit_code == 0:
                accepted.append((position, mask))
            else:
                assert result.exit_code in (1, 3), result.output
                assert "Traceback" not in result.output
    assert accepted == [], f"flips accepted at {accepted[:10]}"


def test_bad_inputs_exit_3_on_one_line(world: Topology, tmp_path: Path) -> None:
    file = tmp_path / "env.cbor"
    file.write_bytes(_stamped(world))
    runner = CliRunner()
    cases = [
        (["--bundle", "nonsense"], "expected TRUST_DOMAIN=PATH"),
        (["--bundle", f"other.example={tmp_path / 'nope.pem'}"], "cannot read"),
        (["--unseal-key", str(tmp_path / "nope.key")], "cannot read"),
        (["--endorsement", str(tmp_path / "nope.endorsement")], "cannot read"),
    ]
    for extra, message in cases:
        result = runner.invoke(main, [*_open_args(world, file), *extra])
        assert result.exit_code == 3, (extra, result.output)
        assert result.output.startswith("error:") and result.output.count("\n") == 1, result.output
        assert message in result.output
    bad_policy = tmp_path / "bad.toml"
    bad_policy.write_text('scope = "x"\n[[revision]]\nnumber = "one"\n')
    result = runner.invoke(main, [*_open_args(world, file), "--policy", str(bad_policy)])
    assert result.exit_code == 3 and result.output.startswith("error:"), result.output
    assert str(bad_policy) in result.output
    missing = runner.invoke(main, _open_args(world, tmp_path / "absent.cbor"))
    assert missing.exit_code == 3 and "cannot read" in missing.output
