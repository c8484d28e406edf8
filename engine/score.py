"""Scores: the state a cadence's notes read and change.

``Score`` is a mutable dataclass base; ``ImmutableScore`` a frozen one whose notes return new
scores. ``Atomic``, ``AtomicList`` and ``AtomicDict`` are lock-protected containers that parallel
notes share on purpose: copy-on-write isolation in ``.sync`` never copies them.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")


@dataclasses.dataclass
class Score:
    """Mutable base class for scores. Subclass it with ``@dataclass``."""

    def __post_init__(self) -> None:
        # Present so that subclasses can always call super().__post_init__() (the seed does).
        pass

    def to_dict(self) -> dict[str, Any]:
        return {name: to_jsonable(getattr(self, name)) for name in field_names(self)}

    # The library's copy-on-write helpers (``merge_snapshots`` uses them; ``.sync`` has its own).
    def _get_fields(self) -> list[str]:
        """The public field names."""
        return [name for name in field_names(self) if not name.startswith("_")]

    def _snapshot(self) -> Score:
        """A shallow copy that remembers (shallow copies of) the values it started from."""
        snapshot = copy.copy(self)
        original = {name: copy.copy(getattr(self, name)) for name in self._get_fields()}
        object.__setattr__(snapshot, "_original_values", original)
        return snapshot

    def _get_changes(self) -> dict[str, Any]:
        """The fields whose value differs from the snapshot's starting values."""
        original = self.__dict__.get("_original_values", {})
        changes: dict[str, Any] = {}
        for name in self._get_fields():
            current = getattr(self, name)
            if name not in original or current != original[name]:
                changes[name] = current
        return changes


@dataclasses.dataclass(frozen=True)
class ImmutableScore:
    """Frozen base class for functional-style scores: notes return a new score."""

    def __post_init__(self) -> None:
        pass

    def with_field(self, name: str, value: Any) -> Any:
        return dataclasses.replace(self, **{name: value})

    def replace(self, **changes: Any) -> Any:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {name: to_jsonable(getattr(self, name)) for name in field_names(self)}


SCORE_TYPES = (Score, ImmutableScore)

_FIELD_CACHE: dict[type, tuple[str, ...]] = {}


def field_names(score: Any) -> tuple[str, ...]:
    """The fields the engine tracks: dataclass fields, else the instance's attributes."""
    cls = type(score)
    names = _FIELD_CACHE.get(cls)
    if names is not None:
        return names
    if dataclasses.is_dataclass(cls):
        names = tuple(f.name for f in dataclasses.fields(cls))
        _FIELD_CACHE[cls] = names
        return names
    # Plain objects can grow attributes at run time, so they are never cached.
    return tuple(vars(score))


def is_immutable_score(score: Any) -> bool:
    return isinstance(score, ImmutableScore)


class _Locked:
    __slots__ = ("_lock",)

    def __init__(self) -> None:
        # RLock so that update() callbacks may read the same container.
        self._lock = threading.RLock()


class Atomic(_Locked, Generic[T]):
    """A single value guarded by a lock; ``update(fn)`` is an atomic read-modify-write."""

    __slots__ = ("_value",)

    def __init__(self, value: T | None = None) -> None:
        super().__init__()
        self._value = value

    def get(self) -> T | None:
        with self._lock:
            return self._value

    def set(self, value: T) -> None:
        with self._lock:
            self._value = value

    def update(self, fn: Callable[[T | None], T]) -> T:
        with self._lock:
            self._value = fn(self._value)
            return self._value

    def compare_and_swap(self, expected: Any, new_value: T) -> bool:
        """Set ``new_value`` if the value equals ``expected``; True if it did."""
        with self._lock:
            if self._value == expected:
                self._value = new_value
                return True
            return False

    @property
    def value(self) -> T | None:
        return self.get()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Atomic):
            return self.get() == other.get()
        return self.get() == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Atomic({self.get()!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {"value": self.get()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        _Locked.__init__(self)
        self._value = state["value"]


class AtomicList(_Locked, Generic[T]):
    """A list whose operations hold a lock, safe to share between threads and tasks."""

    __slots__ = ("_items",)

    def __init__(self, initial: Iterable[T] | None = None) -> None:
        super().__init__()
        self._items: list[T] = list(initial or ())

    def append(self, item: T) -> None:
        with self._lock:
            self._items.append(item)

    def extend(self, items: Iterable[T]) -> None:
        items = list(items)
        with self._lock:
            self._items.extend(items)

    def insert(self, index: int, item: T) -> None:
        with self._lock:
            self._items.insert(index, item)

    def pop(self, index: int = -1) -> T:
        with self._lock:
            return self._items.pop(index)

    def remove(self, item: T) -> None:
        with self._lock:
            self._items.remove(item)

    def clear(self) -> list[T]:
        """Empty the list; returns what it held."""
        with self._lock:
            items, self._items = self._items, []
            return items

    def snapshot(self) -> list[T]:
        with self._lock:
            return list(self._items)

    get_all = snapshot  # the library's name

    copy = snapshot

    def __getitem__(self, index: Any) -> Any:
        with self._lock:
            return self._items[index]

    def __setitem__(self, index: Any, value: Any) -> None:
        with self._lock:
            self._items[index] = value

    def __delitem__(self, index: Any) -> None:
        with self._lock:
            del self._items[index]

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __iter__(self) -> Iterator[T]:
        # Iterate over a snapshot so a concurrent append cannot break the iteration.
        return iter(self.snapshot())

    def __contains__(self, item: object) -> bool:
        with self._lock:
            return item in self._items

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AtomicList):
            return self.snapshot() == other.snapshot()
        if isinstance(other, list):
            return self.snapshot() == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"AtomicList({self.snapshot()!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {"items": self.snapshot()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        _Locked.__init__(self)
        self._items = list(state["items"])


class AtomicDict(_Locked, Generic[K, V]):
    """A dict whose operations hold a lock; ``update_item`` is an atomic read-modify-write."""

    __slots__ = ("_data",)

    def __init__(self, initial: Any = None, **kwargs: V) -> None:
        super().__init__()
        self._data: dict[K, V] = dict(initial or {}, **kwargs)

    def __getitem__(self, key: K) -> V:
        with self._lock:
            return self._data[key]

    def __setitem__(self, key: K, value: V) -> None:
        with self._lock:
            self._data[key] = value

    def __delitem__(self, key: K) -> None:
        with self._lock:
            del self._data[key]

    def get(self, key: K, default: Any = None) -> Any:
        with self._lock:
            return self._data.get(key, default)

    def setdefault(self, key: K, default: V) -> V:
        with self._lock:
            return self._data.setdefault(key, default)

    def set(self, key: K, value: V) -> None:
        with self._lock:
            self._data[key] = value

    def pop(self, key: K, default: Any = None) -> Any:
        """Remove ``key`` and return its value, or ``default`` (None) if absent (as in the
        library: no KeyError)."""
        with self._lock:
            return self._data.pop(key, default)

    def update(self, other: Any = (), **kwargs: V) -> None:
        with self._lock:
            self._data.update(other, **kwargs)

    def update_item(self, key: K, fn: Callable[[V | None], V], default: V | None = None) -> V:
        with self._lock:
            value = fn(self._data.get(key, default))
            self._data[key] = value
            return value

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def snapshot(self) -> dict[K, V]:
        with self._lock:
            return dict(self._data)

    get_all = snapshot  # the library's name

    copy = snapshot

    def keys(self) -> list[K]:
        return list(self.snapshot())

    def values(self) -> list[V]:
        return list(self.snapshot().values())

    def items(self) -> list[tuple[K, V]]:
        return list(self.snapshot().items())

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def __iter__(self) -> Iterator[K]:
        return iter(self.keys())

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._data

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AtomicDict):
            return self.snapshot() == other.snapshot()
        if isinstance(other, dict):
            return self.snapshot() == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"AtomicDict({self.snapshot()!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {"data": self.snapshot()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        _Locked.__init__(self)
        self._data = dict(state["data"])


ATOMIC_TYPES = (Atomic, AtomicList, AtomicDict)

# ``from engine.score import MergeConflict, MergeStrategy, merge_snapshots`` works as the
# library's ``cadence.score`` does (they live in engine.errors and engine.merge).


def __getattr__(name: str) -> Any:
    if name in ("MergeStrategy", "merge_snapshots"):
        from . import merge

        return getattr(merge, name)
    if name in ("MergeConflict", "MergeConflictError"):
        from . import errors

        return getattr(errors, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def to_jsonable(value: Any) -> Any:
    """Turn a score value into JSON-compatible data (for APIs, reporters and checkpoints)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, AtomicList):
        return [to_jsonable(v) for v in value.snapshot()]
    if isinstance(value, AtomicDict):
        return {str(k): to_jsonable(v) for k, v in value.snapshot().items()}
    if isinstance(value, Atomic):
        return to_jsonable(value.get())
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return str(value)
