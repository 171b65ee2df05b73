"""What every sluice command shares: one-line errors with a stable exit status, no tracebacks."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import click

P = ParamSpec("P")
R = TypeVar("R")

# Exit statuses: 1 = the thing checked was refused (envelope denied, config invalid, chain broken);
# 2 = usage error (click's own); 3 = an input could not be read or parsed.
EXIT_REFUSED = 1
EXIT_BAD_INPUT = 3


class UserFacingError(click.ClickException):
    """A mistake in the user's input: printed as one line ``error: ...``, never a traceback."""

    def __init__(self, message: str, exit_code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        # click declares exit_code as a class variable; each error carries its own status.
        vars(self)["exit_code"] = exit_code

    def show(self, file: object = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def one_line_errors(*kinds: type[BaseException]) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Turn the listed exception kinds into :class:`UserFacingError` (one line, exit 3)."""

    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def inner(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return fn(*args, **kwargs)
            except kinds as exc:
                first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise UserFacingError(first_line) from exc

        return inner

    return wrap
