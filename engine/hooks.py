"""Lifecycle hooks: ``CadenceHooks``, ``HooksManager``, the functional hooks ``before_note``,
``after_note`` and ``on_error``, and (from ``engine.builtin_hooks``) the built-in logging,
timing, metrics, tracing and debug hooks.

Hook methods may be sync or async. A hook that raises is logged and ignored: observability must
never change the outcome of a run. ``HooksManager`` keeps, per event, only the methods a hook
actually overrides, so attaching a hook that implements one method costs one call per event.
``on_retry`` has the library's signature ``(note_name, score, attempt, max_attempts, error)``;
a hook written with the engine's former ``(note_name, attempt, error)`` is still called.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable
from typing import Any

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

    async def on_error(self, note_name: str, score: Any, error: BaseException) -> bool | None:
        """Called when a measure fails (after ``after_note``)."""
        return None

    async def on_retry(
        self, note_name: str, score: Any, attempt: int, max_attempts: int, error: BaseException
    ) -> None:
        """Called after failed attempt ``attempt`` of ``max_attempts``, before the next one."""
        pass


def _overridden(hook: Any, method: str) -> Callable[..., Any] | None:
    fn = getattr(hook, method, None)
    if fn is None or not callable(fn):
        return None
    base = getattr(CadenceHooks, method)
    if getattr(type(hook), method, None) is base:
        return None  # the base class no-op: skip it entirely
    if method == "on_retry" and _positional_count(fn) == 3:
        legacy = fn

        def fn(note_name: str, score: Any, attempt: int, max_attempts: int, error: Any) -> Any:
            return legacy(note_name, attempt, error)

        fn.__self__ = getattr(legacy, "__self__", None)  # type: ignore[attr-defined]
    return fn


def _positional_count(fn: Callable[..., Any]) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return -1
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return -1
    return sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


class HookPlan:
    """Per event, the hook callables a run will call; worked out when a hook's interest
    changes, not per run (``HooksManager.plan``)."""

    __slots__ = (
        "before_cadence",
        "after_cadence",
        "before_note",
        "after_note",
        "on_error",
        "on_retry",
        "idle",
        "note_listeners",
        "events",
        "instant",
        "contextless",
        "label",
    )

    def __init__(self, *fns: tuple[Callable[..., Any], ...]) -> None:
        for slot, value in zip(HOOK_METHODS, fns, strict=True):
            setattr(self, slot, value)
        self.idle = not any(fns)  # no hook wants any call: the run may take the bare path
        # When every after-note hook is an event emitter's: their note.completed listeners,
        # in order (the runner then calls them itself, with no hook call); else None.
        self.note_listeners: tuple[Callable[..., Any], ...] | None = None
        self.instant = False
        if self.after_note:
            from .emitter import instant_listener, note_listeners

            self.note_listeners = note_listeners(self.after_note)
            if self.note_listeners:
                self.instant = all(instant_listener(fn) for fn in self.note_listeners)
        # Nothing per note but such listeners: ``engine.loops.run_events`` runs it all.
        self.events = bool(self.note_listeners) and not (self.before_note or self.on_retry)
        # No hook call at all but those listeners: nothing can read the run's context.
        self.contextless = self.events and not (
            self.before_cadence or self.after_cadence or self.on_error
        )
        self.label: Any = None  # run_events' cached run info for contextless runs


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
        self._plan_stamp: Any = ()
        for hook in hooks:
            self.add(hook)

    def add(self, hook: Any) -> HooksManager:
        self.hooks.append(hook)
        self._index(hook)
        return self

    def remove(self, hook: Any) -> HooksManager:
        if hook in self.hooks:
            self.hooks.remove(hook)
            self._rebuild()
        return self

    def clear(self) -> None:
        self.hooks.clear()
        self._rebuild()

    def _rebuild(self) -> None:
        self.table = {m: () for m in HOOK_METHODS}
        self._selective = set()
        self._selective_hooks = []
        for hook in self.hooks:
            self._index(hook)
        self.has_on_retry = bool(self.table["on_retry"])
        self.any = any(self.table.values())
        self._plan = None

    def _index(self, hook: Any) -> None:
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
            stamp: Any = ()
        elif len(selective) == 1:  # the common case (one emitter): no tuple per run
            stamp = getattr(selective[0], "wants_version", 0)
        else:
            stamp = tuple(getattr(h, "wants_version", 0) for h in selective)
        plan = self._plan
        if plan is None or stamp != self._plan_stamp:
            plan = self._plan = HookPlan(*(self.active(m) for m in HOOK_METHODS))
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

    async def on_error(self, note_name: str, score: Any, error: BaseException) -> bool:
        """True when a hook returned True (the library's "suppressed"; the run ignores it, as
        the library's does)."""
        suppressed = False
        for fn in self.table["on_error"]:
            try:
                result = fn(note_name, score, error)
                if result is not None and inspect.isawaitable(result):
                    result = await result
                suppressed = suppressed or result is True
            except Exception:
                hook_failed(fn, "on_error")
        return suppressed

    async def on_retry(
        self, note_name: str, score: Any, attempt: int, max_attempts: int, error: BaseException
    ) -> None:
        if self.table["on_retry"]:
            await self._dispatch("on_retry", note_name, score, attempt, max_attempts, error)


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


class _CallbackHooks(CadenceHooks):
    """A hook around one callback (what ``before_note``/``after_note``/``on_error`` build)."""

    def __init__(self, callback: Callable[..., Any]) -> None:
        self.callback = callback


def before_note(callback: Callable[..., Any]) -> CadenceHooks:
    """A hook calling ``callback(note_name, score)`` (sync or async) before each note."""

    class BeforeNote(_CallbackHooks):
        def before_note(self, note_name: str, score: Any) -> Any:
            return self.callback(note_name, score)

    return BeforeNote(callback)


def after_note(callback: Callable[..., Any]) -> CadenceHooks:
    """A hook calling ``callback(note_name, score, duration, error)`` after each note."""

    class AfterNote(_CallbackHooks):
        def after_note(
            self, note_name: str, score: Any, duration: float, error: BaseException | None = None
        ) -> Any:
            return self.callback(note_name, score, duration, error)

    return AfterNote(callback)


def on_error(callback: Callable[..., Any]) -> CadenceHooks:
    """A hook calling ``callback(note_name, score, error)`` when a note fails."""

    class OnError(_CallbackHooks):
        async def on_error(self, note_name: str, score: Any, error: BaseException) -> bool | None:
            result = self.callback(note_name, score, error)
            if inspect.isawaitable(result):
                result = await result
            return bool(result) if result is not None else None

    return OnError(callback)


from .builtin_hooks import (  # noqa: E402 - they subclass CadenceHooks, defined above
    DebugHooks,
    LoggingHooks,
    MetricsHooks,
    TimingHooks,
    TracingHooks,
)

__all__ = [
    "CadenceHooks",
    "DebugHooks",
    "HooksManager",
    "LoggingHooks",
    "MetricsHooks",
    "TimingHooks",
    "TracingHooks",
    "after_note",
    "before_note",
    "on_error",
]
