"""One object per running event loop, gone with its loop.

redis.asyncio connections, queues and tasks belong to the loop that made them, and a process runs
several loops (the server's, asgiref's for async_to_sync, a test's). Keyed by the loop object
itself, weakly: a loop that is gone takes its object with it, and a new loop never finds the
object of an old one (an `lru_cache` on `id(loop)` could, once the id was reused, and kept at
most 8 loops' objects alive).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class LoopLocal(Generic[T]):
    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = (
            weakref.WeakKeyDictionary()
        )

    def get(self) -> T:
        """The running loop's object, made on first use (call from a coroutine)."""
        loop = asyncio.get_running_loop()
        value = self._by_loop.get(loop)
        if value is None:
            value = self._by_loop[loop] = self._factory()
        return value

    def __len__(self) -> int:
        return len(self._by_loop)
