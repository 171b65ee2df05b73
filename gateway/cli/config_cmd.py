"""`sluice config` commands."""

from __future__ import annotations

import click


@click.group(name="config")
def config() -> None:
    """config commands."""
