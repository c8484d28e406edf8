"""Cadence engine: a declarative orchestration library (pure Python, no Django).

``from engine import Cadence, Score, note, retry, timeout, fallback, circuit_breaker``. A
superset of the published ``cadence-orchestration`` 0.7.2 API: code written against ``cadence``
runs with ``engine`` in its place (see the compatibility table in ``engine/README.md``).
"""

from __future__ import annotations

from .cadence import Cadence
from .checkpoint import (
    Checkpoint,
    CheckpointHooks,
    CheckpointStore,
    InMemoryCheckpointStore,
    restore_score,
    serialize_score,
)
from .diagram import to_dot, to_mermaid
from .emitter import EventEmitter
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
    CadenceEvent,
    Event,
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
from .measure_diagram import print_cadence, render_svg, save_diagram
from .merge import (
    Changes,
    MergeStrategy,
    fail_on_conflict,
    last_write_wins,
    merge_snapshots,
    smart_merge,
)
from .note import Note, note
from .recording import RecordingHooks, StepRecord
from .reporters import console_reporter, json_reporter
from .resilience import (
    CircuitBreaker,
    CircuitState,
    ManualClock,
    SystemClock,
    circuit_breaker,
    fallback,
    get_circuit_breaker,
    reset_circuit_breakers,
    retry,
    timeout,
)
from .result import Err, Ok, Result, err, ok
from .score import Atomic, AtomicDict, AtomicList, ImmutableScore, Score

__version__ = "0.7.2"  # the library version whose public API this package covers

__all__ = [
    "serialize_score",
    "save_diagram",
    "restore_score",
    "render_svg",
    "print_cadence",
    "ok",
    "merge_snapshots",
    "json_reporter",
    "err",
    "console_reporter",
    "Result",
    "Ok",
    "Note",
    "MergeStrategy",
    "Err",
    "CircuitState",
    "CheckpointHooks",
    "CadenceEvent",
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
