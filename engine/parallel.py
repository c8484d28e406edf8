"""Running the notes of a ``.sync`` group (or parallel split) concurrently.

Lighter than ``asyncio.TaskGroup`` on purpose (a sync group is on the hot path): the first note
runs inline in the caller's task and only the others get tasks, no wrapper coroutine is created
per note, and completion order is recorded by one done-callback. Semantics match a task group:
the first failure cancels the siblings (the inline note included), every task has finished
before this returns or raises, and cancelling the caller cancels every task and propagates.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .context import current_note, current_run
from .errors import ParallelNoteError, Skip
from .merge import Changes, Fork, MergeFn
from .score import SCORE_TYPES

if TYPE_CHECKING:
    from .measures import Step


class _Group:
    __slots__ = (
        "tasks",
        "index",
        "results",
        "order",
        "errors",
        "pending",
        "waiter",
        "parent",
        "inline",
        "cancelled_parent",
    )

    def __init__(self, n: int, parent: asyncio.Task[Any] | None) -> None:
        self.tasks: list[asyncio.Task[Any]] = []
        self.index: dict[asyncio.Task[Any], int] = {}
        self.results: list[Any] = [None] * n
        self.order: list[int] = []  # completion order, for last_write_wins
        self.errors: list[tuple[int, BaseException]] = []  # in the order they happened
        self.pending = 0
        self.waiter: asyncio.Future[None] | None = None
        self.parent = parent
        self.inline = False
        self.cancelled_parent = False

    def done(self, task: asyncio.Task[Any]) -> None:
        self.pending -= 1
        i = self.index[task]
        if not task.cancelled():
            exc = task.exception()
            if exc is None:
                self.results[i] = task.result()
                self.order.append(i)
            else:
                self.fail(i, exc)  # a Skip too: it stops the group (and the run), unmerged
        if self.pending == 0 and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def fail(self, i: int, exc: BaseException) -> None:
        self.errors.append((i, exc))
        if len(self.errors) > 1:
            return
        for task in self.tasks:
            if not task.done():
                task.cancel()
        if self.inline and self.parent is not None:
            # The first note runs in the caller's task: interrupt it the way a task group would.
            self.cancelled_parent = True
            self.parent.cancel()

    async def cancel_all(self) -> None:
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            await asyncio.wait(self.tasks)


def _start(step: Step, isolated: Any) -> Any:
    if step.is_async:
        return step.fn(isolated)
    # Sync notes get a thread each so they run concurrently and never block the loop.
    return asyncio.to_thread(step.fn, isolated)


async def run_parallel(group_name: str, steps: Sequence[Step], score: Any, merge: MergeFn) -> Any:
    """Fork the score per note, run the notes concurrently, merge their changes back."""
    fork = Fork(score)
    n = len(steps)
    copies = [fork.copy() for _ in range(n)]
    observed = current_run.get() is not None
    group = _Group(n, asyncio.current_task())
    if n > 1:
        loop = asyncio.get_running_loop()
        for i in range(1, n):
            context = None
            if observed:
                context = contextvars.copy_context()
                context.run(current_note.set, steps[i].name)
            task = loop.create_task(_start(steps[i], copies[i]), context=context)
            group.tasks.append(task)
            group.index[task] = i
            task.add_done_callback(group.done)
        group.pending = n - 1

    token = current_note.set(steps[0].name) if observed else None
    group.inline = True
    try:
        group.results[0] = await _start(steps[0], copies[0])
        group.order.append(0)
    except asyncio.CancelledError:
        group.inline = False
        if not (
            group.cancelled_parent and group.parent is not None and group.parent.uncancel() == 0
        ):
            await group.cancel_all()  # cancelled from outside: take the whole group down
            raise
        group.cancelled_parent = False
    except Exception as exc:
        group.inline = False
        group.fail(0, exc)
    finally:
        group.inline = False
        if token is not None:
            current_note.reset(token)
    if group.cancelled_parent and group.parent is not None:
        group.parent.uncancel()  # the inline note swallowed our cancellation; forget it

    if group.pending:
        group.waiter = asyncio.get_running_loop().create_future()
        try:
            await group.waiter
        except asyncio.CancelledError:
            await group.cancel_all()
            raise

    if group.errors:
        index, exc = group.errors[0]
        if isinstance(exc, Skip):
            raise exc
        error = ParallelNoteError(group_name, index, steps[index].name, exc)
        if len(group.errors) > 1:
            error.details["other_failures"] = [
                {"note": steps[i].name, "task_index": i, "error": repr(e)}
                for i, e in group.errors[1:]
            ]
        raise error from exc

    changes: list[dict[str, Any]] = []
    results = group.results
    diff, new_changes, update = fork.diff, Changes.__new__, dict.update
    for i in group.order:
        result = results[i]
        outcome = result if result is not None and isinstance(result, SCORE_TYPES) else copies[i]
        # Changes(diff, name, i, outcome) without a Python-level __init__ call per task
        change = new_changes(Changes)
        update(change, diff(outcome))
        change.note_name = steps[i].name
        change.task_index = i
        change.snapshot = outcome
        changes.append(change)
    merged = merge(score, changes)
    if merged is not None and isinstance(merged, SCORE_TYPES):
        return merged
    return score
