"""`sluice firstboot`: the appliance's configuration from user data (run by
sluice-firstboot.service once per machine; see appliance/firstboot.py for the formats)."""

from __future__ import annotations

import grp
from pathlib import Path

import click

from appliance.firstboot import (
    CONFIG_NAME,
    DEFAULT_SOURCES,
    ETC_DIR,
    UserDataError,
    check_installed,
    install_files,
    mark_done,
    parse_user_data,
    read_user_data,
)
from config.errors import ConfigError
from gateway.cli.common import EXIT_REFUSED, UserFacingError

PREFIX = "sluice-firstboot"


def _gid(group: str) -> int | None:
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        return None


@click.command(name="firstboot")
@click.option(
    "--user-data",
    "user_data",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read this file instead of searching the usual sources (seed file, cloud-init, fw_cfg).",
)
@click.option(
    "--etc-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=ETC_DIR,
    show_default=True,
    help="Where the configuration is written.",
)
@click.option(
    "--group",
    default="sluice",
    show_default=True,
    help="Group given read access to the files written (skipped when it does not exist).",
)
def firstboot(user_data: Path | None, etc_dir: Path, group: str) -> None:
    """Write the configuration from user data into ETC_DIR, check it as `sluice config check`
    does, and mark first boot done.

    Without user data, an existing ETC_DIR/sluice.toml (baked into the image) is checked instead.
    Exit status: 0 configured; 1 the configuration is invalid (problems printed one per line, then
    one summary line); 3 the user data is missing, unreadable or malformed.
    """
    sources = (user_data,) if user_data is not None else DEFAULT_SOURCES
    target = etc_dir / CONFIG_NAME
    try:
        found = read_user_data(sources)
        if found is None:
            if not target.exists():
                raise UserFacingError(
                    f"{PREFIX}: no user data and no {target}; looked in: "
                    + ", ".join(str(s) for s in sources)
                )
            origin = f"{target} (already present)"
        else:
            path, raw = found
            files = parse_user_data(raw, str(path))
            etc_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
            install_files(files, etc_dir, _gid(group))
            origin = str(path)
    except UserDataError as exc:
        raise UserFacingError(f"{PREFIX}: {exc}") from None
    except OSError as exc:
        raise UserFacingError(
            f"{PREFIX}: cannot write to {etc_dir}: {exc.strerror or exc}"
        ) from None
    try:
        cfg = check_installed(etc_dir)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        click.echo(
            f"{PREFIX}: {target}: invalid configuration from {origin} "
            f"({len(exc.problems)} problem(s) above); sluice.service will not start",
            err=True,
        )
        raise SystemExit(EXIT_REFUSED) from None
    mark_done(etc_dir)
    click.echo(f"{PREFIX}: {target} written from {origin} and checked: ok: {cfg.summary()}")
