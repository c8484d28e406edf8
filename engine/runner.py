"""The observed run path: a cadence with hooks, reporters, an error handler or a checkpoint store.

(The bare path, with nothing attached, and the path whose only per-note hooks are event emitters,
are inlined in ``Cadence.run``.) Hooks are asked which calls they want when their interest
changes, not per run (``HooksManager.plan``); when only after-note hooks remain, notes run in a
specialised loop (``engine.loops``) that does nothing else per note but time the note and call
them.

As in the library: a failure handled by ``on_error`` ends the run normally (``stop=True``) or
goes on (``stop=False``), and ``after_cadence`` hooks (and ``CADENCE_FAILED`` listeners) still
receive the failure; reporters get each note and ``"<cadence>:TOTAL"``.
"""

from __future__ import annotations

import inspect
import time
from typing import TYPE_CHECKING, Any

from .checkpoint import Checkpoint, as_engine_store, restore
from .context import RunInfo, current_run
from .errors import CadenceError, Interrupt, Skip, note_failure
from .hooks import HookPlan, HooksManager, fire, hook_failed
from .measures import KIND_ASYNC_NOTE, KIND_SYNC_GROUP, KIND_SYNC_NOTE, Measure
from .parallel import run_parallel
from .score import SCORE_TYPES

if TYPE_CHECKING:
    from .cadence import Cadence, Reporter


async def execute(m: Measure, score: Any) -> Any:
    kind = m.kind
    if kind == KIND_ASYNC_NOTE:
        call = m.fn  # type: ignore[attr-defined]
        result = await call(score)
    elif kind == KIND_SYNC_NOTE:
        call = m.fn  # type: ignore[attr-defined]
        result = call(score)
        if result is not None and inspect.isawaitable(result):
            result = await result
    elif kind == KIND_SYNC_GROUP:
        result = await run_parallel(m.name, m.steps, score, m.merge)  # type: ignore[attr-defined]
    else:
        return await m.execute(score)
    if result is not None:
        if isinstance(result, SCORE_TYPES):
            return result
        if result is True and m.can_interrupt:
            raise Interrupt  # the library's form: an interruptible note returned True
    return score


def classify(m: Measure, exc: Exception) -> tuple[BaseException | None, bool]:
    """(error to report, stopped) for what a measure raised: ``Skip`` (and ``Interrupt`` from
    a note that may interrupt) stop the run without an error."""
    if isinstance(exc, Skip):
        return None, True
    if isinstance(exc, Interrupt) and m.can_interrupt:
        return None, True
    return note_failure(m.name, exc), False


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
) -> bool:
    """Tell the hooks, then the error handler; True when the run stops here (handled with
    ``stop=True``). Without a handler the error propagates."""
    if hooks is not None and hooks.table["on_error"]:
        await hooks.on_error(name, score, error)
    handler = cadence._error_handler
    if handler is None:
        raise error
    outcome = handler(score, error)
    if inspect.isawaitable(outcome):
        await outcome
    return cadence._stop_on_error


def resume_index(cadence: Cadence[Any], checkpoint: Checkpoint) -> int:
    index = checkpoint.measure_index
    measures = cadence._measures
    if checkpoint.cadence_name != cadence.name or (
        index >= 0 and (index >= len(measures) or measures[index].name != checkpoint.measure_name)
    ):
        raise CadenceError(
            f"checkpoint of run {checkpoint.run_id!r} does not match cadence {cadence.name!r}",
            code="CHECKPOINT_MISMATCH",
            details={
                "cadence": checkpoint.cadence_name,
                "measure": checkpoint.measure_name,
                "index": index,
            },
        )
    return index + 1


async def run_observed(
    cadence: Cadence[Any], score: Any, run_id: str | None, plan: HookPlan | None
) -> Any:
    """``plan``: the hooks' plan for this run (None without hooks), from ``Cadence.run``."""
    hooks = cadence._hooks if plan is not None else None
    name = cadence.name
    store = as_engine_store(cadence._store, cadence) if cadence._store is not None else None
    if store is not None and not run_id:
        raise CadenceError(
            f"cadence {name!r} has a checkpoint store but no run_id", code="NO_RUN_ID"
        )
    run_token = (
        current_run.set(RunInfo(name, run_id, hooks, bool(plan.on_retry)))
        if plan is not None
        else None
    )
    try:
        start = 0
        if store is not None:
            checkpoint = await store.load(run_id)  # type: ignore[arg-type]
            if checkpoint is not None:
                if checkpoint.completed:
                    return restore(score, checkpoint.score_state)
                start = resume_index(cadence, checkpoint)
                score = restore(score, checkpoint.score_state)
        if plan is not None and plan.before_cadence:
            pending = fire(plan.before_cadence, "before_cadence", name, score)
            if pending is not None:
                await pending
        began = time.perf_counter()
        reporters = cadence._reporters
        try:
            if (
                (plan is None or not (plan.before_note or plan.on_retry))
                and not reporters
                and (store is None)
            ):
                after = plan.after_note if plan is not None else ()
                score, failure = await notes_with_after_hooks(cadence, score, start, after, hooks)
            else:
                score, failure = await notes(cadence, score, start, plan, hooks, store, run_id)
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
        for reporter in reporters:
            await report(reporter, f"{name}:TOTAL", total, score)
        if plan is not None and plan.after_cadence:
            pending = fire(plan.after_cadence, "after_cadence", name, score, total, failure)
            if pending is not None:
                await pending
        return score
    finally:
        if run_token is not None:
            current_run.reset(run_token)


from .loops import event_failure, notes, notes_with_after_hooks  # noqa: E402, F401 - they use the helpers above
