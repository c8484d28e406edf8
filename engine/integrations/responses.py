"""What the web integrations send back: the score as JSON, or the project's error shape."""

from __future__ import annotations

from typing import Any

from ..errors import CadenceError, CircuitOpenError, NoteError, TimeoutError
from ..score import to_jsonable


def score_payload(score: Any) -> Any:
    to_dict = getattr(score, "to_dict", None)
    return to_dict() if callable(to_dict) else to_jsonable(score)


def error_status(error: CadenceError) -> int:
    cause = error.original_error if isinstance(error, NoteError) else error
    if isinstance(cause, CircuitOpenError):
        return 503  # a dependency is known to be down: tell the client to come back later
    if isinstance(cause, TimeoutError):
        return 504
    return 500


def error_payload(error: CadenceError) -> dict[str, Any]:
    return {
        "error": {
            "code": error.code.lower(),  # the project's error shape uses snake_case codes
            "message": error.message,
            "details": to_jsonable(error.details),
        }
    }
