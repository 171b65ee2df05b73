"""`sluice audit` commands: verify a log's hash chain, and show its records filtered."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import click

from gateway.audit import AuditEntry, AuditFilter, AuditFormatError, Decision, read_entries
from gateway.audit import verify as verify_log
from gateway.audit.graph import GraphFilter, graph_from_log
from gateway.audit.html import render_html
from gateway.audit.render import render_dot, render_json
from gateway.cli.audit_replay_cmd import evidence_group, replay_cmd
from gateway.cli.common import EXIT_REFUSED, UserFacingError

_COLUMNS = ("seq", "time", "decision", "reason", "envelope", "scopes", "from", "to", "rule")


@click.group(name="audit")
def audit() -> None:
    """Verify and inspect audit logs."""


def _existing(path: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise UserFacingError(f"{path}: no such file")
    return p


@audit.command(name="verify")
@click.argument("file")
def verify_cmd(file: str) -> None:
    """Check FILE's hash chain; print the first broken link and exit 1 if there is one."""
    path = _existing(file)
    try:
        report = verify_log(path)
    except OSError as exc:
        raise UserFacingError(f"{file}: cannot read: {exc.strerror}") from None
    if report.broken is not None:
        click.echo(f"broken: {file}: {report.broken}")
        raise SystemExit(EXIT_REFUSED)
    last = report.last_hash.hex() if report.last_hash else "(empty log)"
    click.echo(f"ok: {report.records} records, last hash {last}")


def _parse_time(value: str | None, option: str) -> int | None:
    """Unix seconds (``1717000000`` or ``1717000000.5``) or ISO 8601 (UTC if no offset) -> ms."""
    if value is None:
        return None
    try:
        return int(float(value) * 1000)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise UserFacingError(
            f"{option}: {value!r} is neither unix seconds nor an ISO 8601 time"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


def _row(entry: AuditEntry) -> tuple[str, ...]:
    r = entry.record
    when = dt.datetime.fromtimestamp(entry.ts_ms / 1000, dt.UTC)
    return (
        str(entry.seq),
        when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{entry.ts_ms % 1000:03d}Z",
        r.decision.value,
        r.reason,
        r.envelope_id.hex(),
        f"{r.origin_scope}->{r.destination_scope}",
        r.from_,
        r.to or "-",
        r.rule or "-",
    )


@audit.command(name="show")
@click.argument("file")
@click.option("--scope", default=None, help="Origin or destination scope.")
@click.option("--peer", default=None, help="Network or peer on either side (from or to).")
@click.option("--decision", type=click.Choice(["allow", "deny"]), default=None)
@click.option("--envelope-id", default=None, help="Envelope id, 32 hex digits.")
@click.option("--since", default=None, help="Inclusive start: unix seconds or ISO 8601.")
@click.option("--until", default=None, help="Exclusive end: unix seconds or ISO 8601.")
@click.option("--json", "as_json", is_flag=True, help="Print matching lines as JSON Lines.")
def show_cmd(
    file: str,
    scope: str | None,
    peer: str | None,
    decision: str | None,
    envelope_id: str | None,
    since: str | None,
    until: str | None,
    as_json: bool,
) -> None:
    """Print FILE's records that match every given filter (the chain is not checked: use
    ``sluice audit verify`` for that)."""
    path = _existing(file)
    wanted_id = None
    if envelope_id is not None:
        try:
            wanted_id = bytes.fromhex(envelope_id)
        except ValueError:
            raise UserFacingError("--envelope-id: not hexadecimal") from None
        if len(wanted_id) != 16:
            raise UserFacingError("--envelope-id: expected 16 bytes (32 hex digits)")
    flt = AuditFilter(
        scope=scope,
        peer=peer,
        decision=Decision(decision) if decision else None,
        envelope_id=wanted_id,
        since_ms=_parse_time(since, "--since"),
        until_ms=_parse_time(until, "--until"),
    )
    rows: list[tuple[str, ...]] = []
    try:
        for entry in read_entries(path):
            if not flt.matches(entry):
                continue
            if as_json:
                click.echo(json.dumps(entry.to_json(), sort_keys=True, separators=(",", ":")))
            else:
                rows.append(_row(entry))
    except AuditFormatError as exc:
        raise UserFacingError(str(exc)) from None
    except OSError as exc:
        raise UserFacingError(f"{file}: cannot read: {exc.strerror}") from None
    if not as_json:
        _print_table(rows)


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(_COLUMNS)]
    click.echo("  ".join(c.ljust(w) for c, w in zip(_COLUMNS, widths, strict=True)).rstrip())
    for row in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    click.echo(f"({len(rows)} records)")


@audit.command(name="graph")
@click.argument("file")
@click.option("--format", "fmt", type=click.Choice(["dot", "json", "html"]), default="dot",
              show_default=True, help="Graphviz DOT, a JSON document, or an interactive page.")
@click.option("--out", default=None, help="Write to this file instead of standard output.")
@click.option("--scope", default=None, help="Only flows from or to this scope.")
@click.option("--trust-domain", default=None, help="Issuer's or gateway's trust domain.")
@click.option("--decision", type=click.Choice(["allow", "deny"]), default=None)
@click.option("--since", default=None, help="Inclusive start: unix seconds or ISO 8601.")
@click.option("--until", default=None, help="Exclusive end: unix seconds or ISO 8601.")
def graph_cmd(
    file: str,
    fmt: str,
    out: str | None,
    scope: str | None,
    trust_domain: str | None,
    decision: str | None,
    since: str | None,
    until: str | None,
) -> None:
    """Draw FILE's governance flow: scopes, trust domains, gateways and policy revisions, with
    allowed and refused flows aggregated per edge (the chain is not checked: use
    ``sluice audit verify`` for that)."""
    path = _existing(file)
    flt = GraphFilter(
        scope=scope,
        trust_domain=trust_domain,
        decision=Decision(decision) if decision else None,
        since_ms=_parse_time(since, "--since"),
        until_ms=_parse_time(until, "--until"),
    )
    try:
        graph = graph_from_log(path, flt)
    except AuditFormatError as exc:
        raise UserFacingError(str(exc)) from None
    except OSError as exc:
        raise UserFacingError(f"{file}: cannot read: {exc.strerror}") from None
    if fmt == "html":
        data = render_html(graph)
    elif fmt == "json":
        data = (render_json(graph) + "\n").encode()
    else:
        data = render_dot(graph).encode()
    if out is None:
        click.echo(data, nl=False)
        return
    try:
        Path(out).write_bytes(data)
    except OSError as exc:
        raise UserFacingError(f"{out}: cannot write: {exc.strerror}") from None
    click.echo(f"wrote {out}: {graph.records} decisions, {len(graph.flows)} flows", err=True)


audit.add_command(replay_cmd)
audit.add_command(evidence_group)
