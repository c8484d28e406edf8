"""Django's per-thread connections, looked up without an exception per lookup.

Django keeps each thread's connection wrappers in an asgiref `Local(thread_critical=True)`: plain
thread-local storage when no event loop runs on the thread, storage per async context when one
does. To tell the two apart, asgiref calls `asyncio.get_running_loop()` on every attribute
access, which raises RuntimeError wherever no loop runs: on every pool thread, and in every
green database call (cadence_site/greendb.py), which is where a turn's database work happens.
A streamed /v1 turn makes about a hundred such lookups (`connection.<anything>`,
`connections["default"]`, greendb's swap of the thread's wrapper), each 1.4 µs on the
machine where it was measured, most of it that exception and asgiref's extra frames.

`install()` puts `ConnectionsLocal` in front of that Local: the same storage (the Local's own,
so nothing already stored moves), the same rule, but it asks `asyncio._get_running_loop()`,
which returns None instead of raising, and reads the thread's storage directly. With a loop
running it hands the access to asgiref's Local unchanged.
"""

from __future__ import annotations

import threading
from asyncio import _get_running_loop
from typing import Any

_object_getattribute = object.__getattribute__


class ConnectionsLocal:
    __slots__ = ("_local", "_thread")

    def __init__(self, local: Any) -> None:
        object.__setattr__(self, "_local", local)
        # asgiref's thread-critical Local keeps a thread's storage in a threading.local.
        object.__setattr__(self, "_thread", _object_getattribute(local, "_storage"))

    def __getattribute__(self, key: str) -> Any:
        # Every attribute is the storage's (the two slots are read through object's own):
        # defining __getattr__ instead would cost a failed lookup, an AttributeError, first.
        if _get_running_loop() is None:
            return getattr(_object_getattribute(self, "_thread"), key)
        return getattr(_object_getattribute(self, "_local"), key)

    def __setattr__(self, key: str, value: Any) -> None:
        if _get_running_loop() is None:
            setattr(_object_getattribute(self, "_thread"), key, value)
        else:
            setattr(_object_getattribute(self, "_local"), key, value)

    def __delattr__(self, key: str) -> None:
        if _get_running_loop() is None:
            delattr(_object_getattribute(self, "_thread"), key)
        else:
            delattr(_object_getattribute(self, "_local"), key)


def install() -> bool:
    """Put ConnectionsLocal in front of django.db.connections' Local; False (and nothing
    changed) when that Local is not asgiref's thread-critical one as this module knows it."""
    from django.db import connections

    local = connections._connections
    if isinstance(local, ConnectionsLocal):
        return True
    if type(local).__name__ != "_ThreadCriticalLocal":
        return False
    try:
        storage = _object_getattribute(local, "_storage")
    except AttributeError:
        return False
    if not isinstance(storage, threading.local):
        return False
    connections._connections = ConnectionsLocal(local)
    return True
