"""Entering an organization's schema from async code and tasks.

A schema set earlier on a connection is never relied on: the schema is entered inside the same
synchronous call that queries, and restored after it (FIELD-NOTES.md, django-tenants #767). That
rule is what lets these calls run on any thread: from a server's event loop they go to a pool of
threads, each with its own connection from the pool, instead of queueing on asgiref's one
thread-sensitive thread behind every other request's queries. Under a synchronous caller
(`async_to_sync`: a sync view, a test) they run on that caller's thread, inside its transaction.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import AsyncToSync, sync_to_async
from channels.db import database_sync_to_async
from django.conf import settings
from django_tenants.utils import schema_context

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def db_thread_count() -> int:
    """CADENCE_DB_THREADS, or as many as the loop's default executor would have (CPUs + 4); never
    more than the connection pool holds, so a call never waits on the pool for a connection
    another thread of ours keeps."""
    pool = (settings.DATABASES["default"].get("OPTIONS") or {}).get("pool")
    return thread_count(
        getattr(settings, "CADENCE_DB_THREADS", 0),
        os.cpu_count() or 1,
        int(pool["max_size"]) if isinstance(pool, dict) and pool.get("max_size") else None,
    )


def thread_count(setting: int, cpus: int, pool_max: int | None) -> int:
    size = setting or cpus + 4
    return max(1, min(size, pool_max) if pool_max else size)


def db_executor() -> ThreadPoolExecutor:
    """The threads database calls from the event loop run on (`db_thread_count`)."""
    global _executor
    if _executor is None:
        with _executor_lock:
            if _executor is None:
                size = db_thread_count()
                _executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="cadence-db")
    return _executor


def db_sync_to_async(fn: Callable[..., Any], *, database: bool = False) -> Callable[..., Any]:
    """`fn` for async code: on the sync caller's thread when one waits, else on db_executor();
    `database`: stale connections closed around it (channels' database_sync_to_async)."""
    wrap = database_sync_to_async if database else sync_to_async
    if sync_caller_waiting():
        return wrap(fn, thread_sensitive=True)
    return wrap(fn, thread_sensitive=False, executor=db_executor())


def sync_caller_waiting() -> bool:
    """Whether a synchronous thread waits on this code through `async_to_sync` (its connection
    and open transaction are the ones a database call must use): thread-sensitive then."""
    if getattr(AsyncToSync.executors, "current", None) is not None:
        return True
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return True
    # A task started on that loop in a fresh context (pipeline.turn_launch) still belongs to it.
    return loop in AsyncToSync.loop_thread_executors


async def in_tenant(schema_name: str, fn: Callable[..., Any], /, **kwargs: Any) -> Any:
    def call():
        with schema_context(schema_name):
            return fn(**kwargs)

    return await db_sync_to_async(call, database=True)()


async def turn_db(fn: Callable[[], Any]) -> Any:
    """A synchronous database call of a turn (engine/runs/pipeline.py, a chat message's start):
    on the sync caller's thread when one waits (`sync_caller_waiting`), else in a green call on
    the loop's thread (cadence_site/greendb.py; on a pool thread with CADENCE_DB_GREEN=false).
    `fn` enters its schema itself; what it does that blocks on anything but the database goes
    through `greendb.blocking`.

    On a thread, as channels' database_sync_to_async, stale connections are closed around it,
    except while the thread is inside a transaction: a sync view running a turn through
    async_to_sync (REST invoke, the admin's try-it) keeps its request's transaction
    (ATOMIC_REQUESTS, a test's) and the run is written inside it. A green call's connection is
    the loop's own, persistent and never in a transaction when the call begins: greendb replaces
    it when it is given back after an error or old (close_old_connections around each green
    call, a walk over Django's connections through asgiref's Local twice, found nothing to
    close: it cost ~1% of a streamed /v1 request's CPU).
    """
    from django.db import close_old_connections, connection

    from cadence_site import greendb

    def call() -> Any:
        outside = not connection.in_atomic_block
        if outside:
            close_old_connections()
        try:
            return fn()
        finally:
            if outside:
                close_old_connections()

    if greendb.enabled() and not sync_caller_waiting():
        return await greendb.run(fn)
    return await db_sync_to_async(call)()


async def in_tenant_green(schema_name: str, fn: Callable[..., Any], /, **kwargs: Any) -> Any:
    """`in_tenant` for a turn's own database work (its start: the user's message stored), as
    `turn_db` runs it."""

    def call():
        with schema_context(schema_name):
            return fn(**kwargs)

    return await turn_db(call)


async def in_public(fn: Callable[..., Any], /, **kwargs: Any) -> Any:
    return await in_tenant("public", fn, **kwargs)
