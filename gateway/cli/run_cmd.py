"""``sluice run`` (the daemon) and ``sluice demo`` (the embedded end-to-end walk-through)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import click
import trio

from config.errors import ConfigError
from gateway.cli.common import EXIT_REFUSED, UserFacingError


@click.command(name="run")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The gateway's TOML file (see docs/config.md).",
)
def run(config_path: Path) -> None:
    """Run the gateway daemon until SIGTERM or SIGINT (SIGHUP reloads the config)."""
    from gateway.daemon.main import run_gateway  # noqa: PLC0415 - keep `sluice --help` fast
    from identity.sources import IdentityUnavailable  # noqa: PLC0415

    try:
        trio.run(run_gateway, config_path)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        raise UserFacingError(
            f"{config_path}: {len(exc.problems)} problem(s); not started", EXIT_REFUSED
        ) from exc
    except IdentityUnavailable as exc:
        raise UserFacingError(f"no SVID: {exc}", EXIT_REFUSED) from exc
    except (OSError, ValueError) as exc:
        raise UserFacingError(f"cannot start: {exc}", EXIT_REFUSED) from exc


@click.command(name="demo")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the demo's files here (default: a temporary directory, removed afterwards).",
)
def demo(directory: Path | None) -> None:
    """Two trust domains, two federated gateways, every kind of decision, audit verified."""
    from gateway.demo.run import run_demo  # noqa: PLC0415

    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        ok = run_demo(directory, sys.stdout)
    else:
        with tempfile.TemporaryDirectory(prefix="sluice-demo-") as tmp:
            ok = run_demo(Path(tmp), sys.stdout)
    if not ok:
        raise UserFacingError("the demo did not end as expected", EXIT_REFUSED)
