"""``NoteRegistry``: the named callables a JSON flow refers to.

Four namespaces: notes, conditions (for ``split``), merges (for ``sync``/``split``/``child``) and
handlers (for ``on_error`` and fallback handlers). A plain mapping of name → callable is accepted
wherever a registry is, and is taken as the notes namespace.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

KINDS = ("notes", "conditions", "merges", "handlers")


class NoteRegistry:
    def __init__(
        self,
        notes: Mapping[str, Callable[..., Any]] | None = None,
        *,
        conditions: Mapping[str, Callable[..., Any]] | None = None,
        merges: Mapping[str, Callable[..., Any]] | None = None,
        handlers: Mapping[str, Callable[..., Any]] | None = None,
    ) -> None:
        self.notes: dict[str, Callable[..., Any]] = {}
        self.conditions: dict[str, Callable[..., Any]] = {}
        self.merges: dict[str, Callable[..., Any]] = {}
        self.handlers: dict[str, Callable[..., Any]] = {}
        for kind, items in (
            ("notes", notes),
            ("conditions", conditions),
            ("merges", merges),
            ("handlers", handlers),
        ):
            for name, fn in (items or {}).items():
                self._add(kind, name, fn)

    def _add(self, kind: str, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a registered {kind[:-1]} needs a non-empty name")
        if not callable(fn):
            raise TypeError(f"{kind[:-1]} {name!r} must be callable")
        table: dict[str, Callable[..., Any]] = getattr(self, kind)
        if name in table and table[name] is not fn:
            raise ValueError(f"{kind[:-1]} {name!r} is already registered")
        table[name] = fn
        return fn

    def _decorator(self, kind: str, fn: Callable[..., Any] | None, name: str | None) -> Any:
        def register(f: Callable[..., Any]) -> Callable[..., Any]:
            return self._add(kind, name or f.__name__, f)

        return register(fn) if fn is not None else register

    def note(self, fn: Callable[..., Any] | None = None, *, name: str | None = None) -> Any:
        """Register a note: ``@registry.note`` or ``@registry.note(name="x")``."""
        return self._decorator("notes", fn, name)

    def condition(self, fn: Callable[..., Any] | None = None, *, name: str | None = None) -> Any:
        return self._decorator("conditions", fn, name)

    def merge(self, fn: Callable[..., Any] | None = None, *, name: str | None = None) -> Any:
        return self._decorator("merges", fn, name)

    def handler(self, fn: Callable[..., Any] | None = None, *, name: str | None = None) -> Any:
        return self._decorator("handlers", fn, name)

    def register(
        self, name: str, fn: Callable[..., Any], kind: str = "notes"
    ) -> Callable[..., Any]:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}")
        return self._add(kind, name, fn)

    def __contains__(self, name: object) -> bool:
        return name in self.notes

    def __repr__(self) -> str:
        counts = ", ".join(f"{kind}={len(getattr(self, kind))}" for kind in KINDS)
        return f"NoteRegistry({counts})"


def as_registry(
    registry: NoteRegistry | Mapping[str, Callable[..., Any]] | None,
) -> NoteRegistry | None:
    if registry is None or isinstance(registry, NoteRegistry):
        return registry
    if isinstance(registry, Mapping):
        return NoteRegistry(notes=registry)
    raise TypeError(
        f"a registry must be a NoteRegistry or a mapping, not {type(registry).__name__}"
    )
