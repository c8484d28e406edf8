"""``RecordingHooks``: one record per measure — timing, outcome, and what it changed in the score.

Built for run logs (the project stores each record as a run event): the callback receives a
:class:`StepRecord` after every measure, with the fields the measure changed as JSON-ready data.
The score is snapshotted before each measure (a deep copy of its fields), so attach this hook
only where that cost is acceptable.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Any

from .checkpoint import capture
from .context import current_run
from .hooks import CadenceHooks
from .score import to_jsonable


class StepRecord:
    __slots__ = (
        "cadence_name",
        "run_id",
        "note_name",
        "started_at",
        "ended_at",
        "duration",
        "outcome",
        "changes",
        "error",
    )

    def __init__(
        self,
        cadence_name: str,
        run_id: str | None,
        note_name: str,
        started_at: float,
        ended_at: float,
        duration: float,
        outcome: str,
        changes: dict[str, Any],
        error: BaseException | None,
    ) -> None:
        self.cadence_name = cadence_name
        self.run_id = run_id
        self.note_name = note_name
        self.started_at = started_at
        self.ended_at = ended_at
        self.duration = duration
        self.outcome = outcome  # "completed" or "failed"
        self.changes = changes
        self.error = error

    def to_dict(self) -> dict[str, Any]:
        return {
            "cadence": self.cadence_name,
            "run_id": self.run_id,
            "note": self.note_name,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "duration": self.duration,
            "outcome": self.outcome,
            "changes": self.changes,
            "error": None
            if self.error is None
            else {
                "type": type(self.error).__name__,
                # without the "[CODE] " prefix str() gives engine errors
                "message": getattr(self.error, "message", None) or str(self.error),
            },
        }

    def __repr__(self) -> str:
        return f"StepRecord({self.note_name!r}, {self.outcome}, changes={sorted(self.changes)})"


class RecordingHooks(CadenceHooks):
    """Calls ``callback(record)`` (sync or async) after every measure of every run it is attached to."""

    def __init__(self, callback: Callable[[StepRecord], Any]) -> None:
        self.callback = callback
        self._before: dict[tuple[int, str], tuple[float, dict[str, Any]]] = {}

    def before_note(self, note_name: str, score: Any) -> None:
        self._before[(id(current_run.get()), note_name)] = (time.time(), capture(score))

    def after_note(
        self, note_name: str, score: Any, duration: float, error: BaseException | None = None
    ) -> Any:
        run = current_run.get()
        started_at, before = self._before.pop((id(run), note_name), (time.time() - duration, {}))
        after = capture(score)
        changes = {
            name: to_jsonable(value)
            for name, value in after.items()
            if name not in before or before[name] != value
        }
        record = StepRecord(
            run.cadence_name if run is not None else "",
            run.run_id if run is not None else None,
            note_name,
            started_at,
            started_at + duration,
            duration,
            "failed" if error is not None else "completed",
            changes,
            error,
        )
        result = self.callback(record)
        return result if inspect.isawaitable(result) else None

    def after_cadence(
        self, cadence_name: str, score: Any, duration: float, error: BaseException | None = None
    ) -> None:
        # A cancelled run never reaches after_note for the measure it was in: forget its snapshot.
        key = id(current_run.get())
        for pending in [k for k in self._before if k[0] == key]:
            del self._before[pending]
