"""``@timeout``: bound a note's running time.

Async notes run under the clock's ``timeout`` (``asyncio.timeout`` for real time). Sync notes run
on a separate daemon thread that the caller waits for with a deadline: no SIGALRM, so it works on
any thread and any platform. A timed-out sync call cannot be killed; it finishes in the
background and its result is discarded.
"""

from __future__ import annotations

import builtins
import functools
from collections.abc import Callable
from typing import Any

from ..callables import is_async_callable
from ..errors import TimeoutError
from .clock import Clock, get_default_clock


def timeout(
    seconds: float, *, message: str | None = None, clock: Clock | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Bound each call of the decorated note to ``seconds``; the :class:`TimeoutError` carries
    ``message`` when given (the library accepts it but never uses it)."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, not {seconds!r}")

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        name = getattr(fn, "__name__", "note")

        if is_async_callable(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                clk = clock or get_default_clock()
                try:
                    async with clk.timeout(seconds):
                        return await fn(*args, **kwargs)
                except TimeoutError:
                    raise  # an inner timeout already named its note
                except builtins.TimeoutError as exc:
                    raise _timed_out(message, seconds, name) from exc

            wrapper: Callable[..., Any] = async_wrapper
        else:

            @functools.wraps(fn)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                clk = clock or get_default_clock()
                try:
                    return clk.call_with_timeout(functools.partial(fn, *args, **kwargs), seconds)
                except TimeoutError:
                    raise
                except builtins.TimeoutError as exc:
                    raise _timed_out(message, seconds, name) from exc

            wrapper = sync_wrapper
        wrapper.__cadence_timeout__ = seconds  # type: ignore[attr-defined]
        return wrapper

    return decorate


def _timed_out(message: str | None, seconds: float, name: str) -> TimeoutError:
    if message:
        return TimeoutError(message, seconds=seconds, note_name=name)
    return TimeoutError(seconds=seconds, note_name=name)
