"""django-tenants' backend, issuing `SET search_path` only when a connection's path changes.

django-tenants sets the search_path before every statement (TENANT_LIMIT_SET_CALLS off), which
doubles the statements of every request: half the round trips of a turn were `SET`s. Its own
limit (TENANT_LIMIT_SET_CALLS) remembers the path per Django connection wrapper and forgets it
on every set_tenant, so it saves little, and it has leaked rows across tenants when the
remembered path was one a rollback had undone (django-tenants #1262).

Here the path is remembered per physical connection (it is session state of that connection,
and a pooled connection keeps it from one checkout to the next), and forgotten whenever the
database may have undone it: a `SET` is transactional, so a rollback, a rollback to a savepoint,
and a connection handed back to the pool inside a transaction (the pool rolls it back) all
forget it; a broken or new connection has none. A statement never runs on a path this module
has not seen set and not undone.
"""

from __future__ import annotations

import weakref

from django.utils.asyncio import async_unsafe
from django_tenants.postgresql_backend import base as tenants_base
from psycopg import pq

# The search_path each open physical connection has, as far as a SET that stands set it.
_paths: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# Each schema's search_path, validated (DatabaseWrapper._wanted_paths); one entry per schema.
_search_paths: dict[tuple[str, bool, str], tuple[str, ...]] = {}
_SEARCH_PATHS_KEPT = 10_000


def known_path(connection) -> tuple[str, ...] | None:
    """The search_path a physical (psycopg) connection is known to have; for tests."""
    return _paths.get(connection)


class DatabaseWrapper(tenants_base.DatabaseWrapper):
    green_opened: float | None = None  # set on the event loop's own wrappers (greendb)

    def get_new_connection(self, conn_params):
        if self.green_opened is None:
            return super().get_new_connection(conn_params)
        from cadence_site.greendb import green_connect

        return green_connect(super().get_new_connection, conn_params)

    def _forget(self) -> None:
        if self.connection is not None:
            _paths.pop(self.connection, None)

    def path_is_set(self) -> bool:
        """Whether the open connection is known to have the current schema's search_path (a
        cursor would send no SET): for code that runs statements on the psycopg connection
        itself (cadence_site/prepared.py)."""
        raw = self.connection
        return raw is not None and _paths.get(raw) == self._wanted_paths()

    def _wanted_paths(self) -> tuple[str, ...]:
        """django-tenants' search_path for the current schema, validated, as a tuple: worked
        out once per schema (it validated every name with a regular expression at every
        cursor, twice per statement of a turn)."""
        from django_tenants.utils import get_public_schema_name

        key = (self.schema_name, self.include_public_schema, get_public_schema_name())
        found = _search_paths.get(key)
        if found is None:
            found = tuple(super()._get_cursor_search_paths())  # raises for an invalid name
            if len(_search_paths) >= _SEARCH_PATHS_KEPT:
                _search_paths.clear()
            _search_paths[key] = found
        return found

    def _get_cursor_search_paths(self):
        return list(self._wanted_paths())

    def _handle_search_path(self, cursor=None):
        if self._setting_search_path:
            return
        raw = self.connection
        wanted = self._wanted_paths()  # validates every name
        if raw is not None and _paths.get(raw) == wanted:
            self.search_path_set_schemas = list(wanted)
            return
        super()._handle_search_path(cursor)  # issues the SET (TENANT_LIMIT_SET_CALLS is off)
        if raw is None:
            return
        if self.search_path_set_schemas is not None:
            _paths[raw] = wanted
        else:
            _paths.pop(raw, None)

    @async_unsafe
    def rollback(self):
        self._forget()
        super().rollback()

    @async_unsafe
    def savepoint_rollback(self, sid):
        try:
            super().savepoint_rollback(sid)
        finally:
            self._forget()

    def _close(self):
        raw = self.connection
        if raw is not None and raw.info.transaction_status != pq.TransactionStatus.IDLE:
            # Handed back inside a transaction: the pool rolls it back, and a SET with it.
            _paths.pop(raw, None)
        return super()._close()
