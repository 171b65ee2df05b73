"""``sluice audit replay`` and ``sluice audit evidence export``: offline replay of audit logs
against an evidence bundle, and writing that bundle from a gateway's configuration."""

from __future__ import annotations

from pathlib import Path

import click

from config.errors import ConfigError
from gateway.audit.capture import CaptureError
from gateway.audit.evidence import EvidenceError, load_evidence
from gateway.audit.evidence_export import IDENTITY_TIMEOUT, export_evidence
from gateway.audit.replay import replay
from gateway.cli.common import EXIT_REFUSED, UserFacingError
from identity.spiffe_id import InvalidSpiffeID, TrustDomain, parse_trust_domain


@click.command(name="replay")
@click.argument("logs", nargs=-1, required=True)
@click.option("--evidence", "evidence_files", multiple=True, required=True,
              help="Evidence bundle (repeat: one per gateway, or several of one period).")
@click.option("--capture", "captures", multiple=True,
              help="Capture file of raw envelope frames (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def replay_cmd(
    logs: tuple[str, ...], evidence_files: tuple[str, ...], captures: tuple[str, ...],
    as_json: bool,
) -> None:  # fmt: skip
    """Re-verify every envelope and re-run every decision of LOGS at its recorded time, offline.

    Exit status: 0 clean, 1 findings, 3 unreadable or malformed input.
    """
    for log in logs:
        if not Path(log).is_file():
            raise UserFacingError(f"{log}: no such file")
    try:
        evidence = [load_evidence(path) for path in evidence_files]
        report = replay(logs, evidence, captures=captures)
    except (EvidenceError, CaptureError) as exc:
        raise UserFacingError(str(exc)) from None
    except OSError as exc:
        raise UserFacingError(f"{exc.filename}: cannot read: {exc.strerror}") from None
    click.echo(report.render_json() if as_json else report.render_text(), nl=as_json)
    if not report.ok:
        raise SystemExit(EXIT_REFUSED)


@click.group(name="evidence")
def evidence_group() -> None:
    """Evidence bundles for offline replay."""


def _bundle_option(values: tuple[str, ...]) -> dict[TrustDomain, Path]:
    out: dict[TrustDomain, Path] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not path:
            raise UserFacingError(f"--bundle {value!r}: TRUST_DOMAIN=FILE expected")
        try:
            out[parse_trust_domain(name)] = Path(path)
        except InvalidSpiffeID as exc:
            raise UserFacingError(f"--bundle {value!r}: {exc}") from None
    return out


@evidence_group.command(name="export")
@click.option("--config", "config_path", required=True, help="The gateway's TOML config.")
@click.option("--out", required=True, help="Where to write the evidence bundle (JSON).")
@click.option("--bundle", "bundles", multiple=True,
              help="TRUST_DOMAIN=FILE: a trust bundle to include (e.g. the gateway's own trust "
                   "domain when its Workload API is not reachable). Repeatable.")
@click.option("--identity-timeout", type=float, default=IDENTITY_TIMEOUT, show_default=True,
              help="Seconds to wait for the Workload API.")
def export_cmd(
    config_path: str, out: str, bundles: tuple[str, ...], identity_timeout: float
) -> None:  # fmt: skip
    """Write the evidence bundle (trust bundles, endorsements, signed policy revisions,
    revocations, peers and routes) of the gateway configured by --config."""
    try:
        evidence = export_evidence(
            config_path, out, extra_bundles=_bundle_option(bundles),
            identity_timeout=identity_timeout,
        )  # fmt: skip
    except (ConfigError, EvidenceError) as exc:
        raise UserFacingError(str(exc).splitlines()[0]) from None
    revisions = sum(len(docs) for _scope, docs in evidence.policy_revisions)
    click.echo(
        f"wrote {out}: gateway {evidence.gateway}, {len(evidence.bundles)} trust bundles, "
        f"{len(evidence.endorsements)} endorsements, {revisions} signed policy revisions"
    )
