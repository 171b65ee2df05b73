"""A typed cursor over decoded JSON/YAML that names the file and field of every mistake.

Inventory inputs are produced by kubectl and curl, so a wrong shape is a user-side problem: each
accessor either returns a value of the promised type or raises :class:`InputError` whose text is
one line, ``reports/node-2.json: Router.Peers[1].Connections[0].Established: expected a boolean``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

MAX_INPUT_BYTES = 16 * 1024 * 1024
MAX_ITEMS = 100_000


class InputError(ValueError):
    """One malformed input file; ``str()`` is ``<file>: <field>: <what was expected>``."""

    def __init__(self, source: str, field: str, message: str) -> None:
        self.source = source
        self.field = field
        self.message = message
        where = f"{source}: {field}: " if field else f"{source}: "
        super().__init__(where + message)


def describe(value: object) -> str:
    """A short name of a decoded value's type, for messages."""
    match value:
        case None:
            return "null"
        case bool():
            return "a boolean"
        case int() | float():
            return "a number"
        case str():
            return "a string"
        case list():
            return "an array"
        case dict():
            return "an object"
    return type(value).__name__


@dataclass(frozen=True, slots=True)
class Cursor:
    """A decoded value at ``path`` inside ``source``."""

    value: Any
    source: str
    path: str = ""

    def fail(self, message: str) -> InputError:
        return InputError(self.source, self.path, message)

    def _child_path(self, key: str | int) -> str:
        if isinstance(key, int):
            return f"{self.path}[{key}]"
        return f"{self.path}.{key}" if self.path else key

    def obj(self) -> Cursor:
        if not isinstance(self.value, dict):
            raise self.fail(f"expected an object, found {describe(self.value)}")
        return self

    def has(self, key: str) -> bool:
        return isinstance(self.value, dict) and self.value.get(key) is not None

    def get(self, key: str) -> Cursor:
        """The member ``key`` (which must be present and not null)."""
        self.obj()
        child = Cursor(self.value.get(key), self.source, self._child_path(key))
        if child.value is None:
            raise child.fail("missing required field")
        return child

    def opt(self, key: str) -> Cursor | None:
        """The member ``key``, or None when absent or null."""
        self.obj()
        value = self.value.get(key)
        return None if value is None else Cursor(value, self.source, self._child_path(key))

    def items(self, *, allow_null: bool = False) -> Iterator[Cursor]:
        """The elements of an array (null counts as empty when ``allow_null``)."""
        if self.value is None and allow_null:
            return iter(())
        if not isinstance(self.value, list):
            raise self.fail(f"expected an array, found {describe(self.value)}")
        if len(self.value) > MAX_ITEMS:
            raise self.fail(f"more than {MAX_ITEMS} elements")
        return (
            Cursor(v, self.source, self._child_path(i)) for i, v in enumerate(self.value)
        )

    def string(self, *, max_length: int = 4096) -> str:
        if not isinstance(self.value, str):
            raise self.fail(f"expected a string, found {describe(self.value)}")
        if len(self.value) > max_length:
            raise self.fail(f"longer than {max_length} characters")
        return self.value

    def boolean(self) -> bool:
        if not isinstance(self.value, bool):
            raise self.fail(f"expected a boolean, found {describe(self.value)}")
        return self.value

    def integer(self, *, low: int = 0, high: int = 2**63 - 1) -> int:
        if isinstance(self.value, bool) or not isinstance(self.value, int):
            raise self.fail(f"expected an integer, found {describe(self.value)}")
        if not low <= self.value <= high:
            raise self.fail(f"expected an integer from {low} to {high}, found {self.value}")
        return self.value

    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        text = self.string(max_length=64)
        try:
            return ipaddress.ip_network(text, strict=True)
        except ValueError:
            raise self.fail(f"expected a CIDR such as 10.32.0.0/12, found {text!r}") from None

    def address(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        text = self.string(max_length=64)
        try:
            return ipaddress.ip_address(text)
        except ValueError:
            raise self.fail(f"expected an IP address, found {text!r}") from None
