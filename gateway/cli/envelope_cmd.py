"""`sluice envelope` commands: seal an envelope, open (verify + decide) one, and inspect one
without trusting it.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click
import nacl.public

from config.errors import ConfigError
from gateway.cli.common import EXIT_REFUSED, UserFacingError, one_line_errors
from gateway.cli.trust_args import build_registry, echo_warning, parse_bundles
from gateway.envelope import decode_unverified, open_envelope, seal, unseal_payload
from gateway.envelope.model import RoutingConstraint
from gateway.errors import LocalProtocolError, RemoteProtocolError
from gateway.policy import LineageError, decide, explain, load_policy_store
from identity.anchors import AnchorKeyError, load_private_key
from identity.spiffe_id import InvalidSpiffeID, parse_spiffe_id, parse_trust_domain

_MAX_INPUT = 2 * 1024 * 1024


@click.group(name="envelope")
def envelope() -> None:
    """Seal, open and inspect governed envelopes."""


def _read_input(source: str) -> bytes:
    try:
        if source == "-":
            data = sys.stdin.buffer.read(_MAX_INPUT + 1)
        else:
            with Path(source).open("rb") as f:
                data = f.read(_MAX_INPUT + 1)
    except OSError as exc:
        raise UserFacingError(f"{source}: cannot read: {exc.strerror}") from None
    if len(data) > _MAX_INPUT:
        raise UserFacingError(f"{source}: larger than {_MAX_INPUT} bytes")
    return data


def _hex(value: str, size: int, what: str) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise UserFacingError(f"--{what}: not hexadecimal") from None
    if len(raw) != size:
        raise UserFacingError(f"--{what}: expected {size} bytes ({2 * size} hex digits)")
    return raw


@envelope.command(name="seal")
@click.option("--key", "key_file", required=True, help="Anchor private key (PKCS#8 PEM).")
@click.option("--issuer", required=True, help="Issuer SPIFFE ID (the anchor's endorsed ID).")
@click.option("--scope", required=True, help="Origin scope, e.g. payments/checkout.")
@click.option("--to-scope", required=True, help="Destination scope.")
@click.option("--to-id", default=None, help="Destination SPIFFE ID (optional).")
@click.option("--tier", type=click.IntRange(0, 255), required=True)
@click.option("--lineage", required=True, help="Policy lineage hash, 64 hex digits.")
@click.option("--transit-domain", multiple=True, help="Trust domain whose gateways may carry it.")
@click.option("--transit-gateway", multiple=True, help="Gateway SPIFFE ID that may carry it.")
@click.option("--max-hops", type=click.IntRange(0, 16), default=4, show_default=True)
@click.option("--lifetime", type=click.IntRange(1, 3600), default=300, show_default=True)
@click.option("--now", type=int, default=None, help="Issue time (unix seconds); default: now.")
@click.option("--seal-to", default=None, help="Destination X25519 public key, 64 hex digits.")
@click.option("--payload", "payload_src", default="-", show_default=True, help="File or '-'.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True)
@one_line_errors(AnchorKeyError, InvalidSpiffeID, LocalProtocolError)
def seal_cmd(
    key_file: str,
    issuer: str,
    scope: str,
    to_scope: str,
    to_id: str | None,
    tier: int,
    lineage: str,
    transit_domain: tuple[str, ...],
    transit_gateway: tuple[str, ...],
    max_hops: int,
    lifetime: int,
    now: int | None,
    seal_to: str | None,
    payload_src: str,
    output: str,
) -> None:
    """Sign PAYLOAD into a governed envelope written to OUTPUT."""
    key = load_private_key(key_file)
    issued = int(time.time()) if now is None else now
    data = seal(
        issuer=parse_spiffe_id(issuer),
        origin_scope=scope,
        destination_scope=to_scope,
        destination_id=None if to_id is None else parse_spiffe_id(to_id),
        tier=tier,
        lineage=_hex(lineage, 32, "lineage"),
        routing=RoutingConstraint(
            transit_domains=tuple(parse_trust_domain(d) for d in transit_domain),
            transit_gateways=tuple(parse_spiffe_id(g) for g in transit_gateway),
            max_hops=max_hops,
        ),
        issued_at=issued,
        expires_at=issued + lifetime,
        payload=_read_input(payload_src),
        signing_key=key.signing_key,
        seal_to=None if seal_to is None else _hex(seal_to, 32, "seal-to"),
    )
    try:
        Path(output).write_bytes(data)
    except OSError as exc:
        raise UserFacingError(f"{output}: cannot write: {exc.strerror}") from None
    click.echo(f"sealed {len(data)} bytes to {output}", err=True)


def _inspect_json(data: bytes) -> dict[str, Any]:
    env = decode_unverified(data)
    c = env.claims
    return {
        "verified": False,
        "warning": "UNVERIFIED: decoded only; no signature, anchor or policy was checked",
        "kid": env.origin.kid.hex(),
        "claims": {
            "issuer": str(c.issuer),
            "origin_scope": c.origin_scope,
            "destination_scope": c.destination_scope,
            "destination_id": None if c.destination_id is None else str(c.destination_id),
            "tier": c.tier,
            "lineage": c.lineage.hex(),
            "routing": {
                "transit_domains": [str(d) for d in c.routing.transit_domains],
                "transit_gateways": [str(g) for g in c.routing.transit_gateways],
                "max_hops": c.routing.max_hops,
            },
            "issued_at": c.issued_at,
            "expires_at": c.expires_at,
            "envelope_id": c.envelope_id.hex(),
            "payload_digest": c.payload_digest.hex(),
            "payload_length": c.payload_length,
            "sealed": c.sealed,
        },
        "payload_bytes": len(env.payload),
        "stamps": [
            {
                "kid": s.sign1.kid.hex(),
                "gateway": str(s.claims.gateway),
                "hop": s.claims.hop,
                "from_network": s.claims.from_network,
                "to_network": s.claims.to_network,
                "decision": s.claims.decision.value,
                "rule": s.claims.rule,
                "policy_revision": s.claims.policy_revision.hex(),
                "stamped_at": s.claims.stamped_at,
                "envelope_signature_hash": s.claims.envelope_signature_hash.hex(),
                "previous_stamp_hash": s.claims.previous_stamp_hash.hex(),
            }
            for s in env.stamps
        ],
    }


@envelope.command(name="inspect")
@click.argument("file")
def inspect_cmd(file: str) -> None:
    """Decode FILE ('-' for stdin) WITHOUT verifying it and print its contents as JSON."""
    data = _read_input(file)
    try:
        doc = _inspect_json(data)
    except RemoteProtocolError as exc:
        raise UserFacingError(f"{file}: not a well-formed envelope: {exc}") from None
    click.echo(json.dumps(doc, indent=2))


def _load_unseal_key(path: str) -> nacl.public.PrivateKey:
    """An X25519 private key file: 64 hex digits (whitespace around ignored) or 32 raw bytes."""
    try:
        with Path(path).open("rb") as f:
            raw = f.read(200)
    except OSError as exc:
        raise UserFacingError(f"--unseal-key {path}: cannot read: {exc.strerror}") from None
    if len(raw) != 32:
        try:
            raw = bytes.fromhex(raw.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            raw = b""
    if len(raw) != 32:
        raise UserFacingError(
            f"--unseal-key {path}: expected a 32-byte X25519 private key (64 hex digits)"
        )
    return nacl.public.PrivateKey(raw)


@envelope.command(name="open")
@click.argument("file")
@click.option("--bundle", "bundle_specs", multiple=True, help="TRUST_DOMAIN=PATH (repeatable).")
@click.option("--anchors", "anchors_dir", default=None, help="Directory of *.endorsement files.")
@click.option("--endorsement", "endorsements", multiple=True, help="Extra endorsement file.")
@click.option("--policy", "policies", multiple=True, required=True, help="Policy TOML file.")
@click.option("--at", "at", type=int, default=None, help="Verify as of this unix time.")
@click.option("--unseal-key", default=None, help="X25519 private key file (64 hex digits).")
@click.option("--payload-out", default=None, help="Write the (unsealed) payload here if allowed.")
@one_line_errors(ConfigError, LineageError)
def open_cmd(
    file: str,
    bundle_specs: tuple[str, ...],
    anchors_dir: str | None,
    endorsements: tuple[str, ...],
    policies: tuple[str, ...],
    at: int | None,
    unseal_key: str | None,
    payload_out: str | None,
) -> None:
    """Verify FILE ('-' for stdin) completely and decide it against the destination policy.

    Exit status: 0 valid and allowed; 1 refused (the reason code is printed); 3 bad input.
    """
    now = int(time.time()) if at is None else at
    data = _read_input(file)
    bundles = parse_bundles(bundle_specs)
    if anchors_dir is None and not endorsements:
        raise UserFacingError("give --anchors DIR and/or --endorsement FILE")
    registry = build_registry(anchors_dir, endorsements, bundles, now=now, warn=echo_warning)
    store = load_policy_store(policies)
    key = None if unseal_key is None else _load_unseal_key(unseal_key)
    try:
        verified = open_envelope(data, resolver=registry, now=now)
        payload = verified.payload
        if key is not None and verified.claims.sealed:
            payload = unseal_payload(verified, key)
    except RemoteProtocolError as exc:
        click.echo("decision: REFUSED (verification failed)")
        click.echo(f"reason: {exc.reason.value}")
        click.echo(f"detail: {exc.detail}" + (f" at byte {exc.offset}" if exc.offset else ""))
        raise SystemExit(EXIT_REFUSED) from None
    decision = decide(verified, store, now)
    click.echo(f"decision: {'ALLOW' if decision.allow else 'DENY'}")
    click.echo(f"rule: {decision.rule}")
    click.echo(f"reason: {decision.reason.value}")
    click.echo(explain(decision, verified, store, now=now))
    if not decision.allow:
        raise SystemExit(EXIT_REFUSED)
    if payload_out is not None:
        try:
            Path(payload_out).write_bytes(payload)
        except OSError as exc:
            raise UserFacingError(f"{payload_out}: cannot write: {exc.strerror}") from None
