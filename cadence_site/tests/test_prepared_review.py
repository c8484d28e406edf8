"""Attacks on prepared statements and the remembered search_path (review)."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction
from django_tenants.utils import schema_context

from cadence_site.prepared import bound_cursor
from cadence_site.rows import row_insert
from engine.models import Run

_PROBE = "SELECT %s::text || current_schema()"


def _probe(marker: str) -> str:
    with bound_cursor() as cursor:
        return cursor.execute(_PROBE, [marker]).fetchone()[0]


@pytest.mark.django_db
def test_a_path_set_inside_a_rolled_back_savepoint_is_not_trusted_by_a_prepared_statement(world):
    """The SET for the other organization was made inside a savepoint that a failing prepared
    statement rolled back: PostgreSQL is back on the first schema's path; every later prepared
    statement, for either organization, must still run in its own schema."""
    with schema_context("org_alpha"):
        assert _probe("a") == "aorg_alpha"
        run = row_insert(Run(orchestrator_slug="dup", trigger="rest"))
        with pytest.raises(IntegrityError):
            with transaction.atomic():
                with schema_context("org_bravo"):
                    assert _probe("b") == "borg_bravo"
                    row_insert(Run(orchestrator_slug="x", trigger="rest"))
                # back in alpha inside the savepoint, then a failure: savepoint rolled back
                row_insert(Run(id=run.pk, orchestrator_slug="dup", trigger="rest"))
        with connection.cursor() as cursor:
            cursor.execute("SHOW search_path")
            shown = cursor.fetchone()[0]
        assert "org_alpha" in shown
        assert _probe("a2") == "a2org_alpha"
        with schema_context("org_bravo"):
            assert _probe("b2") == "b2org_bravo"
            with transaction.atomic():
                with schema_context("org_alpha"):
                    assert _probe("a3") == "a3org_alpha"
                transaction.set_rollback(True)
            # The savepoint that set alpha's path was rolled back: bravo's is back on the server.
            assert _probe("b3") == "b3org_bravo"
        assert _probe("a4") == "a4org_alpha"


def test_prepared_statements_after_the_connection_is_closed_and_after_a_rollback(
    world, committed_db
):
    """Outside a test transaction (closing the connection inside one would end it); it writes
    nothing, so it needs no flush (a flush would delete the session's shared organizations)."""
    with schema_context("org_alpha"):
        assert _probe("1") == "1org_alpha"
        connection.close()
        assert _probe("2") == "2org_alpha"
        with transaction.atomic():
            assert _probe("3") == "3org_alpha"
            transaction.set_rollback(True)
        assert _probe("4") == "4org_alpha"
        with schema_context("org_bravo"):
            assert _probe("5") == "5org_bravo"
        assert _probe("6") == "6org_alpha"
