"""The search_path is set when a connection's path changes, and never trusted after the database
may have undone it (tenants/postgresql_backend: a SET is transactional)."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django_tenants.utils import schema_context

from tenants.postgresql_backend.base import known_path


class _Undo(Exception):
    """Raised to roll a block back."""


def _actual_path() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW search_path")
        return cursor.fetchone()[0]


def _sets(queries) -> int:
    return sum(1 for q in queries if q["sql"].startswith("SET search_path"))


def test_a_connection_keeps_its_path_between_statements_and_sets_it_when_it_changes(
    world, committed_db
):
    with schema_context("org_alpha"):
        _actual_path()
        with CaptureQueriesContext(connection) as same:
            for _ in range(3):
                _actual_path()
    with CaptureQueriesContext(connection) as changed:
        with schema_context("org_bravo"):
            assert _actual_path() == "org_bravo, public"
        with schema_context("org_alpha"):
            assert _actual_path() == "org_alpha, public"

    assert _sets(same.captured_queries) == 0
    assert _sets(changed.captured_queries) == 2


def test_a_path_set_in_a_rolled_back_transaction_is_set_again(world, committed_db):
    with schema_context("public"):
        _actual_path()  # public, committed (autocommit)
    # The schema outlives the transaction, so the ROLLBACK runs with org_alpha still wanted.
    with schema_context("org_alpha"), pytest.raises(_Undo), transaction.atomic():
        assert _actual_path() == "org_alpha, public"
        raise _Undo  # ROLLBACK: the database is back on public

    assert known_path(connection.connection) != ("org_alpha", "public")
    with schema_context("org_alpha"):
        assert _actual_path() == "org_alpha, public"


def test_a_path_set_after_a_savepoint_rolled_back_to_is_set_again(world, committed_db):
    with transaction.atomic():
        with schema_context("org_bravo"):
            _actual_path()
            savepoint = transaction.savepoint()
        with schema_context("org_alpha"):
            assert _actual_path() == "org_alpha, public"  # SET after the savepoint
            transaction.savepoint_rollback(savepoint)  # the database is back on org_bravo
            # django-tenants #1262: a remembered path here read org_bravo's rows.
            assert _actual_path() == "org_alpha, public"
        with schema_context("org_bravo"):
            assert _actual_path() == "org_bravo, public"


def test_a_connection_handed_back_inside_a_transaction_forgets_its_path(world, committed_db):
    connection.ensure_connection()
    raw = connection.connection
    try:
        connection.set_autocommit(False)
        with schema_context("org_alpha"):
            _actual_path()
        assert known_path(raw) == ("org_alpha", "public")
        connection._close()  # what a pool's putconn gets: it rolls the transaction back
        assert known_path(raw) is None
    finally:
        connection.connection = None
        connection.close()


def test_a_schemas_path_is_validated_once_and_an_invalid_name_is_refused_every_time(db):
    from django.core.exceptions import ValidationError

    from tenants.postgresql_backend import base

    connection.set_schema("org_alpha")
    first = connection._get_cursor_search_paths()
    assert first == ["org_alpha", "public"]
    key = ("org_alpha", True, "public")
    assert base._search_paths[key] == ("org_alpha", "public")
    first.append("changed by a caller")  # each caller gets its own list
    assert connection._get_cursor_search_paths() == ["org_alpha", "public"]

    connection.schema_name = 'bad"; DROP SCHEMA public; --'
    try:
        for _ in range(2):  # not remembered as valid after the first refusal
            with pytest.raises(ValidationError):
                connection._get_cursor_search_paths()
        assert not any(k[0] == connection.schema_name for k in base._search_paths)
    finally:
        connection.set_schema_to_public()
