"""Error types raised by the engine.

Every error the engine raises on its own behalf derives from :class:`CadenceError`, which
carries a stable ``code``, a human ``message`` and structured ``details`` so that callers can
map it to the project's one JSON error shape without parsing strings.
"""

from __future__ import annotations

import builtins
from typing import Any


class CadenceError(Exception):
    """Base class of every engine error: ``code``, ``message`` and ``details``."""

    code: str = "cadence_error"

    def __init__(
        self, message: str = "", *, code: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details: dict[str, Any] = dict(details or {})

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


class NoteError(CadenceError):
    """A note (or a measure's note) failed; ``original_error`` is what it raised."""

    code = "note_failed"

    def __init__(
        self,
        note_name: str,
        original_error: BaseException,
        message: str | None = None,
        *,
        measure_name: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.note_name = note_name
        self.original_error = original_error
        self.measure_name = measure_name if measure_name is not None else note_name
        super().__init__(
            message
            or f"note {note_name!r} failed: {type(original_error).__name__}: {original_error}",
            details=details,
        )


class ParallelNoteError(NoteError):
    """A task of a ``.sync`` group (or a parallel split) failed."""

    code = "parallel_note_failed"

    def __init__(
        self,
        group_name: str,
        task_index: int,
        note_name: str,
        original_error: BaseException,
        *,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.group_name = group_name
        self.task_index = task_index
        super().__init__(
            note_name,
            original_error,
            f"task {note_name!r} (index {task_index}) in group {group_name!r} failed: "
            f"{type(original_error).__name__}: {original_error}",
            measure_name=group_name,
            details=details,
        )


class TimeoutError(CadenceError, builtins.TimeoutError):  # noqa: A001 - the seed's public name
    """A note ran longer than its timeout. Also a builtin ``TimeoutError``."""

    code = "timeout"

    def __init__(
        self, message: str = "", *, seconds: float | None = None, note_name: str | None = None
    ) -> None:
        self.seconds = seconds
        self.note_name = note_name
        super().__init__(
            message or f"{note_name or 'note'} timed out after {seconds}s",
            details={"seconds": seconds, "note": note_name},
        )


class RetryExhaustedError(CadenceError):
    """Every attempt of a ``@retry`` failed; ``last_error`` is the final failure."""

    code = "retry_exhausted"

    def __init__(
        self, attempts: int, last_error: BaseException, *, note_name: str | None = None
    ) -> None:
        self.attempts = attempts
        self.last_error = last_error
        self.note_name = note_name
        super().__init__(
            f"{note_name or 'note'} failed after {attempts} attempts: {type(last_error).__name__}: {last_error}",
            details={"attempts": attempts, "note": note_name},
        )


class CircuitOpenError(CadenceError):
    """The circuit breaker refused the call without running it."""

    code = "circuit_open"

    def __init__(self, circuit_name: str, *, retry_after: float | None = None) -> None:
        self.circuit_name = circuit_name
        self.retry_after = retry_after
        super().__init__(
            f"circuit {circuit_name!r} is open",
            details={"circuit": circuit_name, "retry_after": retry_after},
        )


class MergeConflict(CadenceError):
    """Several parallel tasks changed the same field and the strategy cannot reconcile them."""

    code = "merge_conflict"

    def __init__(self, field: str, note_names: list[str], message: str | None = None) -> None:
        self.field = field
        self.note_names = list(note_names)
        super().__init__(
            message
            or f"field {field!r} was changed by several parallel notes: {', '.join(note_names)}",
            details={"field": field, "notes": self.note_names},
        )


class Skip(Exception):  # noqa: N818 - a control-flow signal, named as the seed names it
    """Raised by a note to end itself early without failing; the run goes on."""


class Interrupt(Exception):  # noqa: N818 - a control-flow signal
    """Raised by a note registered with ``can_interrupt=True`` to end the run successfully."""
