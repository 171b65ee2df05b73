"""`sluice anchor new | endorse | show`: CliRunner for the cases, one real subprocess run.

The SVIDs are issued at the real current time, since the command line uses the clock (there is
``show --at`` to look at another instant).
"""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gateway.cli import main
from identity.anchor_contract import key_id
from identity.anchors import load_public_key, public_key_pem
from identity.ca import SvidAuthority
from identity.endorsement import decode_unverified
from identity.spiffe_id import parse_spiffe_id, parse_trust_domain
from tests.conftest import REPO_ROOT

WORKLOAD = "spiffe://example.org/ns/payments/sa/ledger"


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, ["anchor", *map(str, args)])


def assert_one_line_error(result: Result, exit_code: int, fragment: str) -> None:
    assert result.exit_code == exit_code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert fragment in lines[0]
    assert "Traceback" not in result.output


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    """An anchor key pair, an SVID (chain + key files) and the trust bundle, as files."""
    root = SvidAuthority.create_root(parse_trust_domain("example.org"), key_type="ec")
    issued = root.issue(parse_spiffe_id(WORKLOAD), key_type="ed25519")
    paths = {
        "chain": tmp_path / "svid.pem",
        "key": tmp_path / "svid.key",
        "bundle": tmp_path / "bundle.pem",
        "other_bundle": tmp_path / "other.pem",
        "anchor": tmp_path / "anchor.pem",
        "anchor_pub": tmp_path / "anchor.pub",
    }
    paths["chain"].write_bytes(issued.chain_pem())
    paths["key"].write_bytes(issued.key_pem())
    paths["bundle"].write_bytes(root.bundle_pem())
    other = SvidAuthority.create_root(parse_trust_domain("example.org"))
    paths["other_bundle"].write_bytes(other.bundle_pem())
    result = run("new", "--out", paths["anchor"], "--public", paths["anchor_pub"])
    assert result.exit_code == 0, result.output
    return paths


def endorse_args(pki: dict[str, Path], out: Path, *extra: str) -> list[str | Path]:
    return [
        "endorse",
        "--anchor-public",
        pki["anchor_pub"],
        "--svid",
        pki["chain"],
        "--svid-key",
        pki["key"],
        "--scope",
        "payments/*",
        "--scope",
        "audit",
        "--max-tier",
        "restricted",
        "--valid-for",
        "30m",
        "--out",
        out,
        *extra,
    ]


def test_new_prints_the_kid_and_writes_0600_files(tmp_path: Path) -> None:
    out, pub = tmp_path / "k.pem", tmp_path / "k.pub"
    result = run("new", "--out", out, "--public", pub)
    assert result.exit_code == 0, result.output
    kid = result.output.strip()
    assert kid == key_id(load_public_key(pub)).hex() and len(kid) == 32
    for path in (out, pub):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    shown = run("show", out)
    assert shown.exit_code == 0 and f"kid:         {kid}" in shown.output
    assert "anchor private key" in shown.output
    assert f"kid:         {kid}" in run("show", pub).output


def test_new_refuses_to_overwrite_a_key(tmp_path: Path) -> None:
    out = tmp_path / "k.pem"
    first = run("new", "--out", out).output.strip()
    before = out.read_bytes()
    assert_one_line_error(run("new", "--out", out), 3, "already exists")
    assert out.read_bytes() == before
    second = run("new", "--out", out, "--force")
    assert second.exit_code == 0 and second.output.strip() != first


def test_endorse_then_show_valid(pki: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "ledger.endorsement"
    result = run(*endorse_args(pki, out))
    assert result.exit_code == 0, result.output
    kid = key_id(load_public_key(pki["anchor_pub"])).hex()
    assert f"endorsed anchor {kid} for {WORKLOAD}" in result.output
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    e = decode_unverified(out.read_bytes())
    assert (e.scopes, e.max_tier, e.not_after - e.not_before) == (("audit", "payments/*"), 2, 1800)

    shown = run("show", out, "--bundle", pki["bundle"])
    assert shown.exit_code == 0, shown.output
    for expected in (
        f"kid:         {kid}",
        f"spiffe id:   {WORKLOAD}",
        "scopes:      audit, payments/*",
        "max tier:    2 (restricted)",
        "chain:       [0] O=sluice spiffe://example.org/ns/payments/sa/ledger",
        "status:      VALID",
    ):
        assert expected in shown.output
    # Without a bundle nothing is claimed about validity.
    unverified = run("show", out)
    assert unverified.exit_code == 0 and "not verified" in unverified.output
    # The trust domain may be named explicitly.
    named = run("show", out, "--bundle", f"example.org={pki['bundle']}")
    assert named.exit_code == 0 and "VALID" in named.output


def test_show_invalid_exits_1_with_the_reason(pki: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "e.endorsement"
    assert run(*endorse_args(pki, out)).exit_code == 0
    wrong = run("show", out, "--bundle", pki["other_bundle"])
    assert wrong.exit_code == 1
    assert "status:      INVALID: chain_invalid: " in wrong.output
    later = run("show", out, "--bundle", pki["bundle"], "--at", str(int(time.time()) + 2400))
    assert later.exit_code == 1 and "INVALID: " in later.output
    other_domain = run("show", out, "--bundle", f"other.org={pki['bundle']}")
    assert other_domain.exit_code == 1 and "no trust bundle" in other_domain.output
    tampered = tmp_path / "t.endorsement"
    data = bytearray(out.read_bytes())
    data[-3] ^= 0x10
    tampered.write_bytes(bytes(data))
    result = run("show", tampered, "--bundle", pki["bundle"])
    assert result.exit_code == 1 and "INVALID: bad_signature" in result.output


def test_valid_for_beyond_the_svid_is_noted(pki: dict[str, Path], tmp_path: Path) -> None:
    args = endorse_args(pki, tmp_path / "e.endorsement")
    args[args.index("30m")] = "7d"
    result = run(*args)
    assert result.exit_code == 0 and "honoured only until" in result.output


@pytest.mark.parametrize(
    ("change", "exit_code", "fragment"),
    [
        (("--max-tier", "secret"), 2, "unknown tier 'secret'"),
        (("--max-tier", "256"), 2, "256 is not 0..255"),
        (("--valid-for", "1y"), 2, "not a duration"),
        (("--valid-for", "91d"), 2, "at most 90 days"),
        (("--scope", "bad scope"), 3, "bad_scope"),
    ],
)
def test_endorse_argument_errors(
    pki: dict[str, Path], tmp_path: Path, change: tuple[str, str], exit_code: int, fragment: str
) -> None:
    args = endorse_args(pki, tmp_path / "e.endorsement")
    args[args.index(change[0]) + 1] = change[1]
    assert_one_line_error(run(*args), exit_code, fragment)
    assert not (tmp_path / "e.endorsement").exists()


def test_endorse_input_errors(pki: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "e.endorsement"
    missing = endorse_args(pki, out)
    missing[missing.index(pki["chain"])] = tmp_path / "nope.pem"
    assert_one_line_error(run(*missing), 3, "nope.pem: cannot read")

    small = tmp_path / "small.pub"
    small.write_bytes(
        public_key_pem(
            bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa")
        )
    )
    bad_anchor = endorse_args(pki, out)
    bad_anchor[bad_anchor.index(pki["anchor_pub"])] = small
    assert_one_line_error(run(*bad_anchor), 3, "small_order")

    wrong_key = endorse_args(pki, out)
    wrong_key[wrong_key.index(pki["key"])] = pki["anchor"]  # an Ed25519 key, not the leaf's
    assert_one_line_error(run(*wrong_key), 3, "does not match the leaf")
    assert not out.exists()


def test_show_errors(tmp_path: Path, pki: dict[str, Path]) -> None:
    garbage = tmp_path / "g.endorsement"
    garbage.write_bytes(b"\xff\x00garbage")
    assert_one_line_error(run("show", garbage), 3, "malformed")
    assert_one_line_error(run("show", tmp_path / "missing"), 3, "cannot read")
    assert_one_line_error(run("show", pki["anchor"], "--bundle", pki["bundle"]), 3, "not to keys")


def test_real_subprocess(tmp_path: Path) -> None:
    sluice = REPO_ROOT / ".venv" / "bin" / "sluice"
    out, pub = tmp_path / "a.pem", tmp_path / "a.pub"
    done = subprocess.run(
        [sluice, "anchor", "new", "--out", out, "--public", pub],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == key_id(load_public_key(pub)).hex()
    again = subprocess.run(
        [sluice, "anchor", "new", "--out", out],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert again.returncode == 3
    assert again.stderr.strip().splitlines() == [
        f"error: {out}: already exists (refusing to overwrite it)"
    ]
