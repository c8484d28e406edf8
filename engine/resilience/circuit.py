"""``@circuit_breaker``: stop calling a failing dependency for a while.

CLOSED counts consecutive failures; at ``failure_threshold`` it goes OPEN and refuses calls with
:class:`CircuitOpenError`. After ``recovery_timeout`` the next call is let through as a trial
(HALF_OPEN; concurrent callers are still refused): success closes the circuit, failure opens it
again. State is shared by every function decorated with the same ``name`` and guarded by a lock,
so concurrent tasks and threads see one consistent state machine.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from ..callables import is_async_callable
from ..errors import CircuitOpenError, Interrupt, Skip
from .clock import Clock, get_default_clock

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


class CircuitBreaker:
    __slots__ = (
        "name",
        "failure_threshold",
        "recovery_timeout",
        "clock",
        "_lock",
        "_state",
        "_failures",
        "_opened_at",
        "_trial_running",
    )

    def __init__(
        self,
        name: str,
        failure_threshold: int = 5,
        recovery_timeout: float = 30.0,
        clock: Clock | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.name = name
        self.failure_threshold = failure_threshold
        self.recovery_timeout = recovery_timeout
        self.clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_running = False

    def _now(self) -> float:
        return (self.clock or get_default_clock()).monotonic()

    @property
    def state(self) -> str:
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
                self._trial_running = True
                return
            # HALF_OPEN: exactly one trial call at a time.
            if self._trial_running:
                raise CircuitOpenError(self.name, retry_after=0.0)
            self._trial_running = True

    def record_success(self) -> None:
        with self._lock:
            self._state = CLOSED
            self._failures = 0
            self._trial_running = False

    def record_failure(self) -> None:
        with self._lock:
            self._trial_running = False
            if self._state == HALF_OPEN:
                self._state = OPEN
                self._opened_at = self._now()
                return
            self._failures += 1
            if self._failures >= self.failure_threshold:
                self._state = OPEN
                self._opened_at = self._now()

    def release_trial(self) -> None:
        with self._lock:
            self._trial_running = False

    def reset(self) -> None:
        with self._lock:
            self._state = CLOSED
            self._failures = 0
            self._trial_running = False


_registry: dict[str, CircuitBreaker] = {}
_registry_lock = threading.Lock()


def get_circuit_breaker(
    name: str,
    failure_threshold: int = 5,
    recovery_timeout: float = 30.0,
    clock: Clock | None = None,
) -> CircuitBreaker:
    """The breaker registered under ``name``, created with these settings on first use."""
    with _registry_lock:
        breaker = _registry.get(name)
        if breaker is None:
            breaker = _registry[name] = CircuitBreaker(
                name, failure_threshold, recovery_timeout, clock
            )
        return breaker


def reset_circuit_breakers() -> None:
    """Forget every breaker (tests, or an operator's manual reset)."""
    with _registry_lock:
        _registry.clear()


def circuit_breaker(
    failure_threshold: int | Callable[..., Any] = 5,
    recovery_timeout: float = 30.0,
    *,
    name: str | None = None,
    on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
    clock: Clock | None = None,
) -> Any:
    if callable(failure_threshold):  # bare @circuit_breaker
        return circuit_breaker()(failure_threshold)
    counted = on if isinstance(on, tuple) else (on,)
    threshold = failure_threshold

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        key = name or f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}"
        breaker = get_circuit_breaker(key, threshold, recovery_timeout, clock)

        if is_async_callable(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                breaker.before_call()
                try:
                    result = await fn(*args, **kwargs)
                except (Skip, Interrupt):
                    breaker.record_success()
                    raise
                except counted:
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
                except counted:
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
