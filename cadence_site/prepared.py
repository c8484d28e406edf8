"""A turn's hot statements sent with server-side binding, and prepared once per connection.

Django's psycopg cursor binds on the client (psycopg's ClientCursor): the values are quoted into
the statement's text in Python, and PostgreSQL parses, analyzes and plans each statement anew.
A chat turn sends the same ten or so statements every time; measured on a stream load, about
30% of the PostgreSQL backend's CPU was that parsing and planning, and the quoting ~4% of the
server's Python time. `bound_cursor()` gives a cursor whose `execute()` sends the values apart
(the extended protocol) and, unless told not to, prepares the statement on the connection the
first time it runs there: later runs send only its name and values.

- The schema: the search_path is set for the caller's schema first, as a Django cursor would
  (tenants/postgresql_backend). A prepared statement names its tables unqualified; PostgreSQL
  analyzes it again when it runs under a different search_path than it was planned for (its
  plan cache keeps the path), so it writes in the schema the caller is in
  (cadence_site/tests/test_prepared.py runs one statement for two organizations on one
  connection).
- Which statements: those whose text is the same from call to call. psycopg keeps at most
  `prepared_max` (100) per connection, the oldest dropped; a statement whose text varies (a
  VALUES list as long as the rows: cadence_site/rows.py) is prepared for a few shapes only and
  bound on the client past them, or sent with `prepare=False`.
- The values' types go with them: str and None as unknown (the column decides), UUID as uuid,
  datetime as timestamptz, Django's JSON values as jsonb, int as the smallest integer type that
  holds it. psycopg prepares a text once per set of types (a NULL or a larger int makes a
  second statement: a few per text). Where PostgreSQL cannot infer a type from the context (an
  expression, a function's argument), the statement casts (`%s::jsonb`).
- Pools: a pooled connection keeps its prepared statements from one checkout to the next (they
  belong to the session, as the search_path does); a rollback makes psycopg drop them all
  (DEALLOCATE ALL) and they are prepared again on their next run. PgBouncer in transaction mode
  carries protocol-level prepared statements from version 1.21 with `max_prepared_statements`
  set; before that, or behind another pooler that cannot, set CADENCE_DB_PREPARE=false.
- CADENCE_DB_PREPARE=false: the cursor is Django's own (client-side binding, nothing prepared).

Django's bookkeeping is kept: errors go through the connection's error wrapper (so an error in
an atomic block marks it, and `errors_occurred` is set), a broken transaction refuses the
statement, and with query logging on (DEBUG, assertNumQueries) each statement is logged.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.backends.utils import CursorDebugWrapper

# Django connects with prepare_threshold=None (psycopg then prepares nothing, even on request:
# Django's choice for poolers). It is set on the connection only while one of these statements
# runs, to a count never reached: then psycopg prepares a statement only when asked to
# (prepare=True), and Django's own statements stay out of its prepared-statement bookkeeping.
_ASKED_ONLY = 2**62


def enabled() -> bool:
    """Whether bound cursors bind on the server and prepare (CADENCE_DB_PREPARE)."""
    return getattr(settings, "CADENCE_DB_PREPARE", True)


class BoundCursor:
    """A psycopg server-binding cursor on the current Django connection; `execute()` prepares
    the statement unless `prepare=False`. Reads as a DB-API cursor (fetchone, fetchall,
    rowcount)."""

    __slots__ = ("_db", "_cursor")

    def __init__(self, db, cursor: psycopg.Cursor) -> None:
        self._db, self._cursor = db, cursor

    def execute(
        self, sql: str, params: Sequence[Any] | None = None, *, prepare: bool = True
    ) -> BoundCursor:
        db, cursor = self._db, self._cursor
        db.validate_no_broken_transaction()
        raw = cursor.connection
        threshold = raw.prepare_threshold
        with db.wrap_database_errors:
            if prepare and threshold is None:
                raw.prepare_threshold = _ASKED_ONLY
            try:
                if db.queries_logged:
                    with CursorDebugWrapper(cursor, db).debug_sql(sql, params):
                        cursor.execute(sql, params, prepare=prepare)
                else:
                    cursor.execute(sql, params, prepare=prepare)
            finally:
                raw.prepare_threshold = threshold
        return self

    def fetchone(self):
        with self._db.wrap_database_errors:
            return self._cursor.fetchone()

    def fetchall(self):
        with self._db.wrap_database_errors:
            return self._cursor.fetchall()

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def pgresult(self):
        return self._cursor.pgresult

    def close(self) -> None:
        self._cursor.close()


class _ClientCursor:
    """Django's own cursor behind BoundCursor's interface (CADENCE_DB_PREPARE=false)."""

    __slots__ = ("_cursor",)

    def __init__(self, cursor) -> None:
        self._cursor = cursor

    def execute(self, sql: str, params: Sequence[Any] | None = None, *, prepare: bool = True):
        self._cursor.execute(sql, params)
        return self

    def fetchone(self):
        return self._cursor.fetchone()

    def fetchall(self):
        return self._cursor.fetchall()

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount


@contextmanager
def bound_cursor() -> Iterator[BoundCursor | _ClientCursor]:
    """A cursor on the current connection, in the current schema, for statements sent with
    server-side binding and prepared (see the module's docstring); Django's client-binding
    cursor when CADENCE_DB_PREPARE is off."""
    if not enabled():
        with connection.cursor() as cursor:
            yield _ClientCursor(cursor)
        return
    cursor = open_bound()
    try:
        yield cursor
    finally:
        cursor.close()


def open_bound() -> BoundCursor:
    """bound_cursor()'s cursor, prepared statements on (whatever CADENCE_DB_PREPARE says), for a
    caller that reads it after the block that made it (cadence_site/pipelined.py); the caller
    closes it."""
    # The wrapper itself, not the `connection` proxy: every attribute read through the proxy
    # looks the wrapper up again (a dozen per statement here).
    db = connections[DEFAULT_DB_ALIAS]
    db.close_if_health_check_failed()
    db.validate_thread_sharing()
    if not db.path_is_set():
        # A Django cursor connects if need be and sets the search_path, as for any statement.
        db.cursor().close()
    return BoundCursor(db, psycopg.Cursor(db.connection))
