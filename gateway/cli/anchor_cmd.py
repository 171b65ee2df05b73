"""`sluice anchor` commands."""

from __future__ import annotations

import click


@click.group(name="anchor")
def anchor() -> None:
    """anchor commands."""
