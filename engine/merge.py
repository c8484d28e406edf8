"""Copy-on-write isolation for parallel notes, and the merge strategies.

A ``.sync`` group snapshots the score, gives each task its own copy, records which fields each
task changed, and hands the list of changes to a merge strategy. A strategy is any callable
``(original, changes) -> None | new_score``; ``changes`` is a list of dicts (one per task, in the
order the tasks finished) whose ``note_name`` / ``task_index`` / ``snapshot`` attributes say who
made them. Strategies written for the library, ``(original, snapshots, changes) -> None``, are
recognised by their three parameters and work too; ``MergeStrategy`` holds the built-ins under
that convention.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from .errors import MergeConflict
from .score import ATOMIC_TYPES, ImmutableScore, field_names

# Values of these types cannot be mutated in place, so tasks may share them.
_SHARED_TYPES = frozenset({int, float, complex, str, bytes, bool, type(None), frozenset, range})


_PLAIN: dict[type, bool] = {}


def _plain_instance(cls: type) -> bool:
    """True when copy.copy(obj) would just copy obj.__dict__ (no hooks, no slots)."""
    plain = _PLAIN.get(cls)
    if plain is None:
        plain = (
            getattr(cls, "__copy__", None) is None
            and getattr(cls, "__reduce_ex__", None) is object.__reduce_ex__
            and getattr(cls, "__reduce__", None) is object.__reduce__
            and getattr(cls, "__getstate__", object.__getstate__) is object.__getstate__
            and not any("__slots__" in vars(k) for k in cls.__mro__ if k is not object)
        )
        _PLAIN[cls] = plain
    return plain


def _isolate(value: Any) -> Any:
    """A private copy of a field value; flat containers of immutable values are copied shallowly."""
    cls = type(value)
    if cls is list:
        if all(type(v) in _SHARED_TYPES for v in value):
            return value.copy()
    elif cls is dict:
        if all(type(v) in _SHARED_TYPES for v in value.values()):
            return value.copy()
    elif cls is set:
        return value.copy()  # set members are hashable, hence (almost always) immutable
    return copy.deepcopy(value)


class Changes(dict):
    """The fields one parallel task changed, with the task's name, index and score copy."""

    __slots__ = ("note_name", "task_index", "snapshot")

    def __init__(
        self,
        values: dict[str, Any],
        note_name: str = "",
        task_index: int = 0,
        snapshot: Any = None,
    ) -> None:
        super().__init__(values)
        self.note_name = note_name
        self.task_index = task_index
        self.snapshot = snapshot


MergeFn = Callable[[Any, list[dict[str, Any]]], Any]


class Fork:
    """A snapshot of a score from which isolated copies are made and compared."""

    __slots__ = ("score", "names", "baseline", "deep", "immutable")

    def __init__(self, score: Any) -> None:
        self.score = score
        self.names = field_names(score)
        self.immutable = isinstance(score, ImmutableScore)
        self.baseline = {name: getattr(score, name) for name in self.names}
        deep = []
        for name, value in self.baseline.items():
            cls = type(value)
            if cls in _SHARED_TYPES or isinstance(value, ATOMIC_TYPES):
                continue
            # Objects compared by identity cannot be diffed after a deep copy (every copy would
            # look changed), so they are shared and only reassignment counts as a change.
            if cls.__eq__ is object.__eq__:
                continue
            deep.append(name)
        self.deep = tuple(deep)

    def copy(self) -> Any:
        if self.immutable:
            return self.score  # a frozen score cannot be changed in place
        score = self.score
        state = getattr(score, "__dict__", None)
        if state is not None and _plain_instance(type(score)):
            # What copy.copy does for a plain instance, minus its reduce-protocol detour.
            clone = object.__new__(type(score))
            clone.__dict__.update(state)
        else:
            clone = copy.copy(score)
        for name in self.deep:
            object.__setattr__(clone, name, _isolate(self.baseline[name]))
        return clone

    def diff(self, result: Any) -> dict[str, Any]:
        changed: dict[str, Any] = {}
        baseline = self.baseline
        for name in self.names:
            new = getattr(result, name)
            old = baseline[name]
            if new is old:
                continue
            try:
                same = bool(new == old)
            except Exception:  # e.g. array-like values whose == is not a bool
                same = False
            if not same:
                changed[name] = new
        return changed


def apply_changes(original: Any, values: dict[str, Any]) -> Any:
    """Write merged values into the score; a frozen score is replaced instead."""
    if not values:
        return None
    if isinstance(original, ImmutableScore):
        return dataclasses.replace(original, **values)
    for name, value in values.items():
        object.__setattr__(original, name, value)
    return None


def _writers(changes: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    by_field: dict[str, list[dict[str, Any]]] = {}
    for change in changes:
        for name in change:
            by_field.setdefault(name, []).append(change)
    return by_field


def _note(change: dict[str, Any]) -> str:
    return getattr(change, "note_name", "") or f"task {getattr(change, 'task_index', '?')}"


def _distinct(values: list[Any]) -> list[Any]:
    unique: list[Any] = []
    for value in values:
        if value not in unique:
            unique.append(value)
    return unique


def fail_on_conflict(original: Any, changes: list[dict[str, Any]]) -> Any:
    """Apply every change; two tasks writing different values to one field is a
    :class:`MergeConflict` (tasks that agree on the value do not conflict)."""
    merged: dict[str, Any] = {}
    for name, writers in _writers(changes).items():
        if len(writers) > 1:
            values = _distinct([w[name] for w in writers])
            if len(values) > 1:
                raise MergeConflict(name, values, note_names=[_note(w) for w in writers])
        merged[name] = writers[-1][name]
    return apply_changes(original, merged)


def last_write_wins(original: Any, changes: list[dict[str, Any]]) -> Any:
    """Apply changes in order: the task that finished last wins each field."""
    merged: dict[str, Any] = {}
    for change in changes:
        merged.update(change)
    return apply_changes(original, merged)


def _merge_lists(name: str, old: Any, writers: list[dict[str, Any]]) -> list[Any]:
    base = list(old) if old is not None else []
    result = list(base)
    for change in writers:
        new = list(change[name])
        if new[: len(base)] != base:
            raise MergeConflict(
                name,
                [w[name] for w in writers],
                f"Conflict on field '{name}': {_note(change)} rewrote the list instead of "
                "extending it",
                note_names=[_note(w) for w in writers],
            )
        result.extend(new[len(base) :])
    return result


def _merge_dicts(old: Any, writers: list[dict[str, Any]], name: str) -> dict[Any, Any]:
    base = dict(old) if old is not None else {}
    result = dict(base)
    for change in writers:
        new = change[name]
        for key in base:
            if key not in new:
                result.pop(key, None)
        for key, value in new.items():
            if key not in base or base[key] != value:
                result[key] = value
    return result


def smart_merge(original: Any, changes: list[dict[str, Any]]) -> Any:
    """Extend lists, update dicts, union sets; conflicting scalars raise :class:`MergeConflict`."""
    merged: dict[str, Any] = {}
    for name, writers in _writers(changes).items():
        if len(writers) == 1:
            merged[name] = writers[0][name]
            continue
        old = getattr(original, name)
        values = [w[name] for w in writers]
        if all(isinstance(v, list) for v in values) and (old is None or isinstance(old, list)):
            merged[name] = _merge_lists(name, old, writers)
        elif all(isinstance(v, dict) for v in values) and (old is None or isinstance(old, dict)):
            merged[name] = _merge_dicts(old, writers, name)
        elif all(isinstance(v, set) for v in values) and (old is None or isinstance(old, set)):
            base = set(old or ())
            result = set(base)
            for v in values:
                result |= v - base
            merged[name] = result
        elif all(v == values[0] for v in values[1:]):
            merged[name] = values[0]  # several tasks agreed on the same value
        else:
            raise MergeConflict(name, values, note_names=[_note(w) for w in writers])
    return apply_changes(original, merged)


def _library_form(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A native strategy, callable as the library calls strategies:
    ``(original, snapshots, changes) -> None``."""

    def strategy(original: Any, snapshots: list[Any], changes: list[dict[str, Any]]) -> None:
        fn(original, changes)

    strategy.__name__ = fn.__name__
    strategy.__doc__ = fn.__doc__
    strategy.__engine_strategy__ = fn  # type: ignore[attr-defined]
    return strategy


class MergeStrategy:
    """The built-in strategies under the library's names and calling convention
    (``MergeStrategy.smart_merge(original, snapshots, changes)``); pass them to ``.sync``."""

    fail_on_conflict = staticmethod(_library_form(fail_on_conflict))
    last_write_wins = staticmethod(_library_form(last_write_wins))
    smart_merge = staticmethod(_library_form(smart_merge))


def _positional_arity(fn: Callable[..., Any]) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 2
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return 2
    return sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def _adapt_three_argument(fn: Callable[..., Any]) -> MergeFn:
    """A strategy written for the library, ``(original, snapshots, changes)``."""

    def strategy(original: Any, changes: list[dict[str, Any]]) -> Any:
        snapshots = [getattr(c, "snapshot", None) for c in changes]
        return fn(original, snapshots, [dict(c) for c in changes])

    strategy.__name__ = getattr(fn, "__name__", "custom")
    return strategy


def merge_snapshots(
    original: Any,
    snapshots: list[Any],
    strategy: Callable[..., Any] = MergeStrategy.fail_on_conflict,
) -> Any:
    """Merge the changes of score snapshots (from ``Score._snapshot()``) back into
    ``original`` with ``strategy`` (either calling convention). Returns what the strategy
    returned (a new score for frozen scores, else None)."""
    changes = [
        Changes(s._get_changes(), getattr(s, "__name__", ""), i, s) for i, s in enumerate(snapshots)
    ]
    return resolve_strategy(strategy)(original, changes)


STRATEGIES: dict[str, MergeFn] = {
    "fail_on_conflict": fail_on_conflict,
    "last_write_wins": last_write_wins,
    "smart_merge": smart_merge,
}


def resolve_strategy(strategy: str | MergeFn | None) -> MergeFn:
    if strategy is None:
        return fail_on_conflict
    if isinstance(strategy, str):
        try:
            return STRATEGIES[strategy]
        except KeyError:
            raise ValueError(
                f"unknown merge strategy {strategy!r}; expected one of {sorted(STRATEGIES)} or a callable"
            ) from None
    if not callable(strategy):
        raise TypeError(
            f"merge strategy must be a name or a callable, not {type(strategy).__name__}"
        )
    native = getattr(strategy, "__engine_strategy__", None)
    if native is not None:
        return native
    if _positional_arity(strategy) >= 3:
        return _adapt_three_argument(strategy)
    return strategy
