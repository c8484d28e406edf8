"""Per-run context carried in contextvars, so decorators can reach the run's hooks.

Only set when a run has hooks attached: the bare hot path pays nothing for it.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .hooks import HooksManager


class RunInfo:
    __slots__ = (
        "cadence_name",
        "run_id",
        "hooks",
        "loop",
        "loop_thread",
        "pending",
        "note",
    )

    def __init__(
        self,
        cadence_name: str,
        run_id: str | None,
        hooks: HooksManager | None,
        retried: bool | None = None,
    ) -> None:
        self.cadence_name = cadence_name
        self.run_id = run_id
        self.hooks = hooks
        # Only retries from sync notes (maybe on worker threads) need the run's loop and thread;
        # a run none of whose hooks wants retries has no loop (notify_retry* then do nothing).
        if retried is None:
            retried = hooks is not None and hooks.has_on_retry
        if retried:
            self.loop = asyncio.get_running_loop()
            self.loop_thread = threading.get_ident()
        else:
            self.loop = None
            self.loop_thread = 0
        # Strong references to fire-and-forget hook tasks so they are not collected mid-flight;
        # created on first use, since most runs never retry.
        self.pending: set[Any] | None = None
        self.note: str | None = None  # the measure being run (parallel tasks use current_note)


current_run: contextvars.ContextVar[RunInfo | None] = contextvars.ContextVar(
    "engine_run", default=None
)
current_note: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "engine_note", default=None
)


async def notify_retry(
    note_name: str | None, score: Any, attempt: int, max_attempts: int, error: BaseException
) -> None:
    run = current_run.get()
    if run is not None and run.loop is not None and run.hooks is not None:
        name = note_name or current_note.get() or run.note or ""
        await run.hooks.on_retry(name, score, attempt, max_attempts, error)


def notify_retry_sync(
    note_name: str | None, score: Any, attempt: int, max_attempts: int, error: BaseException
) -> None:
    """From a sync note (maybe on a worker thread): schedule on_retry on the run's loop."""
    run = current_run.get()
    if run is None or run.loop is None or run.hooks is None:
        return  # no hook of this run wants retries
    name = note_name or current_note.get() or run.note or ""
    coro = run.hooks.on_retry(name, score, attempt, max_attempts, error)
    if run.pending is None:
        run.pending = set()
    if threading.get_ident() == run.loop_thread:
        task = run.loop.create_task(coro)
        run.pending.add(task)
        task.add_done_callback(run.pending.discard)
    else:
        future = asyncio.run_coroutine_threadsafe(coro, run.loop)
        run.pending.add(future)
        future.add_done_callback(run.pending.discard)
