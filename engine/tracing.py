"""``TracingHooks``: a start and an end record per step, nested exactly, with what it saw.

Each step gets a step id when it starts; its parent is the step current in its context
(``current_step``): a tool call or model call made inside a note, or a note of a ``.sync``
group's branch (whose task copies the context), names that note as its parent. The end record
carries the score fields as the step found them (``inputs``), the fields it changed
(``changes``), the fields it read (``reads``, when the score is ``ReadTracked``), the error with
its stack trace, the CPU time of the thread while it ran (so concurrent work on the same loop is
counted too) and how much the process's peak resident memory grew meanwhile.

As hooks, they see the measures of the cadence they are attached to. ``instrument(cadence)``
returns a copy of a cadence whose inner notes are steps of their own too: the notes of a
``.sync`` group (each on its copy-on-write fork: ``forked``), of a ``.split``'s chosen branch and
of a ``.sequence``, and the measures of ``.child`` cadences (nested under the child's step). A
``.split``'s condition reads count as the split's reads; what the engine itself reads to fork,
merge or copy a score is nobody's read. ``engine.lineage`` turns these records into the run's
graph of who wrote what each step read.

Sync and cheap enough for a recorder that keeps every step: two JSON-ready score snapshots per
step, and a set of field names per note.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import inspect
import itertools
import time
import traceback

try:
    import resource
except ImportError:  # not on Windows
    resource = None  # type: ignore[assignment]
from collections.abc import Callable
from typing import Any

from .checkpoint import field_names
from .context import current_run
from .errors import Interrupt, Skip
from .hooks import CadenceHooks, HooksManager
from .measures import (
    ChildMeasure,
    Measure,
    SequenceMeasure,
    SplitMeasure,
    Step,
    SyncMeasure,
)
from .score import SCORE_TYPES, to_jsonable

current_step: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "engine_step", default=None
)
_ids = itertools.count(1)
_RUSAGE = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF) if resource else None


class _Reader:
    """The fields the current step read of ``score`` (None: it is reading nothing right now)."""

    __slots__ = ("score", "fields")

    def __init__(self) -> None:
        self.score: Any = None
        self.fields: set[str] = set()


_reading: contextvars.ContextVar[_Reader | None] = contextvars.ContextVar(
    "engine_reading", default=None
)


class ReadTracked:
    """Mix into a score class (``class MyScore(ReadTracked, Score)``) so that ``TracingHooks``
    record which fields each step read: every attribute read of the score while a step runs on
    it is noted (one context-variable lookup per attribute read; nothing is kept outside a
    traced step). Reads through another object (a copy, a value taken earlier) are not."""

    def __getattribute__(self, name: str) -> Any:
        reader = _reading.get()
        if reader is not None and reader.score is self:
            reader.fields.add(name)
        return object.__getattribute__(self, name)


def resource_usage() -> tuple[float, int]:
    """(CPU seconds of this thread, peak resident KiB of the process), in one getrusage call
    (about 1 µs; time.process_time and /proc reads cost 10-100x that on a busy machine)."""
    if _RUSAGE is None:
        return time.process_time(), 0
    used = resource.getrusage(_RUSAGE)
    # Linux reports the process's peak (its memory's high-water mark) for a thread too.
    return used.ru_utime + used.ru_stime, used.ru_maxrss


def new_step_id() -> str:
    return f"s{next(_ids)}"


class StepStart:
    __slots__ = ("step_id", "parent_id", "name", "kind", "started_at")

    def __init__(
        self, step_id: str, parent_id: str | None, name: str, kind: str, started_at: float
    ) -> None:
        self.step_id = step_id
        self.parent_id = parent_id
        self.name = name
        self.kind = kind
        self.started_at = started_at


class StepEnd:
    __slots__ = (
        "step_id",
        "parent_id",
        "name",
        "kind",
        "started_at",
        "ended_at",
        "duration",
        "inputs",
        "changes",
        "reads",  # sorted field names, or None when the score does not track reads
        "forked",  # True for a note that ran on its own copy of the score (a .sync branch)
        "error",
        "stack",
        "cpu_ms",
        "memory_kb",
    )

    def __init__(
        self,
        *,
        step_id: str,
        parent_id: str | None,
        name: str,
        kind: str,
        started_at: float,
        ended_at: float,
        duration: float,
        inputs: dict[str, Any] | None = None,
        changes: dict[str, Any] | None = None,
        reads: list[str] | None = None,
        forked: bool = False,
        error: BaseException | None = None,
        stack: str = "",
        cpu_ms: float | None = None,
        memory_kb: int | None = None,
    ) -> None:
        # Plain assignments: one record per step, on the recording's path (benchmarks/runs.py).
        self.step_id, self.parent_id, self.name, self.kind = step_id, parent_id, name, kind
        self.started_at, self.ended_at, self.duration = started_at, ended_at, duration
        self.inputs, self.changes, self.reads, self.forked = inputs, changes, reads, forked
        self.error, self.stack, self.cpu_ms, self.memory_kb = error, stack, cpu_ms, memory_kb

    @property
    def outcome(self) -> str:
        return "failed" if self.error is not None else "completed"


def _snapshot(score: Any) -> dict[str, Any]:
    """The score's fields as JSON-ready copies: one pass that both freezes them (a note may
    mutate them in place) and makes them storable. Read from the instance's dict when it has
    one: no attribute lookup per field (and no read tracking: the tracer's reads are no step's)."""
    names = field_names(score)
    try:
        state = object.__getattribute__(score, "__dict__")
        return {
            name: value if type(value) in _SCALARS else _frozen(value)
            for name in names
            for value in (state[name],)
        }
    except (AttributeError, KeyError):  # slots, properties: the attributes themselves
        return {name: _frozen(getattr(score, name)) for name in names}


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _frozen(value: Any) -> Any:
    """``to_jsonable(value)``, with the plain containers of plain values walked inline (two
    snapshots per step: most of what tracing a step costs)."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is list or kind is tuple:
        return [v if type(v) in _SCALARS else _frozen(v) for v in value]
    if kind is dict:
        return {
            k if type(k) is str else str(k): v if type(v) in _SCALARS else _frozen(v)
            for k, v in value.items()
        }
    return to_jsonable(value)


def stack_of(error: BaseException) -> str:
    """The stack of the error a note raised (the engine wraps it: the original's is the one)."""
    original = getattr(error, "original_error", None) or error
    return "".join(traceback.format_exception(original))[-20000:]


class _Opened:
    __slots__ = ("step_id", "parent", "kind", "started", "before", "cpu0", "peak0", "reader")

    def __init__(self, *values: Any) -> None:
        (
            self.step_id,
            self.parent,
            self.kind,
            self.started,
            self.before,
            self.cpu0,
            self.peak0,
            self.reader,
        ) = values


# Compound steps read nothing themselves (a split's condition excepted): what the engine reads
# to fork, merge or copy the score is not a note's read.
_LEAF = "note"


class TracingHooks(CadenceHooks):
    """``on_start(StepStart)`` before and ``on_end(StepEnd)`` after every step; ``kinds`` maps a
    measure's name to its kind (``note`` when unnamed there; ``instrument`` fills it in)."""

    def __init__(
        self,
        on_start: Callable[[StepStart], None],
        on_end: Callable[[StepEnd], None],
        kinds: dict[str, str] | None = None,
    ) -> None:
        self.on_start = on_start
        self.on_end = on_end
        self.kinds = kinds if kinds is not None else {}
        self._open: dict[tuple[int, str], _Opened] = {}

    # --- steps -----------------------------------------------------------------------------

    def _begin(self, name: str, kind: str, score: Any) -> _Opened:
        step_id = new_step_id()
        parent = current_step.get()
        started = time.time()
        # Set in the step's own context: hooks and note wrappers run inline, so what the step
        # starts (model calls, tools, a .sync group's branches) sees it as the parent, and reads
        # are the innermost step's. The reader reads nothing until the snapshot is taken.
        reader = _Reader()
        previous = _reading.get()
        _reading.set(reader)
        current_step.set(step_id)
        before = _snapshot(score)
        if kind == _LEAF:
            reader.score = score
        opened = _Opened(
            step_id, parent, kind, started, before, *resource_usage(), (reader, previous)
        )
        self.on_start(StepStart(step_id, parent, name, kind, started))
        return opened

    def _end(
        self,
        opened: _Opened,
        name: str,
        score: Any,
        duration: float,
        error: BaseException | None,
        forked: bool = False,
        emit: bool = True,
    ) -> None:
        reader, previous = opened.reader
        reader.score = None
        _reading.set(previous)
        current_step.set(opened.parent)
        if not emit:
            return
        after = _snapshot(score)
        cpu1, peak1 = resource_usage()
        before = opened.before
        reads = None
        if isinstance(score, ReadTracked):
            reads = sorted(reader.fields.intersection(field_names(score)))
        self.on_end(
            StepEnd(
                step_id=opened.step_id,
                parent_id=opened.parent,
                name=name,
                kind=opened.kind,
                started_at=opened.started,
                ended_at=opened.started + duration,
                duration=duration,
                inputs=before,
                changes={
                    field: value
                    for field, value in after.items()
                    if field not in before or before[field] != value
                },
                reads=reads,
                forked=forked,
                error=error,
                stack=stack_of(error) if error is not None else "",
                cpu_ms=round((cpu1 - opened.cpu0) * 1000, 3),
                memory_kb=peak1 - opened.peak0,
            )
        )

    # --- hooks (the measures of the cadence they are attached to) ---------------------------

    def before_note(self, note_name: str, score: Any) -> None:
        opened = self._begin(note_name, self.kinds.get(note_name, _LEAF), score)
        self._open[(id(current_run.get()), note_name)] = opened

    def after_note(
        self, note_name: str, score: Any, duration: float, error: BaseException | None = None
    ) -> None:
        opened = self._open.pop((id(current_run.get()), note_name), None)
        if opened is not None:
            self._end(opened, note_name, score, duration, error)

    def after_cadence(
        self, cadence_name: str, score: Any, duration: float, error: BaseException | None = None
    ) -> None:
        # A cancelled run never reaches after_note for the measure it was in: forget it.
        key = id(current_run.get())
        for pending in [k for k in self._open if k[0] == key]:
            del self._open[pending]

    # --- inner steps ------------------------------------------------------------------------

    def instrument(self, cadence: Any) -> Any:
        """A copy of ``cadence`` with these hooks attached whose inner notes and child cadences'
        measures are steps too (the module docstring); ``cadence`` itself is left as it is."""
        return self._instrument(cadence, {})

    def _instrument(self, cadence: Any, done: dict[int, Any]) -> Any:
        if id(cadence) in done:
            return done[id(cadence)]
        clone = copy.copy(cadence)
        done[id(cadence)] = clone
        clone._measures = [self._measure(m, done) for m in cadence._measures]
        clone._hooks = HooksManager(list(cadence._hooks.hooks) if cadence._hooks else ())
        clone._hooks.add(self)
        clone._reporters = list(cadence._reporters)
        return clone

    def _measure(self, m: Measure, done: dict[int, Any]) -> Measure:
        if isinstance(m, SyncMeasure):
            self.kinds[m.name] = "sync"
            clone = copy.copy(m)
            clone.steps = tuple(self._leaf(s, forked=True) for s in m.steps)
            return clone
        if isinstance(m, SplitMeasure):
            self.kinds[m.name] = "split"
            clone = copy.copy(m)
            clone.condition = self._condition(m.condition)
            clone.if_true = tuple(self._leaf(s, forked=m.parallel) for s in m.if_true)
            clone.if_false = tuple(self._leaf(s, forked=m.parallel) for s in m.if_false)
            return clone
        if isinstance(m, SequenceMeasure):
            self.kinds[m.name] = "sequence"
            clone = copy.copy(m)
            clone.steps = tuple(self._leaf(s, forked=False) for s in m.steps)
            return clone
        if isinstance(m, ChildMeasure):
            self.kinds[m.name] = "child"
            clone = copy.copy(m)
            clone.cadence = self._instrument(m.cadence, done)
            return clone
        return m

    def _leaf(self, step: Step, *, forked: bool) -> Step:
        fn, name, tracer = step.fn, step.name, self
        in_thread = forked and not step.is_async  # as run_parallel runs a sync note

        async def traced(score: Any) -> Any:
            opened = tracer._begin(name, _LEAF, score)
            t0 = time.perf_counter()
            result: Any = None
            error: BaseException | None = None
            emit = True
            try:
                if in_thread:
                    result = await asyncio.to_thread(fn, score)
                else:
                    result = fn(score)
                    if result is not None and inspect.isawaitable(result):
                        result = await result
                return result
            except (Skip, Interrupt):
                raise
            except asyncio.CancelledError:
                emit = False  # a sibling failed or the run was cancelled: the step never ended
                raise
            except BaseException as exc:
                error = exc
                raise
            finally:
                after = result if result is not None and isinstance(result, SCORE_TYPES) else score
                tracer._end(opened, name, after, time.perf_counter() - t0, error, forked, emit)

        traced.__name__ = getattr(fn, "__name__", name)
        wrapped = Step(traced, name=name)
        wrapped.is_async = True
        return wrapped

    def _condition(self, condition: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def traced_condition(score: Any) -> Any:
            reader = _reading.get()  # the split's own
            if reader is None:
                return condition(score)
            reader.score = score
            try:
                chosen = condition(score)
            finally:
                reader.score = None
            if chosen is not None and inspect.isawaitable(chosen):
                return _read_while(reader, score, chosen)
            return chosen

        return traced_condition


async def _read_while(reader: _Reader, score: Any, awaitable: Any) -> Any:
    reader.score = score
    try:
        return await awaitable
    finally:
        reader.score = None
