"""Telling async callables from sync ones, for notes, ``Note`` objects and decorators."""

from __future__ import annotations

import inspect
from typing import Any


def is_async_callable(fn: Any) -> bool:
    """True for coroutine functions, ``Note``s wrapping one, and objects with an async
    ``__call__``."""
    marked = getattr(fn, "__cadence_is_async__", None)  # a Note says what it wraps
    if marked is not None and not inspect.isfunction(fn):
        return bool(marked)
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - async callable objects
    return call is not None and inspect.iscoroutinefunction(call)
