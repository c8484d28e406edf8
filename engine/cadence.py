"""``Cadence``: the fluent builder and its runner.

Three run paths. With nothing attached (no hooks, reporters, error handler or checkpoint store,
or only hooks that want no call this run) the runner is a tight loop that awaits async notes
directly: no task, copy or hook dispatch per note. When the only per-note hooks are event
emitters with ``note.completed`` listeners, a loop just as tight calls those listeners with
lazily built events. Anything else selects the observed path (``engine.runner``), which adds
hooks, reporting, error handling and checkpoints around each measure.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import time
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from .checkpoint import CheckpointStore
from .context import RunInfo, current_run
from .errors import CadenceError, Interrupt, Skip, note_failure
from .events import NoteCompletedEvent, deliver, logger
from .hooks import HooksManager, fire
from .measures import (
    KIND_ASYNC_NOTE,
    KIND_SYNC_GROUP,
    KIND_SYNC_NOTE,
    ChildMeasure,
    Measure,
    SequenceMeasure,
    SplitMeasure,
    SyncMeasure,
    ThenMeasure,
)
from .parallel import run_parallel
from .runner import event_failure, execute, run_observed
from .score import SCORE_TYPES

S = TypeVar("S")

_clock = time.perf_counter
# Bound once: ``current_run.set(...)`` on an imported name compiles to an attribute load that
# builds a bound method per call.
_enter_run, _leave_run, _outer_run = current_run.set, current_run.reset, current_run.get

Reporter = Callable[[str, float, Any], Any]
ErrorHandler = Callable[[Any, BaseException], Any]


class Cadence(Generic[S]):
    """A named flow of measures over a score. Build it fluently, then ``await run()``."""

    __slots__ = (
        "name",
        "score",
        "_measures",
        "_hooks",
        "_reporters",
        "_error_handler",
        "_stop_on_error",
        "_store",
        "_run_id",
    )

    def __init__(self, name: str, score: S | None = None) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError("a cadence needs a non-empty name")
        self.name = name
        self.score = score
        self._measures: list[Measure] = []
        self._hooks: HooksManager | None = None
        self._reporters: list[Reporter] = []
        self._error_handler: ErrorHandler | None = None
        self._stop_on_error = True
        self._store: CheckpointStore | None = None
        self._run_id: str | None = None

    # -- building -------------------------------------------------------------------------

    @property
    def measures(self) -> tuple[Measure, ...]:
        return tuple(self._measures)

    def add_measure(self, measure: Measure) -> Cadence[S]:
        self._measures.append(measure)
        return self

    def then(self, name: str, fn: Callable[..., Any], can_interrupt: bool = False) -> Cadence[S]:
        return self.add_measure(ThenMeasure(name, fn, can_interrupt))

    def sequence(self, name: str, fns: Iterable[Callable[..., Any]]) -> Cadence[S]:
        return self.add_measure(SequenceMeasure(name, fns))

    def sync(
        self, name: str, fns: Iterable[Callable[..., Any]], merge_strategy: Any = "fail_on_conflict"
    ) -> Cadence[S]:
        return self.add_measure(SyncMeasure(name, fns, merge_strategy))

    def split(
        self,
        name: str,
        condition: Callable[[Any], Any],
        if_true: Any,
        if_false: Any = None,
        parallel: bool = False,
        merge_strategy: Any = "fail_on_conflict",
    ) -> Cadence[S]:
        return self.add_measure(
            SplitMeasure(name, condition, if_true, if_false, parallel, merge_strategy)
        )

    def child(
        self, name: str, cadence: Cadence[Any], merge: Callable[..., Any] | None = None
    ) -> Cadence[S]:
        if not isinstance(cadence, Cadence):
            raise TypeError(f"child {name!r} needs a Cadence, not {type(cadence).__name__}")
        if cadence is self or self in _descendants(cadence):
            raise ValueError(f"child {name!r} would make cadence {self.name!r} contain itself")
        return self.add_measure(ChildMeasure(name, cadence, merge))

    def on_error(self, handler: ErrorHandler, stop: bool = True) -> Cadence[S]:
        """Call ``handler(score, error)`` when a measure fails; ``stop=False`` carries on."""
        self._error_handler = handler
        self._stop_on_error = stop
        return self

    def with_hooks(self, hooks: Any) -> Cadence[S]:
        items = list(hooks) if isinstance(hooks, (list, tuple)) else [hooks]
        if self._hooks is None:
            self._hooks = HooksManager()
        for hook in items:
            self._hooks.add(hook)
        return self

    def with_reporter(self, reporter: Reporter) -> Cadence[S]:
        self._reporters.append(reporter)
        return self

    def with_checkpoint(self, store: CheckpointStore, run_id: str | None = None) -> Cadence[S]:
        """Checkpoint after every measure into ``store`` (either store protocol) under
        ``run_id`` (or the ``run_id`` given to ``run``); one store per cadence."""
        if self._store is not None:
            raise CadenceError(
                "with_checkpoint() called twice — only one checkpoint store per cadence",
                code="CHECKPOINT_ALREADY_SET",
            )
        if not isinstance(store, CheckpointStore):
            raise TypeError(f"{type(store).__name__} is not a checkpoint store")
        self._store = store
        self._run_id = run_id
        return self

    # -- running --------------------------------------------------------------------------

    async def run(self, score: S | None = None, *, run_id: str | None = None) -> S:
        """Run every measure on ``score`` (default: the cadence's own) and return the score."""
        if score is None:
            score = self.score
            if score is None:
                raise CadenceError(f"cadence {self.name!r} has no score to run on", code="NO_SCORE")
        hooks = self._hooks
        plan = hooks.plan() if hooks is not None and hooks.any else None
        if plan is not None and plan.events and not self._reporters and self._store is None:
            # Event emitters with note.completed listeners are the only per-note hooks: the
            # loop calls those listeners itself (worked out once per hook plan), each event a
            # lazily built NoteCompletedEvent (the note's name, the score, two clock readings
            # and the run). Inlined, like the bare path below, for one frame less per run.
            # One clock reading per note where it can: a note's end is the next note's start,
            # unless listeners that may take time ran in between (plan.instant is False), after
            # which the clock is read again, so that no listener's time counts in a duration.
            # A top-level run with no other hook call (plan.contextless) sets no run context,
            # as nothing would read it; its events share one cached RunInfo.
            name = self.name
            run_id = run_id or self._run_id
            if plan.contextless and _outer_run() is None:
                run = plan.label
                if run is None or run.cadence_name != name or run.run_id != run_id:
                    run = plan.label = RunInfo(name, run_id, hooks, False)
                run_token = None
            else:
                run = RunInfo(name, run_id, hooks, False)
                run_token = _enter_run(run)
            try:
                if plan.before_cadence:
                    pending = fire(plan.before_cadence, "before_cadence", name, score)
                    if pending is not None:
                        await pending
                clock = _clock
                t0 = began = clock()
                initial = score
                try:
                    completed = plan.note_listeners
                    sole = completed[0] if len(completed) == 1 else None  # type: ignore[arg-type]
                    instant, new_event = plan.instant, NoteCompletedEvent
                    failure: BaseException | None = None
                    # (rare branches in helpers: short jumps keep the instructions specialised)
                    for m in self._measures:
                        try:
                            if m.kind == KIND_ASYNC_NOTE:
                                call = m.fn  # type: ignore[attr-defined]
                                result = await call(score)
                                if result is not None:
                                    if isinstance(result, SCORE_TYPES):
                                        score = result
                                    elif result is True and m.can_interrupt:
                                        raise Interrupt
                            else:
                                score = await execute(m, score)
                        except Exception as exc:
                            stopped, error = await event_failure(self, plan, run, m, score, exc, t0)
                            if error is not None:
                                failure = error
                            if stopped:
                                break
                            t0 = clock()
                            continue
                        event = new_event()  # (a class call: cheaper than object.__new__(cls))
                        event.note_name = m.name
                        event.score = score
                        event._t0 = t0
                        event._t1 = t0 = clock()
                        event._run = run
                        if sole is not None:  # one listener, the common case: no loop
                            try:
                                outcome = sole(event)
                                # (a type check first: inspect.isawaitable is slow on plain values)
                                if outcome is not None and hasattr(type(outcome), "__await__"):
                                    await outcome
                            except Exception:
                                logger.warning("event listener %r failed", sole, exc_info=True)
                        else:
                            pending = deliver(completed, event)  # type: ignore[arg-type]
                            if pending is not None:
                                await pending
                        if not instant:
                            t0 = clock()  # the listeners' time is no note's
                except BaseException as exc:
                    if plan.after_cadence:
                        elapsed = clock() - began
                        pending = fire(
                            plan.after_cadence, "after_cadence", name, initial, elapsed, exc
                        )
                        if pending is not None:
                            await pending
                    raise
                if plan.after_cadence:
                    elapsed = clock() - began
                    pending = fire(
                        plan.after_cadence, "after_cadence", name, score, elapsed, failure
                    )
                    if pending is not None:
                        await pending
                return score
            finally:
                if run_token is not None:
                    _leave_run(run_token)
        if (
            self._reporters
            or self._error_handler is not None
            or self._store is not None
            or (plan is not None and not plan.idle)
        ):
            return await run_observed(self, score, run_id or self._run_id, plan)
        # The hot path (nothing attached, or hooks that want nothing this run, such as an event
        # emitter without listeners), inlined here rather than in a helper so a run costs one
        # frame less: each async note is one direct await.
        # (a for loop, as the library's: the measure raising is the loop's current one)
        m: Measure | None = None
        try:
            for m in self._measures:
                kind = m.kind
                if kind == KIND_ASYNC_NOTE:
                    call = m.fn  # type: ignore[attr-defined] # a local: 3.11 does not specialise m.fn(...)
                    result = await call(score)
                elif kind == KIND_SYNC_NOTE:
                    call = m.fn  # type: ignore[attr-defined]
                    result = call(score)
                    if result is not None and inspect.isawaitable(result):
                        result = await result
                elif kind == KIND_SYNC_GROUP:
                    result = await run_parallel(m.name, m.steps, score, m.merge)  # type: ignore[attr-defined]
                else:
                    result = await m.execute(score)
                if result is not None:
                    if isinstance(result, SCORE_TYPES):
                        score = result
                    elif result is True and m.can_interrupt:
                        return score  # an interruptible note returned True: stop here
            return score
        except Skip:
            return score  # a clean stop: the score so far is the result
        except Exception as exc:
            if isinstance(exc, Interrupt) and m.can_interrupt:  # type: ignore[union-attr]
                return score
            raise note_failure(m.name, exc) from exc  # type: ignore[union-attr]

    def run_sync(self, score: S | None = None, *, run_id: str | None = None) -> S:
        """Run from synchronous code; from inside a running loop it uses a private thread."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.run(score, run_id=run_id))
        with concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="engine-run"
        ) as pool:
            return pool.submit(asyncio.run, self.run(score, run_id=run_id)).result()

    # -- introspection --------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """This cadence in the JSON flow form (children under ``cadences``), for diagrams and checks."""
        cadences: dict[str, Any] = {}
        _collect_children(self, cadences, set())
        out: dict[str, Any] = {"name": self.name, "steps": [m.describe() for m in self._measures]}
        if cadences:
            out["cadences"] = cadences
        return out

    def get_score(self) -> S | None:
        """The cadence's own score (the one ``run()`` without arguments runs on and returns)."""
        return self.score

    def __repr__(self) -> str:
        return f"<Cadence: {self.name} ({len(self._measures)} measures)>"


def _descendants(cadence: Cadence[Any]) -> list[Cadence[Any]]:
    found: list[Cadence[Any]] = []
    stack = [cadence]
    seen: set[int] = set()
    while stack:
        current = stack.pop()
        for m in current._measures:
            if isinstance(m, ChildMeasure) and id(m.cadence) not in seen:
                seen.add(id(m.cadence))
                found.append(m.cadence)
                stack.append(m.cadence)
    return found


def _collect_children(cadence: Cadence[Any], out: dict[str, Any], seen: set[int]) -> None:
    for m in cadence._measures:
        if isinstance(m, ChildMeasure) and id(m.cadence) not in seen:
            seen.add(id(m.cadence))
            child = m.cadence
            out[child.name] = {"steps": [c.describe() for c in child._measures]}
            _collect_children(child, out, seen)
