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
    on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """On an exception matching ``on``:

    - with ``handler``: call ``handler(score, error)`` (sync or async) and return its result;
    - with ``field``: set ``score.<field>`` to a copy of ``default``;
    - otherwise: return ``default``.
    """
    catch = on if isinstance(on, tuple) else (on,)
    handler_is_async = handler is not None and inspect.iscoroutinefunction(handler)

    def recover_sync(args: tuple[Any, ...], exc: BaseException) -> Any:
        score = args[0] if args else None
        if handler is not None:
            return handler(score, exc)
        if field is not None:
            # A copy, so that one run's fallback list is never another run's.
            setattr(score, field, copy.deepcopy(default))
            return None
        return default

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        if is_async_callable(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                try:
                    return await fn(*args, **kwargs)
                except (Skip, Interrupt):
                    raise
                except catch as exc:
                    result = recover_sync(args, exc)
                    if handler_is_async or inspect.isawaitable(result):
                        result = await result
                    return result

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
