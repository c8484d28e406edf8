"""Entering an organization's schema from async code and tasks.

A schema set earlier on a connection is never relied on: thread-sensitive sync_to_async runs
every consumer's queries on one shared thread, so the schema is entered inside the same
synchronous call that queries, and restored after it (FIELD-NOTES.md, django-tenants #767).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from channels.db import database_sync_to_async
from django_tenants.utils import schema_context


async def in_tenant(schema_name: str, fn: Callable[..., Any], /, **kwargs: Any) -> Any:
    def call():
        with schema_context(schema_name):
            return fn(**kwargs)

    return await database_sync_to_async(call)()


async def in_public(fn: Callable[..., Any], /, **kwargs: Any) -> Any:
    return await in_tenant("public", fn, **kwargs)
