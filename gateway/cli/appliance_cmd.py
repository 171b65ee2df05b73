"""`sluice appliance` commands."""

from __future__ import annotations

import click


@click.group(name="appliance")
def appliance() -> None:
    """appliance commands."""
