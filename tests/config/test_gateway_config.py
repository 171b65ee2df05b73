"""The gateway config schema: every example loads, every mistake in a table of bad configs gets its
exact one-line error (file, line, key path, what was expected), and ``sluice config check`` prints
them with the documented exit statuses."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import trustme
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
from hypothesis import given
from hypothesis import strategies as st

from config.errors import ConfigError
from config.gateway import (
    MAX_FRAME_BYTES_CAP,
    FsyncPolicy,
    GatewayConfig,
    HostPort,
    IdentitySource,
    LogFormat,
    NetworkKind,
    gateway_config_from_document,
    load_gateway_config,
    scope_problem,
)
from config.source import parse_toml_bytes
from gateway.cli import main
from gateway.envelope.claims import valid_scope
from gateway.framing import limits as framing_limits
from tests.conftest import REPO_ROOT

EXAMPLES = REPO_ROOT / "config" / "examples"
GATEWAY_EXAMPLES = sorted(EXAMPLES.glob("gateway-*.toml"))

BASE = """\
[gateway]
name = "gw-a"
spiffe_id = "spiffe://a.example/gw/a"

[identity]
trust_domain = "a.example"
source = "workload_api"
socket = "unix:///run/spire/agent.sock"

[anchor]
private_key = "anchor.pem"
endorsement = "anchor.endorsement"

[[networks]]
name = "weave"
kind = "weave"
listen = "10.32.0.2:7443"

[[networks]]
name = "fed"
kind = "federation"
listen = "192.0.2.10:8443"

[[scopes]]
name = "payments/ledger"
policy = "policies/ledger.toml"

[[peers]]
name = "gw-b"
address = "192.0.2.20:8443"
spiffe_id = "spiffe://b.example/gw/b"
trust_domain = "b.example"
bundle = "bundles/b.pem"
export_scopes = ["payments/*"]
import_scopes = ["orders/intake"]

[[routes]]
scope = "payments/*"
peer = "gw-b"

[[routes]]
scope = "orders/*"
network = "weave"
address = "10.32.1.7:9000"
"""


def _load(text: str, path: Path = Path("gw.toml")) -> GatewayConfig:
    return gateway_config_from_document(parse_toml_bytes(text.encode(), path))


def _edit(edits: list[tuple[str, str]]) -> str:
    """Apply (old, new) replacements to BASE; an empty ``old`` appends ``new``."""
    text = BASE
    for old, new in edits:
        if not old:
            text += new
            continue
        assert old in text, f"test edit does not apply: {old!r}"
        text = text.replace(old, new, 1)
    return text


def test_base_config_is_valid_and_mapped() -> None:
    cfg = _load(BASE)
    assert cfg.summary() == "2 networks, 1 scope, 1 peer, 2 routes"
    assert str(cfg.gateway.spiffe_id) == "spiffe://a.example/gw/a"
    assert cfg.identity.source is IdentitySource.WORKLOAD_API
    assert cfg.identity.socket == "unix:///run/spire/agent.sock"
    assert cfg.identity.cert_chain is None
    assert [n.kind for n in cfg.networks] == [NetworkKind.WEAVE, NetworkKind.FEDERATION]
    assert [n.tls for n in cfg.networks] == [False, True]  # federation defaults to mTLS
    assert cfg.networks[0].listen == HostPort("10.32.0.2", 7443)
    peer = cfg.peers[0]
    assert peer.trust_domain.name == "b.example"
    assert peer.bundle == Path("bundles/b.pem")
    assert peer.bundle_endpoint is None
    assert peer.export_scopes == ("payments/*",)
    assert cfg.routes[0].peer == "gw-b" and cfg.routes[0].address is None
    assert cfg.routes[1].address == HostPort("10.32.1.7", 9000)


def test_defaults() -> None:
    cfg = _load(BASE)
    assert [(t.name, t.level) for t in cfg.trust.tiers] == [
        ("public", 0),
        ("internal", 1),
        ("restricted", 2),
        ("secret", 3),
    ]
    assert cfg.trust.clock_skew_seconds == 60
    assert cfg.limits.max_frame_bytes == MAX_FRAME_BYTES_CAP
    assert cfg.limits.max_in_flight == 64
    assert cfg.limits.max_connections == 1024
    assert cfg.limits.handshake_timeout_seconds == 10.0
    assert cfg.limits.idle_timeout_seconds == 300.0
    assert cfg.limits.envelope_max_lifetime_seconds == 3600
    assert cfg.limits.replay_window_capacity == 1_000_000
    assert cfg.audit.fsync is FsyncPolicy.ALWAYS
    assert cfg.audit.path == Path("state/audit.log")
    assert cfg.spool.dir == Path("state/spool")
    assert cfg.metrics_listen == HostPort("127.0.0.1", 9464)
    assert cfg.log.format is LogFormat.JSON


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    cfg = _load(BASE, tmp_path / "etc" / "gw.toml")
    assert cfg.anchor.private_key == tmp_path / "etc" / "anchor.pem"
    assert cfg.scopes[0].policy == tmp_path / "etc" / "policies" / "ledger.toml"


def test_frame_cap_agrees_with_framing() -> None:
    # config may not import gateway, so the number is repeated; this keeps the two equal.
    assert MAX_FRAME_BYTES_CAP == framing_limits.MAX_FRAME_BODY_CAP


@given(st.text(alphabet="abcXYZ019._-/*", max_size=20))
def test_scope_syntax_agrees_with_the_envelope(text: str) -> None:
    assert (scope_problem(text) is None) == valid_scope(text)


BAD_CONFIGS = [
    pytest.param(
        [
            ('[gateway]\nname = "gw-a"\nspiffe_id = "spiffe://a.example/gw/a"\n', ""),
        ],
        [
            "gw.toml: gateway: missing required table",
        ],
        id="missing-gateway-table",
    ),
    pytest.param(
        [
            ('name = "gw-a"', 'name = "GW A"'),
        ],
        [
            (
                "gw.toml:2: gateway.name: expected a name of lowercase letters, "
                "digits, '_' or '-' (at most 64 bytes), found 'GW A'"
            ),
        ],
        id="gateway-name-syntax",
    ),
    pytest.param(
        [
            ('spiffe_id = "spiffe://a.example/gw/a"', 'spiffe_id = "spiffe://A.example/gw/a"'),
        ],
        [
            (
                "gw.toml:3: gateway.spiffe_id: not a SPIFFE ID: trust domain "
                "characters are limited to lowercase letters, numbers, dots, "
                "dashes, and underscores"
            ),
        ],
        id="gateway-spiffe-id-uppercase",
    ),
    pytest.param(
        [
            ('spiffe_id = "spiffe://a.example/gw/a"', 'spiffe_id = "spiffe://c.example/gw/a"'),
        ],
        [
            (
                "gw.toml:3: gateway.spiffe_id: trust domain 'c.example' is not "
                "the identity's trust domain 'a.example' (identity.trust_domain)"
            ),
        ],
        id="gateway-id-outside-trust-domain",
    ),
    pytest.param(
        [
            ('source = "workload_api"', 'source = "spire"'),
        ],
        [
            "gw.toml:7: identity.source: expected one of 'workload_api', 'files', found 'spire'",
        ],
        id="identity-source-unknown",
    ),
    pytest.param(
        [
            ('socket = "unix:///run/spire/agent.sock"', 'socket = "tcp://127.0.0.1:8081"'),
        ],
        [
            (
                "gw.toml:8: identity.socket: expected a Workload API address such "
                "as unix:///run/spire/agent.sock, found 'tcp://127.0.0.1:8081'"
            ),
        ],
        id="identity-socket-not-unix",
    ),
    pytest.param(
        [
            (
                'socket = "unix:///run/spire/agent.sock"',
                'socket = "unix:///run/spire/agent.sock"\ncert_chain = "svid.pem"',
            ),
        ],
        [
            "gw.toml:9: identity.cert_chain: only used with source = 'files'",
        ],
        id="identity-file-key-with-workload-api",
    ),
    pytest.param(
        [
            (
                'source = "workload_api"\nsocket = "unix:///run/spire/agent.sock"',
                'source = "files"\ncert_chain = "svid.pem"\nprivate_key = "svid.key"',
            ),
        ],
        [
            "gw.toml:5: identity.bundle: missing required key (expected a string)",
        ],
        id="identity-files-missing-key",
    ),
    pytest.param(
        [
            ('private_key = "anchor.pem"', "private_key = 42"),
        ],
        [
            "gw.toml:11: anchor.private_key: expected a string, found an integer (42)",
        ],
        id="anchor-key-wrong-type",
    ),
    pytest.param(
        [
            ('kind = "weave"', 'kind = "calico"'),
        ],
        [
            (
                "gw.toml:16: networks[0].kind: expected one of 'weave', 'cilium', "
                "'local', 'federation', found 'calico'"
            ),
        ],
        id="network-kind-unknown",
    ),
    pytest.param(
        [
            ('listen = "10.32.0.2:7443"', 'listen = "10.32.0.2"'),
        ],
        [
            (
                "gw.toml:17: networks[0].listen: expected host:port such as "
                "127.0.0.1:7443, found '10.32.0.2'"
            ),
        ],
        id="network-listen-without-port",
    ),
    pytest.param(
        [
            ('name = "fed"', 'name = "weave"'),
            ('peer = "gw-b"', 'peer = "gw-b"'),
        ],
        [
            "gw.toml:20: networks[1].name: duplicate name 'weave' (first in networks[0])",
        ],
        id="network-duplicate-name",
    ),
    pytest.param(
        [
            ('listen = "192.0.2.10:8443"', 'listen = "10.32.0.2:7443"'),
        ],
        [
            (
                "gw.toml:22: networks[1].listen: duplicate listen "
                "'10.32.0.2:7443' (first in networks[0])"
            ),
        ],
        id="network-duplicate-listen",
    ),
    pytest.param(
        [
            ('kind = "federation"', 'kind = "federation"\ntls = false'),
        ],
        [
            "gw.toml:22: networks[1].tls: federation listeners require mutual TLS (tls = true)",
        ],
        id="federation-without-tls",
    ),
    pytest.param(
        [
            ('name = "payments/ledger"', 'name = "payments//ledger"'),
        ],
        [
            (
                "gw.toml:25: scopes[0].name: expected a scope name: segments of "
                "letters, digits, '.', '_' or '-' separated by '/', found "
                "'payments//ledger'"
            ),
        ],
        id="scope-name-syntax",
    ),
    pytest.param(
        [
            ("", '\n[[scopes]]\nname = "payments/ledger"\npolicy = "policies/other.toml"\n'),
        ],
        [
            "gw.toml:47: scopes[1].name: duplicate name 'payments/ledger' (first in scopes[0])",
        ],
        id="scope-duplicate",
    ),
    pytest.param(
        [
            ('policy = "policies/ledger.toml"', 'policy = "policies/ledger.toml"\ntier = "secret"'),
        ],
        [
            "gw.toml:27: scopes[0].tier: unknown key",
        ],
        id="scope-unknown-key",
    ),
    pytest.param(
        [
            ('spiffe_id = "spiffe://b.example/gw/b"', 'spiffe_id = "spiffe://c.example/gw/b"'),
        ],
        [
            (
                "gw.toml:31: peers[0].spiffe_id: trust domain 'c.example' differs "
                "from this peer's trust_domain 'b.example'"
            ),
        ],
        id="peer-id-other-trust-domain",
    ),
    pytest.param(
        [
            (
                'bundle = "bundles/b.pem"',
                'bundle = "bundles/b.pem"\nbundle_endpoint = "https://b.example/bundle"',
            ),
        ],
        [
            (
                "gw.toml:33: peers[0].bundle: expected exactly one of bundle (a "
                "file) and bundle_endpoint (an https:// URL)"
            ),
        ],
        id="peer-two-bundle-sources",
    ),
    pytest.param(
        [
            ('bundle = "bundles/b.pem"\n', ""),
        ],
        [
            (
                "gw.toml:28: peers[0]: expected exactly one of bundle (a file) "
                "and bundle_endpoint (an https:// URL)"
            ),
        ],
        id="peer-no-bundle-source",
    ),
    pytest.param(
        [
            ('bundle = "bundles/b.pem"', 'bundle_endpoint = "http://b.example/bundle"'),
        ],
        [
            (
                "gw.toml:33: peers[0].bundle_endpoint: expected an https:// URL, "
                "found 'http://b.example/bundle'"
            ),
        ],
        id="peer-bundle-endpoint-not-https",
    ),
    pytest.param(
        [
            ('export_scopes = ["payments/*"]', 'export_scopes = ["payments/**"]'),
        ],
        [
            (
                "gw.toml:34: peers[0].export_scopes[0]: expected a scope pattern "
                "(a scope, 'prefix/*' or '*'): segments of letters, digits, '.', "
                "'_' or '-' separated by '/', found 'payments/**'"
            ),
        ],
        id="peer-export-pattern",
    ),
    pytest.param(
        [
            (
                'import_scopes = ["orders/intake"]',
                (
                    "import_scopes = "
                    '["orders/intake"]\n\n[peers.scope_map]\n"hr/payroll" = '
                    '"people/payroll"'
                ),
            ),
        ],
        [
            (
                "gw.toml:38: peers[0].scope_map.\"hr/payroll\": scope 'hr/payroll' "
                "is neither exported nor imported"
            ),
        ],
        id="peer-scope-map-not-exported",
    ),
    pytest.param(
        [
            ('name = "gw-b"', 'name = "weave"'),
            ('peer = "gw-b"', 'peer = "weave"'),
        ],
        [
            (
                "gw.toml:29: peers[0].name: name 'weave' is already used by "
                "networks[0] (networks and peers share one namespace)"
            ),
        ],
        id="peer-name-is-network-name",
    ),
    pytest.param(
        [
            ('address = "192.0.2.20:8443"', 'address = "192.0.2.20:0"'),
        ],
        [
            "gw.toml:30: peers[0].address: port 0 is only allowed for listen addresses",
        ],
        id="peer-address-port-zero",
    ),
    pytest.param(
        [
            ('network = "weave"', 'network = "cilium"'),
        ],
        [
            "gw.toml:43: routes[1].network: unknown network 'cilium' (known: 'weave', 'fed')",
        ],
        id="route-unknown-network",
    ),
    pytest.param(
        [
            ('peer = "gw-b"', 'peer = "gw-c"'),
        ],
        [
            "gw.toml:39: routes[0].peer: unknown peer 'gw-c' (known: 'gw-b')",
        ],
        id="route-unknown-peer",
    ),
    pytest.param(
        [
            (
                'scope = "orders/*"',
                'scope = "orders/*"\nworkload = "spiffe://a.example/ns/orders/sa/api"',
            ),
        ],
        [
            "gw.toml:43: routes[1].workload: expected exactly one of scope and workload",
        ],
        id="route-scope-and-workload",
    ),
    pytest.param(
        [
            ('address = "10.32.1.7:9000"\n', ""),
        ],
        [
            "gw.toml:41: routes[1].address: missing required key (expected a string)",
        ],
        id="route-network-without-address",
    ),
    pytest.param(
        [
            ('peer = "gw-b"', 'peer = "gw-b"\naddress = "192.0.2.20:8443"'),
        ],
        [
            (
                "gw.toml:40: routes[0].address: only used with network (a peer's "
                "address is in its [[peers]] entry)"
            ),
        ],
        id="route-peer-with-address",
    ),
    pytest.param(
        [
            ('scope = "orders/*"', 'scope = "payments/*"'),
        ],
        [
            "gw.toml:42: routes[1].scope: duplicate route for 'payments/*' (first in routes[0])",
        ],
        id="route-duplicate",
    ),
    pytest.param(
        [
            ('scope = "orders/*"', 'workload = "https://a.example/orders"'),
        ],
        [
            (
                "gw.toml:42: routes[1].workload: not a SPIFFE ID: scheme is "
                "missing or invalid (expected lowercase 'spiffe://')"
            ),
        ],
        id="route-workload-not-spiffe",
    ),
    pytest.param(
        [
            ("", "\n[limits]\nmax_in_flight = 0\n"),
        ],
        [
            "gw.toml:47: limits.max_in_flight: expected an integer from 1 to 65536, found 0",
        ],
        id="limits-in-flight-zero",
    ),
    pytest.param(
        [
            ("", '\n[limits]\nhandshake_timeout_seconds = "10s"\n'),
        ],
        [
            (
                "gw.toml:47: limits.handshake_timeout_seconds: expected a number, "
                "found a string ('10s')"
            ),
        ],
        id="limits-timeout-as-string",
    ),
    pytest.param(
        [
            ("", "\n[limits]\nmax_frame_bytes = 16777216\n"),
        ],
        [
            (
                "gw.toml:47: limits.max_frame_bytes: expected an integer from "
                "4096 to 1089608, found 16777216"
            ),
        ],
        id="limits-frame-above-cap",
    ),
    pytest.param(
        [
            ("", "\n[limits]\nmax_frame_size = 5000\n"),
        ],
        [
            "gw.toml:47: limits.max_frame_size: unknown key",
        ],
        id="limits-unknown-key",
    ),
    pytest.param(
        [
            ("", '\n[audit]\nfsync = "sometimes"\n'),
        ],
        [
            "gw.toml:47: audit.fsync: expected one of 'always', 'interval', found 'sometimes'",
        ],
        id="audit-fsync-unknown",
    ),
    pytest.param(
        [
            ("", '\n[log]\nformat = "xml"\n'),
        ],
        [
            "gw.toml:47: log.format: expected one of 'json', 'text', found 'xml'",
        ],
        id="log-format-unknown",
    ),
    pytest.param(
        [
            ("", '\n[metrics]\nlisten = "localhost"\n'),
        ],
        [
            (
                "gw.toml:47: metrics.listen: expected host:port such as "
                "127.0.0.1:7443, found 'localhost'"
            ),
        ],
        id="metrics-listen-without-port",
    ),
    pytest.param(
        [
            ("", "\n[trust.tiers]\npublic = 0\nopen = 0\n"),
        ],
        [
            "gw.toml:48: trust.tiers.open: level 0 is already used by tier 'public'",
        ],
        id="trust-tier-duplicate-level",
    ),
    pytest.param(
        [
            ("", '\n[trust.bundles]\n"B.Example" = "bundles/b.pem"\n'),
        ],
        [
            (
                'gw.toml:47: trust.bundles."B.Example": not a trust domain: trust '
                "domain characters are limited to lowercase letters, numbers, "
                "dots, dashes, and underscores"
            ),
        ],
        id="trust-bundle-key-not-trust-domain",
    ),
    pytest.param(
        [
            ("", '\n[gatway]\nname = "x"\n'),
        ],
        [
            "gw.toml:46: gatway: unknown key",
        ],
        id="unknown-top-level-table",
    ),
    pytest.param(
        [
            ('name = "gw-a"', 'name = "gw-a"\nname = "gw-b"'),
        ],
        [
            "gw.toml:3: invalid TOML: Cannot overwrite a value",
        ],
        id="invalid-toml-duplicate-key",
    ),
    pytest.param(
        [
            ('[[networks]]\nname = "weave"\nkind = "weave"\nlisten = "10.32.0.2:7443"\n\n', ""),
            ('[[networks]]\nname = "fed"\nkind = "federation"\nlisten = "192.0.2.10:8443"\n', ""),
            ('network = "weave"\naddress = "10.32.1.7:9000"', 'peer = "gw-b"'),
            ('scope = "orders/*"', 'scope = "orders/intake"'),
        ],
        ["gw.toml: networks: missing required array of tables (at least one [[networks]])"],
        id="no-networks",
    ),
]


@pytest.mark.parametrize(("edits", "expected"), BAD_CONFIGS)
def test_bad_config_gets_its_one_line_error(
    edits: list[tuple[str, str]], expected: list[str]
) -> None:
    with pytest.raises(ConfigError) as info:
        _load(_edit(edits))
    assert [str(p) for p in info.value.problems] == expected
    assert str(info.value) == "\n".join(expected)


def test_table_is_big_enough() -> None:
    assert len(BAD_CONFIGS) >= 25


def test_every_problem_is_reported_in_file_order() -> None:
    text = _edit(
        [
            ('kind = "weave"', 'kind = "calico"'),
            ('name = "gw-a"', 'name = "GW A"'),
            ('network = "weave"', 'network = "cilium"'),
        ]
    )
    with pytest.raises(ConfigError) as info:
        _load(text)
    assert [(p.line, p.key_path) for p in info.value.problems] == [
        (2, "gateway.name"),
        (16, "networks[0].kind"),
        (43, "routes[1].network"),
    ]


# -- examples --------------------------------------------------------------------------------


def test_there_are_examples() -> None:
    names = {p.name for p in GATEWAY_EXAMPLES}
    assert {
        "gateway-minimal.toml",
        "gateway-bridge-weave-cilium.toml",
        "gateway-federation-weave.toml",
        "gateway-federation-cilium.toml",
    } <= names


@pytest.mark.parametrize("example", GATEWAY_EXAMPLES, ids=lambda p: p.name)
def test_example_loads(example: Path) -> None:
    cfg = load_gateway_config(example)
    assert cfg.networks
    assert cfg.source == example


def test_federation_examples_point_at_each_other() -> None:
    weave = load_gateway_config(EXAMPLES / "gateway-federation-weave.toml")
    cilium = load_gateway_config(EXAMPLES / "gateway-federation-cilium.toml")
    assert weave.peers[0].spiffe_id == cilium.gateway.spiffe_id
    assert cilium.peers[0].spiffe_id == weave.gateway.spiffe_id
    fed = {n.kind: n for n in weave.networks}[NetworkKind.FEDERATION]
    assert cilium.peers[0].address == fed.listen
    assert fed.tls


def _materialise(example: Path, into: Path) -> Path:
    """Copy ``example`` into ``into`` and create every file it refers to, with real content where
    the format is known here (Ed25519 PKCS#8 and X25519 keys, an X.509-SVID chain from a test CA).

    ``check_files`` only checks that files exist and are readable (their content is checked by
    their own loaders at start-up), so policies and endorsements get a marker text; the repository
    ships no key material at all."""
    target = into / example.name
    shutil.copy(example, target)
    cfg = load_gateway_config(target)
    ca = trustme.CA()
    svid = ca.issue_cert(f"{cfg.gateway.name}.test")

    def write(path: Path | None, data: bytes) -> None:
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    anchor_key = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write(cfg.anchor.private_key, anchor_key)
    write(cfg.anchor.endorsement, b"endorsement stand-in: not parsed by config check\n")
    write(cfg.identity.cert_chain, b"".join(blob.bytes() for blob in svid.cert_chain_pems))
    write(cfg.identity.private_key, svid.private_key_pem.bytes())
    write(cfg.identity.bundle, ca.cert_pem.bytes())
    for bundle in cfg.trust.bundles:
        write(bundle.path, ca.cert_pem.bytes())
    for path in cfg.trust.endorsements:
        write(path, b"endorsement stand-in: not parsed by config check\n")
    if cfg.trust.anchors_dir is not None:
        cfg.trust.anchors_dir.mkdir(parents=True, exist_ok=True)
    for scope in cfg.scopes:
        write(scope.policy, b"policy stand-in: not parsed by config check\n")
        seal = x25519.X25519PrivateKey.generate().public_key()
        write(
            scope.seal_key,
            seal.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )
    for peer in cfg.peers:
        write(peer.bundle, ca.cert_pem.bytes())
    return target


@pytest.mark.parametrize("example", GATEWAY_EXAMPLES, ids=lambda p: p.name)
def test_example_passes_the_file_check_once_its_files_exist(example: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_gateway_config(tmp_path / "missing.toml")
    assert "cannot read file" in str(info.value)
    target = _materialise(example, tmp_path)
    cfg = load_gateway_config(target, check_files=True)
    assert cfg.summary()


def test_file_check_names_each_missing_file(tmp_path: Path) -> None:
    target = _materialise(EXAMPLES / "gateway-federation-weave.toml", tmp_path)
    (tmp_path / "bundles" / "cilium.pem").unlink()
    (tmp_path / "policies" / "orders-intake.toml").unlink()
    (tmp_path / "policies" / "orders-intake.toml").mkdir()
    with pytest.raises(ConfigError) as info:
        load_gateway_config(target, check_files=True)
    assert [str(p) for p in info.value.problems] == [
        f'{target}:22: trust.bundles."cilium.prod.example": '
        f"file not found: {tmp_path}/bundles/cilium.pem",
        f"{target}:36: scopes[0].policy: "
        f"not a regular file: {tmp_path}/policies/orders-intake.toml",
        f"{target}:43: peers[0].bundle: file not found: {tmp_path}/bundles/cilium.pem",
    ]


# -- sluice config check ----------------------------------------------------------------------


def test_cli_ok_prints_a_summary(tmp_path: Path) -> None:
    target = _materialise(EXAMPLES / "gateway-bridge-weave-cilium.toml", tmp_path)
    result = CliRunner().invoke(main, ["config", "check", str(target)])
    assert result.exit_code == 0, result.output
    assert result.output == "ok: 2 networks, 3 scopes, 0 peers, 4 routes\n"


def test_cli_skip_files(tmp_path: Path) -> None:
    target = tmp_path / "gw.toml"
    target.write_text(BASE)
    assert CliRunner().invoke(main, ["config", "check", str(target)]).exit_code == 1
    result = CliRunner().invoke(main, ["config", "check", "--skip-files", str(target)])
    assert result.exit_code == 0
    assert result.output == "ok: 2 networks, 1 scope, 1 peer, 2 routes\n"


def test_cli_lists_every_problem(tmp_path: Path) -> None:
    target = tmp_path / "gw.toml"
    target.write_text(
        _edit(
            [
                ('listen = "10.32.0.2:7443"', 'listen = "10.32.0.2"'),
                ('peer = "gw-b"', 'peer = "gw-c"'),
            ]
        )
    )
    result = CliRunner().invoke(main, ["config", "check", "--skip-files", str(target)])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"{target}:17: networks[0].listen: "
        "expected host:port such as 127.0.0.1:7443, found '10.32.0.2'",
        f"{target}:39: routes[0].peer: unknown peer 'gw-c' (known: 'gw-b')",
    ]
    assert "Traceback" not in result.output


def test_cli_invalid_toml_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    target = tmp_path / "gw.toml"
    target.write_text('[gateway]\nname = "gw\n')
    result = CliRunner().invoke(main, ["config", "check", str(target)])
    assert result.exit_code == 1
    assert result.output.startswith(f"{target}:2: invalid TOML: ")
    assert len(result.output.splitlines()) == 1


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_cli_unreadable_file_exits_3(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "gw.toml"
    if kind == "directory":
        target.mkdir()
    result = CliRunner().invoke(main, ["config", "check", str(target)])
    assert result.exit_code == 3
    assert len(result.output.splitlines()) == 1
    assert result.output.startswith(f"error: cannot read {target}: ")
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_real_subprocess(tmp_path: Path) -> None:
    sluice = Path(sys.executable).parent / "sluice"
    target = _materialise(EXAMPLES / "gateway-federation-cilium.toml", tmp_path)
    ok = subprocess.run(
        [str(sluice), "config", "check", str(target)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (ok.returncode, ok.stdout, ok.stderr) == (
        0,
        "ok: 2 networks, 1 scope, 1 peer, 2 routes\n",
        "",
    )
    (tmp_path / "policies" / "finance-ledger.toml").unlink()
    bad = subprocess.run(
        [str(sluice), "config", "check", str(target)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 1
    assert bad.stdout == (
        f"{target}:32: scopes[0].policy: file not found: {tmp_path}/policies/finance-ledger.toml\n"
    )
    missing = subprocess.run(
        [str(sluice), "config", "check", str(tmp_path / "nope.toml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "LC_ALL": "C"},
    )
    assert missing.returncode == 3
    assert missing.stdout == ""
    assert (
        missing.stderr
        == f"error: cannot read {tmp_path / 'nope.toml'}: No such file or directory\n"
    )
