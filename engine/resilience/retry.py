"""``@retry``: run a note again after a failure, with fixed, linear or exponential backoff."""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from typing import Any

from ..callables import is_async_callable
from ..context import notify_retry, notify_retry_sync
from ..errors import Interrupt, RetryExhaustedError, Skip
from .clock import Clock, get_default_clock

BACKOFFS = ("fixed", "linear", "exponential")
# Signals are not failures: retrying them would change their meaning.
_NEVER_RETRIED = (Skip, Interrupt)


def compute_delay(
    attempt: int,
    *,
    delay: float,
    backoff: str | float,
    max_delay: float | None,
    jitter: float | bool,
    rng: random.Random | None = None,
) -> float:
    """The wait after failed attempt number ``attempt`` (1-based)."""
    if backoff == "fixed":
        wait = delay
    elif backoff == "linear":
        wait = delay * attempt
    elif backoff == "exponential":
        wait = delay * 2 ** (attempt - 1)
    elif isinstance(backoff, (int, float)) and not isinstance(backoff, bool):
        wait = delay * float(backoff) ** (attempt - 1)  # the design doc's "delay * backoff^n"
    else:
        raise ValueError(f"backoff must be one of {BACKOFFS} or a number, not {backoff!r}")
    if max_delay is not None:
        wait = min(wait, max_delay)
    if jitter:
        fraction = 0.25 if jitter is True else float(jitter)
        wait += (rng or random).uniform(0.0, fraction * wait)
        if max_delay is not None:
            wait = min(wait, max_delay)
    return wait


def retry(
    max_attempts: int | Callable[..., Any] = 3,
    *,
    delay: float = 1.0,
    backoff: str | float = "exponential",
    max_delay: float | None = 60.0,
    jitter: float | bool = False,
    on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
    clock: Clock | None = None,
    rng: random.Random | None = None,
) -> Any:
    """Retry the decorated note (sync or async) up to ``max_attempts`` times in all.

    Only exceptions matching ``on`` are retried; anything else propagates at once. When every
    attempt failed, :class:`RetryExhaustedError` is raised from the last error. Defaults as in
    the library (``delay=1.0``, ``max_delay=60.0``) except ``backoff``, exponential as the
    design seed describes the decorator, and ``jitter``, off so that delays are reproducible
    (``jitter=True`` adds the library's up to 25 %).
    """
    if callable(max_attempts):  # bare @retry
        return retry()(max_attempts)
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    if isinstance(backoff, str) and backoff not in BACKOFFS:
        raise ValueError(f"backoff must be one of {BACKOFFS} or a number, not {backoff!r}")
    retry_on = on if isinstance(on, tuple) else (on,)
    attempts = max_attempts

    def wait_for(attempt: int) -> float:
        return compute_delay(
            attempt, delay=delay, backoff=backoff, max_delay=max_delay, jitter=jitter, rng=rng
        )

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        name = getattr(fn, "__name__", "note")

        if is_async_callable(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                clk = clock or get_default_clock()
                for attempt in range(1, attempts + 1):
                    try:
                        return await fn(*args, **kwargs)
                    except _NEVER_RETRIED:
                        raise
                    except retry_on as exc:
                        if attempt == attempts:
                            raise RetryExhaustedError(attempts, exc, note_name=name) from exc
                        await notify_retry(None, args[0] if args else None, attempt, attempts, exc)
                        await clk.sleep(wait_for(attempt))
                raise AssertionError("unreachable")

            wrapper: Callable[..., Any] = async_wrapper
        else:

            @functools.wraps(fn)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                clk = clock or get_default_clock()
                for attempt in range(1, attempts + 1):
                    try:
                        return fn(*args, **kwargs)
                    except _NEVER_RETRIED:
                        raise
                    except retry_on as exc:
                        if attempt == attempts:
                            raise RetryExhaustedError(attempts, exc, note_name=name) from exc
                        notify_retry_sync(None, args[0] if args else None, attempt, attempts, exc)
                        clk.sleep_sync(wait_for(attempt))
                raise AssertionError("unreachable")

            wrapper = sync_wrapper
        wrapper.__cadence_retry__ = {  # type: ignore[attr-defined]
            "max_attempts": attempts,
            "delay": delay,
            "backoff": backoff,
            "max_delay": max_delay,
            "jitter": jitter,
        }
        return wrapper

    return decorate
