"""Typing aliases for notes, conditions, merges and callbacks (the library's ``cadence.types``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

ScoreT = TypeVar("ScoreT")
ChildScoreT = TypeVar("ChildScoreT")

SyncTask = Callable[[ScoreT], Any]
AsyncTask = Callable[[ScoreT], Awaitable[Any]]
Task = SyncTask[ScoreT] | AsyncTask[ScoreT]

SyncCondition = Callable[[ScoreT], bool]
AsyncCondition = Callable[[ScoreT], Awaitable[bool]]
Condition = SyncCondition[ScoreT] | AsyncCondition[ScoreT]

# A note that may stop the run by returning True (``.then(..., can_interrupt=True)``).
SyncInterruptible = Callable[[ScoreT], bool | None]
AsyncInterruptible = Callable[[ScoreT], Awaitable[bool | None]]
Interruptible = SyncInterruptible[ScoreT] | AsyncInterruptible[ScoreT]

# ``.child(name, cadence, merge)``: merge(parent_score, child_score).
SyncMerge = Callable[[ScoreT, ChildScoreT], None]
AsyncMerge = Callable[[ScoreT, ChildScoreT], Awaitable[None]]
Merge = SyncMerge[ScoreT, ChildScoreT] | AsyncMerge[ScoreT, ChildScoreT]

TimeReporter = Callable[[str, float, ScoreT], Any]
ErrorHandler = Callable[[ScoreT, Exception], Any]

__all__ = [
    "AsyncCondition",
    "AsyncInterruptible",
    "AsyncMerge",
    "AsyncTask",
    "ChildScoreT",
    "Condition",
    "ErrorHandler",
    "Interruptible",
    "Merge",
    "ScoreT",
    "SyncCondition",
    "SyncInterruptible",
    "SyncMerge",
    "SyncTask",
    "Task",
    "TimeReporter",
]
