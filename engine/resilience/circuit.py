"""``@circuit_breaker``: stop calling a failing dependency for a while.

CLOSED counts failures (each success takes one off, as in the library); at
``failure_threshold`` it goes OPEN and refuses calls with :class:`CircuitOpenError`. After
``recovery_timeout`` up to ``half_open_max_calls`` calls are let through as trials (HALF_OPEN;
further concurrent callers are refused): a success closes the circuit, a failure opens it
again. Exceptions in ``excluded_exceptions`` count as successes; only those matching ``on``
count as failures. State is shared by every function decorated with the same ``name`` and
guarded by a lock, so concurrent tasks and threads see one consistent state machine. Stacked
over ``@note`` it guards the note's calls (the library's breaker, seeing a sync callable, would
count the coroutine's creation as a success).
"""

from __future__ import annotations

import enum
import functools
import threading
from collections.abc import Callable
from typing import Any

from ..callables import is_async_callable
from ..errors import CircuitOpenError, Interrupt, Skip
from .clock import Clock, get_default_clock


class CircuitState(enum.StrEnum):
    """A breaker's state; each member also equals its string value (``"closed"`` …)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


CLOSED = CircuitState.CLOSED
OPEN = CircuitState.OPEN
HALF_OPEN = CircuitState.HALF_OPEN


class CircuitBreaker:
    __slots__ = (
        "name",
        "failure_threshold",
        "recovery_timeout",
        "half_open_max_calls",
        "excluded_exceptions",
        "clock",
        "_lock",
        "_state",
        "_failures",
        "_opened_at",
        "_trials",
    )

    def __init__(
        self,
        name: str,
        failure_threshold: int = 5,
        recovery_timeout: float = 30.0,
        half_open_max_calls: int = 1,
        excluded_exceptions: tuple[type[BaseException], ...] | None = None,
        *,
        clock: Clock | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if half_open_max_calls < 1:
            raise ValueError("half_open_max_calls must be at least 1")
        self.name = name
        self.failure_threshold = failure_threshold
        self.recovery_timeout = recovery_timeout
        self.half_open_max_calls = half_open_max_calls
        self.excluded_exceptions = tuple(excluded_exceptions or ())
        self.clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trials = 0

    def _now(self) -> float:
        return (self.clock or get_default_clock()).monotonic()

    @property
    def state(self) -> CircuitState:
        """The current state; an OPEN circuit past its recovery timeout reports HALF_OPEN."""
        with self._lock:
            if self._state == OPEN and self._now() - self._opened_at >= self.recovery_timeout:
                return HALF_OPEN
            return self._state

    @property
    def failure_count(self) -> int:
        with self._lock:
            return self._failures

    def before_call(self) -> None:
        with self._lock:
            if self._state == CLOSED:
                return
            if self._state == OPEN:
                waited = self._now() - self._opened_at
                if waited < self.recovery_timeout:
                    raise CircuitOpenError(self.name, retry_after=self.recovery_timeout - waited)
                self._state = HALF_OPEN
                self._trials = 1
                return
            # HALF_OPEN: at most half_open_max_calls trial calls at a time.
            if self._trials >= self.half_open_max_calls:
                raise CircuitOpenError(self.name, retry_after=0.0)
            self._trials += 1

    def record_success(self) -> None:
        with self._lock:
            if self._state == CLOSED:
                self._failures = max(0, self._failures - 1)  # successes decay the count
                return
            self._state = CLOSED
            self._failures = 0
            self._trials = 0

    def record_failure(self) -> None:
        with self._lock:
            self._trials = max(0, self._trials - 1)
            self._failures += 1
            if self._state == HALF_OPEN:
                self._state = OPEN
                self._opened_at = self._now()
                self._trials = 0
                return
            if self._failures >= self.failure_threshold:
                self._state = OPEN
                self._opened_at = self._now()

    def release_trial(self) -> None:
        with self._lock:
            self._trials = max(0, self._trials - 1)

    def retry_after(self) -> float:
        """Seconds until an open circuit lets a trial through (0 when it would now)."""
        with self._lock:
            if self._state != OPEN:
                return 0.0
            return max(0.0, self.recovery_timeout - (self._now() - self._opened_at))

    def reset(self) -> None:
        with self._lock:
            self._state = CLOSED
            self._failures = 0
            self._trials = 0

    def _can_execute(self) -> bool:
        """The library's check-and-admit: True if a call may go ahead now."""
        try:
            self.before_call()
        except CircuitOpenError:
            return False
        return True

    # The library's names for the same transitions.
    _record_success = record_success
    _record_failure = record_failure
    _get_retry_after = retry_after


_registry: dict[str, CircuitBreaker] = {}
_registry_lock = threading.Lock()


def get_circuit_breaker(
    name: str,
    failure_threshold: int = 5,
    recovery_timeout: float = 30.0,
    half_open_max_calls: int = 1,
    excluded_exceptions: tuple[type[BaseException], ...] | None = None,
    *,
    clock: Clock | None = None,
) -> CircuitBreaker:
    """The breaker registered under ``name``, created with these settings on first use."""
    with _registry_lock:
        breaker = _registry.get(name)
        if breaker is None:
            breaker = _registry[name] = CircuitBreaker(
                name,
                failure_threshold,
                recovery_timeout,
                half_open_max_calls,
                excluded_exceptions,
                clock=clock,
            )
        return breaker


get_circuit = get_circuit_breaker  # the library's name


def reset_circuit_breakers() -> None:
    """Forget every breaker (tests, or an operator's manual reset)."""
    with _registry_lock:
        _registry.clear()


def circuit_breaker(
    failure_threshold: int | Callable[..., Any] = 5,
    recovery_timeout: float = 30.0,
    half_open_max_calls: int = 1,
    name: str | None = None,
    excluded_exceptions: tuple[type[BaseException], ...] | None = None,
    *,
    on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
    clock: Clock | None = None,
) -> Any:
    """Guard a note (sync or async, or a ``Note``) with the breaker named ``name`` (default:
    the function's module and qualified name)."""
    if callable(failure_threshold):  # bare @circuit_breaker
        return circuit_breaker()(failure_threshold)
    counted = on if isinstance(on, tuple) else (on,)
    excluded = tuple(excluded_exceptions or ())
    threshold = failure_threshold

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        key = name or f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}"
        breaker = get_circuit_breaker(
            key, threshold, recovery_timeout, half_open_max_calls, excluded, clock=clock
        )

        if is_async_callable(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                breaker.before_call()
                try:
                    result = await fn(*args, **kwargs)
                except (Skip, Interrupt):
                    breaker.record_success()
                    raise
                except counted as exc:
                    if excluded and isinstance(exc, excluded):
                        breaker.record_success()
                    else:
                        breaker.record_failure()
                    raise
                except BaseException:
                    # Cancellation or an uncounted error proves nothing either way: free the trial.
                    breaker.release_trial()
                    raise
                breaker.record_success()
                return result

            wrapper: Callable[..., Any] = async_wrapper
        else:

            @functools.wraps(fn)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                breaker.before_call()
                try:
                    result = fn(*args, **kwargs)
                except (Skip, Interrupt):
                    breaker.record_success()
                    raise
                except counted as exc:
                    if excluded and isinstance(exc, excluded):
                        breaker.record_success()
                    else:
                        breaker.record_failure()
                    raise
                except BaseException:
                    breaker.release_trial()
                    raise
                breaker.record_success()
                return result

            wrapper = sync_wrapper
        wrapper.circuit = breaker  # type: ignore[attr-defined]
        return wrapper

    return decorate
