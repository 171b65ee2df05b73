"""Reading TOML files into plain mappings, with the line of every key kept for error messages.

``tomllib`` gives values but no positions, so :class:`LineIndex` makes one light pass over the text
to remember where each table header and ``key =`` line is. It understands what config files use:
``[table]``, ``[[array.of.tables]]``, bare, quoted and dotted keys. Values inside inline tables or
multi-line arrays are attributed to the line of their key, which is what a person looks for.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from config.errors import ConfigError, ConfigProblem

MAX_CONFIG_BYTES = 4 * 1024 * 1024

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(
    r"""^\s*((?:[A-Za-z0-9_\-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_\-]+|"[^"]*"|'[^']*'))*)\s*="""
)
_TOML_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")


def _split_dotted(text: str) -> list[str]:
    parts = re.findall(r"""[A-Za-z0-9_\-]+|"[^"]*"|'[^']*'""", text)
    return [p[1:-1] if p[:1] in "\"'" else p for p in parts]


@dataclass(slots=True)
class LineIndex:
    """Maps key paths (``peers[2].bundle``) to 1-based line numbers."""

    lines: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_text(cls, text: str) -> LineIndex:
        index = cls()
        array_counts: dict[str, int] = {}
        table = ""
        in_multiline = False
        for number, raw in enumerate(text.splitlines(), start=1):
            # Skip the bodies of multi-line strings; a key never starts inside one.
            if in_multiline:
                if raw.count('"""') % 2 == 1 or raw.count("'''") % 2 == 1:
                    in_multiline = False
                continue
            header = _HEADER.match(raw)
            if header and "=" not in raw.split("]")[0]:
                keys = _split_dotted(header.group(2))
                if header.group(1) == "[[":
                    base = _join(_resolve_arrays(keys[:-1], array_counts), keys[-1])
                    count = array_counts.get(base, 0)
                    array_counts[base] = count + 1
                    table = f"{base}[{count}]"
                else:
                    table = _resolve_arrays(keys, array_counts)
                index.lines.setdefault(table, number)
                continue
            key = _KEY.match(raw)
            if key:
                path = _join(table, ".".join(_split_dotted(key.group(1))))
                index.lines.setdefault(path, number)
                if raw.count('"""') % 2 == 1 or raw.count("'''") % 2 == 1:
                    in_multiline = True
        return index

    def line_of(self, key_path: str) -> int | None:
        """The line of ``key_path``, or of its nearest enclosing key or table."""
        path = key_path
        while path:
            if path in self.lines:
                return self.lines[path]
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return None


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _resolve_arrays(keys: list[str], array_counts: dict[str, int]) -> str:
    """A header ``[peers.tls]`` after ``[[peers]]`` refers to the latest ``peers`` element."""
    path = ""
    for key in keys:
        path = _join(path, key)
        if path in array_counts:
            path = f"{path}[{array_counts[path] - 1}]"
    return path


@dataclass(frozen=True, slots=True)
class TomlDocument:
    """A parsed TOML file: its path, its data and where each key stands."""

    path: Path
    data: dict[str, Any]
    index: LineIndex


def load_toml(path: Path | str) -> TomlDocument:
    """Read and parse a TOML file.

    Raises:
        ConfigError: the file is missing, unreadable, too large, not UTF-8, or not valid TOML
            (with tomllib's line and column).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()[: MAX_CONFIG_BYTES + 1]
    except OSError as exc:
        raise ConfigError(
            [ConfigProblem(path, "", f"cannot read file: {exc.strerror or exc}")]
        ) from exc
    return parse_toml_bytes(raw, path)


def parse_toml_bytes(raw: bytes, path: Path) -> TomlDocument:
    """Parse TOML from bytes already read from ``path`` (used for cloud-init user data too)."""
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            [ConfigProblem(path, "", f"file is larger than {MAX_CONFIG_BYTES} bytes")]
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [ConfigProblem(path, "", f"not UTF-8 text (invalid byte at offset {exc.start})")]
        ) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        position = _TOML_POSITION.search(message)
        line = int(position.group(1)) if position else None
        message = _TOML_POSITION.sub("", message).strip()
        raise ConfigError([ConfigProblem(path, "", f"invalid TOML: {message}", line)]) from exc
    return TomlDocument(path, data, LineIndex.from_text(text))
