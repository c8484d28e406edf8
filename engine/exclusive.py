"""Exclusive sections: a flow step that runs holding a lock on a key (``"exclusive"`` in the JSON
flow form, e.g. ``{"then": "charge", "exclusive": "customer:{input.customer_id}"}``).

The engine imports no lock service: whoever runs the cadence attaches one for the run with
``sections.set(fn)``, where ``await fn(template, body)`` renders the key from the run's context,
runs ``body()`` holding the lock and raises if the lock is lost mid-step (Cadence's queued runs:
a Redis lock with a lease and a fencing token, engine/durable/locking.py). A step that declares a
section in a run with no lock service fails rather than running unguarded.
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from .errors import CadenceError

Sections = Callable[[str, Callable[[], Awaitable[Any]]], Awaitable[Any]]
sections: contextvars.ContextVar[Sections | None] = contextvars.ContextVar(
    "cadence_exclusive_sections", default=None
)


def exclusive_note(fn: Callable[[Any], Any], template: str, name: str) -> Callable[[Any], Any]:
    """``fn`` run inside the exclusive section keyed by ``template``."""

    async def body_of(score: Any) -> Any:
        result = fn(score)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def exclusive(score: Any) -> Any:
        run = sections.get()
        if run is None:
            raise CadenceError(
                f"step {name!r} declares an exclusive section ({template!r}) but this run has "
                "no lock service",
                code="NO_LOCK_SERVICE",
            )
        return await run(template, lambda: body_of(score))

    exclusive.__name__ = getattr(fn, "__name__", name)
    exclusive.__qualname__ = exclusive.__name__
    return exclusive


__all__ = ["Sections", "exclusive_note", "sections"]
