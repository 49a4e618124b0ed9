"""Handles that put large immutable values into cache keys at constant cost.

The cost model's cached functions take one frozen input holding exactly what they read
(``memory_nodes``, ``stage_work``). Hashing a model spec or a graph layer field by field
on every lookup would cost the planner a good share of its time, so those values enter
the inputs behind a handle that hashes and compares in constant time:

- ``Interned``: one handle per distinct value (``intern``), so equal values share cache
  entries; a value interned twice (after the table was emptied) only costs a miss;
- ``Same``: the object itself, compared by identity, for values the caller reuses (the
  model spec, the fitted rates); an equal copy only costs a miss.

Either way the key holds the value, so an entry can never answer for another value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

INTERN_LIMIT = 20_000
"""Distinct values the intern table keeps before it starts afresh."""

T = TypeVar("T")


@dataclass(frozen=True, eq=False)
class Interned(Generic[T]):
    """A frozen value behind the one handle ``intern`` gives it (identity hash and ==)."""

    value: T


@dataclass(frozen=True, eq=False)
class Same(Generic[T]):
    """An immutable object in a cache key, compared by identity."""

    value: T

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Same) and other.value is self.value

    def __hash__(self) -> int:
        return id(self.value)


_interned: dict[object, Interned] = {}


def intern(value: T) -> Interned[T]:
    """The one handle of ``value`` (a new one if the table was emptied since)."""
    handle = _interned.get(value)
    if handle is None:
        if len(_interned) >= INTERN_LIMIT:
            _interned.clear()
        handle = _interned[value] = Interned(value)
    return handle
