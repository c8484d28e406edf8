"""``TracingHooks``: a start and an end record per measure, nested exactly, with what it saw.

Each measure gets a step id when it starts; its parent is the step current in its context
(``current_step``): a tool call or model call made inside a note, or a note of a ``.sync``
group's branch (whose task copies the context), names that note as its parent. The end record
carries the score fields as the measure found them (``inputs``), the fields it changed
(``changes``), the error with its stack trace, and the CPU time and resident memory that moved
while it ran (the process's, so concurrent work on the same loop is counted too).

Sync and cheap enough for a recorder that keeps every step: two score snapshots per measure,
as :class:`engine.recording.RecordingHooks` takes.
"""

from __future__ import annotations

import contextvars
import itertools
import os
import time
import traceback
from collections.abc import Callable
from typing import Any

from .checkpoint import capture
from .context import current_run
from .hooks import CadenceHooks
from .score import to_jsonable

current_step: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "engine_step", default=None
)
_ids = itertools.count(1)
_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024 if hasattr(os, "sysconf") else 4


def new_step_id() -> str:
    return f"s{next(_ids)}"


def rss_kb() -> int | None:
    """The process's resident memory in KiB, where the platform tells it (Linux)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_KB
    except (OSError, ValueError, IndexError):
        return None


class StepStart:
    __slots__ = ("step_id", "parent_id", "name", "kind", "started_at")

    def __init__(
        self, step_id: str, parent_id: str | None, name: str, kind: str, started_at: float
    ) -> None:
        self.step_id = step_id
        self.parent_id = parent_id
        self.name = name
        self.kind = kind
        self.started_at = started_at


class StepEnd:
    __slots__ = (
        "step_id",
        "parent_id",
        "name",
        "kind",
        "started_at",
        "ended_at",
        "duration",
        "inputs",
        "changes",
        "error",
        "stack",
        "cpu_ms",
        "memory_kb",
    )

    def __init__(self, **fields: Any) -> None:
        for name in self.__slots__:
            setattr(self, name, fields.get(name))

    @property
    def outcome(self) -> str:
        return "failed" if self.error is not None else "completed"


def stack_of(error: BaseException) -> str:
    """The stack of the error a note raised (the engine wraps it: the original's is the one)."""
    original = getattr(error, "original_error", None) or error
    return "".join(traceback.format_exception(original))[-20000:]


class TracingHooks(CadenceHooks):
    """``on_start(StepStart)`` before and ``on_end(StepEnd)`` after every measure; ``kinds`` maps a
    measure's name to its kind (``note`` when unnamed there)."""

    def __init__(
        self,
        on_start: Callable[[StepStart], None],
        on_end: Callable[[StepEnd], None],
        kinds: dict[str, str] | None = None,
    ) -> None:
        self.on_start = on_start
        self.on_end = on_end
        self.kinds = kinds or {}
        self._open: dict[tuple[int, str], tuple[Any, ...]] = {}

    def before_note(self, note_name: str, score: Any) -> None:
        step_id = new_step_id()
        parent = current_step.get()
        kind = self.kinds.get(note_name, "note")
        started = time.time()
        # Set in the note's own context: hooks are called inline, so what the note starts
        # (model calls, tools, a .sync group's branches) sees this step as its parent.
        current_step.set(step_id)
        self._open[(id(current_run.get()), note_name)] = (
            step_id,
            parent,
            kind,
            started,
            capture(score),
            time.process_time(),
            rss_kb(),
        )
        self.on_start(StepStart(step_id, parent, note_name, kind, started))

    def after_note(
        self, note_name: str, score: Any, duration: float, error: BaseException | None = None
    ) -> None:
        opened = self._open.pop((id(current_run.get()), note_name), None)
        if opened is None:
            return
        step_id, parent, kind, started, before, cpu0, rss0 = opened
        current_step.set(parent)
        after = capture(score)
        rss1 = rss_kb()
        self.on_end(
            StepEnd(
                step_id=step_id,
                parent_id=parent,
                name=note_name,
                kind=kind,
                started_at=started,
                ended_at=started + duration,
                duration=duration,
                inputs={name: to_jsonable(value) for name, value in before.items()},
                changes={
                    name: to_jsonable(value)
                    for name, value in after.items()
                    if name not in before or before[name] != value
                },
                error=error,
                stack=stack_of(error) if error is not None else "",
                cpu_ms=round((time.process_time() - cpu0) * 1000, 3),
                memory_kb=rss1 - rss0 if rss0 is not None and rss1 is not None else None,
            )
        )

    def after_cadence(
        self, cadence_name: str, score: Any, duration: float, error: BaseException | None = None
    ) -> None:
        # A cancelled run never reaches after_note for the measure it was in: forget it.
        key = id(current_run.get())
        for pending in [k for k in self._open if k[0] == key]:
            del self._open[pending]
