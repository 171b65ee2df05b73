"""`sluice appliance` commands: plan, diff, apply and teardown of the appliance's network.

These commands do blocking rtnetlink I/O and never start an event loop.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import click

from appliance.apply import ApplyError, NetnsNotFound, Target, converge, pending
from appliance.diff import Change, Conflict, MissingLink
from appliance.netconfig import ApplianceNetConfig, from_mapping
from appliance.plan import Operation, plan
from appliance.state import StateFileError
from config.errors import ConfigError
from gateway.cli.common import EXIT_BAD_INPUT, EXIT_REFUSED, UserFacingError

# The appliance's network lives in this table of the configuration file.
SECTION = "appliance"

config_option = click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML file with an [appliance] table.",
)
netns_option = click.option(
    "--netns", default=None, metavar="NAME", help="Act inside this named network namespace."
)
state_option = click.option(
    "--state",
    "state_path",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="State file (default /var/lib/sluice/appliance-net[.NETNS].json).",
)


def load_config(path: Path) -> ApplianceNetConfig:
    """Read and validate the [appliance] table of ``path``.

    Raises:
        UserFacingError: unreadable file or bad TOML (exit 3); invalid configuration (exit 1,
            every problem printed, one per line).
    """
    try:
        with path.open("rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise UserFacingError(f"{path}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise UserFacingError(f"{path}: not valid TOML: {exc}") from exc
    if SECTION not in doc:
        raise UserFacingError(f"{path}: missing [{SECTION}] table", EXIT_REFUSED)
    try:
        return from_mapping(doc[SECTION], prefix=SECTION, file=path)
    except ConfigError as exc:
        for problem in exc.problems[:-1]:
            click.echo(f"error: {problem}", err=True)
        raise UserFacingError(str(exc.problems[-1]), EXIT_REFUSED) from exc


def _planned(config_path: Path) -> tuple[Operation, ...]:
    return plan(load_config(config_path))


def _run(fn_name: str, ops: tuple[Operation, ...], target: Target) -> tuple[Change, ...]:
    try:
        return pending(ops, target) if fn_name == "diff" else converge(ops, target)
    except (NetnsNotFound, StateFileError) as exc:
        raise UserFacingError(str(exc), EXIT_BAD_INPUT) from exc
    except (MissingLink, Conflict, ApplyError) as exc:
        raise UserFacingError(str(exc), EXIT_REFUSED) from exc


def _report(changes: tuple[Change, ...]) -> None:
    if not changes:
        click.echo("no changes")
    for change in changes:
        click.echo(str(change))


@click.group(name="appliance")
def appliance() -> None:
    """The appliance's network: links, addresses, routes, VXLAN VTEP, sysctls."""


@appliance.command(name="plan")
@config_option
def plan_cmd(config_path: Path) -> None:
    """Print the desired network state (reads nothing from the machine)."""
    for op in _planned(config_path):
        click.echo(str(op))


@appliance.command(name="diff")
@config_option
@netns_option
@state_option
@click.option("--exit-code", is_flag=True, help="Exit with status 1 when there are changes.")
def diff_cmd(
    config_path: Path, netns: str | None, state_path: Path | None, exit_code: bool
) -> None:
    """Print what apply would change."""
    changes = _run("diff", _planned(config_path), Target.of(netns, state_path))
    _report(changes)
    if exit_code and changes:
        raise SystemExit(EXIT_REFUSED)


@appliance.command(name="apply")
@config_option
@netns_option
@state_option
def apply_cmd(config_path: Path, netns: str | None, state_path: Path | None) -> None:
    """Converge the network to the plan; running it again changes nothing."""
    _report(_run("apply", _planned(config_path), Target.of(netns, state_path)))


@appliance.command(name="teardown")
@netns_option
@state_option
def teardown_cmd(netns: str | None, state_path: Path | None) -> None:
    """Remove exactly what apply created and restore the values it changed (needs only the
    state file, so it works even after the configuration was changed or broken)."""
    _report(_run("teardown", (), Target.of(netns, state_path)))
