"""A trigram index for `q` on run log lines, as 0006 made for runs' errors and steps' names and
errors: on UPPER(message) (what Django's icontains compares), only where pg_trgm exists, built
CONCURRENTLY outside a transaction. The run list's `q` looks in log lines through an EXISTS on
this table (engine/runs/selectors.py `_text_where`)."""

import importlib

from django.db import migrations

_search = importlib.import_module("engine.migrations.0006_run_list_search_indexes")

NAME = "runlog_message_trgm"
DEFINITION = "engine_runlog USING gin (UPPER(message) gin_trgm_ops)"


def create_index(apps, schema_editor):
    how = _search._concurrently(schema_editor)
    with schema_editor.connection.cursor() as cursor:
        if not _search._trigram_available(cursor):
            return
        if _search._invalid(cursor, NAME):
            cursor.execute(f'DROP INDEX {how}"{NAME}"')
        cursor.execute(f'CREATE INDEX {how}IF NOT EXISTS "{NAME}" ON {DEFINITION}')


def drop_index(apps, schema_editor):
    how = _search._concurrently(schema_editor)
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f'DROP INDEX {how}IF EXISTS "{NAME}"')


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("engine", "0009_merge_20261206_0503"),
    ]

    operations = [migrations.RunPython(create_index, drop_index, elidable=False)]
