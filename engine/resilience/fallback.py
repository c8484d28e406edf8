"""``@fallback``: when a note fails, set a default, call a handler, or return a default."""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Callable
from typing import Any

from ..callables import is_async_callable
from ..errors import Interrupt, Skip

_MISSING: Any = object()


def fallback(
    default: Any = None,
    *,
    field: str | None = None,
    handler: Callable[..., Any] | None = None,
    on: type[BaseException] | tuple[type[BaseException], ...] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """On an exception matching ``on`` (default: any), the fallback value is ``handler``'s
    result — ``handler(error)`` as in the library, or ``handler(score, error)``, sync or async —
    else a copy of ``default``; with ``field`` it is set on the score (and the note returns
    None), otherwise the note returns it.
    """
    catch = (Exception,) if on is None else on if isinstance(on, tuple) else (on,)
    handler_is_async = handler is not None and inspect.iscoroutinefunction(handler)
    handler_takes_score = handler is not None and _positional_count(handler) != 1

    def value_of(score: Any, exc: BaseException) -> Any:
        if handler is None:
            # A copy, so that one run's fallback list is never another run's.
            return copy.deepcopy(default)
        return handler(score, exc) if handler_takes_score else handler(exc)

    def place(score: Any, value: Any) -> Any:
        if field is not None and score is not None:
            setattr(score, field, value)
            return None
        return value

    def recover_sync(args: tuple[Any, ...], exc: BaseException) -> Any:
        score = args[0] if args else None
        return place(score, value_of(score, exc))

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        if is_async_callable(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                try:
                    return await fn(*args, **kwargs)
                except (Skip, Interrupt):
                    raise
                except catch as exc:
                    score = args[0] if args else None
                    value = value_of(score, exc)
                    if handler_is_async or inspect.isawaitable(value):
                        value = await value
                    return place(score, value)

            wrapper: Callable[..., Any] = async_wrapper
        else:
            if handler_is_async:
                raise TypeError("a sync note needs a sync fallback handler")

            @functools.wraps(fn)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                try:
                    return fn(*args, **kwargs)
                except (Skip, Interrupt):
                    raise
                except catch as exc:
                    return recover_sync(args, exc)

            wrapper = sync_wrapper
        wrapper.__cadence_fallback__ = {"default": default, "field": field, "handler": handler}  # type: ignore[attr-defined]
        return wrapper

    return decorate


def _positional_count(fn: Callable[..., Any]) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return -1
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return -1
    return sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
