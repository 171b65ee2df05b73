"""First boot: user data (cloud-config or raw TOML) -> /etc/sluice, checked with the same checker
as `sluice config check`; written atomically with mode 0640; refused with the checker's lines."""

from __future__ import annotations

import base64
import gzip
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from appliance.firstboot import (
    CONFIG_NAME,
    DONE_MARKER,
    NETWORK_NAME,
    SeedFile,
    UserDataError,
    parse_user_data,
    relative_name,
)
from gateway.cli import main

GATEWAY = """\
[gateway]
name = "gw-a"
spiffe_id = "spiffe://dev.example/sluice/gateway/gw-a"

[identity]
trust_domain = "dev.example"
source = "workload_api"
socket = "unix:///run/spire/sockets/agent.sock"

[anchor]
private_key = "keys/anchor.pem"
endorsement = "keys/anchor.endorsement"

[[networks]]
name = "local"
kind = "local"
listen = "127.0.0.1:7400"

[[scopes]]
name = "demo/echo"
policy = "policies/demo-echo.toml"

[[routes]]
scope = "demo/*"
network = "local"
address = "127.0.0.1:7500"
"""

NETWORK = """\
[appliance.weave]
interface = "wv0"
addresses = ["192.168.10.5/24"]
gateways = ["192.168.10.11"]

[appliance.cilium]
interface = "cl0"
addresses = ["192.168.20.5/24"]
cluster_pool = "10.48.0.0/16"

[appliance.cilium.vxlan]
name = "vtep0"

[[appliance.cilium.nodes]]
name = "a"
underlay = "192.168.20.21"
pod_cidrs = ["10.48.1.0/24"]
"""

REFERENCED = {
    "keys/anchor.pem": b"-----BEGIN PRIVATE KEY-----\n",
    "keys/anchor.endorsement": b"\x82\x01",
    "policies/demo-echo.toml": b"# policy\n",
}


def _indent(text: str, by: int) -> str:
    return "\n".join((" " * by + line) if line else "" for line in text.splitlines())


def cloud_config(gateway: str = GATEWAY, network: str | None = None) -> str:
    out = ["#cloud-config", "write_files:"]
    for name, content in REFERENCED.items():
        out += [
            f"  - path: /etc/sluice/{name}",
            "    encoding: b64",
            f"    content: {base64.b64encode(content).decode()}",
        ]
    out += ["  - path: /etc/motd", "    content: not ours"]
    out += ["sluice:", "  config: |", _indent(gateway, 4)]
    if network is not None:
        out += ["  network: |", _indent(network, 4)]
    return "\n".join(out) + "\n"


def _by_name(files: tuple[SeedFile, ...]) -> dict[str, SeedFile]:
    return {f.name: f for f in files}


# -- parsing (pure) ---------------------------------------------------------------------------


def test_cloud_config_with_sluice_table_and_write_files() -> None:
    files = _by_name(parse_user_data(cloud_config(network=NETWORK).encode(), "ud"))
    assert files[CONFIG_NAME].content.decode() == GATEWAY
    assert files[NETWORK_NAME].content.decode() == NETWORK
    assert files["keys/anchor.endorsement"].content == b"\x82\x01"
    assert files["keys/anchor.pem"].mode == 0o640
    assert "motd" not in " ".join(files)  # paths outside /etc/sluice are cloud-init's


def test_sluice_key_may_be_the_toml_text_itself() -> None:
    raw = "#cloud-config\nsluice: |\n" + _indent(GATEWAY, 2) + "\n"
    (only,) = parse_user_data(raw.encode(), "ud")
    assert only == SeedFile(CONFIG_NAME, GATEWAY.encode())


def test_raw_toml_seed_is_the_gateway_config() -> None:
    assert parse_user_data(GATEWAY.encode(), "seed") == (SeedFile(CONFIG_NAME, GATEWAY.encode()),)


def test_gzip_base64_and_permissions() -> None:
    blob = base64.b64encode(gzip.compress(b"binary\x00policy")).decode()
    raw = (
        "#cloud-config\nsluice: 'x = 1'\nwrite_files:\n"
        f"  - path: /etc/sluice/policies/p.cbor\n    encoding: gz+b64\n    content: {blob}\n"
        "    permissions: '0600'\n"
    )
    files = _by_name(parse_user_data(raw.encode(), "ud"))
    assert files["policies/p.cbor"] == SeedFile("policies/p.cbor", b"binary\x00policy", 0o600)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("#cloud-config\nsluice: [1, 2\nx: 1\n", "ud:3: not valid YAML"),
        ("#cloud-config\n- a\n", "ud: #cloud-config must be a YAML mapping"),
        ("#cloud-config\npackages: [x]\n", "ud: no sluice configuration"),
        ("#cloud-config\nsluice: {config: 'a=1', extra: 1}\n", "ud: sluice.extra: unknown key"),
        ("#cloud-config\nsluice: {config: 3}\n", "ud: sluice.config: expected TOML text"),
        ("#!/bin/sh\necho hi\n", "ud: script user data is not supported"),
        ("Content-Type: multipart/mixed; boundary=x\n", "ud: MIME multipart"),
        (
            "#cloud-config\nsluice: 'a=1'\nwrite_files:\n  - path: /etc/sluice/../shadow\n",
            "ud: write_files[0].path: '/etc/sluice/../shadow' is not a plain file name",
        ),
        (
            "#cloud-config\nsluice: 'a=1'\nwrite_files:\n  - path: /etc/sluice/k\n"
            "    permissions: '0644'\n",
            "ud: write_files[0].permissions: 0644 grants more than 0750",
        ),
        (
            "#cloud-config\nsluice: 'a=1'\nwrite_files:\n  - path: /etc/sluice/k\n"
            "    encoding: b64\n    content: '!!!'\n",
            "ud: write_files[0].content: cannot decode as b64",
        ),
        (
            "#cloud-config\nsluice: 'a=1'\nwrite_files:\n  - path: /etc/sluice/sluice.toml\n",
            "ud: /etc/sluice/sluice.toml is given twice",
        ),
    ],
)
def test_bad_user_data_names_source_and_key(raw: str, expected: str) -> None:
    with pytest.raises(UserDataError) as err:
        parse_user_data(raw.encode(), "ud")
    assert str(err.value).startswith(expected), str(err.value)


def test_user_data_is_bounded() -> None:
    with pytest.raises(UserDataError, match="larger than"):
        parse_user_data(b"#" * (1024 * 1024 + 1), "ud")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/etc/sluice/keys/a.pem", "keys/a.pem"),
        ("/etc/other/x", None),
        ("etc/sluice/x", None),
        ("/etc/sluice/.firstboot-done", ""),
        ("/etc/sluice/.hidden", ""),
        ("/etc/sluice/a/b/c/d", ""),
        ("/etc/sluice", ""),
    ],
)
def test_relative_name(path: str, expected: str | None) -> None:
    assert relative_name(path) == expected


# -- the command (real files) -----------------------------------------------------------------


def _run(tmp: Path, user_data: str | None, *extra: str) -> tuple[int, str, str]:
    args = ["firstboot", "--etc-dir", str(tmp / "etc"), *extra]
    if user_data is not None:
        (tmp / "user-data").write_text(user_data)
        args += ["--user-data", str(tmp / "user-data")]
    result = CliRunner().invoke(main, args)
    return result.exit_code, result.stdout, result.stderr


def test_firstboot_writes_checks_and_marks_done(tmp_path: Path) -> None:
    code, out, err = _run(tmp_path, cloud_config(network=NETWORK))
    assert code == 0, err
    etc = tmp_path / "etc"
    assert out.strip() == (
        f"sluice-firstboot: {etc / CONFIG_NAME} written from {tmp_path / 'user-data'} "
        "and checked: ok: 1 network, 1 scope, 0 peers, 1 route"
    )
    for name in (CONFIG_NAME, NETWORK_NAME, *REFERENCED):
        assert stat.S_IMODE((etc / name).stat().st_mode) == 0o640, name
    assert (etc / CONFIG_NAME).read_text() == GATEWAY
    assert (etc / DONE_MARKER).exists()
    assert not list(etc.rglob("*.firstboot-tmp"))


def test_invalid_config_prints_the_checkers_lines_and_fails(tmp_path: Path) -> None:
    broken = GATEWAY.replace('listen = "127.0.0.1:7400"', 'listen = "127.0.0.1:99999"')
    code, _out, err = _run(tmp_path, cloud_config(broken))
    assert code == 1
    target = tmp_path / "etc" / CONFIG_NAME
    lines = err.strip().splitlines()
    # Exactly what `sluice config check` prints for the same file.
    check = CliRunner().invoke(main, ["config", "check", str(target)])
    assert check.exit_code == 1
    assert lines[:-1] == check.stdout.strip().splitlines()
    assert lines[0].startswith(f"{target}:")
    assert "networks[0].listen" in lines[0]
    assert lines[-1] == (
        f"sluice-firstboot: {target}: invalid configuration from {tmp_path / 'user-data'} "
        "(1 problem(s) above); sluice.service will not start"
    )
    assert not (tmp_path / "etc" / DONE_MARKER).exists()


def test_missing_referenced_file_is_refused(tmp_path: Path) -> None:
    raw = "#cloud-config\nsluice: |\n" + _indent(GATEWAY, 2) + "\n"
    code, _, err = _run(tmp_path, raw)
    assert code == 1
    assert "anchor.private_key: file not found" in err


def test_invalid_network_config_is_refused(tmp_path: Path) -> None:
    code, _, err = _run(tmp_path, cloud_config(network=NETWORK.replace("10.48.1.0/24", "nope")))
    assert code == 1
    assert f"{tmp_path / 'etc' / NETWORK_NAME}" in err
    assert "appliance.cilium.nodes[0].pod_cidrs" in err


def test_malformed_user_data_exits_3_with_one_line(tmp_path: Path) -> None:
    code, _, err = _run(tmp_path, "#cloud-config\nsluice: [\n")
    assert code == 3
    assert err.startswith(f"error: sluice-firstboot: {tmp_path / 'user-data'}:")
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "etc").exists()


def test_without_user_data_an_existing_config_is_checked(tmp_path: Path) -> None:
    code, _, _ = _run(tmp_path, cloud_config())
    assert code == 0
    (tmp_path / "etc" / DONE_MARKER).unlink()
    missing = tmp_path / "no-user-data"
    code, out, _ = _run(tmp_path, None, "--user-data", str(missing))
    assert code == 0
    assert "(already present)" in out


def test_nothing_at_all_exits_3(tmp_path: Path) -> None:
    code, _, err = _run(tmp_path, None, "--user-data", str(tmp_path / "none"))
    assert code == 3
    assert "no user data and no" in err
