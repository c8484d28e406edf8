"""Measures: the steps of a cadence (then, sequence, sync, split, child).

Each measure knows how to execute itself on a score and how to describe itself in the JSON flow
form (which is also what diagrams are drawn from). ``ThenMeasure`` is executed inline by the
runner (``kind`` 0 = async note, 1 = sync note) so that a chain of notes costs one ``await`` per
note and nothing else.
"""

from __future__ import annotations

import copy
import inspect
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .callables import is_async_callable
from .errors import Skip, note_failure
from .merge import resolve_strategy
from .note import Note, note_name
from .parallel import run_parallel
from .score import SCORE_TYPES, ImmutableScore, field_names

if TYPE_CHECKING:
    from .cadence import Cadence

KIND_ASYNC_NOTE = 0
KIND_SYNC_NOTE = 1
KIND_COMPOUND = 2
KIND_SYNC_GROUP = 3  # run_parallel called directly by the runner: one frame less per run


class Step:
    """One note inside a measure: the callable, its display name, and whether it is async."""

    __slots__ = ("fn", "name", "is_async")

    def __init__(self, fn: Callable[..., Any], name: str | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"a note must be callable, not {type(fn).__name__}")
        if isinstance(fn, Note):  # run what the Note wraps: no extra call per note
            name = name or fn.name
            fn = fn.fn
        self.fn = fn
        attrs = getattr(fn, "__dict__", None)
        if attrs is not None:
            # Plain functions: read attributes from __dict__ directly (a missing attribute via
            # getattr costs an exception) and remember the async check on the function itself.
            # The cache is keyed by the code object: functools.wraps copies __dict__ onto
            # wrappers, whose code (and maybe sync/async nature) differs.
            code = getattr(fn, "__code__", None)
            cached = attrs.get("__cadence_async__")
            if cached is not None and code is not None and cached[0] is code:
                is_async = cached[1]
            else:
                is_async = is_async_callable(fn)
                if code is not None:
                    try:
                        fn.__cadence_async__ = (code, is_async)  # type: ignore[attr-defined]
                    except (AttributeError, TypeError):
                        pass
            info = attrs.get("__cadence_note__")
            self.name = name or (
                info.name if info is not None else getattr(fn, "__name__", None) or note_name(fn)
            )
            self.is_async = is_async
        else:
            self.name = name or note_name(fn)
            self.is_async = is_async_callable(fn)


def as_steps(fns: Any) -> tuple[Step, ...]:
    if fns is None:
        return ()
    if isinstance(fns, Step):
        return (fns,)
    if callable(fns):
        return (Step(fns),)
    return tuple(f if isinstance(f, Step) else Step(f) for f in fns)


async def run_steps(measure_name: str, steps: Sequence[Step], score: Any) -> Any:
    """Run notes one after another on the same score (sequence and sequential split)."""
    i = 0
    try:
        for step in steps:
            if step.is_async:
                call = step.fn
                result = await call(score)
            else:
                call = step.fn
                result = call(score)
                if result is not None and inspect.isawaitable(result):
                    result = await result
            if result is not None and isinstance(result, SCORE_TYPES):
                score = result
            i += 1
    except Skip:
        raise
    except Exception as exc:
        raise note_failure(measure_name, exc, details={"step": steps[i].name}) from exc
    return score


def _strategy_name(strategy: Any) -> str:
    return strategy if isinstance(strategy, str) else getattr(strategy, "__name__", "custom")


class Measure:
    __slots__ = ("name", "kind", "can_interrupt")

    def __init__(self, name: str, kind: int = KIND_COMPOUND, can_interrupt: bool = False) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError("a measure needs a non-empty name")
        self.name = name
        self.kind = kind
        self.can_interrupt = can_interrupt

    async def execute(self, score: Any) -> Any:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class ThenMeasure(Measure):
    __slots__ = ("fn", "step")

    def __init__(
        self, name: str, fn: Callable[..., Any] | Step, can_interrupt: bool = False
    ) -> None:
        self.step = fn if isinstance(fn, Step) else Step(fn)
        self.fn = self.step.fn
        super().__init__(
            name, KIND_ASYNC_NOTE if self.step.is_async else KIND_SYNC_NOTE, can_interrupt
        )

    async def execute(self, score: Any) -> Any:
        if self.kind == KIND_ASYNC_NOTE:
            call = self.fn
            result = await call(score)
        else:
            call = self.fn
            result = call(score)
            if result is not None and inspect.isawaitable(result):
                result = await result
        if result is not None and isinstance(result, SCORE_TYPES):
            return result
        return score

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"then": self.name, "note": self.step.name}
        if self.can_interrupt:
            out["can_interrupt"] = True
        return out


class SequenceMeasure(Measure):
    __slots__ = ("steps",)

    def __init__(self, name: str, fns: Any) -> None:
        super().__init__(name)
        self.steps = as_steps(fns)
        if not self.steps:
            raise ValueError(f"sequence {name!r} needs at least one note")

    async def execute(self, score: Any) -> Any:
        return await run_steps(self.name, self.steps, score)

    def describe(self) -> dict[str, Any]:
        return {"sequence": self.name, "notes": [s.name for s in self.steps]}


class SyncMeasure(Measure):
    __slots__ = ("steps", "merge", "merge_name")

    def __init__(self, name: str, fns: Any, merge_strategy: Any = "fail_on_conflict") -> None:
        super().__init__(name, KIND_SYNC_GROUP)
        self.steps = as_steps(fns)
        if not self.steps:
            raise ValueError(f"sync group {name!r} needs at least one note")
        self.merge = resolve_strategy(merge_strategy)
        self.merge_name = _strategy_name(merge_strategy)

    async def execute(self, score: Any) -> Any:
        return await run_parallel(self.name, self.steps, score, self.merge)

    def describe(self) -> dict[str, Any]:
        return {"sync": self.name, "notes": [s.name for s in self.steps], "merge": self.merge_name}


class SplitMeasure(Measure):
    __slots__ = (
        "condition",
        "condition_name",
        "if_true",
        "if_false",
        "parallel",
        "merge",
        "merge_name",
    )

    def __init__(
        self,
        name: str,
        condition: Callable[[Any], Any],
        if_true: Any,
        if_false: Any = None,
        parallel: bool = False,
        merge_strategy: Any = "fail_on_conflict",
        condition_name: str | None = None,
    ) -> None:
        super().__init__(name)
        if not callable(condition):
            raise TypeError(f"split {name!r}: condition must be callable")
        self.condition = condition
        self.condition_name = condition_name or note_name(condition)
        self.if_true = as_steps(if_true)
        self.if_false = as_steps(if_false)
        if not self.if_true and not self.if_false:
            raise ValueError(f"split {name!r} needs notes on at least one branch")
        self.parallel = parallel
        self.merge = resolve_strategy(merge_strategy)
        self.merge_name = _strategy_name(merge_strategy)

    async def execute(self, score: Any) -> Any:
        try:
            condition = self.condition  # (a local: 3.11 does not specialise self.condition(...))
            chosen = condition(score)
            if chosen is not None and chosen is not True and chosen is not False:
                if inspect.isawaitable(chosen):
                    chosen = await chosen
        except Exception as exc:
            raise note_failure(self.name, exc, details={"step": self.condition_name}) from exc
        steps = self.if_true if chosen else self.if_false
        if not steps:
            return score
        if self.parallel:
            return await run_parallel(self.name, steps, score, self.merge)
        # run_steps, inlined: a split is one frame, as a chain of notes is
        step = None
        try:
            for step in steps:
                if step.is_async:
                    call = step.fn
                    result = await call(score)
                else:
                    call = step.fn
                    result = call(score)
                    if result is not None and inspect.isawaitable(result):
                        result = await result
                if result is not None and isinstance(result, SCORE_TYPES):
                    score = result
        except Skip:
            raise
        except Exception as exc:
            raise note_failure(self.name, exc, details={"step": step.name}) from exc  # type: ignore[union-attr]
        return score

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "split": self.name,
            "condition": self.condition_name,
            "if_true": [s.name for s in self.if_true],
        }
        if self.if_false:
            out["if_false"] = [s.name for s in self.if_false]
        if self.parallel:
            out["parallel"] = True
            out["merge"] = self.merge_name
        return out


def changed_fields_merge(parent: Any, child: Any) -> None:
    """Default child merge when the child ran on a copy of the parent's score: copy back changes."""
    for name in field_names(child):
        value = getattr(child, name)
        if getattr(parent, name, _MISSING) != value:
            object.__setattr__(parent, name, value)


_MISSING: Any = object()


class ChildMeasure(Measure):
    __slots__ = ("cadence", "merge")

    def __init__(
        self, name: str, cadence: Cadence[Any], merge: Callable[..., Any] | None = None
    ) -> None:
        super().__init__(name)
        self.cadence = cadence
        self.merge = merge

    async def execute(self, score: Any) -> Any:
        child = self.cadence
        template = child.score
        # Each run gets its own child score, so one child cadence can serve concurrent parents.
        child_score = copy.deepcopy(template if template is not None else score)
        result = await child.run(child_score)
        merge = self.merge
        if merge is None:
            if template is None and not isinstance(score, ImmutableScore):
                changed_fields_merge(score, result)
            return score
        try:
            merged = merge(score, result)
            if inspect.isawaitable(merged):
                merged = await merged
        except Exception as exc:
            raise note_failure(
                self.name, exc, details={"step": getattr(merge, "__name__", "merge")}
            ) from exc
        if merged is not None and isinstance(merged, SCORE_TYPES):
            return merged
        return score

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"child": self.name, "cadence": self.cadence.name}
        if self.merge is not None:
            out["merge"] = getattr(self.merge, "__name__", "merge")
        return out


def _timed(fn: Any, is_async: bool, label: str, reporters: tuple[Any, ...]) -> Any:
    """``fn`` calling every reporter with ``(label, seconds, score)`` after it returns."""
    clock = time.perf_counter
    if is_async:

        async def timed_async(score: Any) -> Any:
            t0 = clock()
            result = fn(score)
            if inspect.isawaitable(result):
                result = await result
            elapsed = clock() - t0
            for reporter in reporters:
                outcome = reporter(label, elapsed, score)
                if inspect.isawaitable(outcome):
                    await outcome
            return result

        return timed_async

    def timed_sync(score: Any) -> Any:
        t0 = clock()
        result = fn(score)
        elapsed = clock() - t0
        for reporter in reporters:
            outcome = reporter(label, elapsed, score)
            if inspect.iscoroutine(outcome):
                outcome.close()  # a sync note cannot await it (the library drops it too)
        return result

    return timed_sync


def _timed_steps(steps: Sequence[Step], label: str, reporters: tuple[Any, ...]) -> tuple[Step, ...]:
    return tuple(
        Step(_timed(s.fn, s.is_async, label.format(i), reporters), s.name)
        for i, s in enumerate(steps)
    )


def with_step_reports(m: Measure, reporters: tuple[Any, ...]) -> Measure:
    """A copy of a group measure whose notes report their own times, named as the library
    names them: ``group[i]`` for ``.sequence``/``.sync``, ``route_if[i]``/``route_else[i]``
    for ``.split``. Other measures are returned as they are."""
    if isinstance(m, (SequenceMeasure, SyncMeasure)):
        clone = copy.copy(m)
        clone.steps = _timed_steps(m.steps, m.name + "[{}]", reporters)
        return clone
    if isinstance(m, SplitMeasure):
        clone = copy.copy(m)
        clone.if_true = _timed_steps(m.if_true, m.name + "_if[{}]", reporters)
        clone.if_false = _timed_steps(m.if_false, m.name + "_else[{}]", reporters)
        return clone
    return m
