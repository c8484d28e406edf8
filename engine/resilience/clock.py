"""Clocks: where resilience decorators get time, sleep and deadlines from.

``SystemClock`` is the real thing. ``ManualClock`` never waits: ``sleep`` advances its time at
once and fires any deadline it crosses, so retry, timeout and circuit tests run in microseconds.
Decorators take ``clock=`` explicitly, or use the process default (``set_default_clock``).
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import contextlib
import contextvars
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...

    def sleep_sync(self, seconds: float) -> None: ...

    def timeout(self, seconds: float) -> contextlib.AbstractAsyncContextManager[None]:
        """Async context that raises builtins.TimeoutError once ``seconds`` have passed."""
        ...

    def call_with_timeout(self, fn: Callable[[], Any], seconds: float) -> Any:
        """Run a sync callable on another thread; raise builtins.TimeoutError past ``seconds``."""
        ...


def _start_in_thread(fn: Callable[[], Any]) -> concurrent.futures.Future[Any]:
    # One daemon thread per call rather than a pool: a timed-out call cannot be killed, and
    # abandoned calls must not occupy a bounded pool that later calls wait on.
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()
    ctx = contextvars.copy_context()

    def target() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(ctx.run(fn))
        except BaseException as exc:  # handed to the waiting caller
            future.set_exception(exc)

    threading.Thread(target=target, name="engine-timeout", daemon=True).start()
    return future


class SystemClock:
    """Real time: ``time.monotonic``, ``asyncio.sleep``, ``asyncio.timeout``, threads."""

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def sleep_sync(self, seconds: float) -> None:
        time.sleep(seconds)

    def timeout(self, seconds: float) -> contextlib.AbstractAsyncContextManager[None]:
        return asyncio.timeout(seconds)

    def call_with_timeout(self, fn: Callable[[], Any], seconds: float) -> Any:
        future = _start_in_thread(fn)
        try:
            return future.result(timeout=seconds)
        except concurrent.futures.TimeoutError:
            raise builtins.TimeoutError(f"timed out after {seconds}s") from None


class _Deadline:
    __slots__ = ("at", "task", "loop", "fired")

    def __init__(self, at: float, task: asyncio.Task[Any], loop: asyncio.AbstractEventLoop) -> None:
        self.at = at
        self.task = task
        self.loop = loop
        self.fired = False


class ManualClock:
    """A clock that moves only when told to (``advance``) or when code sleeps on it."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._cond = threading.Condition()
        self._deadlines: list[_Deadline] = []
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        with self._cond:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._cond:
            self._now += seconds
            now = self._now
            due = [d for d in self._deadlines if not d.fired and d.at <= now]
            for d in due:
                d.fired = True
            self._cond.notify_all()
        for d in due:
            d.loop.call_soon_threadsafe(d.task.cancel)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)
        # Yield so that a deadline fired by this advance is delivered to its task here.
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    def sleep_sync(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)

    @contextlib.asynccontextmanager
    async def timeout(self, seconds: float) -> AsyncIterator[None]:
        task = asyncio.current_task()
        assert task is not None
        deadline = _Deadline(self.monotonic() + seconds, task, asyncio.get_running_loop())
        with self._cond:
            self._deadlines.append(deadline)
        try:
            yield
        except asyncio.CancelledError:
            if deadline.fired and task.uncancel() == 0:
                raise builtins.TimeoutError(f"timed out after {seconds}s") from None
            raise
        finally:
            with self._cond:
                self._deadlines.remove(deadline)

    def call_with_timeout(self, fn: Callable[[], Any], seconds: float) -> Any:
        with self._cond:
            deadline = self._now + seconds
        future = _start_in_thread(fn)
        future.add_done_callback(lambda _f: self._notify())
        with self._cond:
            # Waits only for the worker thread or for someone to advance this clock.
            while not future.done() and self._now < deadline:
                self._cond.wait(0.05)
            # Clock time decides: a call that moved the clock past its deadline took too long,
            # even if its thread has already returned.
            timed_out = self._now >= deadline
        if timed_out:
            raise builtins.TimeoutError(f"timed out after {seconds}s")
        return future.result()

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()


_default_clock: Clock = SystemClock()


def get_default_clock() -> Clock:
    return _default_clock


def set_default_clock(clock: Clock) -> Clock:
    """Replace the process-wide default clock; returns the previous one (restore it after)."""
    global _default_clock
    previous = _default_clock
    _default_clock = clock
    return previous


@contextlib.contextmanager
def use_clock(clock: Clock) -> Any:
    previous = set_default_clock(clock)
    try:
        yield clock
    finally:
        set_default_clock(previous)
