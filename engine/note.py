"""``@note``: mark a function as a note, optionally with retry, timeout and fallback.

``@note`` returns a :class:`Note` (as the library does): a callable wrapper with ``name``,
``description``, ``is_async`` and ``resilience``. Cadences unwrap it and call the wrapped
function directly, so a note costs nothing over a plain function when run by a cadence. With
options the function is wrapped, innermost first: timeout (per attempt), then retry, then
fallback, so a fallback only applies once every attempt has failed. The result keeps the
function's sync or async nature, so every decorator stacks with every other in any order (the
resilience decorators read a ``Note``'s ``is_async``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from .callables import is_async_callable
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


def _normalised(retry: Any, timeout: Any, fallback: Any) -> dict[str, dict[str, Any]]:
    """The resilience options as the library reports them (``Note.resilience``)."""
    out: dict[str, dict[str, Any]] = {}
    if retry is not None:
        out["retry"] = retry_options(retry)
    if timeout is not None:
        seconds = timeout_options(timeout)
        if "seconds" in seconds and not isinstance(timeout, dict):
            seconds["seconds"] = float(seconds["seconds"])
        out["timeout"] = seconds
    if fallback is not None:
        out["fallback"] = fallback_options(fallback)
    return out


class Note:
    """A note: the decorated function (with its resilience applied) and what ``@note`` was
    told about it. Calling it calls the function."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        retry: Any = None,
        timeout: Any = None,
        fallback: Any = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"@note needs a callable, not {type(fn).__name__}")
        functools.update_wrapper(self, fn)
        self._name = name or getattr(fn, "__name__", None) or type(fn).__name__
        self._description = description or getattr(fn, "__doc__", None) or ""
        self._is_async = is_async_callable(fn)
        self._resilience = _normalised(retry, timeout, fallback)
        self._fn = apply_resilience(fn, retry=retry, timeout=timeout, fallback=fallback)
        self.__cadence_note__ = NoteInfo(self._name, retry, timeout, fallback)
        self.__cadence_is_async__ = self._is_async

    @property
    def name(self) -> str:
        return self._name

    @property
    def description(self) -> str:
        return self._description

    @property
    def is_async(self) -> bool:
        return self._is_async

    @property
    def resilience(self) -> dict[str, dict[str, Any]]:
        """The resilience options (``retry``/``timeout``/``fallback`` dicts), empty if none."""
        return self._resilience

    @property
    def fn(self) -> Callable[..., Any]:
        """The function a cadence calls: the decorated one with its resilience wrappers."""
        return self._fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(*args, **kwargs)

    def __repr__(self) -> str:
        if self._resilience:
            return f"<Note: {self._name} [{', '.join(self._resilience)}]>"
        return f"<Note: {self._name}>"


def note(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    retry: Any = None,
    timeout: Any = None,
    fallback: Any = None,
) -> Any:
    """Decorate a note: ``@note``, ``@note(name=, description=)``, ``@note(retry=3,
    timeout=15.0)``, or with dict forms. Returns a :class:`Note`."""

    def decorate(f: Callable[..., Any]) -> Note:
        return Note(
            f, name=name, description=description, retry=retry, timeout=timeout, fallback=fallback
        )

    if fn is not None:
        return decorate(fn)
    return decorate


def unwrap_note(fn: Any) -> tuple[Any, str | None]:
    """(the callable to run, the note's name) — a ``Note`` gives its wrapped function."""
    if isinstance(fn, Note):
        return fn._fn, fn._name
    return fn, None


def note_name(fn: Any) -> str:
    info = getattr(fn, "__cadence_note__", None)
    if isinstance(info, NoteInfo):
        return info.name
    return getattr(fn, "__name__", None) or type(fn).__name__
