"""Cadence engine: a declarative orchestration library (pure Python, no Django).

``from engine import Cadence, Score, note, retry, timeout, fallback, circuit_breaker``.
"""

from __future__ import annotations

from .cadence import Cadence
from .checkpoint import Checkpoint, CheckpointStore, InMemoryCheckpointStore
from .diagram import to_dot, to_mermaid
from .errors import (
    CadenceError,
    CircuitOpenError,
    Interrupt,
    MergeConflict,
    NoteError,
    ParallelNoteError,
    RetryExhaustedError,
    Skip,
    TimeoutError,
)
from .events import (
    CADENCE_COMPLETED,
    CADENCE_FAILED,
    CADENCE_STARTED,
    NOTE_COMPLETED,
    NOTE_FAILED,
    NOTE_RETRIED,
    NOTE_STARTED,
    Event,
    EventEmitter,
)
from .hooks import (
    CadenceHooks,
    DebugHooks,
    HooksManager,
    LoggingHooks,
    MetricsHooks,
    TimingHooks,
    TracingHooks,
)
from .merge import Changes, fail_on_conflict, last_write_wins, smart_merge
from .note import note
from .recording import RecordingHooks, StepRecord
from .resilience import (
    CircuitBreaker,
    ManualClock,
    SystemClock,
    circuit_breaker,
    fallback,
    get_circuit_breaker,
    reset_circuit_breakers,
    retry,
    timeout,
)
from .score import Atomic, AtomicDict, AtomicList, ImmutableScore, Score

__all__ = [
    "CADENCE_COMPLETED",
    "CADENCE_FAILED",
    "CADENCE_STARTED",
    "NOTE_COMPLETED",
    "NOTE_FAILED",
    "NOTE_RETRIED",
    "NOTE_STARTED",
    "Atomic",
    "AtomicDict",
    "AtomicList",
    "Cadence",
    "CadenceError",
    "CadenceHooks",
    "Changes",
    "Checkpoint",
    "CheckpointStore",
    "CircuitBreaker",
    "CircuitOpenError",
    "DebugHooks",
    "Event",
    "EventEmitter",
    "HooksManager",
    "ImmutableScore",
    "InMemoryCheckpointStore",
    "Interrupt",
    "LoggingHooks",
    "ManualClock",
    "MergeConflict",
    "MetricsHooks",
    "NoteError",
    "ParallelNoteError",
    "RecordingHooks",
    "RetryExhaustedError",
    "Score",
    "Skip",
    "StepRecord",
    "SystemClock",
    "TimeoutError",
    "TimingHooks",
    "TracingHooks",
    "circuit_breaker",
    "fail_on_conflict",
    "fallback",
    "get_circuit_breaker",
    "last_write_wins",
    "note",
    "reset_circuit_breakers",
    "retry",
    "smart_merge",
    "timeout",
    "to_dot",
    "to_mermaid",
]
