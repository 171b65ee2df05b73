"""`sluice config` commands."""

from __future__ import annotations

from pathlib import Path

import click

from config.errors import ConfigError
from config.gateway import gateway_config_from_document
from config.source import MAX_CONFIG_BYTES, parse_toml_bytes
from gateway.cli.common import EXIT_REFUSED, UserFacingError


@click.group(name="config")
def config() -> None:
    """Check configuration files."""


@config.command(name="check")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=True))
@click.option(
    "--skip-files",
    is_flag=True,
    help="Do not check that referenced files (keys, bundles, policies) exist and are readable.",
)
def check(file: Path, skip_files: bool) -> None:
    """Check the gateway config FILE and print every problem, one per line.

    Each line reads ``file:line: key.path: what was expected``. Exit status: 0 when valid (with a
    one-line summary), 1 when there are problems, 3 when FILE cannot be read.
    """
    try:
        with file.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise UserFacingError(f"cannot read {file}: {exc.strerror or exc}") from exc
    try:
        doc = parse_toml_bytes(raw, file)
        cfg = gateway_config_from_document(doc, check_files=not skip_files)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(str(problem))
        raise SystemExit(EXIT_REFUSED) from None
    click.echo(f"ok: {cfg.summary()}")
