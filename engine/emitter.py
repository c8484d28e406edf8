"""``EventEmitter``: register listeners per event type; attach it with ``Cadence.with_hooks``."""

from __future__ import annotations

import time
from collections import deque
from types import BuiltinMethodType
from typing import Any

from .context import current_run
from .events import (
    CADENCE_COMPLETED,
    CADENCE_FAILED,
    CADENCE_STARTED,
    EVENT_TYPES,
    NOTE_COMPLETED,
    NOTE_FAILED,
    NOTE_RETRIED,
    NOTE_STARTED,
    WILDCARD,
    CadenceEvent,
    Listener,
    deliver,
    note_event,
)
from .hooks import CadenceHooks

_clock = time.perf_counter


class EventEmitter(CadenceHooks):
    """Emits :class:`~engine.events.CadenceEvent` objects to listeners.

    ``on(type, fn)`` and ``off(type, fn)`` return the emitter for chaining, as in the library;
    ``@emitter.on(type)`` registers a decorated function. Listener changes apply from the next
    run on.
    """

    def __init__(self) -> None:
        self._listeners: dict[str, list[Listener]] = {}
        # Listeners per event type with the wildcard ones appended, rebuilt on (un)registration,
        # so that emitting costs one dict lookup.
        self._resolved: dict[str, list[Listener]] = {t: [] for t in EVENT_TYPES}
        self.wants_version = 0

    def _resolve(self) -> None:
        self.wants_version += 1  # tells hook managers to re-ask wants()
        wildcard = self._listeners.get(WILDCARD, [])
        types = set(EVENT_TYPES) | (set(self._listeners) - {WILDCARD})
        self._resolved = {t: self._listeners.get(t, []) + wildcard for t in types}

    def on(self, event_type: str, listener: Listener | None = None) -> Any:
        """Register ``listener`` for ``event_type`` (or ``"*"``); returns the emitter."""
        if listener is None:

            def register(fn: Listener) -> Listener:
                self.on(event_type, fn)
                return fn

            return register
        self._listeners.setdefault(event_type, []).append(listener)
        self._resolve()
        return self

    def off(self, event_type: str, listener: Listener) -> EventEmitter:
        listeners = self._listeners.get(event_type)
        if listeners:
            self._listeners[event_type] = [fn for fn in listeners if fn is not listener]
            self._resolve()
        return self

    def listeners(self, event_type: str) -> list[Listener]:
        """Who hears ``event_type`` (its own listeners, then the wildcard ones)."""
        found = self._resolved.get(event_type)
        if found is None:
            return list(self._listeners.get(WILDCARD, []))
        return list(found)

    def listener_count(self, event_type: str | None = None) -> int:
        if event_type is None:
            return sum(len(v) for v in self._listeners.values())
        return len(self._listeners.get(event_type, ()))

    def wants(self, method: str) -> bool:
        """Asked once per run by the runner: skip the hook calls nobody listens to."""
        heard = self._resolved
        if method == "before_note":
            return bool(heard[NOTE_STARTED])
        if method == "after_note":
            return bool(heard[NOTE_COMPLETED] or heard[NOTE_FAILED])
        if method == "on_retry":
            return bool(heard[NOTE_RETRIED])
        if method == "before_cadence":
            return bool(heard[CADENCE_STARTED])
        if method == "after_cadence":
            return bool(heard[CADENCE_COMPLETED] or heard[CADENCE_FAILED])
        return True

    async def emit(self, event: CadenceEvent) -> None:
        """Deliver an event (built by the caller) to its listeners and the wildcard ones."""
        pending = deliver(self.listeners(event.event_type), event)
        if pending is not None:
            await pending

    _emit = emit  # the library's name

    def _event(self, event_type: str, cadence_name: str | None, **fields: Any) -> CadenceEvent:
        run = current_run.get()
        return CadenceEvent(
            event_type,
            cadence_name or (run.cadence_name if run is not None else ""),
            run_id=run.run_id if run is not None else None,
            **fields,
        )

    # The hook interface: plain methods that return an awaitable only when a listener is async.
    def before_cadence(self, cadence_name: str, score: Any) -> Any:
        targets = self._resolved[CADENCE_STARTED]
        if not targets:
            return None
        return deliver(targets, self._event(CADENCE_STARTED, cadence_name, score=score))

    def after_cadence(
        self, cadence_name: str, score: Any, duration: float, error: BaseException | None = None
    ) -> Any:
        event_type = CADENCE_FAILED if error is not None else CADENCE_COMPLETED
        targets = self._resolved[event_type]
        if not targets:
            return None
        event = self._event(event_type, cadence_name, duration=duration, error=error, score=score)
        return deliver(targets, event)

    def before_note(self, note_name: str, score: Any) -> Any:
        targets = self._resolved[NOTE_STARTED]
        if not targets:
            return None
        now = _clock()
        return deliver(
            targets, note_event(NOTE_STARTED, note_name, score, now, now, current_run.get())
        )

    def after_note(
        self, note_name: str, score: Any, duration: float, error: BaseException | None = None
    ) -> Any:
        if error is not None:
            targets = self._resolved[NOTE_FAILED]
            if not targets:
                return None
            event = self._event(
                NOTE_FAILED, None, note_name=note_name, duration=duration, error=error, score=score
            )
            return deliver(targets, event)
        targets = self._resolved[NOTE_COMPLETED]
        if not targets:
            return None
        now = _clock()
        event = note_event(NOTE_COMPLETED, note_name, score, now - duration, now, current_run.get())
        return deliver(targets, event)

    def on_retry(
        self, note_name: str, score: Any, attempt: int, max_attempts: int, error: BaseException
    ) -> Any:
        targets = self._resolved[NOTE_RETRIED]
        if not targets:
            return None
        event = self._event(
            NOTE_RETRIED, None, note_name=note_name, error=error, attempt=attempt, score=score
        )
        event.metadata["max_attempts"] = max_attempts
        return deliver(targets, event)


def sole_emitters(fns: tuple[Any, ...]) -> list[EventEmitter] | None:
    """The emitters behind these hook callables when every one is an unmodified
    ``EventEmitter`` method (the runner then delivers note events itself), else None."""
    emitters: list[EventEmitter] = []
    for fn in fns:
        owner = getattr(fn, "__self__", None)
        if not isinstance(owner, EventEmitter):
            return None
        name = getattr(fn, "__name__", "")
        if getattr(type(owner), name, None) is not getattr(EventEmitter, name, None):
            return None
        emitters.append(owner)
    return emitters


def note_listeners(fns: tuple[Any, ...]) -> tuple[Listener, ...] | None:
    """For after-note hook callables that are all unmodified ``EventEmitter.after_note``
    methods: the ``note.completed`` listeners of those emitters in order (wildcard ones
    included), which the runner calls itself; else None. Worked out once per hook plan."""
    emitters = sole_emitters(fns)
    if not emitters:
        return None
    return tuple(fn for e in emitters for fn in e._resolved[NOTE_COMPLETED])


def instant_listener(fn: Any) -> bool:
    """Whether a listener is a plain list's or deque's ``append``: C code that runs no Python
    and returns in constant time (tens of nanoseconds, the order of a clock reading). After
    such listeners the runner takes the end of one note as the start of the next, without
    reading the clock again; after any other it reads the clock, so that no listener's time
    counts in a note's duration."""
    owner = getattr(fn, "__self__", None)
    return (
        type(fn) is BuiltinMethodType
        and type(owner) in (list, deque)
        and getattr(fn, "__name__", None) in ("append", "appendleft")
    )


__all__ = ["EventEmitter", "instant_listener", "note_listeners", "sole_emitters"]
