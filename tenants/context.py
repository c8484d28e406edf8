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
from collections.abc import Callable
from typing import Any

from asgiref.sync import AsyncToSync
from channels.db import database_sync_to_async
from django_tenants.utils import schema_context


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

    return await database_sync_to_async(call, thread_sensitive=sync_caller_waiting())()


async def in_public(fn: Callable[..., Any], /, **kwargs: Any) -> Any:
    return await in_tenant("public", fn, **kwargs)
