"""Structured lifecycle events with listener registration.

An ``EventEmitter`` is also a hook: pass it to ``Cadence.with_hooks``. Listeners may be sync or
async; sync listeners are called inline, async ones awaited in registration order. ``"*"``
listens to every event. A listener that raises is logged and ignored.

Events cost nothing for event types nobody listens to: the emitter tells the runner which hook
calls it wants (``wants``), and no event object is built for an unheard type. Per-note events
are built lazily: the runner hands over the note's name, its two clock readings and the run,
and ``cadence_name``, ``duration``, ``timestamp``, ``run_id`` and ``metadata`` are worked out
only when a listener reads them.
"""

from __future__ import annotations

import abc
import dataclasses
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("engine.events")
_now = time.time
_alloc = object.__new__

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


@dataclasses.dataclass
class CadenceEvent(metaclass=abc.ABCMeta):
    """One lifecycle event, the library's dataclass: ``event_type``, ``cadence_name``,
    ``timestamp`` (``time.time()``), ``note_name``, ``duration``, ``error`` and ``metadata``;
    the engine adds ``score``, ``attempt`` (retries) and ``run_id`` (keyword-only)."""

    event_type: str
    cadence_name: str
    timestamp: float = dataclasses.field(default_factory=time.time)
    note_name: str | None = None
    duration: float | None = None
    error: BaseException | None = None
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    score: Any = dataclasses.field(default=None, kw_only=True, repr=False, compare=False)
    attempt: int | None = dataclasses.field(default=None, kw_only=True)
    run_id: str | None = dataclasses.field(default=None, kw_only=True)

    @property
    def type(self) -> str:
        """The event type (the engine's shorter name for ``event_type``)."""
        return self.event_type

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.event_type,
            "cadence_name": self.cadence_name,
            "note_name": self.note_name,
            "duration": self.duration,
            "error": repr(self.error) if self.error is not None else None,
            "attempt": self.attempt,
            "run_id": self.run_id,
            "timestamp": self.timestamp,
            "metadata": dict(self.metadata),
        }


class Event(CadenceEvent):
    """The engine's former event constructor, kept: ``Event(type, cadence_name, note_name,
    duration, error, score, attempt, run_id, timestamp)``."""

    def __init__(
        self,
        type: str,  # noqa: A002 - the natural name for an event's type
        cadence_name: str,
        note_name: str | None = None,
        duration: float | None = None,
        error: BaseException | None = None,
        score: Any = None,
        attempt: int | None = None,
        run_id: str | None = None,
        timestamp: float | None = None,
    ) -> None:
        super().__init__(
            type,
            cadence_name,
            _now() if timestamp is None else timestamp,
            note_name,
            duration,
            error,
            score=score,
            attempt=attempt,
            run_id=run_id,
        )


class NoteEvent:
    """A per-note event built lazily by the runner: it holds the note's name, the score, the
    two clock readings around the note (``time.perf_counter``) and the run; the other fields
    are worked out when read. It reads like a :class:`CadenceEvent`, counts as one for
    ``isinstance`` and ``dataclasses.asdict``, and costs a few slot writes to build."""

    __slots__ = ("event_type", "note_name", "score", "_t0", "_t1", "_run", "_metadata", "_ts")
    __dataclass_fields__ = CadenceEvent.__dataclass_fields__  # so that asdict()/fields() work

    @property
    def cadence_name(self) -> str:
        run = self._run
        return run.cadence_name if run is not None else ""

    @property
    def run_id(self) -> str | None:
        run = self._run
        return run.run_id if run is not None else None

    @property
    def duration(self) -> float | None:
        return self._t1 - self._t0 if self.event_type != NOTE_STARTED else None

    @property
    def timestamp(self) -> float:
        # The wall-clock time of the note's end, worked out on the first read and kept, so
        # that every read (and to_dict, ==) sees the same value.
        try:
            return self._ts
        except AttributeError:
            self._ts: float = _now() - (time.perf_counter() - self._t1)
            return self._ts

    @property
    def metadata(self) -> dict[str, Any]:
        try:
            return self._metadata
        except AttributeError:
            self._metadata: dict[str, Any] = {}
            return self._metadata

    error = None
    attempt = None
    type = CadenceEvent.type
    to_dict = CadenceEvent.to_dict

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CadenceEvent):
            return NotImplemented
        return _fields(self) == _fields(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"CadenceEvent(event_type={self.event_type!r}, cadence_name={self.cadence_name!r}, "
            f"timestamp={self.timestamp!r}, note_name={self.note_name!r}, "
            f"duration={self.duration!r}, error=None, metadata={self.metadata!r})"
        )


def _fields(event: Any) -> tuple[Any, ...]:
    return tuple(getattr(event, f.name) for f in dataclasses.fields(CadenceEvent) if f.compare)


class NoteCompletedEvent(NoteEvent):
    """A ``note.completed`` :class:`NoteEvent` (its type is the class's: one write less)."""

    __slots__ = ()
    event_type = NOTE_COMPLETED  # type: ignore[assignment]


CadenceEvent.register(NoteEvent)  # type: ignore[attr-defined]


def note_event(
    event_type: str, note_name: str, score: Any, t0: float, t1: float, run: Any
) -> NoteEvent:
    """A lazy per-note event (completed or started: ``t0 == t1`` for a start)."""
    event = _alloc(NoteEvent)
    event.event_type = event_type
    event.note_name = note_name
    event.score = score
    event._t0 = t0
    event._t1 = t1
    event._run = run
    return event


Listener = Callable[[CadenceEvent], Any]


def deliver(targets: list[Listener], event: CadenceEvent) -> Any:
    """Call sync listeners now; return a coroutine for any async results (or None)."""
    awaitables = None  # only allocated when a listener is async: this runs once per event
    for listener in targets:
        try:
            result = listener(event)
        except Exception:
            logger.warning(
                "event listener %r failed on %s", listener, event.event_type, exc_info=True
            )
            continue
        if result is not None and inspect.isawaitable(result):
            if awaitables is None:
                awaitables = []
            awaitables.append((listener, result))
    if awaitables is None:
        return None
    return _await_all(awaitables, event)


async def _await_all(awaitables: list[tuple[Listener, Any]], event: CadenceEvent) -> None:
    for listener, awaitable in awaitables:
        try:
            await awaitable
        except Exception:
            logger.warning(
                "event listener %r failed on %s", listener, event.event_type, exc_info=True
            )


def __getattr__(name: str) -> Any:
    # The emitter (engine.emitter) builds the events defined here, so it is imported on demand.
    if name in ("EventEmitter", "sole_emitters"):
        from . import emitter

        return getattr(emitter, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    "CadenceEvent",
    "Event",
    "EventEmitter",  # noqa: F822 - provided by __getattr__
    "NoteEvent",
    "note_event",
]
