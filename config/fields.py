"""A reader for one TOML table that collects every problem instead of stopping at the first.

Schemas are written as plain functions over :class:`Fields`::

    def peer_from(fields: Fields) -> Peer:
        peer = Peer(name=fields.string("name"), port=fields.integer("port", low=1, high=65535))
        fields.finish()          # unknown keys are problems too
        return peer

Each accessor returns a value of the promised type; when the key is missing or wrong it records a
:class:`ConfigProblem` (file, key path, line, what was expected) and returns a harmless placeholder,
so one pass reports every mistake. :meth:`Context.raise_if_problems` turns them into a
:class:`ConfigError` before a half-built config can be used.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from config.errors import ConfigError, ConfigProblem
from config.source import LineIndex, TomlDocument
from identity.spiffe_id import (
    InvalidSpiffeID,
    SpiffeID,
    TrustDomain,
    parse_spiffe_id,
    parse_trust_domain,
)

T = TypeVar("T")

_TYPE_NAMES: dict[type, str] = {
    str: "a string",
    int: "an integer",
    bool: "a boolean (true or false)",
    float: "a number",
    list: "an array",
    dict: "a table",
}

_PLACEHOLDER_SPIFFE_ID = SpiffeID(TrustDomain("invalid"), "")


@dataclass(slots=True)
class Context:
    """Where problems are collected for one file."""

    file: Path
    index: LineIndex = field(default_factory=LineIndex)
    problems: list[ConfigProblem] = field(default_factory=list)

    @classmethod
    def for_document(cls, doc: TomlDocument) -> Context:
        return cls(doc.path, doc.index)

    def problem(self, key_path: str, message: str) -> None:
        self.problems.append(
            ConfigProblem(self.file, key_path, message, self.index.line_of(key_path))
        )

    def raise_if_problems(self) -> None:
        if self.problems:
            raise ConfigError(self.problems)


class Fields:
    """Typed access to one table at ``path`` (``""`` for the document root)."""

    def __init__(self, table: Mapping[str, Any], path: str, ctx: Context) -> None:
        self._table = table
        self._path = path
        self._ctx = ctx
        self._read: set[str] = set()

    @property
    def path(self) -> str:
        return self._path

    @property
    def context(self) -> Context:
        return self._ctx

    def key_path(self, key: str) -> str:
        return f"{self._path}.{key}" if self._path else key

    def problem(self, key: str, message: str) -> None:
        """Record a problem about ``key`` of this table (``""`` for the table itself)."""
        self._ctx.problem(self.key_path(key) if key else self._path, message)

    def has(self, key: str) -> bool:
        return key in self._table

    def key_names(self) -> tuple[str, ...]:
        """This table's keys in file order (for tables whose keys are data, such as maps)."""
        return tuple(self._table)

    # -- scalars -----------------------------------------------------------------------------

    def _typed(self, key: str, kind: type[T], default: T | None, placeholder: T) -> T:
        self._read.add(key)
        if key not in self._table:
            if default is None:
                self.problem(key, f"missing required key (expected {_TYPE_NAMES[kind]})")
                return placeholder
            return default
        value = self._table[key]
        # bool is an int in Python; TOML keeps them apart, and so do we.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.problem(key, f"expected {_TYPE_NAMES[kind]}, found {_describe(value)}")
            return placeholder
        return value

    def string(
        self,
        key: str,
        default: str | None = None,
        *,
        choices: Iterable[str] | None = None,
        max_length: int = 1024,
        check: Callable[[str], str | None] | None = None,
    ) -> str:
        value = self._typed(key, str, default, "")
        if key not in self._table:
            return value
        if len(value.encode()) > max_length:
            self.problem(key, f"longer than {max_length} bytes")
        elif choices is not None and value not in (options := tuple(choices)):
            self.problem(
                key, f"expected one of {', '.join(repr(o) for o in options)}, found {value!r}"
            )
        elif check is not None and (why := check(value)) is not None:
            self.problem(key, why)
        return value

    def integer(self, key: str, default: int | None = None, *, low: int, high: int) -> int:
        value = self._typed(key, int, default, low)
        if key in self._table and isinstance(value, int) and not low <= value <= high:
            self.problem(key, f"expected an integer from {low} to {high}, found {value}")
            return low
        return value

    def number(self, key: str, default: float | None = None, *, low: float, high: float) -> float:
        self._read.add(key)
        if key not in self._table:
            if default is None:
                self.problem(key, "missing required key (expected a number)")
                return low
            return default
        value = self._table[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(key, f"expected a number, found {_describe(value)}")
            return low
        if not low <= value <= high:
            self.problem(key, f"expected a number from {low} to {high}, found {value}")
            return low
        return float(value)

    def boolean(self, key: str, default: bool | None = None) -> bool:
        return self._typed(key, bool, default, False)

    def strings(
        self, key: str, default: tuple[str, ...] | None = None, *, max_items: int = 1024
    ) -> tuple[str, ...]:
        self._read.add(key)
        if key not in self._table:
            if default is None:
                self.problem(key, "missing required key (expected an array of strings)")
                return ()
            return default
        value = self._table[key]
        if not isinstance(value, list):
            self.problem(key, f"expected an array of strings, found {_describe(value)}")
            return ()
        if len(value) > max_items:
            self.problem(key, f"more than {max_items} items")
            return ()
        out: list[str] = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self._ctx.problem(
                    f"{self.key_path(key)}[{i}]", f"expected a string, found {_describe(item)}"
                )
            else:
                out.append(item)
        return tuple(out)

    # -- domain types ------------------------------------------------------------------------

    def spiffe_id(self, key: str, *, optional: bool = False) -> SpiffeID:
        if optional and key not in self._table:
            self._read.add(key)
            return _PLACEHOLDER_SPIFFE_ID
        text = self.string(key, max_length=2048)
        if key not in self._table or not isinstance(self._table[key], str):
            return _PLACEHOLDER_SPIFFE_ID
        try:
            return parse_spiffe_id(text)
        except InvalidSpiffeID as exc:
            self.problem(key, f"not a SPIFFE ID: {exc}")
            return _PLACEHOLDER_SPIFFE_ID

    def trust_domain(self, key: str) -> TrustDomain:
        text = self.string(key, max_length=255 + 9)
        if not isinstance(self._table.get(key), str):
            return TrustDomain("invalid")
        try:
            return parse_trust_domain(text)
        except InvalidSpiffeID as exc:
            self.problem(key, f"not a trust domain: {exc}")
            return TrustDomain("invalid")

    def path_value(self, key: str, default: str | None = None, *, must_exist: bool = False) -> Path:
        """A filesystem path; relative paths are relative to the config file's directory."""
        text = self.string(key, default, max_length=4096)
        if not text:
            return Path()
        path = Path(text)
        if not path.is_absolute():
            path = self._ctx.file.parent / path
        if must_exist and key in self._table and not path.exists():
            self.problem(key, f"file not found: {path}")
        return path

    def network(
        self, key: str, default: str | None = None
    ) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        text = self.string(key, default, max_length=64)
        try:
            return ipaddress.ip_network(text, strict=True)
        except ValueError as exc:
            if key in self._table or default is not None:
                self.problem(key, f"expected a CIDR such as 10.32.0.0/12: {exc}")
            return ipaddress.ip_network("0.0.0.0/32")

    def address(
        self, key: str, default: str | None = None
    ) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        text = self.string(key, default, max_length=64)
        try:
            return ipaddress.ip_address(text)
        except ValueError:
            if key in self._table or default is not None:
                self.problem(key, f"expected an IP address, found {text!r}")
            return ipaddress.ip_address("0.0.0.0")  # noqa: S104 - a placeholder, never bound

    def host_port(self, key: str, default: str | None = None) -> tuple[str, int]:
        """``host:port`` or ``[v6]:port``."""
        text = self.string(key, default, max_length=300)
        if not text and key not in self._table and default is None:
            return ("", 0)
        host, sep, port_text = text.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            self.problem(key, f"expected host:port such as 127.0.0.1:7443, found {text!r}")
            return ("", 0)
        return (host, int(port_text))

    # -- nesting -----------------------------------------------------------------------------

    def table(self, key: str, *, optional: bool = False) -> Fields:
        self._read.add(key)
        value = self._table.get(key)
        if value is None:
            if not optional:
                self.problem(key, "missing required table")
            return Fields({}, self.key_path(key), self._ctx)
        if not isinstance(value, dict):
            self.problem(key, f"expected a table, found {_describe(value)}")
            return Fields({}, self.key_path(key), self._ctx)
        return Fields(value, self.key_path(key), self._ctx)

    def tables(self, key: str, *, max_items: int = 1024) -> list[Fields]:
        """An array of tables (``[[key]]``)."""
        self._read.add(key)
        value = self._table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.problem(key, f"expected an array of tables ([[{key}]]), found {_describe(value)}")
            return []
        if len(value) > max_items:
            self.problem(key, f"more than {max_items} entries")
            return []
        return [Fields(v, f"{self.key_path(key)}[{i}]", self._ctx) for i, v in enumerate(value)]

    def named_tables(self, key: str, *, max_items: int = 1024) -> list[tuple[str, Fields]]:
        """A table of tables (``[key.name]``), in file order."""
        parent = self.table(key, optional=True)
        out: list[tuple[str, Fields]] = []
        for name, value in parent._table.items():
            parent._read.add(name)
            if not isinstance(value, dict):
                parent.problem(name, f"expected a table, found {_describe(value)}")
                continue
            out.append((name, Fields(value, parent.key_path(name), self._ctx)))
        if len(out) > max_items:
            self.problem(key, f"more than {max_items} entries")
        return out

    def finish(self) -> None:
        """Report every key of this table that no accessor read: unknown keys are mistakes."""
        for key in self._table:
            if key not in self._read:
                self.problem(key, "unknown key")


def _describe(value: object) -> str:
    for kind, name in _TYPE_NAMES.items():
        if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            return f"{name} ({value!r})" if kind in (str, int, float, bool) else name
    return type(value).__name__


def root_fields(doc: TomlDocument) -> Fields:
    """The document's root table, with a fresh problem context."""
    return Fields(doc.data, "", Context.for_document(doc))
