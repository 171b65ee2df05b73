"""Configuration errors that name the file, the key path, what was expected, and the line."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One mistake in one file.

    ``key_path`` reads like ``peers[2].bundle``; ``line`` is the 1-based line where the key (or its
    table) appears, when it could be found.
    """

    file: Path | str
    key_path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else f"{self.file}"
        key = f" {self.key_path}:" if self.key_path else ""
        return f"{where}:{key} {self.message}"


class ConfigError(ValueError):
    """One or more problems in a configuration file; ``str()`` is one line per problem."""

    def __init__(self, problems: Iterable[ConfigProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))
