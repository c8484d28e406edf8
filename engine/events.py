"""Structured lifecycle events with listener registration.

An ``EventEmitter`` is also a hook: pass it to ``Cadence.with_hooks``. Listeners may be sync or
async; sync listeners are called inline, async ones awaited in registration order. ``"*"``
listens to every event. A listener that raises is logged and ignored.
"""

from __future__ import annotations

import collections
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

from .context import current_run

logger = logging.getLogger("engine.events")
_now = time.time
_new_event = tuple.__new__

NOTE_STARTED = "note.started"
NOTE_COMPLETED = "note.completed"
NOTE_FAILED = "note.failed"
NOTE_RETRIED = "note.retried"
CADENCE_STARTED = "cadence.started"
CADENCE_COMPLETED = "cadence.completed"
CADENCE_FAILED = "cadence.failed"
WILDCARD = "*"

EVENT_TYPES = (
    NOTE_STARTED,
    NOTE_COMPLETED,
    NOTE_FAILED,
    NOTE_RETRIED,
    CADENCE_STARTED,
    CADENCE_COMPLETED,
    CADENCE_FAILED,
)


_EventFields = collections.namedtuple(
    "_EventFields", "type cadence_name note_name duration error score attempt run_id timestamp"
)


class Event(_EventFields):
    """One lifecycle event. A named tuple: built once per note when someone listens, so it must
    be cheap; read its fields by name (``event.note_name``, ``event.duration``, …)."""

    __slots__ = ()

    def __new__(
        cls,
        type: str,  # noqa: A002 - the natural name for an event's type
        cadence_name: str,
        note_name: str | None = None,
        duration: float | None = None,
        error: BaseException | None = None,
        score: Any = None,
        attempt: int | None = None,
        run_id: str | None = None,
        timestamp: float | None = None,
    ) -> Event:
        return tuple.__new__(
            cls,
            (
                type,
                cadence_name,
                note_name,
                duration,
                error,
                score,
                attempt,
                run_id,
                _now() if timestamp is None else timestamp,
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "cadence_name": self.cadence_name,
            "note_name": self.note_name,
            "duration": self.duration,
            "error": repr(self.error) if self.error is not None else None,
            "attempt": self.attempt,
            "run_id": self.run_id,
            "timestamp": self.timestamp,
        }

    def __repr__(self) -> str:
        return f"Event({self.type}, cadence={self.cadence_name!r}, note={self.note_name!r})"


Listener = Callable[[Event], Any]


class EventEmitter:
    def __init__(self) -> None:
        self._listeners: dict[str, list[Listener]] = {}
        # Listeners per event type with the wildcard ones appended, rebuilt on (un)registration,
        # so that emitting costs one dict lookup.
        self._resolved: dict[str, list[Listener]] = {}
        self.wants_version = 0

    def _resolve(self) -> None:
        self.wants_version += 1  # tells hook managers to re-ask wants()
        wildcard = self._listeners.get(WILDCARD, [])
        self._resolved = {t: self._listeners.get(t, []) + wildcard for t in EVENT_TYPES}

    def on(self, event_type: str, listener: Listener | None = None) -> Any:
        """Register a listener; usable as ``emitter.on(T, fn)`` or ``@emitter.on(T)``."""
        if event_type != WILDCARD and event_type not in EVENT_TYPES:
            raise ValueError(
                f"unknown event type {event_type!r}; expected one of {EVENT_TYPES} or '*'"
            )
        if listener is None:

            def register(fn: Listener) -> Listener:
                self._listeners.setdefault(event_type, []).append(fn)
                self._resolve()
                return fn

            return register
        self._listeners.setdefault(event_type, []).append(listener)
        self._resolve()
        return listener

    def off(self, event_type: str, listener: Listener) -> None:
        listeners = self._listeners.get(event_type, [])
        if listener in listeners:
            listeners.remove(listener)
            self._resolve()

    def listener_count(self, event_type: str | None = None) -> int:
        if event_type is None:
            return sum(len(v) for v in self._listeners.values())
        return len(self._listeners.get(event_type, ()))

    def wants(self, method: str) -> bool:
        """Asked once per run by the runner: skip per-note calls nobody listens to."""
        if method == "before_note":
            return bool(self._resolved.get(NOTE_STARTED))
        if method == "after_note":
            return bool(self._resolved.get(NOTE_COMPLETED) or self._resolved.get(NOTE_FAILED))
        if method == "on_retry":
            return bool(self._resolved.get(NOTE_RETRIED))
        if method == "before_cadence":
            return bool(self._resolved.get(CADENCE_STARTED))
        if method == "after_cadence":
            return bool(self._resolved.get(CADENCE_COMPLETED) or self._resolved.get(CADENCE_FAILED))
        return True

    def _targets(self, event_type: str) -> list[Listener]:
        return self._resolved.get(event_type) or self._listeners.get(WILDCARD) or []

    async def emit(self, event: Event) -> None:
        pending = self._call(self._targets(event.type), event)
        if pending is not None:
            await pending

    def _call(self, targets: list[Listener], event: Event) -> Any:
        """Call sync listeners now; return a coroutine for any async results (or None)."""
        awaitables = None  # only allocated when a listener is async: this runs once per event
        for listener in targets:
            try:
                result = listener(event)
            except Exception:
                logger.exception("event listener %r failed on %s", listener, event.type)
                continue
            if result is not None and inspect.isawaitable(result):
                if awaitables is None:
                    awaitables = []
                awaitables.append((listener, result))
        if awaitables is None:
            return None
        return self._await_all(awaitables, event)

    @staticmethod
    async def _await_all(awaitables: list[tuple[Listener, Any]], event: Event) -> None:
        for listener, awaitable in awaitables:
            try:
                await awaitable
            except Exception:
                logger.exception("event listener %r failed on %s", listener, event.type)

    def _fire(
        self,
        event_type: str,
        cadence_name: str | None,
        note_name: str | None,
        score: Any,
        duration: float | None = None,
        error: BaseException | None = None,
        attempt: int | None = None,
    ) -> Any:
        targets = self._resolved.get(event_type)
        if not targets:
            return None  # nobody listens: do not even build the event
        run = current_run.get()
        if run is not None:
            event = Event(
                event_type,
                cadence_name or run.cadence_name,
                note_name,
                duration,
                error,
                score,
                attempt,
                run.run_id,
            )
        else:
            event = Event(
                event_type, cadence_name or "", note_name, duration, error, score, attempt
            )
        return self._call(targets, event)

    # The hook interface: plain methods that return an awaitable only when a listener is async.
    def before_cadence(self, cadence_name: str, score: Any) -> Any:
        if not self._resolved.get(CADENCE_STARTED):
            return None
        return self._fire(CADENCE_STARTED, cadence_name, None, score)

    def after_cadence(
        self, cadence_name: str, score: Any, duration: float, error: BaseException | None = None
    ) -> Any:
        event_type = CADENCE_FAILED if error is not None else CADENCE_COMPLETED
        targets = self._resolved.get(event_type)
        if not targets:
            return None
        run = current_run.get()
        values = (
            event_type,
            cadence_name,
            None,
            duration,
            error,
            score,
            None,
            run.run_id if run is not None else None,
            _now(),
        )
        return self._call(targets, _new_event(Event, values))

    # The per-note methods run on every note: check for listeners first, build the tuple directly.
    def before_note(self, note_name: str, score: Any) -> Any:
        targets = self._resolved.get(NOTE_STARTED)
        if not targets:
            return None
        return self._note_event(targets, NOTE_STARTED, note_name, score, None, None)

    def after_note(
        self, note_name: str, score: Any, duration: float, error: BaseException | None = None
    ) -> Any:
        event_type = NOTE_FAILED if error is not None else NOTE_COMPLETED
        targets = self._resolved.get(event_type)
        if not targets:
            return None
        if len(targets) != 1:
            return self._note_event(targets, event_type, note_name, score, duration, error)
        # One listener, the common case, inlined: this line runs once per note.
        run = current_run.get()
        if run is not None:
            event = _new_event(
                Event,
                (
                    event_type,
                    run.cadence_name,
                    note_name,
                    duration,
                    error,
                    score,
                    None,
                    run.run_id,
                    _now(),
                ),
            )
        else:
            event = _new_event(
                Event, (event_type, "", note_name, duration, error, score, None, None, _now())
            )
        listener = targets[0]
        try:
            result = listener(event)
        except Exception:
            logger.exception("event listener %r failed on %s", listener, event_type)
            return None
        if result is not None and inspect.isawaitable(result):
            return self._await_all([(listener, result)], event)
        return None

    def _note_event(
        self,
        targets: list[Listener],
        event_type: str,
        note_name: str,
        score: Any,
        duration: float | None,
        error: BaseException | None,
    ) -> Any:
        run = current_run.get()
        if run is not None:
            values = (
                event_type,
                run.cadence_name,
                note_name,
                duration,
                error,
                score,
                None,
                run.run_id,
                _now(),
            )
        else:
            values = (event_type, "", note_name, duration, error, score, None, None, _now())
        event = _new_event(Event, values)
        if len(targets) == 1:  # the common case: one listener, called without the loop
            listener = targets[0]
            try:
                result = listener(event)
            except Exception:
                logger.exception("event listener %r failed on %s", listener, event_type)
                return None
            if result is not None and inspect.isawaitable(result):
                return self._await_all([(listener, result)], event)
            return None
        return self._call(targets, event)

    def on_retry(self, note_name: str, attempt: int, error: BaseException) -> Any:
        return self._fire(NOTE_RETRIED, None, note_name, None, None, error, attempt)


__all__ = [
    "CADENCE_COMPLETED",
    "CADENCE_FAILED",
    "CADENCE_STARTED",
    "EVENT_TYPES",
    "NOTE_COMPLETED",
    "NOTE_FAILED",
    "NOTE_RETRIED",
    "NOTE_STARTED",
    "WILDCARD",
    "Event",
    "EventEmitter",
]
