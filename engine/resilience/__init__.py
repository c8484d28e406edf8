"""Resilience decorators: retry, timeout, fallback and circuit breaker, plus their clocks."""

from __future__ import annotations

from ..errors import CircuitOpenError
from .circuit import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    CircuitBreaker,
    CircuitState,
    circuit_breaker,
    get_circuit,
    get_circuit_breaker,
    reset_circuit_breakers,
)
from .clock import Clock, ManualClock, SystemClock, get_default_clock, set_default_clock, use_clock
from .fallback import fallback
from .retry import compute_delay, retry
from .timeout import timeout

__all__ = [
    "CLOSED",
    "HALF_OPEN",
    "OPEN",
    "CircuitBreaker",
    "CircuitOpenError",
    "CircuitState",
    "Clock",
    "ManualClock",
    "SystemClock",
    "circuit_breaker",
    "compute_delay",
    "fallback",
    "get_circuit",
    "get_circuit_breaker",
    "get_default_clock",
    "reset_circuit_breakers",
    "retry",
    "set_default_clock",
    "timeout",
    "use_clock",
]
