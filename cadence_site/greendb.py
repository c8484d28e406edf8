"""Synchronous database code run on the event loop's thread, its waits done by the loop.

A turn's database work (its run's row, steps, proof, usage: engine/runs/pipeline.py `_db`) is
synchronous Django code. On a pool thread (asgiref's sync_to_async) every round trip to
PostgreSQL ends with that thread taking the GIL back from the event loop's thread: measured on a
streamed /v1 load, the hand-offs (futex calls, context switches, a thread woken per statement)
were about a third of the server's CPU, the same code run on the loop's thread used 35% less.

`run(fn)` runs `fn` in a greenlet on the loop's thread instead, with a database connection of its
own (`_Connections`): when psycopg would block on the connection's socket, the greenlet hands
the wait to the loop (psycopg's own `wait_async`, the one its async connections use) and the
loop serves everything else meanwhile. SQLAlchemy runs its ORM over asyncio drivers the same way.

What it keeps of the thread's behaviour:
- Each call has its own Django connection wrapper, in place of the thread's for as long as the
  greenlet runs (Django keeps connections per thread, and greenlets share the loop's): its
  transactions, schema (django-tenants' search_path) and prepared statements are its own.
- Django's guard against synchronous database calls from async code sees no running loop while
  the greenlet runs (there is none from its point of view: it cannot await, only wait).
- The request's context variables (log context) go with it, as sync_to_async copies them.
- A caller that is cancelled does not cancel the call: it runs to its end (as a thread's call
  does), so no statement is interrupted half way.
- Anything else `fn` does that blocks (Redis, S3, a broker) must not stall the loop: such code
  goes through `blocking(fn)`, which runs it on a thread while the greenlet waits. The turn's
  write calls it for the budget's Redis script, the storage of large step payloads and the
  alert evaluation's enqueueing; code added to that path must do the same.
- A lock held across database statements is a `GreenLock` (a green call blocking on a
  threading.Lock would stop the loop, and with it the holder): the proof sequencer's. A green
  call waits for it on the loop, a thread as for a threading.Lock.
- Green code sees no running loop: it cannot use what needs one (LoopLocal, create_task), and
  `async_to_sync` there would block the loop's thread. A run's log line is delivered through
  call_soon_threadsafe (engine/runs/runlog.py).

Connections: at most CADENCE_DB_GREEN_CONNECTIONS (default 8) per event loop (a server process
has one), opened on a thread
when first needed and kept (they are the loop's own, not the pool's: a greenlet waiting for a
pool connection while holding another would block the loop that frees them). A call finding all
in use waits for one. A connection that had an error, or is older than GREEN_MAX_AGE, is closed
when it is given back.

CADENCE_DB_GREEN=false: calls go to the pool threads, as before.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import greenlet
from django.db import connections

logger = logging.getLogger(__name__)

GREEN_MAX_AGE = 600.0  # seconds a connection is kept before it is replaced


def enabled() -> bool:
    from django.conf import settings

    return getattr(settings, "CADENCE_DB_GREEN", True)


class _Green(greenlet.greenlet):
    """A greenlet whose database waits go to the loop (its parent runs `_drive`)."""

    wrapper: Any = None
    loop: asyncio.AbstractEventLoop | None = None


def in_green() -> bool:
    return isinstance(greenlet.getcurrent(), _Green)


def green_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop of the green call this runs in (its code sees no running loop), or None
    outside one."""
    current = greenlet.getcurrent()
    return current.loop if isinstance(current, _Green) else None


def await_(awaitable: Any) -> Any:
    """From synchronous code in a green call: suspend it until `awaitable` is done on the loop,
    and give its result (or raise its exception)."""
    current = greenlet.getcurrent()
    if not isinstance(current, _Green):
        raise RuntimeError("await_() outside a green call")
    return current.parent.switch(awaitable)


def blocking(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """`fn(*args, **kwargs)`: on a thread while a green call waits for it, so that its blocking
    I/O does not stall the loop; called directly anywhere else."""
    if not in_green():
        return fn(*args, **kwargs)
    context = contextvars.copy_context()
    return await_(asyncio.to_thread(context.run, fn, *args, **kwargs))


class _Connections:
    """The loop's own Django connection wrappers for green calls, first come first served: a
    call that arrives while others wait queues behind them. (Taking an idle connection ahead of
    them starved some turns: 500 chat sockets' replies took 16-19 s at p99 against 11-13 s on
    threads, while the median halved.)"""

    def __init__(self, size: int) -> None:
        self.size = size
        self.idle: list[Any] = []
        self.count = 0  # connections open or being opened
        self.waiting: collections.deque[asyncio.Future] = collections.deque()

    async def take(self) -> Any:
        if not self.waiting:
            if self.idle:
                return self.idle.pop()
            if self.count < self.size:
                self.count += 1
                return await self._open()
        place = asyncio.get_running_loop().create_future()
        self.waiting.append(place)
        try:
            wrapper = await place
        except BaseException:
            if not place.done():
                self.waiting.remove(place)
            elif not place.cancelled():  # handed something just as it was cancelled: pass it on
                handed = place.result()
                self._free() if handed is None else self._hand(handed)
            raise
        # None: a place without a connection (one was closed, or never opened): open one in it.
        return await self._open() if wrapper is None else wrapper

    async def _open(self) -> Any:
        """A new connection in a place already counted."""
        try:
            wrapper = _new_wrapper()
            # Connecting is one blocking exchange of several round trips: on a thread.
            await asyncio.to_thread(_connect, wrapper)
        except BaseException:
            # The place is free again: the next waiter must get it (it would otherwise wait
            # for a give() that no call may ever make).
            self._free()
            raise
        return wrapper

    def _hand(self, wrapper: Any) -> None:
        """A connection to the first call waiting, or to the idle ones."""
        while self.waiting:
            place = self.waiting.popleft()
            if not place.done():
                place.set_result(wrapper)
                return
        self.idle.append(wrapper)

    def _free(self) -> None:
        """A place without a connection to the first call waiting (it opens one), or uncounted."""
        while self.waiting:
            place = self.waiting.popleft()
            if not place.done():
                place.set_result(None)
                return
        self.count -= 1

    async def give(self, wrapper: Any) -> None:
        raw = wrapper.connection
        spent = (
            raw is None
            or raw.closed
            or raw.broken
            or wrapper.errors_occurred
            or wrapper.in_atomic_block
            or time.monotonic() - wrapper.green_opened > GREEN_MAX_AGE
        )
        if spent:
            try:
                await asyncio.to_thread(_close, wrapper)
            finally:
                self._free()
        else:
            self._hand(wrapper)


def _new_wrapper() -> Any:
    """A Django connection wrapper like the thread's, but persistent and without the pool."""
    from django.db.utils import load_backend

    configured = connections.settings["default"]
    settings_dict = {**configured, "CONN_MAX_AGE": None}
    settings_dict["OPTIONS"] = {
        k: v for k, v in configured.get("OPTIONS", {}).items() if k != "pool"
    }
    wrapper = load_backend(configured["ENGINE"]).DatabaseWrapper(settings_dict, alias="default")
    wrapper.green_opened = time.monotonic()
    return wrapper


def _connect(wrapper: Any) -> None:
    wrapper.inc_thread_sharing()  # made on the loop's thread, connected on this one
    try:
        wrapper.ensure_connection()
    finally:
        wrapper.dec_thread_sharing()


def _close(wrapper: Any) -> None:
    wrapper.inc_thread_sharing()
    try:
        wrapper.close()
    except Exception:
        logger.warning("closing a green database connection failed", exc_info=True)
    finally:
        wrapper.dec_thread_sharing()


def _discard(wrapper: Any) -> None:
    """Close the physical connection of a wrapper nobody uses any more (Django's close() would
    refuse: it runs on a loop's thread)."""
    raw, wrapper.connection = wrapper.connection, None
    if raw is not None:
        raw.close()


_pools: dict[asyncio.AbstractEventLoop, _Connections] = {}


def _pool() -> _Connections:
    loop = asyncio.get_running_loop()
    found = _pools.get(loop)
    if found is None:
        size = int(os.environ.get("CADENCE_DB_GREEN_CONNECTIONS") or 8)
        found = _pools[loop] = _Connections(max(1, size))
        # A closed loop's connections (a test's loop, a finished asyncio.run): closed here.
        for stale in [other for other in _pools if other.is_closed()]:
            for wrapper in _pools.pop(stale).idle:
                _discard(wrapper)
    return found


async def run(fn: Callable[[], Any]) -> Any:
    """`fn()` in a green call on this loop (see the module docstring); its result or its
    exception. The call runs to its end even if the caller is cancelled."""
    task = asyncio.ensure_future(_run(fn, contextvars.copy_context()))
    # Held until it ends: a caller that left no longer does (the loop keeps weak references).
    _running.add(task)
    task.add_done_callback(_running.discard)
    return await asyncio.shield(task)


_running: set[asyncio.Task] = set()


async def _run(fn: Callable[[], Any], context: contextvars.Context) -> Any:
    connections_ = _pool()
    wrapper = await connections_.take()
    try:
        return await _drive(fn, context, wrapper)
    finally:
        await connections_.give(wrapper)


async def _drive(fn: Callable[[], Any], context: contextvars.Context, wrapper: Any) -> Any:
    loop = asyncio.get_running_loop()
    green = _Green(fn)
    green.gr_context = context
    green.wrapper = wrapper
    green.loop = loop
    value: Any = None
    error: BaseException | None = None
    started = False
    while True:
        # No running loop first: Django's connections are then the thread's plain storage (with
        # a loop running, asgiref keeps them per context), where the green code will look.
        asyncio._set_running_loop(None)
        own = getattr(connections._connections, "default", None)
        connections._connections.default = wrapper
        try:
            if not started:
                started = True
                request = green.switch()
            elif error is not None:
                request = green.throw(error)
            else:
                request = green.switch(value)
        finally:
            if own is None:
                delattr(connections._connections, "default")
            else:
                connections._connections.default = own
            asyncio._set_running_loop(loop)
        if green.dead:
            return request
        value, error = None, None
        try:
            value = await request
        except BaseException as exc:  # noqa: BLE001 - handed to the green code, which decides
            error = exc


def _green_connection_class() -> type:
    import psycopg
    from psycopg import waiting

    class GreenConnection(psycopg.Connection):
        """A psycopg connection whose waits, in a green call, are done by the loop."""

        def wait(self, gen, interval=0.1, timeout=None):
            if isinstance(greenlet.getcurrent(), _Green):
                # Run here until the generator would block: a statement queued in a pipeline
                # (cadence_site/pipelined.py) never does, and handing it to the loop cost a
                # switch out of this call and back for nothing.
                try:
                    first = gen.send(None)
                except StopIteration as done:
                    # As psycopg's wait_async does: a call that never blocks still lets the
                    # loop serve others once it has kept it busy for MAX_BUSY_TIME.
                    if time.monotonic() - waiting._last_yield >= waiting.MAX_BUSY_TIME:
                        await_(asyncio.sleep(0))
                        waiting._last_yield = time.monotonic()
                    return done.value
                return await_(
                    waiting.wait_async(
                        _resumed(gen, first),
                        self.pgconn.socket,
                        interval=interval,
                        timeout=timeout,
                    )
                )
            return super().wait(gen, interval, timeout)

    return GreenConnection


def _resumed(gen: Any, first: Any) -> Any:
    """psycopg's wait generator `gen`, whose first wait `first` was taken already."""
    ready = yield first
    while True:
        try:
            state = gen.send(ready)
        except StopIteration as done:
            return done.value
        ready = yield state


_GreenConnection: type | None = None


def make_green(raw: Any) -> Any:
    """`raw` (a psycopg connection a green wrapper opened) made to wait through the loop."""
    global _GreenConnection
    if _GreenConnection is None:
        _GreenConnection = _green_connection_class()
    raw.__class__ = _GreenConnection
    return raw


def green_connect(connect: Callable[[Any], Any], params: Any) -> Any:
    """A green wrapper's new connection: `connect(params)` (the backend's), made to wait through
    the loop. Opened on a thread when a green call opens it: Django opens one again inside the
    call after dropping a broken one (leaving an atomic block whose rollback failed, a health
    check), and a connection's opening blocks for its round trips, up to connect_timeout when
    the server does not answer: on the loop's thread, every other request would wait as long."""
    return make_green(blocking(connect, params))


class GreenLock:
    """A lock held across database statements, taken by green calls and threads alike.

    A green call that finds it taken waits on its loop, for a future the release completes: a
    wait on the loop's thread would stop the loop, and with it the green call that holds the
    lock; a wait on a thread of its own cost every contended turn a thread woken and the GIL
    handed back and forth twice (the proof sequencer's lock, taken by nearly every streamed
    /v1 turn at 20 clients). A thread blocks as on a threading.Lock. Not reentrant.

    A release wakes the green call that has waited longest; it takes the lock unless a thread
    or a newly arrived call took it first, and then waits again at the front of the queue."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._mutex = threading.Lock()  # held only to look at the lock and the queue together
        self._waiters: collections.deque[asyncio.Future] = collections.deque()

    def locked(self) -> bool:
        return self._lock.locked()

    def acquire(self) -> None:
        if self._lock.acquire(blocking=False):
            return
        current = greenlet.getcurrent()
        if not isinstance(current, _Green) or current.loop is None:
            self._lock.acquire()
            return
        first = False
        while True:
            with self._mutex:
                if self._lock.acquire(blocking=False):
                    return
                waiter = current.loop.create_future()
                if first:
                    self._waiters.appendleft(waiter)  # woken and beaten to it: still the oldest
                else:
                    self._waiters.append(waiter)
            try:
                await_(waiter)
            except BaseException:
                # The loop is closing (its tasks cancelled): leave the queue; had a release
                # already picked this call, its wake goes to the next one.
                with self._mutex:
                    try:
                        self._waiters.remove(waiter)
                        picked = None
                    except ValueError:
                        picked = self._next() if not self._lock.locked() else None
                _signal(picked)
                raise
            first = True

    def release(self) -> None:
        with self._mutex:
            self._lock.release()
            waiter = self._next()
        _signal(waiter)

    def _next(self) -> asyncio.Future | None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                return waiter
        return None

    def __enter__(self) -> GreenLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _signal(waiter: asyncio.Future | None) -> None:
    """Wake a green call waiting for a GreenLock: at once from a green call on its loop,
    through the loop from anywhere else."""
    if waiter is None:
        return
    loop = waiter.get_loop()
    current = greenlet.getcurrent()
    if isinstance(current, _Green) and current.loop is loop:
        _wake(waiter)
    else:
        # Its loop closed (RuntimeError): so did the call that waited.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_wake, waiter)


def _wake(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)
