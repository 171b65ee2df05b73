"""`sluice anchor` commands: create anchor keys, endorse them with an X.509-SVID, show either.

Exit statuses follow gateway/cli/common.py: 0 done, 1 ``show --bundle`` found the endorsement
INVALID, 2 usage error, 3 an input could not be read or parsed (one line, no traceback).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from pathlib import Path

import click
from cryptography import x509

from config.policy import DEFAULT_TIERS
from gateway.cli.common import EXIT_REFUSED, UserFacingError, one_line_errors
from identity.anchor_contract import key_id
from identity.anchors import (
    AnchorKeyError,
    AnchorKeyPair,
    load_public_key,
    parse_private_pem,
    parse_public_pem,
    save_private_key,
    save_public_key,
    write_file_atomic,
)
from identity.bundle import BundleSet, InvalidBundle, TrustBundle, load_bundle_file
from identity.endorsement import (
    MAX_ENDORSEMENT_BYTES,
    MAX_ENDORSEMENT_LIFETIME,
    MAX_TIER,
    Endorsement,
    EndorsementProblem,
    InvalidEndorsement,
    decode_unverified,
    endorse,
    verify_endorsement,
)
from identity.spiffe_id import InvalidSpiffeID, TrustDomain, parse_trust_domain
from identity.x509svid import InvalidSVID, load_x509svid_files

_DURATION = re.compile(r"([0-9]{1,9})([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_USER_ERRORS = (AnchorKeyError, InvalidEndorsement, InvalidSVID, InvalidBundle, InvalidSpiffeID)


@click.group(name="anchor")
def anchor() -> None:
    """Governance anchors: Ed25519 keys endorsed by a workload's X.509-SVID."""


@anchor.command(name="new")
@click.option(
    "--out", "out", required=True, type=click.Path(path_type=Path), help="Private key (PEM)."
)
@click.option(
    "--public", "public", type=click.Path(path_type=Path), help="Also write the public key."
)
@click.option("--force", is_flag=True, help="Overwrite existing files.")
@one_line_errors(*_USER_ERRORS)
def new(out: Path, public: Path | None, force: bool) -> None:
    """Create an anchor key; write it (PKCS#8 PEM, mode 0600) and print its key id in hex."""
    if public is not None and public.resolve() == out.resolve():
        raise UserFacingError("--out and --public must be different files")
    pair = AnchorKeyPair.generate()
    save_private_key(pair, out, overwrite=force)
    if public is not None:
        save_public_key(pair.public_key, public, overwrite=force)
    click.echo(pair.kid.hex())


@anchor.command(name="endorse")
@click.option(
    "--anchor-public",
    required=True,
    type=click.Path(path_type=Path),
    help="The anchor's public key (SPKI PEM) or private key (PKCS#8 PEM).",
)
@click.option(
    "--svid", required=True, type=click.Path(path_type=Path), help="X.509-SVID chain (PEM)."
)
@click.option(
    "--svid-key",
    type=click.Path(path_type=Path),
    help="The SVID's private key (PKCS#8 PEM); default: the key in the --svid file.",
)
@click.option("--scope", "scopes", multiple=True, required=True, help="Scope pattern (repeatable).")
@click.option(
    "--max-tier", required=True, help="Highest trust tier: 0..255 or a name (public, ...)."
)
@click.option("--valid-for", default="24h", show_default=True, help="Duration: 3600, 90m, 24h, 7d.")
@click.option("--not-before", type=int, help="Start, unix seconds (default: now).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Endorsement file.")
@click.option("--force", is_flag=True, help="Overwrite an existing --out file.")
@one_line_errors(*_USER_ERRORS)
def endorse_cmd(
    anchor_public: Path,
    svid: Path,
    svid_key: Path | None,
    scopes: tuple[str, ...],
    max_tier: str,
    valid_for: str,
    not_before: int | None,
    out: Path,
    force: bool,
) -> None:
    """Endorse an anchor key with a workload's X.509-SVID and write the endorsement to --out."""
    tier = _parse_tier(max_tier)
    lifetime = _parse_duration(valid_for)
    raw = _read_anchor_public(anchor_public)
    loaded = load_x509svid_files(svid, svid_key or svid)
    start = int(time.time()) if not_before is None else not_before
    data = endorse(raw, loaded, scopes, tier, start, start + lifetime)
    write_file_atomic(out, data, overwrite=force)
    leaf_end = min(int(c.not_valid_after_utc.timestamp()) for c in loaded.chain)
    click.echo(f"endorsed anchor {key_id(raw).hex()} for {loaded.spiffe_id}")
    if leaf_end < start + lifetime:
        click.echo(
            f"note: the SVID chain expires at {_when(leaf_end)}; the anchor is honoured only "
            "until then (re-endorse after the SVID rotates)",
            err=True,
        )


@anchor.command(name="show")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--bundle",
    "bundles",
    multiple=True,
    help="Verify with this trust bundle: [TRUST_DOMAIN=]PATH (PEM or SPIFFE JSON); without a "
    "trust domain, the bundle is taken as the endorsed SPIFFE ID's own. Repeatable.",
)
@click.option("--at", "at", type=int, help="Check at this unix time instead of now.")
@one_line_errors(*_USER_ERRORS)
def show(file: Path, bundles: tuple[str, ...], at: int | None) -> None:
    """Show an anchor key (PEM) or an endorsement; with --bundle, verify it (exit 1 if INVALID)."""
    data = _read(file, MAX_ENDORSEMENT_BYTES)
    if b"-----BEGIN " in data[:4096]:
        if bundles:
            raise UserFacingError(f"{file}: --bundle applies to endorsements, not to keys")
        _show_key(file, data)
        return
    endorsement = decode_unverified(data)
    _show_endorsement(endorsement)
    if not bundles:
        click.echo("status:      not verified (pass --bundle to verify)")
        return
    now = int(time.time()) if at is None else at
    bundle_set = _bundle_set(bundles, endorsement.spiffe_id.trust_domain)
    try:
        verified = verify_endorsement(data, bundle_set, now=now)
        if verified.effective_not_after <= now:
            raise InvalidEndorsement(
                EndorsementProblem.EXPIRED, f"ended at {_when(verified.effective_not_after)}"
            )
    except InvalidEndorsement as exc:
        click.echo(f"status:      INVALID: {exc}")
        click.get_current_context().exit(EXIT_REFUSED)
    click.echo(
        f"effective:   {_when(verified.effective_not_before)} .. "
        f"{_when(verified.effective_not_after)}"
    )
    pending = " (not yet in its validity window)" if now < verified.effective_not_before else ""
    click.echo(f"status:      VALID{pending}")


def _show_key(file: Path, data: bytes) -> None:
    if b"PRIVATE KEY-----" in data:
        raw = parse_private_pem(data, source=str(file)).public_key
        kind = "anchor private key"
    else:
        raw = parse_public_pem(data, source=str(file))
        kind = "anchor public key"
    click.echo(f"type:        {kind}")
    click.echo(f"kid:         {key_id(raw).hex()}")
    click.echo(f"public key:  {raw.hex()}")


def _show_endorsement(e: Endorsement) -> None:
    click.echo("type:        endorsement")
    click.echo(f"kid:         {e.kid.hex()}")
    click.echo(f"anchor key:  {e.anchor_public_key.hex()}")
    click.echo(f"spiffe id:   {e.spiffe_id}")
    click.echo(f"scopes:      {', '.join(e.scopes)}")
    click.echo(f"max tier:    {DEFAULT_TIERS.label(e.max_tier)}")
    click.echo(f"validity:    {_when(e.not_before)} .. {_when(e.not_after)}")
    for index, cert in enumerate(e.chain):
        label = "chain:" if index == 0 else ""
        click.echo(f"{label:<12} [{index}] {_describe(cert)}")


def _describe(cert: x509.Certificate) -> str:
    subject = cert.subject.rfc4514_string() or "(empty subject)"
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    uri = f" {uris[0]}" if uris else ""
    return f"{subject}{uri} (until {_when(int(cert.not_valid_after_utc.timestamp()))})"


def _bundle_set(specs: tuple[str, ...], default: TrustDomain) -> BundleSet:
    bundles: list[TrustBundle] = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if sep and name and "/" not in name:
            domain = parse_trust_domain(name)
        else:
            domain, path = default, spec
        bundles.append(load_bundle_file(Path(path), domain))
    try:
        return BundleSet(bundles)
    except ValueError as exc:
        raise UserFacingError(f"--bundle: {exc}") from None


def _read_anchor_public(path: Path) -> bytes:
    data = _read(path, 16 * 1024)
    if b"PRIVATE KEY-----" in data:
        return parse_private_pem(data, source=str(path)).public_key
    return load_public_key(path)


def _parse_tier(text: str) -> int:
    if text.isdigit():
        value = int(text)
        if value > MAX_TIER:
            raise UserFacingError(f"--max-tier: {value} is not 0..{MAX_TIER}", exit_code=2)
        return value
    value_of = DEFAULT_TIERS.value_of(text)
    if value_of is None:
        known = ", ".join(name for name, _ in DEFAULT_TIERS.names)
        raise UserFacingError(
            f"--max-tier: unknown tier {text!r} (known: {known}, or a number 0..{MAX_TIER})",
            exit_code=2,
        )
    return value_of


def _parse_duration(text: str) -> int:
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise UserFacingError(
            f"--valid-for: {text!r} is not a duration like 3600, 90m, 24h or 7d", exit_code=2
        )
    seconds = int(match[1]) * _UNIT_SECONDS[match[2]]
    if not 0 < seconds <= MAX_ENDORSEMENT_LIFETIME:
        raise UserFacingError(
            f"--valid-for: must be more than 0 and at most {MAX_ENDORSEMENT_LIFETIME // 86400} "
            f"days, got {seconds} s",
            exit_code=2,
        )
    return seconds


def _read(path: Path, limit: int) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise UserFacingError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(data) > limit:
        raise UserFacingError(f"{path}: larger than {limit} bytes")
    return data


def _when(unix: int) -> str:
    try:
        stamp = dt.datetime.fromtimestamp(unix, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (ValueError, OverflowError, OSError):  # beyond year 9999: the number alone
        return str(unix)
    return f"{stamp} ({unix})"
