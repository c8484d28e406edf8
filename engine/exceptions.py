"""The error types under the library's module name (``cadence.exceptions``); see ``engine.errors``."""

from __future__ import annotations

from .errors import (
    CadenceError,
    CircuitOpenError,
    Interrupt,
    MergeConflict,
    MergeConflictError,
    NoteError,
    ParallelNoteError,
    RetryExhaustedError,
    Skip,
    TimeoutError,
)

__all__ = [
    "CadenceError",
    "CircuitOpenError",
    "Interrupt",
    "MergeConflict",
    "MergeConflictError",
    "NoteError",
    "ParallelNoteError",
    "RetryExhaustedError",
    "Skip",
    "TimeoutError",
]
