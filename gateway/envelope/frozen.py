"""Building frozen, slotted dataclasses on the hot path without their per-field ``__setattr__``.

A frozen dataclass's ``__init__`` stores every field through ``object.__setattr__`` (it must get
round its own refusing ``__setattr__``), which costs about 70 ns a field: a 13-field ``Claims``
takes ~1 us, a measurable share of opening an envelope. :func:`positional_builder` fills a plain
mutable twin class with exactly the same slots (ordinary attribute stores) and then re-labels the
instance as the frozen class. CPython allows ``__class__`` assignment between classes whose
layouts are identical (same base, same slots in the same order), which the twin guarantees by
being made from the frozen class's own fields; if that ever stopped holding, the first build
would raise TypeError, never produce a half-built value.

The result is an ordinary instance of the frozen class: its equality, hash, repr and immutability
are the class's own (tests check them against the normal constructor). Use it only where the
values are already checked, as the normal constructor checks nothing either.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def positional_builder(cls: type[T]) -> Callable[..., T]:
    """A constructor taking ``cls``'s fields positionally, in declaration order.

    Args:
        cls: a ``@dataclass(frozen=True, slots=True)`` class without ``__post_init__``.

    Returns:
        ``build(*values) -> cls`` instance, equal to ``cls(*values)``.

    Raises:
        TypeError: ``cls`` is not such a class.
    """
    if not (
        dataclasses.is_dataclass(cls)
        and cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
        and "__slots__" in cls.__dict__
        and not hasattr(cls, "__post_init__")
        and all(field.init for field in dataclasses.fields(cls))
    ):
        raise TypeError(f"{cls.__name__} is not a frozen, slotted dataclass without __post_init__")
    twin: Any = dataclasses.make_dataclass(
        f"_Mutable{cls.__name__}",
        [(field.name, Any) for field in dataclasses.fields(cls)],
        slots=True,
        eq=False,
        repr=False,
    )
    twin.__module__ = cls.__module__

    def build(*values: object) -> T:
        obj = twin(*values)
        obj.__class__ = cls
        return obj  # type: ignore[no-any-return]

    build.__doc__ = f"``{cls.__name__}(*values)`` without the frozen per-field stores."
    return build
