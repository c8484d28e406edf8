"""Django's connections looked up through ConnectionsLocal (tenants/postgresql_backend/
connections_local.py): the same storage and the same rule as asgiref's thread-critical Local,
a thread's own wrapper where no loop runs, a context's own where one does."""

from __future__ import annotations

import asyncio
import threading

import pytest
from asgiref.local import Local
from django.db import connection, connections

from tenants.postgresql_backend import connections_local
from tenants.postgresql_backend.connections_local import ConnectionsLocal


def test_it_is_installed_in_front_of_djangos_local_and_installing_again_changes_nothing():
    local = connections._connections
    assert isinstance(local, ConnectionsLocal)
    assert connections_local.install() is True
    assert connections._connections is local


def test_a_local_it_does_not_know_is_left_alone(monkeypatch):
    plain = Local()  # not thread-critical: another storage, another rule
    monkeypatch.setattr(connections, "_connections", plain)
    assert connections_local.install() is False
    assert connections._connections is plain


def test_each_thread_has_its_own_wrapper_as_before():
    mine = connections["default"]
    seen: list = []
    worker = threading.Thread(target=lambda: seen.append(connections["default"]))
    worker.start()
    worker.join(5)
    assert seen and seen[0] is not mine
    assert connections["default"] is mine  # kept: the same storage every time
    assert connection.alias == "default"


def test_the_storage_is_the_locals_own_so_nothing_stored_before_moves():
    local = connections._connections
    inner = object.__getattribute__(local, "_local")
    assert object.__getattribute__(inner, "_storage").default is connections["default"]


def test_with_a_loop_running_each_context_has_its_own_wrapper_as_asgiref_gives():
    sync_wrapper = connections["default"]

    async def two_tasks():
        async def one():
            return connections["default"]

        first = connections["default"]
        others = await asyncio.gather(one(), one())
        return first, others

    first, others = asyncio.run(two_tasks())
    assert first is not sync_wrapper
    # asgiref's rule, unchanged: a task started from a context sees the wrapper made before it,
    # a context that made none makes its own.
    assert all(other is not sync_wrapper for other in others)


def test_a_missing_name_raises_attribute_error_as_djangos_handler_expects():
    with pytest.raises(AttributeError):
        getattr(connections._connections, "no_such_alias")  # noqa: B009 - the lookup is the test
    with pytest.raises(AttributeError):
        del connections._connections.no_such_alias
