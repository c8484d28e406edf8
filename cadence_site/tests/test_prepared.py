"""Hot statements bound on the server and prepared once per connection (cadence_site/prepared.py):
each lands in the schema of the organization that runs it, on a pooled connection that serves
several in turn; CADENCE_DB_PREPARE=false binds on the client; Django's bookkeeping holds."""

from __future__ import annotations

import uuid

import pytest
from django.db import IntegrityError, connection, connections, transaction
from django.test.utils import CaptureQueriesContext
from django_tenants.utils import schema_context

from cadence_site.prepared import bound_cursor
from cadence_site.rows import _insert_sql, _update_sql, row_insert, row_update
from engine.models import Run
from tenants.postgresql_backend.base import DatabaseWrapper


def _prepared(cursor, sql: str) -> int:
    """How many statements with this text (%s placeholders) the cursor's connection has
    prepared."""
    parts = sql.split("%s")
    text = parts[0] + "".join(f"${n}{part}" for n, part in enumerate(parts[1:], 1))
    # Its own text as a parameter: this check is not one of the statements it counts.
    cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE statement = %s", [text])
    return cursor.fetchone()[0]


def _schemas_of(run_ids: list) -> dict:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 'org_alpha', id FROM org_alpha.engine_run WHERE id = ANY(%s)"
            " UNION ALL SELECT 'org_bravo', id FROM org_bravo.engine_run WHERE id = ANY(%s)",
            [run_ids, run_ids],
        )
        return {str(run_id): schema for schema, run_id in cursor.fetchall()}


@pytest.fixture
def pooled(world, committed_db):
    """The default connection replaced, for the test's thread, by one from a psycopg pool of a
    single connection (as CADENCE_DB_POOL gives a server): each `checkout()` is a request's,
    handed back at its end. Runs the test's rows through it; removes them afterwards."""
    settings_dict = {
        **connection.settings_dict,
        "OPTIONS": {
            **connection.settings_dict["OPTIONS"],
            "pool": {"min_size": 1, "max_size": 1, "timeout": 5},
        },
    }
    original = connections["default"]
    wrapper = DatabaseWrapper(settings_dict, alias="prepared_pool")
    connections["default"] = wrapper
    made: list = []
    try:
        yield wrapper, made
    finally:
        wrapper.close()
        wrapper.close_pool()
        connections["default"] = original
        with connection.cursor() as cursor:
            for schema in ("org_alpha", "org_bravo"):
                cursor.execute(f"DELETE FROM {schema}.engine_run WHERE id = ANY(%s)", [made])


def test_one_prepared_statement_writes_in_each_organizations_schema_on_a_pooled_connection(
    pooled,
):
    wrapper, made = pooled
    insert_sql, _ = _insert_sql(Run)
    pids, placed = [], {}

    def request(schema: str) -> Run:
        # What a request does: takes a connection from the pool, writes, hands it back.
        with schema_context(schema):
            run = row_insert(Run(orchestrator_slug=f"prepared-{schema}", trigger="rest"))
            made.append(run.pk)
            placed[str(run.pk)] = schema
            with wrapper.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                pids.append(cursor.fetchone()[0])
        wrapper.close()
        return run

    alpha = request("org_alpha")
    bravo = request("org_bravo")
    alpha_again = request("org_alpha")

    # The same run's UPDATE in the other organization finds nothing there.
    with schema_context("org_alpha"):
        assert row_update(Run, bravo.pk, status="failed") == 0
        assert row_update(Run, alpha_again.pk, status="failed") == 1
    with schema_context("org_bravo"):
        assert row_update(Run, alpha.pk, status="failed") == 0
        assert row_update(Run, bravo.pk, status="failed") == 1
        with wrapper.cursor() as cursor:
            inserts = _prepared(cursor, insert_sql)
            updates = _prepared(cursor, _update_sql(Run, ("status",))[0])
    wrapper.close()

    assert len(set(pids)) == 1  # one physical connection served all three requests
    assert inserts == 1 and updates == 1  # ... with one prepared statement of each
    assert _schemas_of(made) == placed
    assert placed == {
        str(alpha.pk): "org_alpha",
        str(bravo.pk): "org_bravo",
        str(alpha_again.pk): "org_alpha",
    }
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, status FROM org_alpha.engine_run WHERE id = ANY(%s)"
            " UNION ALL SELECT id, status FROM org_bravo.engine_run WHERE id = ANY(%s)",
            [made, made],
        )
        statuses = {str(run_id): status for run_id, status in cursor.fetchall()}
    assert statuses == {
        str(alpha.pk): "running",
        str(bravo.pk): "failed",
        str(alpha_again.pk): "failed",
    }


_PROBE = "SELECT %s::text || current_schema()"


@pytest.mark.django_db
def test_a_statement_is_prepared_once_and_logged_when_queries_are(world):
    with schema_context("org_alpha"), CaptureQueriesContext(connection) as captured:
        for marker in ("one", "two"):
            with bound_cursor() as cursor:
                assert cursor.execute(_PROBE, [marker]).fetchone() == (f"{marker}org_alpha",)
        with connection.cursor() as cursor:
            prepared = _prepared(cursor, _PROBE)

    assert prepared == 1
    sent = [q["sql"] for q in captured.captured_queries if not q["sql"].startswith("SET ")]
    assert sent[:2] == [_PROBE, _PROBE]


@pytest.mark.django_db
def test_with_prepare_off_statements_bind_on_the_client(world, settings):
    settings.CADENCE_DB_PREPARE = False
    with schema_context("org_bravo"), CaptureQueriesContext(connection) as captured:
        with bound_cursor() as cursor:
            assert cursor.execute(_PROBE, ["off"]).fetchone() == ("offorg_bravo",)
        assert type(cursor._cursor.cursor).__name__ == "Cursor"  # Django's ClientCursor
        with connection.cursor() as cursor:
            prepared = _prepared(cursor, _PROBE)

    assert prepared == 0
    # Client-side binding: the value is in the statement's text.
    assert captured.captured_queries[-2]["sql"] == "SELECT 'off'::text || current_schema()"


@pytest.mark.django_db
def test_an_error_is_djangos_and_breaks_the_atomic_block_it_is_in(world):
    with schema_context("org_alpha"):
        run = row_insert(Run(orchestrator_slug="twice", trigger="rest"))
        with transaction.atomic():
            with pytest.raises(IntegrityError):
                row_insert(Run(id=run.pk, orchestrator_slug="twice", trigger="rest"))
            assert connection.needs_rollback is False  # no atomic block of its own inside
            with pytest.raises(Exception, match="current transaction is aborted"):
                row_insert(Run(id=uuid.uuid4(), orchestrator_slug="after", trigger="rest"))
            transaction.set_rollback(True)
        # After the rollback (psycopg drops its prepared statements), prepared again.
        again = row_insert(Run(orchestrator_slug="again", trigger="rest"))
        assert Run.objects.filter(pk__in=[run.pk, again.pk]).count() == 2
