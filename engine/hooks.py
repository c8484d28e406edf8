"""Lifecycle hooks: ``CadenceHooks`` and the built-in logging, timing, metrics, tracing and
debug hooks.

Hook methods may be sync or async. A hook that raises is logged and ignored: observability must
never change the outcome of a run. ``HooksManager`` keeps, per event, only the methods a hook
actually overrides, so attaching a hook that implements one method costs one call per event.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from .context import current_run
from .score import to_jsonable

logger = logging.getLogger("engine.hooks")

HOOK_METHODS = (
    "before_cadence",
    "after_cadence",
    "before_note",
    "after_note",
    "on_error",
    "on_retry",
)


class CadenceHooks:
    """Base class for hooks; override any subset of the methods (sync or async)."""

    async def before_cadence(self, cadence_name: str, score: Any) -> None:
        pass

    async def after_cadence(
        self, cadence_name: str, score: Any, duration: float, error: BaseException | None = None
    ) -> None:
        pass

    async def before_note(self, note_name: str, score: Any) -> None:
        pass

    async def after_note(
        self, note_name: str, score: Any, duration: float, error: BaseException | None = None
    ) -> None:
        pass

    async def on_error(self, note_name: str, score: Any, error: BaseException) -> None:
        pass

    async def on_retry(self, note_name: str, attempt: int, error: BaseException) -> None:
        pass


def _overridden(hook: Any, method: str) -> Callable[..., Any] | None:
    fn = getattr(hook, method, None)
    if fn is None or not callable(fn):
        return None
    base = getattr(CadenceHooks, method)
    if getattr(type(hook), method, None) is base:
        return None  # the base class no-op: skip it entirely
    return fn


class HookPlan:
    """Per event, the hook callables a run will call."""

    __slots__ = (
        "before_cadence",
        "after_cadence",
        "before_note",
        "after_note",
        "on_error",
        "on_retry",
    )

    def __init__(self, *fns: tuple[Callable[..., Any], ...]) -> None:
        for slot, value in zip(self.__slots__, fns, strict=True):
            setattr(self, slot, value)


class HooksManager:
    __slots__ = (
        "hooks",
        "table",
        "has_on_retry",
        "any",
        "_selective",
        "_selective_hooks",
        "_plan",
        "_plan_stamp",
    )

    def __init__(self, hooks: Iterable[Any] = ()) -> None:
        self.hooks: list[Any] = []
        self.table: dict[str, tuple[Callable[..., Any], ...]] = {m: () for m in HOOK_METHODS}
        self.has_on_retry = False
        self.any = False
        self._selective: set[str] = set()  # methods with a hook that may opt out per run
        self._selective_hooks: list[Any] = []
        self._plan: HookPlan | None = None
        self._plan_stamp: tuple[int, ...] = ()
        for hook in hooks:
            self.add(hook)

    def add(self, hook: Any) -> None:
        self.hooks.append(hook)
        selective = callable(getattr(hook, "wants", None))
        if selective:
            self._selective_hooks.append(hook)
        for method in HOOK_METHODS:
            fn = _overridden(hook, method)
            if fn is not None:
                self.table[method] = (*self.table[method], fn)
                if selective:
                    self._selective.add(method)
        self.has_on_retry = bool(self.table["on_retry"])
        self.any = any(self.table.values())
        self._plan = None

    def active(self, method: str) -> tuple[Callable[..., Any], ...]:
        """The callables for ``method`` this run; a hook with ``wants(method)`` may opt out."""
        fns = self.table[method]
        if method not in self._selective:
            return fns
        return tuple(fn for fn in fns if _wanted(fn, method))

    def plan(self) -> HookPlan:
        """The callables each event needs this run, recomputed only when a selective hook's
        interest changed (its ``wants_version``)."""
        selective = self._selective_hooks
        if not selective:
            stamp: tuple[int, ...] = ()
        elif len(selective) == 1:
            stamp = (getattr(selective[0], "wants_version", 0),)
        else:
            stamp = tuple(getattr(h, "wants_version", 0) for h in selective)
        plan = self._plan
        if plan is None or stamp != self._plan_stamp:
            plan = self._plan = HookPlan(*(self.active(m) for m in HookPlan.__slots__))
            self._plan_stamp = stamp
        return plan

    def __bool__(self) -> bool:
        return self.any

    async def _dispatch(self, method: str, *args: Any) -> None:
        for fn in self.table[method]:
            try:
                result = fn(*args)
                if result is not None and inspect.isawaitable(result):
                    await result
            except Exception:
                hook_failed(fn, method)

    async def before_cadence(self, cadence_name: str, score: Any) -> None:
        if self.table["before_cadence"]:
            await self._dispatch("before_cadence", cadence_name, score)

    async def after_cadence(
        self, cadence_name: str, score: Any, duration: float, error: BaseException | None
    ) -> None:
        if self.table["after_cadence"]:
            await self._dispatch("after_cadence", cadence_name, score, duration, error)

    async def before_note(self, note_name: str, score: Any) -> None:
        if self.table["before_note"]:
            await self._dispatch("before_note", note_name, score)

    async def after_note(
        self, note_name: str, score: Any, duration: float, error: BaseException | None
    ) -> None:
        if self.table["after_note"]:
            await self._dispatch("after_note", note_name, score, duration, error)

    async def on_error(self, note_name: str, score: Any, error: BaseException) -> None:
        if self.table["on_error"]:
            await self._dispatch("on_error", note_name, score, error)

    async def on_retry(self, note_name: str, attempt: int, error: BaseException) -> None:
        if self.table["on_retry"]:
            await self._dispatch("on_retry", note_name, attempt, error)


def fire(fns: tuple[Callable[..., Any], ...], method: str, *args: Any) -> Any:
    """Call hooks in order without a coroutine while they are sync; the first awaitable result
    turns the rest into a coroutine (returned, for the caller to await) so order is kept."""
    index = 0
    for fn in fns:
        try:
            result = fn(*args)
        except Exception:
            hook_failed(fn, method)
            result = None
        if result is not None and inspect.isawaitable(result):
            return _finish(fns, index, result, method, args)
        index += 1
    return None


async def _finish(
    fns: tuple[Callable[..., Any], ...], index: int, first: Any, method: str, args: tuple[Any, ...]
) -> None:
    try:
        await first
    except Exception:
        hook_failed(fns[index], method)
    for fn in fns[index + 1 :]:
        try:
            result = fn(*args)
            if result is not None and inspect.isawaitable(result):
                await result
        except Exception:
            hook_failed(fn, method)


def _wanted(fn: Callable[..., Any], method: str) -> bool:
    wants = getattr(getattr(fn, "__self__", None), "wants", None)
    return wants is None or bool(wants(method))


def hook_failed(fn: Callable[..., Any], method: str) -> None:
    logger.exception("hook %r.%s failed", fn, method)


def _run_key() -> int:
    run = current_run.get()
    return id(run) if run is not None else 0


class LoggingHooks(CadenceHooks):
    """Logs every lifecycle event to ``logging`` (logger ``engine``)."""

    def __init__(self, logger_: logging.Logger | None = None, level: int = logging.INFO) -> None:
        self.logger = logger_ or logging.getLogger("engine")
        self.level = level

    def before_cadence(self, cadence_name: str, score: Any) -> None:
        self.logger.log(self.level, "cadence %s started", cadence_name)

    def after_cadence(
        self, cadence_name: str, score: Any, duration: float, error: BaseException | None = None
    ) -> None:
        if error is None:
            self.logger.log(self.level, "cadence %s completed in %.6fs", cadence_name, duration)
        else:
            self.logger.error("cadence %s failed after %.6fs: %r", cadence_name, duration, error)

    def before_note(self, note_name: str, score: Any) -> None:
        self.logger.log(self.level, "note %s started", note_name)

    def after_note(
        self, note_name: str, score: Any, duration: float, error: BaseException | None = None
    ) -> None:
        if error is None:
            self.logger.log(self.level, "note %s completed in %.6fs", note_name, duration)
        else:
            self.logger.error("note %s failed after %.6fs: %r", note_name, duration, error)

    def on_retry(self, note_name: str, attempt: int, error: BaseException) -> None:
        self.logger.warning("note %s attempt %d failed, retrying: %r", note_name, attempt, error)


class TimingHooks(CadenceHooks):
    """Collects durations: ``timings[note] -> [seconds, ...]`` and ``cadence_timings``."""

    def __init__(self) -> None:
        self.timings: dict[str, list[float]] = {}
        self.cadence_timings: dict[str, list[float]] = {}

    def after_note(
        self, note_name: str, score: Any, duration: float, error: BaseException | None = None
    ) -> None:
        self.timings.setdefault(note_name, []).append(duration)

    def after_cadence(
        self, cadence_name: str, score: Any, duration: float, error: BaseException | None = None
    ) -> None:
        self.cadence_timings.setdefault(cadence_name, []).append(duration)

    def total(self, note_name: str) -> float:
        return sum(self.timings.get(note_name, ()))


class MetricsHooks(CadenceHooks):
    """In-process counters and duration sums, safe under threads; read with ``snapshot()``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counters: dict[str, int] = {}
        self.durations: dict[str, float] = {}

    def _count(self, key: str, by: int = 1) -> None:
        with self._lock:
            self.counters[key] = self.counters.get(key, 0) + by

    def before_cadence(self, cadence_name: str, score: Any) -> None:
        self._count(f"cadence.{cadence_name}.started")

    def after_cadence(
        self, cadence_name: str, score: Any, duration: float, error: BaseException | None = None
    ) -> None:
        self._count(f"cadence.{cadence_name}.{'failed' if error else 'completed'}")

    def after_note(
        self, note_name: str, score: Any, duration: float, error: BaseException | None = None
    ) -> None:
        self._count(f"note.{note_name}.{'failed' if error else 'completed'}")
        with self._lock:
            self.durations[note_name] = self.durations.get(note_name, 0.0) + duration

    def on_retry(self, note_name: str, attempt: int, error: BaseException) -> None:
        self._count(f"note.{note_name}.retried")

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"counters": dict(self.counters), "durations": dict(self.durations)}


class Span:
    __slots__ = ("name", "kind", "start", "end", "error", "run")

    def __init__(self, name: str, kind: str, start: float, run: int) -> None:
        self.name = name
        self.kind = kind
        self.start = start
        self.end: float | None = None
        self.error: BaseException | None = None
        self.run = run

    def __repr__(self) -> str:
        return f"Span({self.kind}:{self.name}, error={self.error!r})"


class TracingHooks(CadenceHooks):
    """Records a span per cadence and per note; forwards them to an OpenTelemetry tracer if given."""

    def __init__(self, tracer: Any = None) -> None:
        self.tracer = tracer
        self.spans: list[Span] = []
        self._open: dict[tuple[int, str, str], tuple[Span, Any]] = {}

    def _start(self, kind: str, name: str) -> None:
        run = _run_key()
        span = Span(name, kind, time.perf_counter(), run)
        otel = self.tracer.start_span(f"{kind} {name}") if self.tracer is not None else None
        self._open[(run, kind, name)] = (span, otel)

    def _end(self, kind: str, name: str, error: BaseException | None) -> None:
        entry = self._open.pop((_run_key(), kind, name), None)
        if entry is None:
            return
        span, otel = entry
        span.end = time.perf_counter()
        span.error = error
        self.spans.append(span)
        if otel is not None:
            if error is not None:
                otel.record_exception(error)
            otel.end()

    def before_cadence(self, cadence_name: str, score: Any) -> None:
        self._start("cadence", cadence_name)

    def after_cadence(
        self, cadence_name: str, score: Any, duration: float, error: BaseException | None = None
    ) -> None:
        self._end("cadence", cadence_name, error)

    def before_note(self, note_name: str, score: Any) -> None:
        self._start("note", note_name)

    def after_note(
        self, note_name: str, score: Any, duration: float, error: BaseException | None = None
    ) -> None:
        self._end("note", note_name, error)


class DebugHooks(CadenceHooks):
    """Captures the score before and after every note (``records``) and logs it at DEBUG."""

    def __init__(self, logger_: logging.Logger | None = None) -> None:
        self.logger = logger_ or logging.getLogger("engine.debug")
        self.records: list[dict[str, Any]] = []

    def before_note(self, note_name: str, score: Any) -> None:
        state = _state(score)
        self.records.append({"note": note_name, "phase": "before", "score": state})
        self.logger.debug("before %s: %r", note_name, state)

    def after_note(
        self, note_name: str, score: Any, duration: float, error: BaseException | None = None
    ) -> None:
        state = _state(score)
        self.records.append({"note": note_name, "phase": "after", "score": state, "error": error})
        self.logger.debug("after %s (%.6fs, error=%r): %r", note_name, duration, error, state)


def _state(score: Any) -> Any:
    to_dict = getattr(score, "to_dict", None)
    return to_dict() if callable(to_dict) else to_jsonable(score)
