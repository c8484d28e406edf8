"""The per-note loops of the observed run path (``engine.runner`` picks one per run).

Each returns ``(score, failure)``: the final score and the last failure an error handler dealt
with (None if there was none), which ``after_cadence`` hooks receive as in the library.
"""

from __future__ import annotations

import inspect
import time
from typing import TYPE_CHECKING, Any

from .checkpoint import Checkpoint, capture
from .context import RunInfo, current_run
from .errors import Interrupt
from .events import NOTE_COMPLETED, deliver, note_event
from .hooks import HookPlan, HooksManager, hook_failed
from .measures import KIND_ASYNC_NOTE, Measure, ThenMeasure, with_step_reports
from .runner import call_after, classify, execute, handle_error, report
from .score import SCORE_TYPES

if TYPE_CHECKING:
    from .cadence import Cadence


async def notes_with_after_hooks(
    cadence: Cadence[Any], score: Any, i: int, after: tuple[Any, ...], hooks: HooksManager | None
) -> tuple[Any, BaseException | None]:
    """The common observed case (after-note hooks such as a recorder, and/or an error
    handler): time each note and call the after-note hooks, nothing else per note."""
    measures = cadence._measures
    n = len(measures)
    clock = time.perf_counter if after else _no_clock
    async_kind, score_types = KIND_ASYNC_NOTE, SCORE_TYPES
    failure: BaseException | None = None
    while i < n:
        m = measures[i]
        t0 = clock()
        try:
            if m.kind == async_kind:
                call = m.fn  # type: ignore[attr-defined]
                result = await call(score)
                if result is not None:
                    if isinstance(result, score_types):
                        score = result
                    elif result is True and m.can_interrupt:
                        raise Interrupt
            else:
                score = await execute(m, score)
        except Exception as exc:
            elapsed = clock() - t0
            error, stopped = classify(m, exc)
            await call_after(after, m.name, score, elapsed, error)
            if error is not None:
                failure = error
                stopped = await handle_error(cadence, score, m.name, error, hooks)
            if stopped:
                return score, failure
            i += 1
            continue
        if after:
            elapsed = clock() - t0
            for fn in after:
                try:
                    outcome = fn(m.name, score, elapsed, None)
                    if outcome is not None and inspect.isawaitable(outcome):
                        await outcome
                except Exception:
                    hook_failed(fn, "after_note")
        i += 1
    return score, failure


def _no_clock() -> float:
    return 0.0


async def event_failure(
    cadence: Cadence[Any],
    plan: HookPlan,
    run: RunInfo,
    m: Measure,
    score: Any,
    exc: Exception,
    t0: float,
) -> tuple[bool, BaseException | None]:
    """A note of a run whose only per-note hooks are event emitters (``Cadence.run``) raised:
    (whether the run stops, the error handled if any). The failure goes through the emitters'
    ``after_note`` (``note.failed``), a clean stop (``Skip``, ``Interrupt``) completes the note."""
    t1 = time.perf_counter()
    error, stopped = classify(m, exc)
    if error is not None:
        # A contextless run set no run context; the emitters' note.failed events (and the
        # error handler) read it: set it for them.
        token = current_run.set(run) if current_run.get() is not run else None
        try:
            await call_after(plan.after_note, m.name, score, t1 - t0, error)
            stopped = await handle_error(cadence, score, m.name, error, cadence._hooks)
        finally:
            if token is not None:
                current_run.reset(token)
    else:  # a clean stop (Skip, Interrupt) still completes the note
        event = note_event(NOTE_COMPLETED, m.name, score, t0, t1, run)
        pending = deliver(plan.note_listeners, event)  # type: ignore[arg-type]
        if pending is not None:
            await pending
    return stopped, error


async def notes(
    cadence: Cadence[Any],
    score: Any,
    i: int,
    plan: Any,
    hooks: HooksManager | None,
    store: Any,
    run_id: str | None,
) -> tuple[Any, BaseException | None]:
    """Everything: before- and after-note hooks, retries, reporters and checkpoints."""
    measures = cadence._measures
    n = len(measures)
    before = plan.before_note if plan is not None else ()
    after = plan.after_note if plan is not None else ()
    # Only runs whose hooks listen to retries need the current note's name.
    info = current_run.get() if plan is not None and plan.on_retry else None
    reporters = tuple(cadence._reporters)
    clock = time.perf_counter
    timed = bool(after or reporters)
    async_kind, score_types = KIND_ASYNC_NOTE, SCORE_TYPES
    failure: BaseException | None = None
    snapshot = getattr(store, "capture", capture)
    while i < n:
        m = measures[i]
        name = m.name
        if reporters and not isinstance(m, ThenMeasure):
            m = with_step_reports(m, reporters)  # the library reports a group's notes one by one
        if info is not None:
            info.note = name  # for on_retry hooks; cheaper than a contextvar per note
        for fn in before:
            try:
                outcome = fn(name, score)
                if outcome is not None and inspect.isawaitable(outcome):
                    await outcome
            except Exception:
                hook_failed(fn, "before_note")
        t0 = clock() if timed else 0.0
        error: BaseException | None = None
        stopped = False
        try:
            if m.kind == async_kind:
                call = m.fn  # type: ignore[attr-defined]
                result = await call(score)
                if result is not None:
                    if isinstance(result, score_types):
                        score = result
                    elif result is True and m.can_interrupt:
                        raise Interrupt
            else:
                score = await execute(m, score)
        except Exception as exc:
            error, stopped = classify(m, exc)
        elapsed = clock() - t0 if timed else 0.0
        if reporters and isinstance(m, ThenMeasure):
            for reporter in reporters:
                await report(reporter, name, elapsed, score)
        if after:
            await call_after(after, name, score, elapsed, error)
        if error is not None:
            failure = error
            stopped = await handle_error(cadence, score, name, error, hooks)
        if store is not None and (error is None or not stopped):
            last = stopped or i == n - 1
            await store.save(
                run_id, Checkpoint(run_id, cadence.name, i, name, snapshot(score), completed=last)
            )  # type: ignore[arg-type]
        i += 1
        if stopped:
            break
    return score, failure
