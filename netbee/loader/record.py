"""Record (and FrozenRecord, hashable): a plain data class whose fields are its __slots__.

What @dataclass gives (equality and repr over the fields in order, mutable, unhashable,
picklable), written out once: a cold start imports ~60 data classes (loader and application,
some in both of its processes), and @dataclass compiled each one's methods at import (~0.3 ms a
class), besides importing dataclasses and inspect (~5 ms; the tracing process no longer does,
the object's reader still does, through pyelftools). Subclasses list their fields in __slots__
and write their own __init__.
"""
from __future__ import annotations

from typing import Any, Dict, TypeVar

R = TypeVar("R", bound="Record")


class Record:
    __slots__ = ()
    __hash__ = None   # type: ignore[assignment]  # mutable, as a dataclass's instances

    def __eq__(self, other: Any) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self.__slots__)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(" + ", ".join(f"{f}={getattr(self, f)!r}" for f in self.__slots__) + ")"

    def fields(self) -> Dict[str, Any]:
        """The fields by name, in order (shallow, unlike dataclasses.asdict)."""
        return {f: getattr(self, f) for f in self.__slots__}

    def replace(self: R, **changes: Any) -> R:
        """A shallow copy with some fields changed (dataclasses.replace)."""
        new = object.__new__(self.__class__)
        for name in self.__slots__:   # (a field's value, not copy.copy: ~0.7 ms less to import)
            setattr(new, name, getattr(self, name))
        for name, value in changes.items():
            if name not in self.__slots__:
                raise TypeError(f"{type(self).__name__} has no field {name!r}")
            setattr(new, name, value)
        return new


class FrozenRecord(Record):
    """A Record that is never changed once made (by convention: not enforced, which would cost
    every __init__), and so can be a key of sets and dicts: hashed by its fields."""

    __slots__ = ()

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, f) for f in self.__slots__))
