"""Writes a complete two-cluster deployment into a directory: CAs, SVIDs, anchors, endorsements,
policies and both gateways' TOML configs. Used by ``sluice demo``, the end-to-end tests and the
gateway benchmark, so all three exercise the same real files the daemon reads in production.

The layout: a Weave cluster (trust domain ``weave.demo.example``) whose workload ``orders``
(scope ``orders/intake``) sends to the Cilium cluster's ``ledger`` (scope ``payments/ledger``),
through gateway ``gw-weave`` and, over mutual TLS, gateway ``gw-cilium``.
"""

from __future__ import annotations

import datetime as dt
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

import nacl.signing

from gateway.envelope.model import RoutingConstraint
from gateway.policy.files import load_policy_store
from identity.anchors import AnchorKeyPair, save_private_key
from identity.ca import IssuedSVID, SvidAuthority
from identity.endorsement import endorse
from identity.spiffe_id import SpiffeID, TrustDomain, parse_spiffe_id, parse_trust_domain

WEAVE = parse_trust_domain("weave.demo.example")
CILIUM = parse_trust_domain("cilium.demo.example")
ROGUE = parse_trust_domain("rogue.demo.example")
SVID_LIFETIME = dt.timedelta(hours=24)


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A port that was free a moment ago, for a listener the demo starts right away.

    It is chosen *below* the kernel's ephemeral range: asking for port 0 would return an
    ephemeral port, which any outgoing connection on the machine may take before our listener
    binds it.
    """
    low, _ = _ephemeral_range()
    top = max(low - 1, 20000)
    for _ in range(200):
        port = secrets.randbelow(top - 15000) + 15000
        if port in _HANDED_OUT:  # never twice in one process: its first user may not be up yet
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            _HANDED_OUT.add(port)
            return port
    raise OSError("no free port below the ephemeral range")


_HANDED_OUT: set[int] = set()


@dataclass(frozen=True, slots=True)
class Workload:
    spiffe_id: SpiffeID
    scope: str
    svid: IssuedSVID
    anchor: AnchorKeyPair
    endorsement: Path

    @property
    def signing_key(self) -> nacl.signing.SigningKey:
        return self.anchor.signing_key


@dataclass(frozen=True, slots=True)
class Topology:
    root: Path
    weave_ca: SvidAuthority
    cilium_ca: SvidAuthority
    weave_config: Path
    cilium_config: Path
    weave_listen: int  # where Weave workloads send
    weave_federation: int
    cilium_federation: int
    receiver_port: int  # the ledger's receiver, on the Cilium side
    orders: Workload
    ledger_id: SpiffeID
    anchors_dir: Path  # every endorsement, for receivers and auditors
    policies: tuple[Path, ...]

    def lineage(self, scope: str, number: int | None = None) -> bytes:
        """The hash of ``scope``'s current revision (or revision ``number``)."""
        store = load_policy_store(self.policies)
        chain = store.chain(scope)
        revision = chain[-1] if number is None else next(r for r in chain if r.number == number)
        return revision.digest

    def routing(self, *domains: TrustDomain, max_hops: int = 2) -> RoutingConstraint:
        return RoutingConstraint(domains or (WEAVE, CILIUM), (), max_hops)


def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def _workload(
    root: Path,
    ca: SvidAuthority,
    name: str,
    scopes: tuple[str, ...],
    max_tier: int,
    now: dt.datetime,
) -> Workload:
    sid = parse_spiffe_id(f"spiffe://{ca.trust_domain.name}/ns/{name}/sa/{name}")
    svid = ca.issue(sid, now=now, lifetime=SVID_LIFETIME)
    anchor = AnchorKeyPair.generate()
    start = int(now.timestamp()) - 60
    endorsement = endorse(
        anchor.public_key,
        svid,
        scopes,
        max_tier,
        start,
        int((now + SVID_LIFETIME).timestamp()),
    )
    path = _write(root / "anchors" / f"{name}.endorsement", endorsement)
    return Workload(sid, scopes[0], svid, anchor, path)


POLICY_ORDERS = """\
# The origin scope's own policy: only its lineage matters in the demo (envelopes carry the hash of
# the revision they were emitted under). Revision 2 revokes revision 1.
scope = "orders/intake"

[[revision]]
number = 1
issued_at = 2026-01-01T00:00:00Z

[[revision.rule]]
id = "orders-from-weave"
from_domains = ["weave.demo.example"]
min_tier = "public"

[[revision]]
number = 2
issued_at = 2026-02-01T00:00:00Z
revokes = [1]

[[revision.rule]]
id = "orders-from-weave"
from_domains = ["weave.demo.example"]
min_tier = "public"
"""

POLICY_LEDGER = """\
scope = "payments/ledger"

[[revision]]
number = 1
issued_at = 2026-01-01T00:00:00Z
workloads = ["spiffe://cilium.demo.example/ns/ledger/sa/ledger"]

[[revision.rule]]
id = "ledger-from-orders"
from_scopes = ["orders/*"]
from_domains = ["weave.demo.example"]
min_tier = "internal"
transit_domains = ["weave.demo.example", "cilium.demo.example"]
max_hops = 2
"""


def _gateway_config(
    *,
    name: str,
    td: TrustDomain,
    listen: list[tuple[str, str, int, bool]],
    peer: tuple[str, int, TrustDomain],
    routes: str,
    export: str,
    imports: str,
    socket: Path,
) -> str:
    networks = "".join(
        f'\n[[networks]]\nname = "{n}"\nkind = "{k}"\nlisten = "127.0.0.1:{p}"\n'
        + ("tls = true\n" if tls else "")
        for n, k, p, tls in listen
    )
    peer_name, peer_port, peer_td = peer
    return f"""\
# Written by `sluice demo`: the {name} gateway.
[gateway]
name = "{name}"
spiffe_id = "spiffe://{td.name}/sluice/gateway/{name}"

[identity]
trust_domain = "{td.name}"
source = "workload_api"
socket = "unix://{socket}"

[anchor]
private_key = "keys/{name}-anchor.pem"
endorsement = "anchors/{name}.endorsement"

[trust]
anchors_dir = "anchors"

[trust.bundles]
"{peer_td.name}" = "bundles/{peer_td.name}.pem"
{networks}
[[scopes]]
name = "orders/intake"
policy = "policies/orders-intake.toml"

[[scopes]]
name = "payments/ledger"
policy = "policies/payments-ledger.toml"

[[peers]]
name = "{peer_name}"
address = "127.0.0.1:{peer_port}"
spiffe_id = "spiffe://{peer_td.name}/sluice/gateway/{peer_name}"
trust_domain = "{peer_td.name}"
bundle = "bundles/{peer_td.name}.pem"
export_scopes = [{export}]
import_scopes = [{imports}]
{routes}
[limits]
handshake_timeout_seconds = 5
idle_timeout_seconds = 60

[audit]
path = "state/{name}/audit.log"
keep_envelopes = true

[spool]
dir = "state/{name}/spool"
max_bytes = 67108864

[metrics]
listen = "127.0.0.1:0"

[log]
level = "warning"
format = "text"
"""


def socket_path(root: Path, gateway: str) -> Path:
    """Where the gateway's SPIFFE Workload API (standing in for a SPIRE agent) listens."""
    return root / "sockets" / f"{gateway}.sock"


def gateway_id(td: TrustDomain, name: str) -> SpiffeID:
    return parse_spiffe_id(f"spiffe://{td.name}/sluice/gateway/{name}")


def build_topology(root: Path, *, now: dt.datetime | None = None) -> Topology:
    """Write every file of the two-cluster deployment under ``root``."""
    now = now or dt.datetime.now(dt.UTC)
    weave_ca = SvidAuthority.create_root(WEAVE, now=now)
    cilium_ca = SvidAuthority.create_root(CILIUM, now=now)
    for sub in ("sockets", "keys", "anchors", "state/gw-weave", "state/gw-cilium"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    _write(root / "bundles" / f"{WEAVE.name}.pem", weave_ca.bundle_pem())
    _write(root / "bundles" / f"{CILIUM.name}.pem", cilium_ca.bundle_pem())
    policies = (
        _write(root / "policies" / "orders-intake.toml", POLICY_ORDERS),
        _write(root / "policies" / "payments-ledger.toml", POLICY_LEDGER),
    )
    for name in ("gw-weave", "gw-cilium"):
        save_private_key(
            AnchorKeyPair.generate(), root / "keys" / f"{name}-anchor.pem", overwrite=True
        )
    orders = _workload(root, weave_ca, "orders", ("orders/intake",), 2, now)
    ledger_id = parse_spiffe_id("spiffe://cilium.demo.example/ns/ledger/sa/ledger")
    weave_listen, weave_fed, cilium_fed, cilium_local, receiver = (free_port() for _ in range(5))
    weave_cfg = _gateway_config(
        name="gw-weave",
        td=WEAVE,
        listen=[
            ("weave", "weave", weave_listen, False),
            ("federation", "federation", weave_fed, True),
        ],
        peer=("gw-cilium", cilium_fed, CILIUM),
        routes='\n[[routes]]\nscope = "payments/*"\npeer = "gw-cilium"\n',
        export='"orders/*"',
        imports='"payments/*"',
        socket=socket_path(root, "gw-weave"),
    )
    cilium_cfg = _gateway_config(
        name="gw-cilium",
        td=CILIUM,
        listen=[
            ("federation", "federation", cilium_fed, True),
            ("cilium", "cilium", cilium_local, False),
        ],
        peer=("gw-weave", weave_fed, WEAVE),
        routes=(
            f'\n[[routes]]\nscope = "payments/*"\nnetwork = "cilium"\n'
            f'address = "127.0.0.1:{receiver}"\n'
        ),
        export='"payments/*"',
        imports='"orders/*"',
        socket=socket_path(root, "gw-cilium"),
    )
    return Topology(
        root=root,
        weave_ca=weave_ca,
        cilium_ca=cilium_ca,
        weave_config=_write(root / "gw-weave.toml", weave_cfg),
        cilium_config=_write(root / "gw-cilium.toml", cilium_cfg),
        weave_listen=weave_listen,
        weave_federation=weave_fed,
        cilium_federation=cilium_fed,
        receiver_port=receiver,
        orders=orders,
        ledger_id=ledger_id,
        anchors_dir=root / "anchors",
        policies=policies,
    )
