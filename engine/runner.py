"""The observed run path: a cadence with hooks, reporters, an error handler or a checkpoint store.

(The bare path, with nothing attached, is inlined in ``Cadence.run``.) Hooks are asked once per
run which calls they want (``HooksManager.plan``); when only after-note hooks remain, notes run
in a specialised loop that does nothing else per note but time the note and call them.
"""

from __future__ import annotations

import inspect
import time
from typing import TYPE_CHECKING, Any

from .checkpoint import Checkpoint, capture, restore
from .context import RunInfo, current_run
from .errors import CadenceError, Interrupt, MergeConflict, NoteError, Skip
from .hooks import HooksManager, fire, hook_failed
from .measures import KIND_ASYNC_NOTE, KIND_SYNC_GROUP, KIND_SYNC_NOTE, Measure
from .parallel import run_parallel
from .score import SCORE_TYPES

if TYPE_CHECKING:
    from .cadence import Cadence, Reporter

PASS_THROUGH = (NoteError, MergeConflict)


async def execute(m: Measure, score: Any) -> Any:
    kind = m.kind
    if kind == KIND_ASYNC_NOTE:
        result = await m.fn(score)  # type: ignore[attr-defined]
    elif kind == KIND_SYNC_NOTE:
        result = m.fn(score)  # type: ignore[attr-defined]
        if result is not None and inspect.isawaitable(result):
            result = await result
    elif kind == KIND_SYNC_GROUP:
        result = await run_parallel(m.name, m.steps, score, m.merge)  # type: ignore[attr-defined]
    else:
        return await m.execute(score)
    if result is not None and isinstance(result, SCORE_TYPES):
        return result
    return score


def classify(m: Measure, exc: Exception) -> tuple[BaseException | None, bool]:
    """(error to report, interrupted) for what a measure raised."""
    if isinstance(exc, Skip):
        return None, False
    if isinstance(exc, Interrupt):
        if m.can_interrupt:
            return None, True
    elif isinstance(exc, PASS_THROUGH):
        return exc, False
    error = NoteError(m.name, exc)
    error.__cause__ = exc
    return error, False


async def report(reporter: Reporter, name: str, elapsed: float, score: Any) -> None:
    outcome = reporter(name, elapsed, score)
    if outcome is not None and inspect.isawaitable(outcome):
        await outcome


async def call_after(
    after: tuple[Any, ...], name: str, score: Any, elapsed: float, error: BaseException | None
) -> None:
    for fn in after:
        try:
            outcome = fn(name, score, elapsed, error)
            if outcome is not None and inspect.isawaitable(outcome):
                await outcome
        except Exception:
            hook_failed(fn, "after_note")


async def handle_error(
    cadence: Cadence[Any], score: Any, name: str, error: BaseException, hooks: HooksManager | None
) -> None:
    if hooks is not None and hooks.table["on_error"]:
        await hooks.on_error(name, score, error)
    handler = cadence._error_handler
    if handler is not None:
        outcome = handler(score, error)
        if inspect.isawaitable(outcome):
            await outcome
    if handler is None or cadence._stop_on_error:
        raise error


def resume_index(cadence: Cadence[Any], checkpoint: Checkpoint) -> int:
    index = checkpoint.measure_index
    measures = cadence._measures
    if checkpoint.cadence_name != cadence.name or (
        index >= 0 and (index >= len(measures) or measures[index].name != checkpoint.measure_name)
    ):
        raise CadenceError(
            f"checkpoint of run {checkpoint.run_id!r} does not match cadence {cadence.name!r}",
            code="checkpoint_mismatch",
            details={
                "cadence": checkpoint.cadence_name,
                "measure": checkpoint.measure_name,
                "index": index,
            },
        )
    return index + 1


async def run_observed(cadence: Cadence[Any], score: Any, run_id: str | None) -> Any:
    hooks = cadence._hooks if cadence._hooks is not None and cadence._hooks.any else None
    store = cadence._store
    name = cadence.name
    if store is not None and not run_id:
        raise CadenceError(
            f"cadence {name!r} has a checkpoint store but no run_id", code="no_run_id"
        )
    run_token = current_run.set(RunInfo(name, run_id, hooks)) if hooks is not None else None
    try:
        start = 0
        if store is not None:
            checkpoint = await store.load(run_id)  # type: ignore[arg-type]
            if checkpoint is not None:
                if checkpoint.completed:
                    return restore(score, checkpoint.score_state)
                start = resume_index(cadence, checkpoint)
                score = restore(score, checkpoint.score_state)
        # Per run, not per note: hooks may decline calls they have nothing to do for.
        plan = hooks.plan() if hooks is not None else None
        if plan is not None and plan.before_cadence:
            pending = fire(plan.before_cadence, "before_cadence", name, score)
            if pending is not None:
                await pending
        began = time.perf_counter()
        try:
            if (
                (plan is None or not (plan.before_note or plan.on_retry))
                and not cadence._reporters
                and store is None
            ):
                after = plan.after_note if plan is not None else ()
                score = await _notes_with_after_hooks(cadence, score, start, after, hooks)
            else:
                score = await _notes(cadence, score, start, plan, hooks, store, run_id)
        except BaseException as exc:
            if plan is not None and plan.after_cadence:
                pending = fire(
                    plan.after_cadence,
                    "after_cadence",
                    name,
                    score,
                    time.perf_counter() - began,
                    exc,
                )
                if pending is not None:
                    await pending
            raise
        total = time.perf_counter() - began
        if plan is not None and plan.after_cadence:
            pending = fire(plan.after_cadence, "after_cadence", name, score, total, None)
            if pending is not None:
                await pending
        for reporter in cadence._reporters:
            await report(reporter, name, total, score)
        return score
    finally:
        if run_token is not None:
            current_run.reset(run_token)


async def _notes_with_after_hooks(
    cadence: Cadence[Any], score: Any, i: int, after: tuple[Any, ...], hooks: HooksManager | None
) -> Any:
    """The common observed case (after-note hooks such as a recorder or an event emitter, and/or
    an error handler): time each note and call the after-note hooks, nothing else per note."""
    measures = cadence._measures
    n = len(measures)
    clock = time.perf_counter
    async_kind, score_types = KIND_ASYNC_NOTE, SCORE_TYPES
    while i < n:
        m = measures[i]
        t0 = clock()
        try:
            if m.kind == async_kind:
                result = await m.fn(score)  # type: ignore[attr-defined]
                if result is not None and isinstance(result, score_types):
                    score = result
            else:
                score = await execute(m, score)
        except Exception as exc:
            elapsed = clock() - t0
            error, interrupted = classify(m, exc)
            await call_after(after, m.name, score, elapsed, error)
            if error is not None:
                await handle_error(cadence, score, m.name, error, hooks)
            if interrupted:
                return score
            i += 1
            continue
        elapsed = clock() - t0
        for fn in after:
            try:
                outcome = fn(m.name, score, elapsed, None)
                if outcome is not None and inspect.isawaitable(outcome):
                    await outcome
            except Exception:
                hook_failed(fn, "after_note")
        i += 1
    return score


async def _notes(
    cadence: Cadence[Any],
    score: Any,
    i: int,
    plan: Any,
    hooks: HooksManager | None,
    store: Any,
    run_id: str | None,
) -> Any:
    measures = cadence._measures
    n = len(measures)
    before = plan.before_note if plan is not None else ()
    after = plan.after_note if plan is not None else ()
    # Only runs whose hooks listen to retries need the current note's name.
    info = current_run.get() if plan is not None and plan.on_retry else None
    reporters = cadence._reporters
    clock = time.perf_counter
    timed = bool(after or reporters)
    async_kind, score_types = KIND_ASYNC_NOTE, SCORE_TYPES
    while i < n:
        m = measures[i]
        name = m.name
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
        interrupted = False
        try:
            if m.kind == async_kind:
                result = await m.fn(score)  # type: ignore[attr-defined]
                if result is not None and isinstance(result, score_types):
                    score = result
            else:
                score = await execute(m, score)
        except Exception as exc:
            error, interrupted = classify(m, exc)
        elapsed = clock() - t0 if timed else 0.0
        if after:
            await call_after(after, name, score, elapsed, error)
        for reporter in reporters:
            await report(reporter, name, elapsed, score)
        if error is not None:
            await handle_error(cadence, score, name, error, hooks)
        if store is not None:
            last = interrupted or i == n - 1
            await store.save(
                run_id, Checkpoint(run_id, cadence.name, i, name, capture(score), completed=last)
            )  # type: ignore[arg-type]
        i += 1
        if interrupted:
            break
    return score
