"""Error types raised by the engine.

Every error the engine raises on its own behalf derives from :class:`CadenceError`, which
carries a stable ``code``, a human ``message`` and structured ``details`` so that callers can
map it to the project's one JSON error shape without parsing strings. ``str(error)`` is
``"[CODE] message"`` and the constructors accept the published library's signatures
(``NoteError("msg", note_name="x")``, ``TimeoutError("x", 5.0)``,
``RetryExhaustedError("x", 3, err)``, ``MergeConflict("field", [values])``) as well as the
engine's own.
"""

from __future__ import annotations

import builtins
from typing import Any


def _message_of(error: BaseException | None) -> str:
    """What an error says, without the ``[CODE]`` prefix of engine errors."""
    return error.message if isinstance(error, CadenceError) else str(error)


class CadenceError(Exception):
    """Base class of every engine error: ``code``, ``message`` and ``details``."""

    code: str = "CADENCE_ERROR"

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

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class Skip(CadenceError):  # noqa: N818 - the library's public name
    """Raised by a note to stop the rest of the run cleanly: not a failure, the score so far is
    the result."""

    code = "SKIP"

    def __init__(self, reason: str = "skipped") -> None:
        super().__init__(reason, details={"reason": reason})
        self.reason = reason


class Interrupt(Exception):  # noqa: N818 - a control-flow signal
    """Raised by a note registered with ``can_interrupt=True`` to end the run successfully
    (returning ``True`` from such a note does the same)."""


class NoteError(CadenceError):
    """A note (or a measure's note) failed; ``original_error`` is what it raised.

    ``NoteError("message", note_name="x", original_error=err)`` (the library's form) or
    ``NoteError("x", err)`` (the engine's: note name, then the error).
    """

    code = "NOTE_ERROR"

    def __init__(
        self,
        *args: Any,
        note_name: str | None = None,
        original_error: BaseException | None = None,
        code: str | None = None,
        measure_name: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        if note_name is not None:  # library form: (message, *, note_name, original_error, code)
            message = args[0] if args else ""
        else:  # engine form: (note_name, original_error, message=None)
            note_name = args[0] if args else ""
            if len(args) > 1:
                original_error = args[1]
            message = args[2] if len(args) > 2 else None
            if not message:
                message = _message_of(original_error) if original_error is not None else note_name
        self.note_name = note_name
        self.original_error = original_error
        self.measure_name = measure_name if measure_name is not None else note_name
        super().__init__(message, code=code, details={"note_name": note_name, **(details or {})})


class ParallelNoteError(NoteError):
    """A task of a ``.sync`` group (or a parallel split) failed.

    ``ParallelNoteError("message", group_name=, task_index=, task_name=, original_error=)`` or
    ``ParallelNoteError(group_name, task_index, note_name, original_error)``.
    """

    code = "PARALLEL_NOTE_ERROR"

    def __init__(
        self,
        *args: Any,
        group_name: str | None = None,
        task_index: int | None = None,
        task_name: str | None = None,
        original_error: BaseException | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        if group_name is not None:
            message = args[0] if args else ""
        else:
            group_name, task_index, task_name = args[0], args[1], args[2]
            if len(args) > 3:
                original_error = args[3]
            message = (
                f"Task '{task_name}' in group '{group_name}' failed: {_message_of(original_error)}"
            )
        self.group_name = group_name
        self.task_index = task_index if task_index is not None else 0
        super().__init__(
            message,
            note_name=task_name or "",
            original_error=original_error,
            measure_name=group_name,
            details=details,
        )


class TimeoutError(CadenceError, builtins.TimeoutError):  # noqa: A001 - the seed's public name
    """A note ran longer than its timeout. Also a builtin ``TimeoutError``.

    ``TimeoutError(note_name, seconds)`` (the library's form) or
    ``TimeoutError(message="", *, seconds=, note_name=)``.
    """

    code = "TIMEOUT"

    def __init__(
        self, *args: Any, seconds: float | None = None, note_name: str | None = None
    ) -> None:
        message = ""
        if len(args) >= 2:
            note_name, seconds = args[0], args[1]
        elif args:
            message = args[0]
        self.seconds = seconds
        self.note_name = note_name
        super().__init__(
            message or f"Note '{note_name or 'note'}' timed out after {seconds}s",
            details={"note_name": note_name, "timeout": seconds},
        )


class RetryExhaustedError(CadenceError):
    """Every attempt of a ``@retry`` failed; ``last_error`` is the final failure.

    ``RetryExhaustedError(note_name, attempts, last_error)`` (the library's form) or
    ``RetryExhaustedError(attempts, last_error, *, note_name=)``.
    """

    code = "RETRY_EXHAUSTED"

    def __init__(self, *args: Any, note_name: str | None = None) -> None:
        if args and isinstance(args[0], str):
            note_name, attempts, last_error = args[0], args[1], args[2]
        else:
            attempts, last_error = args[0], args[1]
        self.attempts = attempts
        self.last_error = last_error
        self.note_name = note_name
        super().__init__(
            f"Note '{note_name or 'note'}' failed after {attempts} attempts: "
            f"{_message_of(last_error)}",
            details={"note_name": note_name, "attempts": attempts},
        )


class CircuitOpenError(CadenceError):
    """The circuit breaker refused the call without running it."""

    code = "CIRCUIT_OPEN"

    def __init__(self, circuit_name: str, retry_after: float | None = None) -> None:
        self.circuit_name = circuit_name
        self.retry_after = retry_after
        super().__init__(
            f"Circuit '{circuit_name}' is open. Retry after {retry_after or 0.0:.1f}s",
            details={"circuit": circuit_name, "retry_after": retry_after},
        )

    @property
    def name(self) -> str:
        return self.circuit_name


class MergeConflict(CadenceError):
    """Several parallel tasks changed the same field and the strategy cannot reconcile them.

    ``MergeConflict(field, values)`` as in the library; the engine also records which notes
    wrote the field (``note_names``).
    """

    code = "MERGE_CONFLICT"

    def __init__(
        self,
        field: str,
        values: list[Any] | None = None,
        message: str | None = None,
        *,
        note_names: list[str] | None = None,
    ) -> None:
        self.field = field
        self.values = list(values or [])
        self.note_names = list(note_names or [])
        super().__init__(
            message
            or f"Conflict on field '{field}': multiple tasks wrote different values: {self.values}",
            details={"field": field, "notes": self.note_names},
        )


MergeConflictError = MergeConflict


# What a run reports for an exception a measure raised: engine errors pass through as they are
# (as in the library), except the two the library does not count as its own errors, which are
# wrapped like any other exception.
_WRAPPED = (CircuitOpenError, MergeConflict)


def note_failure(
    name: str, exc: BaseException, *, details: dict[str, Any] | None = None
) -> BaseException:
    """``exc`` itself for engine errors, else a :class:`NoteError` for measure ``name``."""
    if isinstance(exc, CadenceError) and not isinstance(exc, _WRAPPED):
        return exc
    error = NoteError(name, exc, details=details)
    error.__cause__ = exc
    return error
