"""``@note``: mark a function as a note, optionally with retry, timeout and fallback.

Without options ``@note`` returns the function itself (zero call overhead). With options the
function is wrapped, innermost first: timeout (per attempt), then retry, then fallback, so a
fallback only applies once every attempt has failed. The result keeps the function's sync or
async nature, so every decorator stacks with every other in any order.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from .resilience.fallback import fallback as fallback_decorator
from .resilience.retry import retry as retry_decorator
from .resilience.timeout import timeout as timeout_decorator


class NoteInfo:
    """What ``@note`` recorded about a function: its name and resilience options."""

    __slots__ = ("name", "retry", "timeout", "fallback")

    def __init__(
        self, name: str, retry: Any = None, timeout: Any = None, fallback: Any = None
    ) -> None:
        self.name = name
        self.retry = retry
        self.timeout = timeout
        self.fallback = fallback

    def __repr__(self) -> str:
        return f"NoteInfo(name={self.name!r}, retry={self.retry!r}, timeout={self.timeout!r}, fallback={self.fallback!r})"


def retry_options(spec: Any) -> dict[str, Any]:
    """``retry=3`` or ``retry={"max_attempts": 3, ...}`` → keyword arguments of ``retry``."""
    if isinstance(spec, bool):
        raise TypeError("retry must be an int or a dict, not a bool")
    if isinstance(spec, int):
        return {"max_attempts": spec}
    if isinstance(spec, dict):
        return dict(spec)
    raise TypeError(f"retry must be an int or a dict, not {type(spec).__name__}")


def timeout_options(spec: Any) -> dict[str, Any]:
    if isinstance(spec, dict):
        return dict(spec)
    return {"seconds": spec}


def fallback_options(spec: Any) -> dict[str, Any]:
    """A dict (``default``/``field``/``handler``/``on``), a handler callable, or a default value."""
    if isinstance(spec, dict):
        return dict(spec)
    if callable(spec):
        return {"handler": spec}
    return {"default": spec}


def apply_resilience(
    fn: Callable[..., Any], *, retry: Any = None, timeout: Any = None, fallback: Any = None
) -> Callable[..., Any]:
    wrapped = fn
    if timeout is not None:
        wrapped = timeout_decorator(**timeout_options(timeout))(wrapped)
    if retry is not None:
        wrapped = retry_decorator(**retry_options(retry))(wrapped)
    if fallback is not None:
        wrapped = fallback_decorator(**fallback_options(fallback))(wrapped)
    return wrapped


def note(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    retry: Any = None,
    timeout: Any = None,
    fallback: Any = None,
) -> Any:
    """Decorate a note: ``@note``, ``@note(retry=3, timeout=15.0)``, or with dict forms."""

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(f):
            raise TypeError(f"@note needs a callable, not {type(f).__name__}")
        wrapped = apply_resilience(f, retry=retry, timeout=timeout, fallback=fallback)
        info = NoteInfo(name or getattr(f, "__name__", "note"), retry, timeout, fallback)
        try:
            wrapped.__cadence_note__ = info  # type: ignore[attr-defined]
        except (AttributeError, TypeError):
            pass  # builtins and some callables refuse attributes; the note still works
        return wrapped

    if fn is not None:
        return decorate(fn)
    return decorate


def note_name(fn: Any) -> str:
    info = getattr(fn, "__cadence_note__", None)
    if isinstance(info, NoteInfo):
        return info.name
    return getattr(fn, "__name__", None) or type(fn).__name__


def is_async_callable(fn: Any) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - async callable objects
    return call is not None and inspect.iscoroutinefunction(call)
